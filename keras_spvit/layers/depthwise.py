"""Depthwise 'same' convolution that is fast under XLA on CPU, forward and backward.

XLA's CPU depthwise convolution is ~25x slower than `k * k` shifted
multiply-adds (27 ms vs 1 ms on SPViT_S's PosCNN at batch 16), and
autodiff of the multiply-adds is slow in turn: it materialises a shifted
copy of the maps per tap, reduces each separately and assembles the kernel
gradient from padded pieces. So on TensorFlow and JAX the convolution has a
hand-written gradient (`depthwise_same_grads`): the input's gradient is the
same convolution with the kernel flipped, and the kernel's (and the bias')
come from ONE variadic reduction over all taps' products (`variadic_sums`).
Used channels-last by `PosCNN` and channels-first by `AttentionRefiner`'s
training stages.
"""

import functools

import keras
from keras import ops

from keras_spvit.layers._batch_norm_relu import per_channel


def depthwise_conv_same(x, kernel, bias=None):
    """Depthwise convolution, stride 1, zero padding, channels-last.

    On TensorFlow and JAX it runs as `k * k` shifted multiply-adds
    (`depthwise_same`) with the one-pass gradient of `depthwise_same_grads`;
    on PyTorch the native kernel, which is faster there.

    Args:
        x: `(batch, rows, cols, channels)`.
        kernel: `(k, k, channels, 1)`, a Keras `DepthwiseConv2D` kernel with
            odd `k`.
        bias: optional `(channels,)`.

    Returns:
        `(batch, rows, cols, channels)`, in `x`'s dtype.

    Example:

    >>> kernel = np.ones((3, 3, 8, 1), "float32")
    >>> depthwise_conv_same(np.ones((2, 5, 5, 8), "float32"), kernel).shape
    (2, 5, 5, 8)
    """
    kernel = ops.cast(ops.convert_to_tensor(kernel), x.dtype)
    if keras.backend.backend() == "torch":
        out = ops.depthwise_conv(x, kernel, padding="same")
        return out if bias is None else out + ops.cast(bias, x.dtype)
    op = _trained_op(keras.backend.backend(), bias is not None)
    if bias is None:
        return op(x, kernel[:, :, :, 0])
    # Tensors, not variables: custom gradients don't take variables.
    return op(x, kernel[:, :, :, 0], ops.cast(ops.convert_to_tensor(bias), x.dtype))


def depthwise_same(x, kernel, channel_axis=-1, bias=None):
    """`bias + sum over taps of shifted(x) * kernel[dy, dx]`, taps row-major.

    Args:
        x: rank-4 maps, channels on `channel_axis` (1 or -1 / 3), the other
            two non-batch axes spatial.
        kernel: `(k, k, channels)`, odd `k`.
        channel_axis: 1 (channels first) or -1 / 3 (channels last).
        bias: optional `(channels,)`, the sum's starting value.

    Example:

    >>> x = np.ones((1, 8, 4, 4), "float32")
    >>> depthwise_same(x, np.ones((3, 3, 8), "float32"), channel_axis=1).shape
    (1, 8, 4, 4)
    """
    out = 0.0 if bias is None else per_channel(bias, channel_axis)
    for (dy, dx), tap in _taps(x, kernel.shape[0], channel_axis):
        out = out + tap * per_channel(kernel[dy, dx], channel_axis)
    return out


def depthwise_same_grads(x, kernel, grad, sums, channel_axis=-1, with_bias=False):
    """`(grad_x, grad_kernel[, grad_bias])` of `depthwise_same(x, kernel, ...)`.

    The input's gradient is the same convolution of `grad` with the kernel
    flipped. The kernel's is, per tap, the sum of `grad` times the tap's
    shifted maps, and the bias' the sum of `grad`: `sums(tensors, axes)`
    takes all of them in one pass over the maps (summed in float32 under a
    lower-precision `grad`, returned in the kernel's dtype).

    Args:
        x, kernel, channel_axis: as for `depthwise_same`.
        grad: the gradient of the output, `x`'s shape.
        sums: `sums(tensors, axes) -> [sum of each]`, e.g. `variadic_sums`.
        with_bias: bool, whether to also return the bias' gradient.
    """
    size = kernel.shape[0]
    grad_x = depthwise_same(grad, kernel[::-1, ::-1], channel_axis)
    wide = grad if grad.dtype == "float32" else ops.cast(grad, "float32")
    products = [
        wide * (tap if tap.dtype == "float32" else ops.cast(tap, "float32"))
        for _, tap in _taps(x, size, channel_axis)
    ]
    totals = _per_channel_sums(sums, products + [wide] * with_bias, channel_axis)
    totals = [ops.cast(t, kernel.dtype) for t in totals]
    grad_kernel = ops.reshape(ops.stack(totals[: size * size]), kernel.shape)
    return (grad_x, grad_kernel) + tuple(totals[size * size :])


