import keras

from keras_spvit.layers.drop_path import DropPath
from keras_spvit.layers.mlp import MLP
from keras_spvit.utils.validation import check_positive_float, check_rate

LAYER_NORM_EPSILON = 1e-5  # the release's (torch default); Keras' is 1e-3


@keras.saving.register_keras_serializable(package="keras_spvit")
class TransformerBlock(keras.layers.Layer):
    """Pre-norm transformer block around any attention layer.

        x = x + drop_path(attention(norm1(a * x))) / skip_lam
        x = x + drop_path(mlp(norm2(a * x))) / skip_lam

    with `a = branch_input_scale`. The attention layer is an argument, so the
    same block serves vanilla, spatial-prior, shared and refined attention.
    `skip_lam` is LV-ViT's residual scaling (2 for S/M, 3 for L); Refiner uses
    `branch_input_scale = skip_lam = 0.5` (its `adjust_ratio`).

    Attention maps travel between blocks by `BaseAttention`'s protocol: when
    the attention layer hands its map on (`output_attention_map`) the block
    returns `(x, map)`; when it takes the previous map
    (`requires_attention_map`) the block's `attention_map` is given to it.
    Any other Keras layer is treated as taking and handing on no map.

    Args:
        attention: a Keras layer mapping `(batch, tokens, dim)` to the same
            shape and accepting `return_attention_scores` (for example
            `SpatialPriorAttention` or `MultiHeadSelfAttention`), or its
            serialized config.
        mlp_ratio: float. MLP hidden width is `int(dim * mlp_ratio)`.
        skip_lam: float > 0. Residual branches are divided by it.
        drop_path_rate: float in `[0, 1)`, stochastic depth of both branches.
        dropout: float in `[0, 1)`, dropout inside the MLP.
        layer_norm_epsilon: float. Epsilon of both LayerNorms.
        branch_input_scale: float. Multiplies `x` before each LayerNorm.
        mlp_scale_init: optional float; see `MLP(scale_init=...)`.
        seed: optional int seeding the drop-path generator.
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        inputs: `(batch, tokens, dim)` tensor.
        attention_map: optional `(batch, heads, tokens, tokens)` map of the
            previous block, for attention layers that take one.
        training: bool, enables dropout and drop-path.
        return_attention_scores: bool. If `True`, the map the attention
            applied to its values is appended to the outputs.

    Returns:
        `outputs`, then the map handed on if the attention layer hands one
        on, then the attention scores if requested (a tuple if more than one).

    Example:

    >>> block = TransformerBlock(MultiHeadSelfAttention(num_heads=2), mlp_ratio=3.0)
    >>> block(np.zeros((2, 17, 64), "float32")).shape
    (2, 17, 64)
    """

    def __init__(
        self,
        attention,
        mlp_ratio=4.0,
        skip_lam=1.0,
        drop_path_rate=0.0,
        dropout=0.0,
        layer_norm_epsilon=LAYER_NORM_EPSILON,
        branch_input_scale=1.0,
        mlp_scale_init=None,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if isinstance(attention, dict):
            attention = keras.saving.deserialize_keras_object(attention)
        if not isinstance(attention, keras.layers.Layer):
            raise ValueError(
                "Expected `attention` to be a Keras layer or its serialized "
                f"config. Received: attention={attention!r}"
            )
        self.attention = attention
        self.mlp_ratio = check_positive_float(mlp_ratio, "mlp_ratio")
        self.skip_lam = check_positive_float(skip_lam, "skip_lam")
        self.drop_path_rate = check_rate(drop_path_rate, "drop_path_rate")
        self.dropout = check_rate(dropout, "dropout")
        self.layer_norm_epsilon = check_positive_float(
            layer_norm_epsilon, "layer_norm_epsilon"
        )
        self.branch_input_scale = check_positive_float(branch_input_scale, "branch_input_scale")
        self.mlp_scale_init = mlp_scale_init
        self.seed = seed

    def build(self, input_shape):
        norm = dict(epsilon=self.layer_norm_epsilon, dtype=self.dtype_policy)
        self.norm1 = keras.layers.LayerNormalization(name="norm1", **norm)
        self.norm1.build(input_shape)
        if not self.attention.built:  # a deserialized attention arrives built
            self.attention.build(input_shape)
        self.norm2 = keras.layers.LayerNormalization(name="norm2", **norm)
        self.norm2.build(input_shape)
        self.mlp = MLP(
            int(input_shape[-1] * self.mlp_ratio),
            dropout=self.dropout,
            scale_init=self.mlp_scale_init,
            name="mlp",
            dtype=self.dtype_policy,
        )
        self.mlp.build(input_shape)
        self.drop_path = DropPath(
            self.drop_path_rate, seed=self.seed, name="drop_path", dtype=self.dtype_policy
        )

    def call(self, inputs, attention_map=None, training=None, return_attention_scores=False):
        takes_map = getattr(self.attention, "requires_attention_map", False)
        if attention_map is not None and not takes_map:
            raise ValueError(
                f"{self.name} was given an attention map, but its attention layer "
                f"{self.attention.name!r} does not take one."
            )
        extra = {"attention_map": attention_map} if takes_map else {}
        result = self.attention(
            self.norm1(self._scaled(inputs)),
            training=training,
            return_attention_scores=return_attention_scores,
            **extra,
        )
        branch, *maps = result if isinstance(result, (tuple, list)) else (result,)
        x = inputs + self.drop_path(branch, training=training) / self.skip_lam
        branch = self.mlp(self.norm2(self._scaled(x)), training=training)
        x = x + self.drop_path(branch, training=training) / self.skip_lam
        return (x, *maps) if maps else x

    def _scaled(self, x):
        if self.branch_input_scale == 1.0:
            return x
        return x * self.branch_input_scale

    def compute_output_shape(self, input_shape):
        if getattr(self.attention, "output_attention_map", False):
            tokens = input_shape[1]
            heads = self.attention.num_heads
            return input_shape, (input_shape[0], heads, tokens, tokens)
        return input_shape

    def compute_output_spec(
        self, inputs, attention_map=None, training=None, return_attention_scores=False
    ):
        # `compute_output_shape` sees shapes only; the scores add an output.
        shapes = self.compute_output_shape(inputs.shape)
        outputs = (
            [keras.KerasTensor(shapes[0], inputs.dtype), keras.KerasTensor(shapes[1], "float32")]
            if isinstance(shapes[0], tuple)
            else [keras.KerasTensor(shapes, inputs.dtype)]
        )
        if return_attention_scores:
            tokens = inputs.shape[1]
            scores = (inputs.shape[0], self.attention.num_heads, tokens, tokens)
            outputs.append(keras.KerasTensor(scores, "float32"))
        return tuple(outputs) if len(outputs) > 1 else outputs[0]

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "attention": keras.saving.serialize_keras_object(self.attention),
                "mlp_ratio": self.mlp_ratio,
                "skip_lam": self.skip_lam,
                "drop_path_rate": self.drop_path_rate,
                "dropout": self.dropout,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "branch_input_scale": self.branch_input_scale,
                "mlp_scale_init": self.mlp_scale_init,
                "seed": self.seed,
            }
        )
        return config
