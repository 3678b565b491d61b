import keras
from keras.src.backend.common.stateless_scope import get_stateless_scope

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
        remat: bool. Rematerialise the block in training (`keras.remat`:
            `jax.checkpoint`, `tf.recompute_grad`, torch's `checkpoint`): the
            backward pass recomputes the block's activations from its input
            instead of keeping them, for about one extra forward pass per
            step. Gradients are those without remat (to float rounding):
            the block runs as a pure function of its input and its state
            (random seeds, the refiner's moving statistics), so the
            recomputation draws the same dropout and drop-path masks, and
            the state is updated once.
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
        remat=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(remat, bool):
            raise ValueError(f"Expected `remat` to be a bool. Received: remat={remat!r}")
        self.remat = remat
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
        if self.remat and training:
            return self._rematerialised_call(inputs, attention_map, return_attention_scores)
        return self._forward(inputs, attention_map, training, return_attention_scores)

    def _forward(self, inputs, attention_map, training, return_attention_scores):
        takes_map = getattr(self.attention, "requires_attention_map", False)
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

    def _rematerialised_call(self, inputs, attention_map, return_attention_scores):
        """`_forward` in training under `keras.remat`, as a pure function.

        The recomputation must see the state the forward pass saw (seed
        generators, moving statistics) and must not update it a second time,
        and JAX's `checkpoint` cannot let values assigned inside escape. So
        the block runs in a `StatelessScope` fed with the state's values on
        entry and returns its new values; they are assigned here, once.
        Under JAX's trainer the weights themselves live in the trainer's
        stateless scope: their values are handed on to the inner one.
        """
        state = self.non_trainable_variables
        # Unmapped (TF, torch) or the trainer's (JAX); not autocast.
        state_values = [_current_value(v) for v in state]
        outer = get_stateless_scope()
        mapped = []
        if outer is not None:
            mapped = [(v, outer.get_current_value(v)) for v in self.trainable_variables]
            mapped = [(v, value) for v, value in mapped if value is not None]
        has_map = attention_map is not None

        def forward(*tensors):
            with keras.StatelessScope(state_mapping=mapped + list(zip(state, state_values))) \
                    as scope:
                outputs = self._forward(
                    tensors[0], tensors[1] if has_map else None, True, return_attention_scores
                )
            outputs = list(outputs) if isinstance(outputs, (tuple, list)) else [outputs]
            updated = [scope.get_current_value(v) for v in state]
            return outputs + [
                value if new is None else new for new, value in zip(updated, state_values)
            ]

        tensors = (inputs, attention_map) if has_map else (inputs,)
        results = keras.remat(forward)(*tensors)
        outputs = results[: len(results) - len(state)]
        for v, value in zip(state, results[len(outputs):]):
            v.assign(value)
        return tuple(outputs) if len(outputs) > 1 else outputs[0]

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
                "remat": self.remat,
            }
        )
        return config


def _current_value(variable):
    """`variable`'s value, in its own dtype (no autocast), inside any stateless scope."""
    scope = get_stateless_scope()
    value = scope.get_current_value(variable) if scope is not None else None
    if value is None:
        # A copy read now: TensorFlow's and torch's recomputation would read
        # the variable after its update.
        value = keras.ops.copy(keras.ops.convert_to_tensor(variable._value))
    return value
