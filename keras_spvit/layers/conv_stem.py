import keras
from keras import ops

from keras_spvit.layers._batch_norm_relu import batch_norm_relu
from keras_spvit.utils.validation import check_one_of, check_positive_int

# Stem name -> widths of its three stride-2/1/1 convolutions (None: patchify).
STEM_WIDTHS = {
    "4_2": (64, 64, 64),
    "4_2_128": (128, 128, 128),
    "refiner": (32, 64, 128),
    "patch": None,
}
BATCH_NORM_EPSILON = 1e-5  # the release's (torch default); Keras' is 1e-3


@keras.saving.register_keras_serializable(package="keras_spvit")
class ConvStem(keras.layers.Layer):
    """Image -> patch-token grid, as in LV-ViT / SP-ViT.

    `"4_2"` and `"4_2_128"` (width 64 / 128) are LV-ViT's and SP-ViT's
    convolutional stems: conv 7x7 stride 2 (symmetric zero padding 3) -> BN
    -> ReLU -> conv 3x3 -> BN -> ReLU -> conv 3x3 -> BN -> ReLU -> conv 8x8
    stride 8 to `embed_dim`, a total stride of 16. `"refiner"` is the same
    with widths 32, 64, 128 (Refined-ViT). Padding is explicit because Keras'
    `"same"` pads a stride-2 convolution asymmetrically on even inputs.
    `"patch"` is a plain ViT patchify convolution (kernel = stride =
    `patch_size`) for small images. In training on TensorFlow each
    BatchNorm + ReLU runs as one fused op (`_batch_norm_relu`), with Keras'
    numbers and moving-statistics update.

    Args:
        embed_dim: int. Width of the output tokens.
        stem: one of `"4_2"`, `"4_2_128"`, `"refiner"`, `"patch"`.
        patch_size: int. Total stride; must be 16 for the convolutional stems.
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        inputs: `(batch, height, width, channels)` images, channels-last.
        training: bool, BatchNorm uses batch statistics when `True`.

    Returns:
        `(batch, height / stride, width / stride, embed_dim)`.

    Example:

    >>> stem = ConvStem(embed_dim=64, stem="4_2")
    >>> stem(np.zeros((2, 64, 64, 3), "float32")).shape
    (2, 4, 4, 64)
    """

    def __init__(self, embed_dim, stem="4_2", patch_size=16, **kwargs):
        super().__init__(**kwargs)
        self.embed_dim = check_positive_int(embed_dim, "embed_dim")
        self.stem = check_one_of(stem, STEM_WIDTHS, "stem")
        self.patch_size = check_positive_int(patch_size, "patch_size")
        if stem != "patch" and patch_size != 16:
            raise ValueError(
                f"The convolutional stem {stem!r} has a fixed stride of 16. "
                f"Received: patch_size={patch_size}. Use stem='patch' for "
                "another patch size."
            )

    @property
    def stride(self):
        return self.patch_size

    def build(self, input_shape):
        self.input_channels = input_shape[-1]
        for size in input_shape[1:3]:
            if size is not None and size % self.stride:
                raise ValueError(
                    f"{self.name}: image height and width must be multiples of the "
                    f"stem stride {self.stride}. Received input shape {tuple(input_shape)}."
                )
        policy = dict(dtype=self.dtype_policy)
        widths = STEM_WIDTHS[self.stem]
        self.conv_layers = []
        if widths is not None:
            first, second, third = widths
            self.conv_layers = [
                keras.layers.ZeroPadding2D(3, name="pad1", **policy),
                keras.layers.Conv2D(first, 7, 2, use_bias=False, name="conv1", **policy),
                self._batch_norm("bn1"),
                keras.layers.ReLU(name="relu1", **policy),
                keras.layers.Conv2D(second, 3, padding="same", use_bias=False, name="conv2", **policy),
                self._batch_norm("bn2"),
                keras.layers.ReLU(name="relu2", **policy),
                keras.layers.Conv2D(third, 3, padding="same", use_bias=False, name="conv3", **policy),
                self._batch_norm("bn3"),
                keras.layers.ReLU(name="relu3", **policy),
            ]
        proj_size = 8 if widths is not None else self.patch_size
        self.proj = keras.layers.Conv2D(
            self.embed_dim, proj_size, proj_size, name="proj", **policy
        )
        shape = tuple(input_shape)
        for layer in self.conv_layers + [self.proj]:
            layer.build(shape)
            shape = layer.compute_output_shape(shape)

    def _batch_norm(self, name):
        return keras.layers.BatchNormalization(
            momentum=0.9, epsilon=BATCH_NORM_EPSILON, name=name, dtype=self.dtype_policy
        )

    def call(self, inputs, training=None):
        if inputs.shape[-1] != self.input_channels:
            raise ValueError(
                f"{self.name} was built for images with {self.input_channels} "
                f"channels (channels-last). Received images of shape {tuple(inputs.shape)}."
            )
        x = inputs
        layers = iter(self.conv_layers)
        for layer in layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                # Always followed by its ReLU: one fused op in training.
                x = batch_norm_relu(layer, x, training=training)
                next(layers)
            else:
                x = layer(x)
        return self._patchify(x)

    def _patchify(self, x):
        """`proj`, a convolution with kernel = stride, as one matmul.

        Same weights and result as `self.proj(x)`, but XLA on CPU runs a
        strided 8x8 convolution 2.6x slower than this reshape + matmul (JAX,
        SPViT_S stem at batch 16: 184 ms vs 70 ms); elsewhere they tie.
        """
        size = self.proj.kernel_size[0]
        # Static sizes where known, dynamic ones for an image size left open.
        batch, height, width, channels = ops.shape(x)
        rows, cols = height // size, width // size
        x = ops.reshape(x, (batch, rows, size, cols, size, channels))
        x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
        x = ops.reshape(x, (batch, rows, cols, size * size * channels))
        kernel = ops.reshape(self.proj.kernel, (size * size * channels, self.embed_dim))
        return ops.matmul(x, ops.cast(kernel, x.dtype)) + ops.cast(self.proj.bias, x.dtype)

    def compute_output_spec(self, inputs, training=None):
        # Keras' default spec path hands `compute_output_shape` no shape when
        # `inputs` is not a backend tensor (numpy images given to a model's
        # `compute_output_spec`); anything with a `.shape` works here.
        shape = self.compute_output_shape(tuple(inputs.shape))
        return keras.KerasTensor(shape, dtype=self.compute_dtype)

    def compute_output_shape(self, input_shape):
        batch, height, width, _ = input_shape
        return (
            batch,
            None if height is None else height // self.stride,
            None if width is None else width // self.stride,
            self.embed_dim,
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {"embed_dim": self.embed_dim, "stem": self.stem, "patch_size": self.patch_size}
        )
        return config
