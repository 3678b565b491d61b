import keras
from keras import ops

from keras_spvit.layers.initializers import dense_kwargs
from keras_spvit.utils.validation import check_positive_int, check_rate


class BaseAttention(keras.layers.Layer):
    """Multi-head self-attention on tokens: what every attention variant shares.

    The base holds the input projections, the output projection and its
    dropout, the attention dropout, the optional `refiner`, the config, and
    the protocol by which attention maps travel between layers. A variant
    overrides one method, `_compute_attention`, the attention math (as
    Keras' `MultiHeadAttention._compute_attention`); it may also add
    weights in `_build_attention`.

    Attention-map protocol (read by `TransformerBlock`):

    - `output_attention_map=True`: `call` returns `(outputs, map)`, the map
      this layer hands to the next one (before any refiner).
    - `requires_attention_map`: whether `call` needs the previous layer's map
      (`attention_map=`); a map given to a layer that takes none, or the
      reverse, is a `ValueError`.
    - `return_attention_scores=True` (call argument, as in Keras): the map
      applied to the values is appended to the outputs.

    The input projections are named by `input_projections`, a class
    attribute of `(name, parts)` pairs: `("qkv", ("query", "key", "value"))`
    is one `Dense(3 * dim)` named `qkv` whose output splits into the three.
    Their names are the variable paths (saved weights, official mappings).

    Args:
        num_heads: int. Number of attention heads; must divide the input width.
        qkv_bias: bool. Whether the input projections have biases.
        attention_dropout: float in `[0, 1)`, dropout on the attention
            weights, or `None` for a layer without attention dropout.
        dropout: float in `[0, 1)`, dropout after the output projection.
        refiner: optional layer (e.g. `AttentionRefiner`) or its config,
            mapping the layer's `(batch, heads, tokens, tokens)` map to the
            map applied to the values; the map handed on stays unrefined.
        output_attention_map: bool. Also return the map handed on.
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        inputs: `(batch, tokens, dim)` tensor.
        attention_map: the previous layer's `(batch, heads, tokens, tokens)`
            map, for layers with `requires_attention_map`.
        training: bool, enables dropout.
        return_attention_scores: bool. Also return the applied map.

    Example:

    >>> class Uniform(BaseAttention):
    ...     input_projections = (("v", ("value",)),)
    ...     def _compute_attention(self, query, key, value, attention_map=None,
    ...                            training=None, return_attention_scores=False):
    ...         tokens = ops.shape(value)[1]
    ...         weights = ops.ones((1, self.num_heads, tokens, tokens)) / tokens
    ...         return self._weighted_sum(weights, value, training), weights, weights
    >>> Uniform(num_heads=2)(np.zeros((2, 5, 8), "float32")).shape
    (2, 5, 8)
    """

    input_projections = (("qkv", ("query", "key", "value")),)

    def __init__(
        self,
        num_heads,
        qkv_bias=False,
        attention_dropout=0.0,
        dropout=0.0,
        refiner=None,
        output_attention_map=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        # Assigned first: the refiner is the first tracked sub-layer, which
        # fixes the order of the layer's variables (saved optimizer states).
        self.refiner = _as_layer(refiner, "refiner")
        self.output_attention_map = bool(output_attention_map)
        self.num_heads = check_positive_int(num_heads, "num_heads")
        self.qkv_bias = bool(qkv_bias)
        self.attention_dropout = (
            None if attention_dropout is None
            else check_rate(attention_dropout, "attention_dropout")
        )
        self.dropout = check_rate(dropout, "dropout")

    @property
    def requires_attention_map(self):
        """Whether `call` needs the previous layer's map (`attention_map=`)."""
        return False

    def build(self, input_shape):
        dim = input_shape[-1]
        if dim is None or dim % self.num_heads:
            raise ValueError(
                f"{self.name}: the token width must be divisible by num_heads. "
                f"Received: dim={dim}, num_heads={self.num_heads}"
            )
        dense = dict(dtype=self.dtype_policy, **dense_kwargs())
        for name, parts in self.input_projections:
            projection = keras.layers.Dense(
                len(parts) * dim, use_bias=self.qkv_bias, name=name, **dense
            )
            projection.build(input_shape)
            setattr(self, name, projection)
        self.proj = keras.layers.Dense(dim, name="proj", **dense)
        self.proj.build(input_shape)
        self._build_attention(input_shape)
        if self.attention_dropout is not None:
            self.attention_drop = keras.layers.Dropout(
                self.attention_dropout, dtype=self.dtype_policy
            )
        self.proj_drop = keras.layers.Dropout(self.dropout, dtype=self.dtype_policy)
        if self.refiner is not None and not self.refiner.built:
            tokens = input_shape[1]
            self.refiner.build((input_shape[0], self.num_heads, tokens, tokens))

    def _build_attention(self, input_shape):
        """Creates the variant's own weights (after the projections)."""

    def call(self, inputs, attention_map=None, training=None, return_attention_scores=False):
        self._check_attention_map(inputs, attention_map)
        parts = {"query": None, "key": None, "value": None}
        for name, names in self.input_projections:
            projected = getattr(self, name)(inputs)
            pieces = ops.split(projected, len(names), axis=-1) if len(names) > 1 else [projected]
            for part, piece in zip(names, pieces):
                parts[part] = self._split_heads(piece)
        x, handed_on, scores = self._compute_attention(
            parts["query"], parts["key"], parts["value"],
            attention_map=attention_map, training=training,
            return_attention_scores=return_attention_scores,
        )
        batch, tokens = ops.shape(x)[0], ops.shape(x)[1]
        x = ops.reshape(x, (batch, tokens, x.shape[-2] * x.shape[-1]))
        x = self.proj_drop(self.proj(x), training=training)
        outputs = (x,)
        if self.output_attention_map:
            outputs += (handed_on,)
        if return_attention_scores:
            outputs += (scores,)
        return outputs if len(outputs) > 1 else x

    def _compute_attention(
        self, query, key, value, attention_map=None, training=None,
        return_attention_scores=False,
    ):
        """The attention math. Override this in a variant.

        Args:
            query, key, value: `(batch, tokens, heads, head_dim)` projections
                (`None` for parts the layer does not project).
            attention_map: the previous layer's map, when the layer takes one.
            training: bool.
            return_attention_scores: bool. Whether the applied map is wanted.

        Returns:
            `(outputs, handed_on, scores)`: outputs `(batch, tokens, heads,
            head_dim)`; the map for the next layer (needed when
            `output_attention_map`, else may be `None`); the map applied to
            the values (needed when `return_attention_scores`).
        """
        raise NotImplementedError(
            f"{type(self).__name__} must override `_compute_attention`."
        )

    # === Helpers for `_compute_attention` ===

    def _split_heads(self, x):
        """`(batch, tokens, heads * head_dim)` -> `(batch, tokens, heads, head_dim)`."""
        batch, tokens = ops.shape(x)[0], ops.shape(x)[1]
        return ops.reshape(x, (batch, tokens, self.num_heads, x.shape[-1] // self.num_heads))

    def _refine(self, weights, training=None):
        """The refiner hook: the map applied to the values, from the layer's map."""
        if self.refiner is None:
            return weights
        return self.refiner(weights, training=training)

    def _weighted_sum(self, weights, value, training=None):
        """Attention dropout, then `weights @ value` per head.

        Args:
            weights: `(batch, heads, queries, keys)`, any float dtype.
            value: `(batch, keys, heads, head_dim)`.

        Returns:
            `(batch, queries, heads, head_dim)` in the compute dtype.
        """
        if self.attention_dropout is not None:
            weights = self.attention_drop(weights, training=training)
        # Heads-major, both attention products run as batched matmuls, which
        # XLA on CPU executes about 1.5x faster than the equivalent einsums.
        value = ops.transpose(value, (0, 2, 1, 3))
        x = ops.matmul(ops.cast(weights, self.compute_dtype), value)
        return ops.transpose(x, (0, 2, 1, 3))

    def _check_attention_map(self, inputs, attention_map):
        """Says what is wrong when a map is given to a layer that takes none,
        the reverse, or a map of other heads or tokens."""
        takes_map = self.requires_attention_map
        if attention_map is not None and not takes_map:
            raise ValueError(
                f"{self.name} was given an attention map but does not take one "
                "(MultiHeadSelfAttention adds one when built with `previous_map_scale=`)."
            )
        if attention_map is None and takes_map:
            raise ValueError(
                f"{self.name} needs the previous layer's attention map "
                "(`attention_map=`), and none was given: the first attention layer "
                "of a chain cannot share or add a previous map."
            )
        if attention_map is None:
            return
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

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_heads": self.num_heads,
                "qkv_bias": self.qkv_bias,
                "dropout": self.dropout,
                "refiner": (
                    None if self.refiner is None
                    else keras.saving.serialize_keras_object(self.refiner)
                ),
                "output_attention_map": self.output_attention_map,
            }
        )
        if self.attention_dropout is not None:
            config["attention_dropout"] = self.attention_dropout
        return config


def _as_layer(layer, name):
    """`None`, a layer, or a serialized layer -> `None` or a layer."""
    if layer is None or isinstance(layer, keras.layers.Layer):
        return layer
    if isinstance(layer, dict):
        return keras.saving.deserialize_keras_object(layer)
    raise ValueError(
        f"Expected `{name}` to be None, a Keras layer or its serialized config. "
        f"Received: {name}={layer!r}"
    )


def attention_logits(query, key):
    """Scaled dot products `(batch, heads, queries, keys)`, in float32.

    The scale is applied after the product, as the released SP-ViT, LV-ViT and
    Refiner do; float32 inputs take exactly that path (parity). Reduced
    precision inputs (bfloat16, float16) are multiplied with float32
    accumulation and a float32 result (`float32_matmul`): the logits are not
    rounded to 8 mantissa bits before the softmax, and an unscaled float16
    product cannot overflow. Softmax and everything before it stay float32.

    Args:
        query: `(batch, heads, queries, head_dim)`, heads-major.
        key: `(batch, heads, keys, head_dim)`.

    Returns:
        float32 `(batch, heads, queries, keys)`.

    Example:

    >>> q = keras.ops.ones((1, 2, 4, 16))
    >>> attention_logits(q, q)[0, 0, 0, 0]  # 16 / sqrt(16)
    4.0
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

    Args:
        compute_dtype: the layer's compute dtype.

    Returns:
        bool.

    Example:

    >>> fused_attention_logits_are_float32("float32")
    True
    """
    return (
        keras.backend.standardize_dtype(compute_dtype) == "float32"
        or keras.backend.backend() != "tensorflow"
    )
