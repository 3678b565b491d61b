import keras
from keras import ops

from keras_spvit.layers.initializers import dense_kwargs
from keras_spvit.utils.validation import check_positive_int, check_rate


def split_heads(x, num_heads):
    """`(batch, tokens, heads * head_dim)` -> `(batch, heads, tokens, head_dim)`.

    Heads-major layout lets both attention products run as batched matmuls,
    which XLA on CPU executes about 1.5x faster than the equivalent einsums.
    """
    batch, tokens = ops.shape(x)[0], ops.shape(x)[1]
    x = ops.reshape(x, (batch, tokens, num_heads, x.shape[-1] // num_heads))
    return ops.transpose(x, (0, 2, 1, 3))


def merge_heads(x):
    """`(batch, heads, tokens, head_dim)` -> `(batch, tokens, heads * head_dim)`."""
    x = ops.transpose(x, (0, 2, 1, 3))
    batch, tokens = ops.shape(x)[0], ops.shape(x)[1]
    return ops.reshape(x, (batch, tokens, x.shape[-2] * x.shape[-1]))


def attention_logits(query, key):
    """Scaled dot products `(batch, heads, queries, keys)`, in float32.

    The scale is applied after the product, as the released SP-ViT does for
    spatial-prior attention; softmax and everything before it stay float32
    under mixed precision.
    """
    scale = query.shape[-1] ** -0.5
    logits = ops.matmul(query, ops.transpose(key, (0, 1, 3, 2)))
    return ops.cast(logits, "float32") * scale


def attend(weights, value, compute_dtype):
    """Weighted sum of values: `(b, h, q, k) x (b, h, k, d) -> (b, h, q, d)`."""
    return ops.matmul(ops.cast(weights, compute_dtype), value)


@keras.saving.register_keras_serializable(package="keras_spvit")
class MultiHeadSelfAttention(keras.layers.Layer):
    """Vanilla multi-head self-attention with one fused `qkv` projection.

    `softmax((q * d**-0.5) k^T) v` per head, then an output projection, as in
    ViT / LV-ViT. When the attention weights are not requested (and attention
    dropout is inactive) the layer calls `keras.ops.dot_product_attention`, the
    backend's fused kernel; otherwise it runs the explicit path, whose softmax
    is computed in float32 under mixed precision. The fused kernels of
    TensorFlow and JAX also take their softmax in float32.

    Args:
        num_heads: int. Number of attention heads; must divide the input width.
        qkv_bias: bool. Whether the `qkv` projection has a bias.
        attention_dropout: float in `[0, 1)`, dropout on attention weights.
        dropout: float in `[0, 1)`, dropout after the output projection.
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        inputs: `(batch, tokens, dim)` tensor.
        training: bool, enables dropout.
        return_attention_scores: bool. If `True`, returns
            `(outputs, weights)` with weights `(batch, heads, tokens, tokens)`.

    Example:

    >>> attention = MultiHeadSelfAttention(num_heads=2)
    >>> y = attention(np.zeros((2, 17, 64), "float32"))  # (2, 17, 64)
    """

    def __init__(
        self, num_heads, qkv_bias=False, attention_dropout=0.0, dropout=0.0, **kwargs
    ):
        super().__init__(**kwargs)
        self.num_heads = check_positive_int(num_heads, "num_heads")
        self.qkv_bias = bool(qkv_bias)
        self.attention_dropout = check_rate(attention_dropout, "attention_dropout")
        self.dropout = check_rate(dropout, "dropout")

    def build(self, input_shape):
        dim = check_head_split(input_shape[-1], self.num_heads, self.name)
        self.qkv = keras.layers.Dense(
            3 * dim, use_bias=self.qkv_bias, name="qkv", dtype=self.dtype_policy,
            **dense_kwargs(),
        )
        self.qkv.build(input_shape)
        self.proj = keras.layers.Dense(
            dim, name="proj", dtype=self.dtype_policy, **dense_kwargs()
        )
        self.proj.build(input_shape)
        self.attention_drop = keras.layers.Dropout(
            self.attention_dropout, dtype=self.dtype_policy
        )
        self.proj_drop = keras.layers.Dropout(self.dropout, dtype=self.dtype_policy)

    def call(self, inputs, training=None, return_attention_scores=False):
        qkv = self.qkv(inputs)
        weights = None
        if return_attention_scores or (training and self.attention_dropout > 0):
            query, key, value = (
                split_heads(t, self.num_heads) for t in ops.split(qkv, 3, axis=-1)
            )
            weights = ops.softmax(attention_logits(query, key), axis=-1)
            dropped = self.attention_drop(weights, training=training)
            x = merge_heads(attend(dropped, value, self.compute_dtype))
        else:
            # The fused kernel takes (batch, tokens, heads, head_dim).
            batch, tokens = ops.shape(qkv)[0], ops.shape(qkv)[1]
            head_dim = qkv.shape[-1] // (3 * self.num_heads)
            qkv = ops.reshape(qkv, (batch, tokens, 3, self.num_heads, head_dim))
            x = ops.dot_product_attention(
                qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2], scale=head_dim**-0.5
            )
            x = ops.reshape(x, (batch, tokens, self.num_heads * head_dim))
        x = self.proj_drop(self.proj(x), training=training)
        if return_attention_scores:
            return x, weights
        return x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_heads": self.num_heads,
                "qkv_bias": self.qkv_bias,
                "attention_dropout": self.attention_dropout,
                "dropout": self.dropout,
            }
        )
        return config


def check_head_split(dim, num_heads, layer_name):
    """Returns `dim` if `num_heads` divides it, else raises a `ValueError`."""
    if dim is None or dim % num_heads:
        raise ValueError(
            f"{layer_name}: the token width must be divisible by num_heads. "
            f"Received: dim={dim}, num_heads={num_heads}"
        )
    return dim