def _per_channel_sums(sums, tensors, channel_axis):
    """Per-channel sums of rank-4 `tensors` by one `sums` pass. Channels
    last, in two stages (as `_batch_norm_relu`'s sums): XLA's CPU reduction
    over the leading axes runs down each channel's column, strided, so the
    pass sums rows of `cols * channels` contiguous numbers and the `cols`
    partial sums are added after (2.1x faster than one reduction for
    SPViT_S's PosCNN, forward and backward on TensorFlow)."""
    if channel_axis % 4 == 1:
        return sums(tensors, (0, 2, 3))
    cols, channels = tensors[0].shape[-2:]
    partial = sums([ops.reshape(t, (-1, cols * channels)) for t in tensors], (0,))
    return [ops.sum(ops.reshape(p, (cols, channels)), axis=0) for p in partial]


def _taps(x, size, channel_axis):
    """`((dy, dx), tap)` for the `size * size` shifted views of zero-padded `x`."""
    spatial = (2, 3) if channel_axis % 4 == 1 else (1, 2)
    pad = size // 2
    padding = [(pad, pad) if axis in spatial else (0, 0) for axis in range(4)]
    padded = ops.pad(x, padding)
    rows, cols = (x.shape[axis] for axis in spatial)
    if rows is None or cols is None:
        rows, cols = (ops.shape(x)[axis] for axis in spatial)
    for dy in range(size):
        for dx in range(size):
            window = [slice(None)] * 4
            window[spatial[0]] = slice(dy, dy + rows)
            window[spatial[1]] = slice(dx, dx + cols)
            yield (dy, dx), padded[tuple(window)]


def variadic_sums(backend):
    """`sums(tensors, axes) -> [sum of each over axes]` in ONE pass (one
    variadic reduction) under XLA, for `backend` `"jax"` or `"tensorflow"`.

    On TensorFlow outside an XLA context (a graph without `jit_compile`,
    eager) each sum is a reduction of its own: the variadic reduction is an
    XLA op.

    Example:

    >>> sums = variadic_sums(keras.backend.backend())  # doctest: +SKIP
    >>> sums([ops.ones((2, 3)), ops.ones((2, 3))], (0,))  # doctest: +SKIP
    """
    return _jax_sums if backend == "jax" else _tf_sums


def _jax_sums(tensors, axes):
    import jax
    import jax.numpy as jnp

    return list(jax.lax.reduce(
        tuple(tensors),
        tuple(jnp.zeros((), t.dtype) for t in tensors),
        lambda a, b: tuple(u + v for u, v in zip(a, b)),
        axes,
    ))


def _tf_sums(tensors, axes):
    import tensorflow as tf
    from tensorflow.compiler.tf2xla.python import xla
    from tensorflow.python.ops import control_flow_util

    if not control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph()):
        return [tf.reduce_sum(t, axes) for t in tensors]
    count = len(tensors)
    scalar = tf.TensorSpec((), tensors[0].dtype)
    add = tf.function(lambda *ab: tuple(u + v for u, v in zip(ab[:count], ab[count:])))
    add = add.get_concrete_function(*[scalar] * (2 * count))
    zeros = [tf.zeros((), t.dtype) for t in tensors]
    return list(xla.variadic_reduce(tensors, zeros, axes, add))


@functools.cache
def _trained_op(backend, with_bias):
    """`op(x, kernel[, bias])`: channels-last `depthwise_same` with the
    gradient of `depthwise_same_grads`, for `backend` (jax or tensorflow)."""
    sums = variadic_sums(backend)
    if backend == "jax":
        import jax

        @jax.custom_vjp
        def op(x, kernel, *bias):
            return depthwise_same(x, kernel, -1, *bias)

        def forward(x, kernel, *bias):
            return op(x, kernel, *bias), (x, kernel)

        def backward(residuals, grad):
            x, kernel = residuals
            return depthwise_same_grads(x, kernel, grad, sums, -1, with_bias)

        op.defvjp(forward, backward)
        return op

    import tensorflow as tf

    @tf.custom_gradient
    def op(x, kernel, *bias):
        def grad(upstream):
            return depthwise_same_grads(x, kernel, upstream, sums, -1, with_bias)

        return depthwise_same(x, kernel, -1, *bias), grad

    return op
