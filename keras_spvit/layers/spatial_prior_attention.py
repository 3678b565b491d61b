import keras
from keras import ops

from keras_spvit.layers.base_attention import (
    BaseAttention,
    attention_logits,
    float32_matmul,
)
from keras_spvit.layers.grid import relative_offsets, resolve_grid
from keras_spvit.layers.initializers import truncated_normal
from keras_spvit.utils.validation import check_grid_shape


@keras.saving.register_keras_serializable(package="keras_spvit")
class SpatialPriorAttention(BaseAttention):
    """Spatial-prior self-attention (SP-SA) from SP-ViT (Wang et al., 2022).

    Each head learns a function of the 2D offset between query and key,

        hid[i, j, h, :] = relu([dx_ij, dy_ij] @ W1[:, h-slice] + B1[h-slice])
        prior[h, i, j]  = hid[i, j, h, :] . w2[h] + b2[h]

    with `dx = col_j - col_i`, `dy = row_j - row_i` on the patch grid, and
    multiplies the scaled attention logits by it before the softmax:
    `softmax(prior * (q k^T) d**-0.5) v`. The prior does not depend on the
    input: it is evaluated once per call on the `(2 rows - 1)(2 cols - 1)`
    distinct offsets (not on all N^2 token pairs), gathered to `(heads, N, N)`
    and broadcast over the batch. Logits (float32 accumulation), prior and
    softmax are float32 under mixed precision. Under a reduced-precision
    policy the plain layer (no refiner, no map handed on, no scores
    returned) keeps for backward only the attention weights in the compute
    dtype (`prior_softmax`), not the float32 logits and softmax.

    The layer acts on patch tokens only (no class token), on a grid of
    `grid_shape` (inferred as square when `None`). Initialisation follows the
    release: `w2 = 0`, `b2 = 1`, so the layer starts as plain attention.

    Args:
        num_heads: int. Number of heads; must divide the input width.
        grid_shape: optional `(rows, cols)` of the token grid. Required for
            non-square grids.
        qkv_bias: bool. Whether the `qk` and `v` projections have biases
            (the release has none).
        attention_dropout: float in `[0, 1)`, dropout on attention weights.
        dropout: float in `[0, 1)`, dropout after the output projection.
        refiner: optional layer (e.g. `AttentionRefiner`) or its config,
            refining the spatial-prior attention map before it is applied to
            the values (beyond the release).
        output_attention_map: bool. Also return the (unrefined) map, for a
            next layer that shares it.
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        inputs: `(batch, rows * cols, dim)` patch tokens, row-major.
        training: bool, enables dropout.
        return_attention_scores: bool. If `True`, returns
            `(outputs, weights)` with weights `(batch, heads, N, N)`.

    Example:

    >>> attention = SpatialPriorAttention(num_heads=2, grid_shape=(4, 4))
    >>> y = attention(np.zeros((2, 16, 64), "float32"))  # (2, 16, 64)
    >>> attention.spatial_prior().shape  # (heads, N, N)
    (2, 16, 16)
    """

    input_projections = (("qk", ("query", "key")), ("v", ("value",)))

    def __init__(
        self,
        num_heads,
        grid_shape=None,
        qkv_bias=False,
        attention_dropout=0.0,
        dropout=0.0,
        refiner=None,
        output_attention_map=False,
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
        self.grid_shape = check_grid_shape(grid_shape)

    def _build_attention(self, input_shape):
        dim = input_shape[-1]
        self.built_grid_shape = resolve_grid(input_shape[1], self.grid_shape, self.name)
        self.offsets, self.offset_index = relative_offsets(self.built_grid_shape)
        # The prior is numerically sensitive (it scales logits): its weights
        # are never autocast, so it is computed in float32 under any policy.
        head_dim = dim // self.num_heads
        self.w1_kernel = self.add_weight(
            shape=(2, dim), initializer=truncated_normal(), autocast=False,
            name="w1_kernel",
        )
        self.w1_bias = self.add_weight(
            shape=(dim,), initializer="zeros", autocast=False, name="w1_bias"
        )
        self.w2 = self.add_weight(
            shape=(self.num_heads, head_dim), initializer="zeros", autocast=False,
            name="w2",
        )
        self.b2 = self.add_weight(
            shape=(self.num_heads,), initializer="ones", autocast=False, name="b2"
        )

    def spatial_prior(self):
        """The learned prior, float32 `(heads, N, N)`; row = query, column = key."""
        hidden = ops.relu(
            ops.matmul(ops.convert_to_tensor(self.offsets), ops.cast(self.w1_kernel, "float32"))
            + ops.cast(self.w1_bias, "float32")
        )
        hidden = ops.reshape(hidden, (-1,) + tuple(self.w2.shape))
        per_offset = ops.einsum("uhd,hd->hu", hidden, ops.cast(self.w2, "float32"))
        per_offset = per_offset + ops.cast(self.b2, "float32")[:, None]
        num_tokens = self.offset_index.shape[0]
        prior = ops.take(per_offset, self.offset_index.reshape(-1), axis=1)
        return ops.reshape(prior, (self.num_heads, num_tokens, num_tokens))

    def _compute_attention(
        self, query, key, value, attention_map=None, training=None,
        return_attention_scores=False,
    ):
        query, key = (ops.transpose(t, (0, 2, 1, 3)) for t in (query, key))
        light = (
            keras.backend.standardize_dtype(self.compute_dtype) != "float32"
            and self.refiner is None
            and not self.output_attention_map
            and not return_attention_scores
        )
        if light:
            weights = prior_softmax(query, key, self.spatial_prior(), self.compute_dtype)
        else:
            logits = attention_logits(query, key) * self.spatial_prior()[None]
            weights = ops.softmax(logits, axis=-1)
        applied = self._refine(weights, training=training)
        return self._weighted_sum(applied, value, training), weights, applied

    def get_config(self):
        config = super().get_config()
        config["grid_shape"] = self.grid_shape
        return config


def prior_softmax(query, key, prior, dtype):
    """`softmax(prior * (q k^T) d**-0.5)` computed in float32, returned in `dtype`,
    with a backward that keeps only the returned weights (and `q`, `k`).

    Autodiff of the plain formula keeps the float32 logits and the float32
    softmax for backward, 8 bytes per `(batch, heads, N, N)` entry on top
    of the 2 of the bfloat16 weights the value product keeps. Here the
    backward recomputes the logits from `q` and `k` (one more `q k^T`) and
    differentiates the softmax from the rounded weights it returns: per
    entry 2 bytes kept instead of 10 under bfloat16.

    Args:
        query: `(batch, heads, N, head_dim)`.
        key: `(batch, heads, N, head_dim)`.
        prior: float32 `(heads, N, N)`.
        dtype: dtype of the returned weights (the compute dtype).

    Returns:
        `(batch, heads, N, N)` attention weights in `dtype`.

    Example:

    >>> q = keras.ops.ones((1, 2, 4, 8), "bfloat16")
    >>> prior_softmax(q, q, keras.ops.ones((2, 4, 4)), "bfloat16").shape
    (1, 2, 4, 4)
    """
    scale = query.shape[-1] ** -0.5

    @ops.custom_gradient
    def forward(query, key, prior):
        logits = attention_logits(query, key)
        weights = ops.cast(ops.softmax(logits * prior[None], axis=-1), dtype)

        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            kept = ops.cast(weights, "float32")
            upstream = ops.cast(upstream, "float32")
            # Softmax backward, then the product with the prior.
            d_scaled = kept * (upstream - ops.sum(upstream * kept, axis=-1, keepdims=True))
            d_prior = ops.sum(d_scaled * attention_logits(query, key), axis=0)
            d_products = d_scaled * (prior[None] * scale)
            d_query = float32_matmul(d_products, ops.cast(key, "float32"))
            d_key = float32_matmul(
                ops.transpose(d_products, (0, 1, 3, 2)), ops.cast(query, "float32")
            )
            return (
                ops.cast(d_query, query.dtype),
                ops.cast(d_key, key.dtype),
                ops.cast(d_prior, prior.dtype),
            )

        return weights, grad

    return forward(query, key, prior)
