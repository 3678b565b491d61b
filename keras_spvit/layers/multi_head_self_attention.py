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

    The scale is applied after the product, as the released SP-ViT, LV-ViT and
    Refiner do; float32 inputs take exactly that path (parity). Reduced
    precision inputs (bfloat16, float16) are multiplied with float32
    accumulation and a float32 result (`float32_matmul`): the logits are not
    rounded to 8 mantissa bits before the softmax, and an unscaled float16
    product cannot overflow. Softmax and everything before it stay float32.
    """
    scale = query.shape[-1] ** -0.5
    key = ops.transpose(key, (0, 1, 3, 2))
    if keras.backend.standardize_dtype(query.dtype) == "float32":
        logits = ops.matmul(query, key)
    else:
        logits = float32_matmul(query, key)
    return ops.cast(logits, "float32") * scale


def float32_matmul(a, b):
    """`a @ b` accumulated in float32 with a float32 result, whatever the input dtype.

    JAX requests it from the compiler (`preferred_element_type`), keeping the
    inputs in their dtype (bfloat16 tensor cores on GPU); TensorFlow's and
    PyTorch's matmuls return their input dtype, so the inputs are cast to
    float32 first (the products of bfloat16 or float16 values are exact in
    float32).

    Args:
        a: `(..., m, k)` tensor.
        b: `(..., k, n)` tensor.

    Returns:
        The float32 `(..., m, n)` product.

    Example:

    >>> q = keras.ops.ones((1, 2, 4, 8), "bfloat16")
    >>> float32_matmul(q, keras.ops.ones((1, 2, 8, 4), "bfloat16")).dtype  # float32
    """
    if keras.backend.backend() == "jax":
        import jax.numpy as jnp

        return jnp.matmul(a, b, preferred_element_type=jnp.float32)
    return ops.matmul(ops.cast(a, "float32"), ops.cast(b, "float32"))


def fused_attention_logits_are_float32(compute_dtype):
    """Whether `keras.ops.dot_product_attention` keeps float32 logits for `compute_dtype`.

    JAX's kernel accumulates the logits in float32 (`preferred_element_type`),
    PyTorch's scaled-dot-product kernels accumulate in float32; TensorFlow's
    (Keras' einsum formulation) rounds them to the input dtype before its
    float32 softmax. Measured on bfloat16 inputs `(2, 197, 6, 64)` against a
    float64 reference of the same values: TensorFlow's fused output 0.054 max
    error, JAX's 0.014, PyTorch's 0.010, the explicit path with float32
    logits 0.009.
    """
    return (
        keras.backend.standardize_dtype(compute_dtype) == "float32"
        or keras.backend.backend() != "tensorflow"
    )


def attend(weights, value, compute_dtype):
    """Weighted sum of values: `(b, h, q, k) x (b, h, k, d) -> (b, h, q, d)`."""
    return ops.matmul(ops.cast(weights, compute_dtype), value)


@keras.saving.register_keras_serializable(package="keras_spvit")
class MultiHeadSelfAttention(keras.layers.Layer):
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

    Attention maps can travel between layers (Refiner, PSViT): with
    `previous_map_scale` the layer takes the previous layer's map `M` and
    applies `softmax(...) + previous_map_scale * M` (added after the softmax,
    not renormalised, as the released Refiner does); with
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
        super().__init__(**kwargs)
        self.num_heads = check_positive_int(num_heads, "num_heads")
        self.qkv_bias = bool(qkv_bias)
        self.attention_dropout = check_rate(attention_dropout, "attention_dropout")
        self.dropout = check_rate(dropout, "dropout")
        self.previous_map_scale = (
            None if previous_map_scale is None else float(previous_map_scale)
        )
        self.output_attention_map = bool(output_attention_map)
        self.refiner = as_layer(refiner, "refiner")

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
        build_refiner(self.refiner, input_shape, self.num_heads)

    def call(self, inputs, attention_map=None, training=None, return_attention_scores=False):
        check_attention_map(self, attention_map)
        qkv = self.qkv(inputs)
        handed_on = weights = None
        explicit = (
            return_attention_scores
            or self.output_attention_map
            or self.previous_map_scale is not None
            or self.refiner is not None
            or (training and self.attention_dropout > 0)
            or not fused_attention_logits_are_float32(self.compute_dtype)
        )
        if explicit:
            query, key, value = (
                split_heads(t, self.num_heads) for t in ops.split(qkv, 3, axis=-1)
            )
            weights = ops.softmax(attention_logits(query, key), axis=-1)
            if self.previous_map_scale is not None:
                weights = weights + self.previous_map_scale * ops.cast(attention_map, "float32")
            handed_on = weights
            if self.refiner is not None:
                weights = self.refiner(weights, training=training)
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
        return attention_outputs(
            x, handed_on if self.output_attention_map else None,
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
                "attention_dropout": self.attention_dropout,
                "dropout": self.dropout,
                "previous_map_scale": self.previous_map_scale,
                "output_attention_map": self.output_attention_map,
                "refiner": serialize_optional(self.refiner),
            }
        )
        return config


def as_layer(layer, name):
    """`None`, a layer, or a serialized layer -> `None` or a layer."""
    if layer is None or isinstance(layer, keras.layers.Layer):
        return layer
    if isinstance(layer, dict):
        return keras.saving.deserialize_keras_object(layer)
    raise ValueError(
        f"Expected `{name}` to be None, a Keras layer or its serialized config. "
        f"Received: {name}={layer!r}"
    )


def serialize_optional(layer):
    return None if layer is None else keras.saving.serialize_keras_object(layer)


def build_refiner(refiner, input_shape, num_heads):
    if refiner is not None and not refiner.built:
        tokens = input_shape[1]
        refiner.build((input_shape[0], num_heads, tokens, tokens))


def check_attention_map(layer, attention_map):
    """Says what is wrong when a map is given to a layer that takes none, or the reverse."""
    takes_map = getattr(layer, "previous_map_scale", None) is not None or getattr(
        layer, "requires_attention_map", False
    )
    if attention_map is not None and not takes_map:
        raise ValueError(
            f"{layer.name} was given an attention map but does not take one. "
            "Build it with `previous_map_scale=` to add the previous map."
        )
    if attention_map is None and takes_map:
        raise ValueError(
            f"{layer.name} needs the previous layer's attention map "
            "(`attention_map=`), and none was given: the first attention layer "
            "of a chain cannot share or add a previous map."
        )


def attention_outputs(x, handed_on, scores):
    """`x`, then the map handed on and the scores, each only if present."""
    extras = tuple(t for t in (handed_on, scores) if t is not None)
    return (x, *extras) if extras else x


def check_head_split(dim, num_heads, layer_name):
    """Returns `dim` if `num_heads` divides it, else raises a `ValueError`."""
    if dim is None or dim % num_heads:
        raise ValueError(
            f"{layer_name}: the token width must be divisible by num_heads. "
            f"Received: dim={dim}, num_heads={num_heads}"
        )
    return dim
