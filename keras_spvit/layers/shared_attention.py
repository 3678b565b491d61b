import keras

from keras_spvit.layers.base_attention import BaseAttention


@keras.saving.register_keras_serializable(package="keras_spvit")
class SharedAttention(BaseAttention):
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

    input_projections = (("v", ("value",)),)

    def __init__(
        self, num_heads, qkv_bias=True, refiner=None, output_attention_map=False,
        dropout=0.0, **kwargs,
    ):
        super().__init__(
            num_heads,
            qkv_bias=qkv_bias,
            attention_dropout=None,
            dropout=dropout,
            refiner=refiner,
            output_attention_map=output_attention_map,
            **kwargs,
        )

    @property
    def requires_attention_map(self):
        return True

    def _compute_attention(
        self, query, key, value, attention_map=None, training=None,
        return_attention_scores=False,
    ):
        weights = attention_map
        if self.refiner is not None:
            weights = self._refine(attention_map, training=training) * value.shape[-1] ** -0.5
        return self._weighted_sum(weights, value, training), attention_map, weights
