import keras
from keras import ops

from keras_spvit.layers.depthwise import depthwise_conv_same
from keras_spvit.layers.grid import resolve_grid
from keras_spvit.utils.validation import check_grid_shape, check_non_negative_int


@keras.saving.register_keras_serializable(package="keras_spvit")
class PosCNN(keras.layers.Layer):
    """Conditional position encoding (CPVT's PosCNN): `grid + dwconv3x3(grid)`.

    The patch tokens are put back on their grid and a depthwise 3x3
    convolution (zero padding, with bias) is added to them; the leading
    `num_prefix_tokens` (class token) pass through untouched. Unlike the
    released SP-ViT, which guesses the class token from the parity of the
    token count (and so fails on odd grids), this layer is told.

    Args:
        grid_shape: optional `(rows, cols)` of the patch grid; inferred as
            square when `None`.
        num_prefix_tokens: int. Leading tokens that are not on the grid.
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        inputs: `(batch, num_prefix_tokens + rows * cols, dim)` tokens.

    Example:

    >>> layer = PosCNN(grid_shape=(4, 4), num_prefix_tokens=1)
    >>> layer(np.zeros((2, 17, 64), "float32")).shape
    (2, 17, 64)
    """

    def __init__(self, grid_shape=None, num_prefix_tokens=0, **kwargs):
        super().__init__(**kwargs)
        self.grid_shape = check_grid_shape(grid_shape)
        self.num_prefix_tokens = check_non_negative_int(
            num_prefix_tokens, "num_prefix_tokens"
        )

    def build(self, input_shape):
        tokens = input_shape[1]
        patches = None if tokens is None else tokens - self.num_prefix_tokens
        self.built_grid_shape = resolve_grid(patches, self.grid_shape, self.name)
        self.conv = keras.layers.DepthwiseConv2D(
            3, padding="same", name="conv", dtype=self.dtype_policy
        )
        self.conv.build((None,) + self.built_grid_shape + (input_shape[-1],))

    def call(self, inputs):
        prefix = inputs[:, : self.num_prefix_tokens]
        patches = inputs[:, self.num_prefix_tokens :]
        grid = ops.reshape(
            patches, (ops.shape(inputs)[0],) + self.built_grid_shape + (inputs.shape[-1],)
        )
        patches = patches + ops.reshape(
            depthwise_conv_same(grid, self.conv.kernel, self.conv.bias), ops.shape(patches)
        )
        if self.num_prefix_tokens == 0:
            return patches
        return ops.concatenate([prefix, patches], axis=1)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {"grid_shape": self.grid_shape, "num_prefix_tokens": self.num_prefix_tokens}
        )
        return config
