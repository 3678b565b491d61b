import keras
from keras import ops

from keras_spvit.layers.base_attention import (
    BaseAttention,
    attention_logits,
    fused_attention_logits_are_float32,
)


@keras.saving.register_keras_serializable(package="keras_spvit")
class MultiHeadSelfAttention(BaseAttention):
    """Vanilla multi-head self-attention with one fused `qkv` projection.

    `softmax((q k^T) * d**-0.5) v` per head, then an output projection, as in
    ViT / LV-ViT. When the attention weights are not requested (and attention
    dropout is inactive) the layer calls `keras.ops.dot_product_attention`, the
    backend's fused kernel; otherwise it runs the explicit path, whose logits
    (float32 accumulation, see `attention_logits`) and softmax are float32
    under mixed precision. The fused kernels of JAX and PyTorch also keep
    float32 logits and softmax; TensorFlow's rounds the logits to the
    compute dtype, so under mixed precision TensorFlow takes the explicit
    path.

    Attention maps can travel between layers (Refiner, PSViT; the protocol is
    `BaseAttention`'s): with `previous_map_scale` the layer takes the
    previous layer's map `M` (`requires_attention_map`) and applies
    `softmax(...) + previous_map_scale * M` (added after the softmax, not
    renormalised, as the released Refiner does); with
    `output_attention_map=True` it returns `(outputs, map)`, the map it
    applied, for the next layer. A `refiner` (e.g. `AttentionRefiner`)
    refines the layer's own map before it is applied to the values; the map
    handed on stays unrefined.

    Args:
        num_heads: int. Number of attention heads; must divide the input width.
        qkv_bias: bool. Whether the `qkv` projection has a bias.
        attention_dropout: float in `[0, 1)`, dropout on attention weights.
        dropout: float in `[0, 1)`, dropout after the output projection.
        previous_map_scale: optional float. Weight of the previous layer's
            map (Refiner: `head_dim**-0.5`); `None` takes no map.
        output_attention_map: bool. Return the applied map as well.
        refiner: optional layer (or its config) refining the map before use.
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        inputs: `(batch, tokens, dim)` tensor.
        attention_map: optional previous map `(batch, heads, tokens, tokens)`,
            used only with `previous_map_scale`.
        training: bool, enables dropout.
        return_attention_scores: bool. If `True`, the map applied to the
            values, `(batch, heads, tokens, tokens)`, is returned last.

    Example:

    >>> attention = MultiHeadSelfAttention(num_heads=2)
    >>> y = attention(np.zeros((2, 17, 64), "float32"))  # (2, 17, 64)
    """

    input_projections = (("qkv", ("query", "key", "value")),)

    def __init__(
        self,
        num_heads,
        qkv_bias=False,
        attention_dropout=0.0,
        dropout=0.0,
        previous_map_scale=None,
        output_attention_map=False,
        refiner=None,
        **kwargs,
    ):
        super().__init__(
            num_heads,
            qkv_bias=qkv_bias,
            attention_dropout=attention_dropout,
            dropout=dropout,
            refiner=refiner,
            output_attention_map=output_attention_map,
            **kwargs,
        )
        self.previous_map_scale = (
            None if previous_map_scale is None else float(previous_map_scale)
        )

    @property
    def requires_attention_map(self):
        return self.previous_map_scale is not None

    def _compute_attention(
        self, query, key, value, attention_map=None, training=None,
        return_attention_scores=False,
    ):
        explicit = (
            return_attention_scores
            or self.output_attention_map
            or self.requires_attention_map
            or self.refiner is not None
            or (training and self.attention_dropout > 0)
            or not fused_attention_logits_are_float32(self.compute_dtype)
        )
        if not explicit:
            # The fused kernel takes (batch, tokens, heads, head_dim).
            x = ops.dot_product_attention(query, key, value, scale=query.shape[-1] ** -0.5)
            return x, None, None
        query, key = (ops.transpose(t, (0, 2, 1, 3)) for t in (query, key))
        weights = ops.softmax(attention_logits(query, key), axis=-1)
        if self.requires_attention_map:
            weights = weights + self.previous_map_scale * ops.cast(attention_map, "float32")
        applied = self._refine(weights, training=training)
        return self._weighted_sum(applied, value, training), weights, applied

    def get_config(self):
        config = super().get_config()
        config["previous_map_scale"] = self.previous_map_scale
        return config
