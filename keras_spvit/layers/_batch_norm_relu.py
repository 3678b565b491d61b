"""Training-mode `relu(BatchNormalization(x))` on channels-last maps, in few passes.

TensorFlow's XLA on CPU reduces a `(batch, rows, cols, channels)`
tensor over its leading axes slowly: the sum runs down one channel's
column, strided. Keras' `BatchNormalization` makes four such reductions per
training step (mean and variance, then the gradient's two sums), plus the
ReLU and the normalisation as passes of their own; on the SPViT_S stem's
`(8, 112, 112, 64)` maps this formulation takes 0.65x its time (forward +
backward under XLA, see `_fused_op`). It sums in two stages (`_channel_sums`: first over rows of
`cols * channels` contiguous numbers, then the `cols` partial sums), takes
both statistics from one shifted pass and applies the ReLU's mask inside a
hand-written gradient. The numbers are Keras' (batch statistics, biased
variance, the same moving-statistics update) within float32 rounding.
"""

import functools

import keras
from keras import ops

# Rows and columns of the maps sampled for the statistics' shift (also the refiner's).
SAMPLE_STRIDE = 8


def batch_norm_relu(norm, x, training=None):
    """`relu(norm(x, training=training))` for a Keras `BatchNormalization`.

    Under training on TensorFlow (a trainable `norm`, float32
    statistics whatever the compute dtype, as Keras does), one fused op with
    a hand-written gradient that updates `norm`'s moving statistics as
    Keras does; otherwise (inference, a frozen norm, torch) the Keras layer
    itself.

    Args:
        norm: a built `keras.layers.BatchNormalization` over the last axis.
        x: `(batch, rows, cols, channels)` maps with static `cols` and
            `channels`.
        training: bool or None, as for `norm`.

    Returns:
        `relu(norm(x))`, in `x`'s dtype.

    Example:

    >>> norm = keras.layers.BatchNormalization()
    >>> norm.build((None, 4, 4, 8))
    >>> batch_norm_relu(norm, np.ones((2, 4, 4, 8), "float32"), training=True).shape
    (2, 4, 4, 8)
    """
    fused = _fused_op()
    if not (training and norm.trainable and fused is not None and norm.axis in (-1, 3)):
        return ops.relu(norm(x, training=training))
    dtype = x.dtype
    out, mean, variance = fused(ops.cast(x, "float32"), norm.gamma, norm.beta, norm.epsilon)
    update_moving_statistics(norm, mean, variance)
    return ops.cast(out, dtype)


def update_moving_statistics(norm, mean, variance):
    """Keras `BatchNormalization`'s update: biased batch variance, `momentum`
    (the stem's fused op and `AttentionRefiner`'s training stages)."""
    momentum = norm.momentum
    norm.moving_mean.assign(norm.moving_mean * momentum + mean * (1.0 - momentum))
    norm.moving_variance.assign(
        norm.moving_variance * momentum + variance * (1.0 - momentum)
    )


def _channel_sums(tensors):
    """Per-channel sums of `(batch, rows, cols, channels)` tensors: over
    rows of `cols * channels` contiguous numbers, then over `cols`."""
    cols, channels = tensors[0].shape[-2:]
    sums = []
    for t in tensors:
        partial = ops.sum(ops.reshape(t, (-1, cols * channels)), axis=0)
        sums.append(ops.sum(ops.reshape(partial, (cols, channels)), axis=0))
    return sums


