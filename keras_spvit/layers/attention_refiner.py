import keras
from keras import ops

from keras_spvit.layers.conv_stem import BATCH_NORM_EPSILON
from keras_spvit.layers.depthwise import depthwise_conv_same
from keras_spvit.utils.validation import check_positive_int


@keras.saving.register_keras_serializable(package="keras_spvit")
class AttentionRefiner(keras.layers.Layer):
    """Refiner's distributed local attention (DLA) on attention maps.

    Treats `(batch, heads, queries, keys)` maps as images with `heads`
    channels and applies attention expansion, a local depthwise convolution
    and reduction, plus the identity (Zhou et al., 2021):

        E = act(BN(Conv1x1(heads -> expansion_ratio * heads)(A)))
        F = act(BN(DepthwiseConv_kxk(E)))
        refined = BN(Conv1x1(-> heads)(F)) + A
        refined = adapt_bn(refined)          # if normalize_output

    It works channels-last inside. At inference each BatchNorm is folded into
    the convolution before it, so the maps are traversed once per stage.
    Attention maps are numerically sensitive (entries of order 1 / tokens):
    the layer computes in float32 under any dtype policy.

    Args:
        expansion_ratio: int. Expanded maps per head (3 released).
        kernel_size: odd int. Depthwise kernel size (3 released).
        activation: activation after expansion and convolution
            (`"relu6"` released).
        normalize_output: bool. Apply the release's `adapt_bn`, a BatchNorm
            over the heads, to the refined maps.
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        inputs: `(batch, heads, queries, keys)` attention maps.
        training: bool. BatchNorms use batch statistics when `True`.

    Example:

    >>> refiner = AttentionRefiner()
    >>> refiner(np.random.rand(2, 4, 17, 17).astype("float32")).shape
    (2, 4, 17, 17)
    """

    def __init__(
        self, expansion_ratio=3, kernel_size=3, activation="relu6", normalize_output=True,
        **kwargs,
    ):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        self.expansion_ratio = check_positive_int(expansion_ratio, "expansion_ratio")
        self.kernel_size = check_positive_int(kernel_size, "kernel_size")
        if self.kernel_size % 2 == 0:
            raise ValueError(
                f"Expected an odd `kernel_size`. Received: kernel_size={kernel_size}"
            )
        self.activation = activation
        self.activation_fn = keras.activations.get(activation)
        self.normalize_output = bool(normalize_output)

    def build(self, input_shape):
        heads = input_shape[1]
        if heads is None:
            raise ValueError(
                f"{self.name} needs a known number of heads (axis 1). Received "
                f"maps of shape {tuple(input_shape)}."
            )
        expanded = heads * self.expansion_ratio
        policy = dict(dtype=self.dtype_policy)
        maps_shape = (input_shape[0], input_shape[2], input_shape[3])
        self.conv_exp = keras.layers.Dense(expanded, use_bias=False, name="conv_exp", **policy)
        self.conv_exp.build(maps_shape + (heads,))
        self.depth_sep_conv = keras.layers.DepthwiseConv2D(
            self.kernel_size, padding="same", use_bias=False, name="depth_sep_conv", **policy
        )
        self.depth_sep_conv.build(maps_shape + (expanded,))
        self.conv_pro = keras.layers.Dense(heads, use_bias=False, name="conv_pro", **policy)
        self.conv_pro.build(maps_shape + (expanded,))
        self.norms = []
        norms = [("bn1", expanded), ("bn2", expanded), ("bn3", heads)]
        if self.normalize_output:
            norms.append(("adapt_bn", heads))
        for name, channels in norms:
            norm = keras.layers.BatchNormalization(
                momentum=0.9, epsilon=BATCH_NORM_EPSILON, name=name, **policy
            )
            norm.build(maps_shape + (channels,))
            self.norms.append(norm)
        self.bn1, self.bn2, self.bn3 = self.norms[:3]
        self.adapt_bn = self.norms[3] if self.normalize_output else None

    def call(self, inputs, training=None):
        maps = ops.transpose(inputs, (0, 2, 3, 1))
        if training:
            x = self.activation_fn(self.bn1(self.conv_exp(maps), training=True))
            x = self.activation_fn(self.bn2(self.depth_sep_conv(x), training=True))
            x = self.bn3(self.conv_pro(x), training=True) + ops.cast(maps, self.compute_dtype)
            if self.adapt_bn is not None:
                x = self.adapt_bn(x, training=True)
        else:
            x = self._folded_stages(maps)
        return ops.transpose(x, (0, 3, 1, 2))

    def _folded_stages(self, maps):
        """Inference: BatchNorm folded into each convolution's kernel."""
        dtype = self.compute_dtype
        maps = ops.cast(maps, dtype)
        scale1, shift1 = _folded_batch_norm(self.bn1)
        x = ops.matmul(maps, ops.cast(self.conv_exp.kernel * scale1, dtype))
        x = self.activation_fn(x + ops.cast(shift1, dtype))
        scale2, shift2 = _folded_batch_norm(self.bn2)
        kernel = self.depth_sep_conv.kernel * scale2[:, None]
        x = self.activation_fn(depthwise_conv_same(x, kernel, shift2))
        scale3, shift3 = _folded_batch_norm(self.bn3)
        x = ops.matmul(x, ops.cast(self.conv_pro.kernel * scale3, dtype))
        x = x + ops.cast(shift3, dtype) + maps
        if self.adapt_bn is None:
            return x
        scale4, shift4 = _folded_batch_norm(self.adapt_bn)
        return x * ops.cast(scale4, dtype) + ops.cast(shift4, dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "expansion_ratio": self.expansion_ratio,
                "kernel_size": self.kernel_size,
                "activation": self.activation,
                "normalize_output": self.normalize_output,
            }
        )
        return config


def _folded_batch_norm(norm):
    """`(scale, shift)` with `norm(x) == x * scale + shift` at inference, float32."""
    scale = ops.cast(norm.gamma, "float32") * ops.rsqrt(
        ops.cast(norm.moving_variance, "float32") + norm.epsilon
    )
    shift = ops.cast(norm.beta, "float32") - ops.cast(norm.moving_mean, "float32") * scale
    return scale, shift
