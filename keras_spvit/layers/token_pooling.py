import keras
from keras import ops

from keras_spvit.layers.initializers import dense_kwargs
from keras_spvit.layers.grid import resolve_grid
from keras_spvit.utils.validation import (
    check_grid_shape,
    check_non_negative_int,
    check_one_of,
    check_positive_int,
)

POOLING_MODES = ("2d", "1d")
POOLING_OPS = ("conv", "avg", "max")


@keras.saving.register_keras_serializable(package="keras_spvit")
class TokenPooling(keras.layers.Layer):
    """Token pooling between stages (PSViT, Chen et al. 2021; a reconstruction).

    PSViT's code is not public and its abstract fixes only that tokens are
    pooled with stride 2, on their 2D grid (`"2d"`) or along the sequence
    (`"1d"`), and that the class token is not pooled. The open choices are
    arguments: the operator (`"conv"`: a strided depthwise convolution,
    kernel 3, followed by a pointwise projection when the width changes;
    `"avg"` / `"max"`: window-2 pooling, then a Dense projection when the
    width changes) and the output width. Pooling uses "same" padding, so an
    odd side of `n` becomes `ceil(n / 2)`. Class tokens pass through
    unpooled, projected by their own Dense when the width changes.

    Args:
        mode: `"2d"` (tokens on their grid, stride 2 on both axes) or `"1d"`
            (stride 2 along the sequence).
        pooling: `"conv"`, `"avg"` or `"max"`.
        output_dim: optional int, the output width (default: unchanged).
        grid_shape: optional `(rows, cols)` of the input patch grid for
            `"2d"`; inferred as square when `None`.
        num_prefix_tokens: int. Leading class tokens, not pooled.
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        inputs: `(batch, num_prefix_tokens + patches, dim)` tokens.

    Example:

    >>> pool = TokenPooling("2d", output_dim=128, grid_shape=(4, 6), num_prefix_tokens=1)
    >>> pool(np.zeros((2, 25, 64), "float32")).shape
    (2, 7, 128)
    >>> pool.output_grid_shape
    (2, 3)
    """

    def __init__(
        self, mode="2d", pooling="conv", output_dim=None, grid_shape=None,
        num_prefix_tokens=1, **kwargs,
    ):
        super().__init__(**kwargs)
        self.mode = check_one_of(mode, POOLING_MODES, "mode")
        self.pooling = check_one_of(pooling, POOLING_OPS, "pooling")
        self.output_dim = (
            None if output_dim is None else check_positive_int(output_dim, "output_dim")
        )
        self.grid_shape = check_grid_shape(grid_shape)
        self.num_prefix_tokens = check_non_negative_int(num_prefix_tokens, "num_prefix_tokens")

    def build(self, input_shape):
        tokens, dim = input_shape[1], input_shape[-1]
        patches = None if tokens is None else tokens - self.num_prefix_tokens
        if self.mode == "2d":
            rows, cols = resolve_grid(patches, self.grid_shape, self.name)
        else:
            if patches is None:
                raise ValueError(f"{self.name} needs a known number of tokens.")
            rows, cols = 1, patches
        if max(rows, cols) < 2 or (self.mode == "2d" and min(rows, cols) < 2):
            raise ValueError(
                f"{self.name} cannot pool a {rows} x {cols} token grid by 2 "
                f"(mode={self.mode!r}): every pooled axis needs at least 2 tokens. "
                "Pool earlier, or use fewer pooling steps."
            )
        self.input_grid_shape = (rows, cols)
        self.output_grid_shape = (-(-rows // 2), -(-cols // 2)) if self.mode == "2d" else (
            1, -(-cols // 2)
        )
        output_dim = self.output_dim or dim
        policy = dict(dtype=self.dtype_policy)
        window = (3, 3) if self.mode == "2d" else (1, 3)
        stride = (2, 2) if self.mode == "2d" else (1, 2)
        grid = (None, rows, cols, dim)
        if self.pooling == "conv":
            self.pool = keras.layers.DepthwiseConv2D(
                window, stride, padding="same", name="pool", **policy
            )
        else:
            pool_cls = keras.layers.AveragePooling2D if self.pooling == "avg" else keras.layers.MaxPooling2D
            self.pool = pool_cls(stride, stride, padding="same", name="pool", **policy)
        self.pool.build(grid)
        self.proj = None
        self.prefix_proj = None
        if output_dim != dim:
            self.proj = keras.layers.Dense(output_dim, name="proj", **policy, **dense_kwargs())
            rows_out, cols_out = self.output_grid_shape
            self.proj.build((None, rows_out * cols_out, dim))
            if self.num_prefix_tokens:
                self.prefix_proj = keras.layers.Dense(
                    output_dim, name="prefix_proj", **policy, **dense_kwargs()
                )
                self.prefix_proj.build((None, self.num_prefix_tokens, dim))

    def call(self, inputs):
        prefix = inputs[:, : self.num_prefix_tokens]
        patches = inputs[:, self.num_prefix_tokens :]
        batch, dim = ops.shape(inputs)[0], inputs.shape[-1]
        grid = ops.reshape(patches, (batch,) + self.input_grid_shape + (dim,))
        pooled = self.pool(grid)
        rows, cols = self.output_grid_shape
        pooled = ops.reshape(pooled, (batch, rows * cols, dim))
        if self.proj is not None:
            pooled = self.proj(pooled)
            if self.prefix_proj is not None:
                prefix = self.prefix_proj(prefix)
        if self.num_prefix_tokens == 0:
            return pooled
        return ops.concatenate([prefix, pooled], axis=1)

    def compute_output_shape(self, input_shape):
        if not self.built:
            self.build(input_shape)
        rows, cols = self.output_grid_shape
        return (
            input_shape[0],
            self.num_prefix_tokens + rows * cols,
            self.output_dim or input_shape[-1],
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "mode": self.mode,
                "pooling": self.pooling,
                "output_dim": self.output_dim,
                "grid_shape": self.grid_shape,
                "num_prefix_tokens": self.num_prefix_tokens,
            }
        )
        return config