def batch_statistics(x, channel_axis, sums):
    """`(mean, variance)` per channel of `(batch, ..., ...)` maps, as Keras'
    training-mode `BatchNormalization` takes them (biased variance), from
    one `sums([shifted, shifted ** 2])` pass (the stem's channels-last
    maps and the refiner's channels-first attention maps).

    `center`, the mean of a strided sample of `x` (a constant for the
    gradient), keeps `E[d^2] - E[d]^2` of `d = x - center` as accurate as a
    two-pass variance: it is within a fraction of a standard deviation of
    the batch mean.

    Args:
        x: rank-4 maps, channels on `channel_axis` (1 or 3), the other
            non-batch axes spatial.
        channel_axis: 1 (channels first) or 3 / -1 (channels last).
        sums: `sums(tensors) -> [per-channel sum of each]`.

    Example:

    >>> x = np.random.rand(2, 3, 16, 16).astype("float32")
    >>> mean, variance = batch_statistics(
    ...     x, 1, lambda ts: [ops.sum(t, axis=(0, 2, 3)) for t in ts])
    >>> mean.shape, variance.shape
    ((3,), (3,))
    """
    channel_axis %= 4
    samples = tuple(slice(None, None, SAMPLE_STRIDE) if 0 < axis != channel_axis else slice(None)
                    for axis in range(4))
    reduced = tuple(axis for axis in range(4) if axis != channel_axis)
    count = ops.cast(ops.size(x) // x.shape[channel_axis], x.dtype)
    center = ops.mean(x[samples], axis=reduced)
    shifted = x - per_channel(center, channel_axis)
    total, total_square = sums([shifted, ops.square(shifted)])
    mean_shifted = total / count
    variance = ops.maximum(total_square / count - ops.square(mean_shifted), 0.0)
    return mean_shifted + center, variance


def batch_norm_input_grad(grad, normalized, scale, grad_beta, grad_gamma, channel_axis):
    """The textbook gradient of training-mode batch norm for its input:
    `scale * (grad - mean(grad) - normalized * mean(grad * normalized))`,
    the means given as the per-channel sums `grad_beta`, `grad_gamma`
    (`scale` is `gamma / sqrt(variance + epsilon)`)."""
    count = ops.cast(ops.size(grad) // grad.shape[channel_axis], grad.dtype)
    return per_channel(scale, channel_axis) * (
        grad - per_channel(grad_beta / count, channel_axis)
        - normalized * per_channel(grad_gamma / count, channel_axis)
    )


def per_channel(values, channel_axis):
    """A `(channels,)` vector shaped to broadcast over rank-4 maps with
    channels on `channel_axis`."""
    if channel_axis % 4 == 3:
        return values
    return values[:, None, None]


def _forward(x, gamma, beta, epsilon):
    """`((relu(normalized), mean, variance), residuals)`."""
    mean, variance = batch_statistics(x, -1, _channel_sums)
    inverse = ops.rsqrt(variance + epsilon)
    scale = gamma * inverse
    shift = beta - mean * scale
    out = ops.relu(x * scale + shift)
    return (out, mean, variance), (x, mean, inverse, scale, shift)


def _grads(residuals, grad):
    """`(grad_x, grad_gamma, grad_beta)` of `_forward`'s output (its mean
    and variance only feed the moving statistics and get none): the ReLU's
    mask recomputed from `x`, then the textbook batch-norm gradient with
    both sums from one read of `grad` and `x`."""
    x, mean, inverse, scale, shift = residuals
    grad = ops.where(x * scale + shift > 0, grad, 0.0)
    normalized = (x - mean) * inverse
    grad_beta, grad_gamma = _channel_sums([grad, grad * normalized])
    grad_x = batch_norm_input_grad(grad, normalized, scale, grad_beta, grad_gamma, -1)
    return grad_x, grad_gamma, grad_beta


def _fused_op():
    """`fused(x, gamma, beta, epsilon) -> (out, mean, variance)` with
    `_grads` as its gradient, or None on a backend that keeps Keras' layer.

    TensorFlow only. Same run, `(8, 112, 112, 64)`, forward + backward, load
    8-9 on 2 cores: 0.65x Keras' layers under XLA, 0.90x in a graph without
    XLA. JAX's own batch norm was faster than this op under `jax.custom_vjp`
    (1.28x), and torch has its fused kernel."""
    if keras.backend.backend() == "tensorflow":
        return _tf_op()
    return None


@functools.cache
def _tf_op():
    import tensorflow as tf

    def fused(x, gamma, beta, epsilon):
        @tf.custom_gradient
        def op(x, gamma, beta):
            outputs, residuals = _forward(x, gamma, beta, epsilon)

            def grad(upstream, *_):
                return _grads(residuals, upstream)

            return outputs, grad

        # Tensors, not variables: custom gradients don't take variables.
        return op(x, tf.convert_to_tensor(gamma), tf.convert_to_tensor(beta))

    return fused
