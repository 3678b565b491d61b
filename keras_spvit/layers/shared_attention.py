import keras

from keras_spvit.layers.initializers import dense_kwargs
from keras_spvit.layers.multi_head_self_attention import (
    as_layer,
    attend,
    attention_outputs,
    build_refiner,
    check_attention_map,
    check_head_split,
    merge_heads,
    serialize_optional,
    split_heads,
)
from keras_spvit.utils.validation import check_positive_int, check_rate


@keras.saving.register_keras_serializable(package="keras_spvit")
class SharedAttention(keras.layers.Layer):
    """Attention that reuses the previous layer's map: values and projection only.

    No queries or keys are computed. The incoming map `M` of shape
    `(batch, heads, tokens, tokens)` is applied to this layer's values, as in
    PSViT's attention sharing. With a `refiner` the applied map is
    `refiner(M) * head_dim**-0.5` (no softmax), which is the released
    Refined-ViT's odd block; the map handed on is `M` itself, unrefined.

    Args:
        num_heads: int. Number of heads; must divide the input width and
            match the incoming map.
        qkv_bias: bool. Whether the value projection has a bias.
        refiner: optional layer (e.g. `AttentionRefiner`) or its config.
        output_attention_map: bool. Also return `M`, for the next layer.
        dropout: float in `[0, 1)`, dropout after the output projection.
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        inputs: `(batch, tokens, dim)` tensor.
        attention_map: the previous layer's map (required).
        training: bool.
        return_attention_scores: bool. Also return the map applied.

    Example:

    >>> shared = SharedAttention(num_heads=2)
    >>> maps = np.full((2, 2, 5, 5), 0.2, "float32")
    >>> shared(np.zeros((2, 5, 8), "float32"), attention_map=maps).shape
    (2, 5, 8)
    """

    requires_attention_map = True

    def __init__(
        self, num_heads, qkv_bias=True, refiner=None, output_attention_map=False,
        dropout=0.0, **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_heads = check_positive_int(num_heads, "num_heads")
        self.qkv_bias = bool(qkv_bias)
        self.refiner = as_layer(refiner, "refiner")
        self.output_attention_map = bool(output_attention_map)
        self.dropout = check_rate(dropout, "dropout")

    def build(self, input_shape):
        dim = check_head_split(input_shape[-1], self.num_heads, self.name)
        dense = dict(dtype=self.dtype_policy, **dense_kwargs())
        self.v = keras.layers.Dense(dim, use_bias=self.qkv_bias, name="v", **dense)
        self.v.build(input_shape)
        self.proj = keras.layers.Dense(dim, name="proj", **dense)
        self.proj.build(input_shape)
        self.proj_drop = keras.layers.Dropout(self.dropout, dtype=self.dtype_policy)
        build_refiner(self.refiner, input_shape, self.num_heads)

    def call(self, inputs, attention_map=None, training=None, return_attention_scores=False):
        check_attention_map(self, attention_map)
        if attention_map.shape[1] is not None and attention_map.shape[1] != self.num_heads:
            raise ValueError(
                f"{self.name} has {self.num_heads} heads but received an attention "
                f"map of shape {tuple(attention_map.shape)} (heads on axis 1)."
            )
        tokens = inputs.shape[1]
        if tokens is not None and attention_map.shape[-1] not in (None, tokens):
            raise ValueError(
                f"{self.name} received {tokens} tokens but an attention map over "
                f"{attention_map.shape[-1]} tokens ({tuple(attention_map.shape)}): a map "
                "can only be shared between layers with the same tokens."
            )
        value = split_heads(self.v(inputs), self.num_heads)
        weights = attention_map
        if self.refiner is not None:
            head_dim = inputs.shape[-1] // self.num_heads
            weights = self.refiner(attention_map, training=training) * head_dim**-0.5
        x = merge_heads(attend(weights, value, self.compute_dtype))
        x = self.proj_drop(self.proj(x), training=training)
        return attention_outputs(
            x, attention_map if self.output_attention_map else None,
            weights if return_attention_scores else None,
        )

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_heads": self.num_heads,
                "qkv_bias": self.qkv_bias,
                "refiner": serialize_optional(self.refiner),
                "output_attention_map": self.output_attention_map,
                "dropout": self.dropout,
            }
        )
        return config
