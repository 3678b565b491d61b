import functools

import keras
from keras import ops

from keras_spvit.layers._batch_norm_relu import (
    batch_norm_input_grad,
    batch_statistics,
    update_moving_statistics,
)
from keras_spvit.layers.conv_stem import BATCH_NORM_EPSILON
from keras_spvit.layers.depthwise import (
    depthwise_conv_same,
    depthwise_same,
    depthwise_same_grads,
    variadic_sums,
)
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

    At inference it works channels-last and each BatchNorm is folded into
    the convolution before it, so the maps are traversed once per stage (on
    PyTorch as native convolutions with the folded shifts as biases, on
    channels-last memory: RefinedViT_Tiny predicts 1.45x faster on one CPU
    core than with the separate bias, activation and layout passes).
    Training computes what the Keras layers `conv_exp`, `bn1`, ... would
    (batch statistics, the same moving-statistics update: momentum 0.9,
    biased variance), but in fewer passes over the `expansion_ratio` times
    larger expanded maps, which dominate a training step. On PyTorch: the
    native channels-first convolutions and fused batch norm, without layout
    transposes (2.0x the Keras-layers formulation, forward plus backward on
    `(4, 12, 197, 197)` maps). On TensorFlow and JAX (XLA): channels-first,
    in the maps' own layout, with hand-written gradients shared by both
    (`depthwise_same_grads`, `_batch_norm_channels_first_grads`):
    the depthwise convolution as shifted multiply-adds whose kernel gradient
    sums all taps in one variadic reduction, each BatchNorm's two statistics
    (and its gradient's two sums) in one pass, the 1x1 convolutions as
    batched matmuls over the pixels. XLA's CPU autodiff spent most of the
    backward materialising a shifted copy of the expanded maps per tap and
    reducing each separately (the depthwise convolution's backward was ~15x
    its forward), on one reduction pass per statistic, and on transposes for
    the 1x1 convolutions' kernel gradients. Forward plus backward on
    `(16, 12, 197, 197)` maps, interleaved medians on a 2-core CPU:
    TensorFlow XLA 2.9x faster than the channels-last form it replaced
    (1.93 s -> 0.66 s); JAX 1.14x faster with the one-pass BatchNorms than
    without (1.26 s -> 1.10 s). RefinedViT_S's training step on TensorFlow
    XLA went from 0.46x to 1.07x SPViT_S's in the same run.
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
        self.conv_exp = _UnquantizedDense(expanded, use_bias=False, name="conv_exp", **policy)
        self.conv_exp.build(maps_shape + (heads,))
        self.depth_sep_conv = keras.layers.DepthwiseConv2D(
            self.kernel_size, padding="same", use_bias=False, name="depth_sep_conv", **policy
        )
        self.depth_sep_conv.build(maps_shape + (expanded,))
        self.conv_pro = _UnquantizedDense(heads, use_bias=False, name="conv_pro", **policy)
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
        inputs = ops.cast(inputs, self.compute_dtype)
        if training and keras.backend.backend() == "torch":
            return self._torch_training_stages(inputs)
        if training:
            return self._xla_training_stages(inputs)
        if keras.backend.backend() == "torch":
            return self._torch_folded_stages(inputs)
        x = self._folded_stages(ops.transpose(inputs, (0, 2, 3, 1)))
        return ops.transpose(x, (0, 3, 1, 2))

    def _xla_training_stages(self, maps):
        """Training on JAX and TensorFlow, channels-first: batched 1x1
        convolutions and a depthwise convolution with a hand-written
        gradient (no transposes, no shifted copies of the maps)."""
        if keras.backend.backend() == "jax":
            conv1x1, depthwise, batch_norm = _jax_training_ops()
        else:
            conv1x1, depthwise, batch_norm = _tf_training_ops()

        def normalize(norm, x):
            if not norm.trainable:
                return _frozen_batch_norm_channels_first(norm, x)
            gamma, beta = (ops.convert_to_tensor(v) for v in (norm.gamma, norm.beta))
            x, mean, variance = batch_norm(x, gamma, beta, norm.epsilon)
            update_moving_statistics(norm, mean, variance)
            return x

        kernel = ops.convert_to_tensor(self.conv_exp.kernel)
        x = self.activation_fn(normalize(self.bn1, conv1x1(maps, kernel)))
        kernel = ops.convert_to_tensor(self.depth_sep_conv.kernel)[:, :, :, 0]
        x = self.activation_fn(normalize(self.bn2, depthwise(x, kernel)))
        kernel = ops.convert_to_tensor(self.conv_pro.kernel)
        x = normalize(self.bn3, conv1x1(x, kernel)) + maps
        if self.adapt_bn is None:
            return x
        return normalize(self.adapt_bn, x)

    def _torch_training_stages(self, maps):
        """Training on PyTorch, channels-first: native convolutions and BatchNorm."""
        import torch.nn.functional as F

        kernel = ops.convert_to_tensor(self.conv_exp.kernel)
        x = F.conv2d(maps, kernel.T[:, :, None, None])
        x = self.activation_fn(_torch_batch_norm_train(self.bn1, x))
        kernel = ops.convert_to_tensor(self.depth_sep_conv.kernel)
        x = F.conv2d(
            x, kernel.permute(2, 3, 0, 1), padding=self.kernel_size // 2, groups=x.shape[1]
        )
        x = self.activation_fn(_torch_batch_norm_train(self.bn2, x))
        kernel = ops.convert_to_tensor(self.conv_pro.kernel)
        x = _torch_batch_norm_train(self.bn3, F.conv2d(x, kernel.T[:, :, None, None])) + maps
        if self.adapt_bn is None:
            return x
        return _torch_batch_norm_train(self.adapt_bn, x)

    def _torch_folded_stages(self, maps):
        """Inference on PyTorch: the folded stages as native convolutions
        with the folded shifts as their biases, on channels-last memory (the
        layout oneDNN's kernels work in): no separate bias passes and no
        layout copies of the expanded maps, which eager PyTorch cannot fuse."""
        import torch
        import torch.nn.functional as F

        maps = maps.contiguous(memory_format=torch.channels_last)
        scale1, shift1 = _folded_batch_norm(self.bn1)
        kernel = self.conv_exp.kernel * scale1
        x = self.activation_fn(F.conv2d(maps, kernel.T[:, :, None, None], shift1))
        scale2, shift2 = _folded_batch_norm(self.bn2)
        kernel = (self.depth_sep_conv.kernel * scale2[:, None]).permute(2, 3, 0, 1)
        x = F.conv2d(x, kernel, shift2, padding=self.kernel_size // 2, groups=x.shape[1])
        x = self.activation_fn(x)
        scale3, shift3 = _folded_batch_norm(self.bn3)
        kernel = self.conv_pro.kernel * scale3
        x = F.conv2d(x, kernel.T[:, :, None, None], shift3) + maps
        if self.adapt_bn is None:
            return x
        scale4, shift4 = _folded_batch_norm(self.adapt_bn)
        return x * scale4[:, None, None] + shift4[:, None, None]

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


class _UnquantizedDense(keras.layers.Dense):
    """A 1x1 convolution's weights, kept float32: the refiner reads `.kernel`
    into its folded and training stages, so an int8 kernel (`Model.quantize`)
    would be read as raw integers (measured: output error 3.6 on outputs of
    scale 2.6). The kernels are `heads x expanded`, a few hundred numbers."""

    def quantize(self, mode=None, **kwargs):
        raise NotImplementedError(
            f"{self.path} stays float32: AttentionRefiner is a float32 island. "
            f"Received: mode={mode!r}"
        )


def _frozen_batch_norm_channels_first(norm, x):
    """A frozen norm (`trainable=False`) on `(batch, channels, rows, cols)`:
    its moving statistics, as Keras' `BatchNormalization` does."""
    scale, shift = _folded_batch_norm(norm)
    dtype = x.dtype
    return x * ops.cast(scale, dtype)[:, None, None] + ops.cast(shift, dtype)[:, None, None]


def _torch_batch_norm_train(norm, x):
    """`norm(x, training=True)` on channels-first `x` with torch's fused kernel."""
    import torch
    import torch.nn.functional as F

    gamma, beta = ops.convert_to_tensor(norm.gamma), ops.convert_to_tensor(norm.beta)
    if not norm.trainable:
        moving = [ops.convert_to_tensor(v) for v in (norm.moving_mean, norm.moving_variance)]
        return F.batch_norm(x, *moving, gamma, beta, training=False, eps=norm.epsilon)
    # momentum=1 leaves the batch mean and unbiased variance in fresh buffers;
    # Keras' moving variance averages the biased one.
    mean = torch.zeros(x.shape[1], dtype=x.dtype, device=x.device)
    unbiased = torch.ones(x.shape[1], dtype=x.dtype, device=x.device)
    out = F.batch_norm(x, mean, unbiased, gamma, beta, training=True, momentum=1.0,
                       eps=norm.epsilon)
    count = x.numel() // x.shape[1]
    update_moving_statistics(norm, mean, unbiased * ((count - 1) / count))
    return out


def _folded_batch_norm(norm):
    """`(scale, shift)` with `norm(x) == x * scale + shift` at inference, float32."""
    scale = ops.cast(norm.gamma, "float32") * ops.rsqrt(
        ops.cast(norm.moving_variance, "float32") + norm.epsilon
    )
    shift = ops.cast(norm.beta, "float32") - ops.cast(norm.moving_mean, "float32") * scale
    return scale, shift


def _batch_norm_channels_first(x, gamma, beta, epsilon, sums):
    """`((normalized, mean, variance), residuals)`: Keras' training-mode
    `BatchNormalization` on `(batch, channels, rows, cols)` with both sums
    in one `sums(tensors, axes)` pass (see `depthwise_same_grads`
    and `batch_statistics`)."""
    mean, variance = batch_statistics(x, 1, lambda tensors: sums(tensors, (0, 2, 3)))
    inverse = ops.rsqrt(variance + epsilon)
    out = (x - mean[:, None, None]) * (gamma * inverse)[:, None, None] + beta[:, None, None]
    return (out, mean, variance), (x, mean, inverse, gamma)


def _batch_norm_channels_first_grads(residuals, grad, sums):
    """`(grad_x, grad_gamma, grad_beta)` of `_batch_norm_channels_first`'s
    output (its mean and variance only feed the moving statistics and get
    none): the textbook batch-norm gradient, both sums in one pass."""
    x, mean, inverse, gamma = residuals
    normalized = (x - mean[:, None, None]) * inverse[:, None, None]
    grad_beta, grad_gamma = sums([grad, grad * normalized], (0, 2, 3))
    grad_x = batch_norm_input_grad(grad, normalized, gamma * inverse, grad_beta, grad_gamma, 1)
    return grad_x, grad_gamma, grad_beta


@functools.cache
def _jax_training_ops():
    """`(conv1x1, depthwise, batch_norm)`: channels-first JAX ops with
    custom gradients.

    `conv1x1(x, kernel)` maps `(batch, in, rows, cols)` with a `(in, out)`
    kernel to `(batch, out, rows, cols)` as one batched matmul per direction;
    the kernel's gradient contracts the pixels, the minor axis of both
    operands, so nothing is transposed (XLA's own gradient transposed the
    expanded maps twice). `depthwise(x, kernel)` is
    `depthwise_same` (channels first) with the gradient of
    `depthwise_same_grads`. `batch_norm(x, gamma, beta, epsilon)`
    is `(normalized, mean, variance)` of `_batch_norm_channels_first` with
    the gradient of `_batch_norm_channels_first_grads`.
    """
    import jax
    import jax.numpy as jnp

    def batched_matmul(a, b, contract_b=1):
        return jax.lax.dot_general(a, b, (((2,), (contract_b,)), ((0,), (0,))))

    @jax.custom_vjp
    def conv1x1(x, kernel):
        batch, channels, rows, cols = x.shape
        weights = jnp.broadcast_to(kernel.T, (batch,) + kernel.T.shape)
        out = batched_matmul(weights, x.reshape(batch, channels, rows * cols))
        return out.reshape(batch, kernel.shape[1], rows, cols)

    def conv1x1_fwd(x, kernel):
        return conv1x1(x, kernel), (x, kernel)

    def conv1x1_bwd(residuals, grad):
        x, kernel = residuals
        batch, channels, rows, cols = x.shape
        grad = grad.reshape(batch, kernel.shape[1], rows * cols)
        weights = jnp.broadcast_to(kernel, (batch,) + kernel.shape)
        grad_x = batched_matmul(weights, grad).reshape(x.shape)
        pixels = x.reshape(batch, channels, rows * cols)
        grad_kernel = batched_matmul(pixels, grad, contract_b=2).sum(0)
        return grad_x, grad_kernel

    conv1x1.defvjp(conv1x1_fwd, conv1x1_bwd)

    sums = variadic_sums("jax")

    @jax.custom_vjp
    def depthwise(x, kernel):
        return depthwise_same(x, kernel, 1)

    def depthwise_fwd(x, kernel):
        return depthwise_same(x, kernel, 1), (x, kernel)

    def depthwise_bwd(residuals, grad):
        x, kernel = residuals
        return depthwise_same_grads(x, kernel, grad, sums, 1)

    depthwise.defvjp(depthwise_fwd, depthwise_bwd)

    @functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
    def batch_norm(x, gamma, beta, epsilon):
        return _batch_norm_channels_first(x, gamma, beta, epsilon, sums)[0]

    def batch_norm_fwd(x, gamma, beta, epsilon):
        return _batch_norm_channels_first(x, gamma, beta, epsilon, sums)

    def batch_norm_bwd(epsilon, residuals, grads):
        return _batch_norm_channels_first_grads(residuals, grads[0], sums)

    batch_norm.defvjp(batch_norm_fwd, batch_norm_bwd)
    return conv1x1, depthwise, batch_norm


@functools.cache
def _tf_training_ops():
    """`(conv1x1, depthwise, batch_norm)`: channels-first TensorFlow ops.

    `conv1x1` is `_jax_training_ops`' one, with the kernel tiled over the
    batch (autodiff's gradient of the broadcast kernel, a batched matmul
    then a sum, was ~2x slower). `depthwise` is
    `depthwise_same` (channels first) with the gradient of
    `depthwise_same_grads`, `batch_norm` as on JAX. Their
    variadic reductions are an XLA op, so outside XLA (a `tf.function`
    without `jit_compile`, eager) each sum is a reduction of its own.
    """
    import tensorflow as tf

    def conv1x1(x, kernel):
        # A tensor, not the variable: custom gradients don't take variables.
        return tiled_conv1x1(x, tf.convert_to_tensor(kernel))

    @tf.custom_gradient
    def tiled_conv1x1(x, kernel):
        channels, rows, cols = x.shape[1:]
        batch = tf.shape(x)[0]
        pixels = tf.reshape(x, (-1, channels, rows * cols))
        # Tiled, not broadcast: XLA's CPU matmul runs ~3x slower on a
        # broadcast operand (measured on the (36 -> 12) convolution).
        out = tf.matmul(tf.tile(tf.transpose(kernel)[None], (batch, 1, 1)), pixels)

        def grad(upstream):
            upstream = tf.reshape(upstream, (-1, kernel.shape[1], rows * cols))
            grad_x = tf.matmul(tf.tile(kernel[None], (batch, 1, 1)), upstream)
            grad_kernel = tf.reduce_sum(tf.matmul(pixels, upstream, transpose_b=True), 0)
            return tf.reshape(grad_x, tf.shape(x)), grad_kernel

        return tf.reshape(out, (-1, kernel.shape[1], rows, cols)), grad

    sums = variadic_sums("tensorflow")

    @tf.custom_gradient
    def depthwise(x, kernel):
        def grad(upstream):
            return depthwise_same_grads(x, kernel, upstream, sums, 1)

        return depthwise_same(x, kernel, 1), grad

    def batch_norm(x, gamma, beta, epsilon):
        @tf.custom_gradient
        def fused(x, gamma, beta):
            outputs, residuals = _batch_norm_channels_first(x, gamma, beta, epsilon, sums)

            def grad(upstream, *_):
                return _batch_norm_channels_first_grads(residuals, upstream, sums)

            return outputs, grad

        return fused(x, tf.convert_to_tensor(gamma), tf.convert_to_tensor(beta))

    return conv1x1, depthwise, batch_norm
