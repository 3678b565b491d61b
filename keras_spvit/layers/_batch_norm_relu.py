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


def _forward(x, gamma, beta, epsilon):
    """`((relu(normalized), mean, variance), residuals)`.

    `center`, the mean of a strided sample of `x` (a constant for the
    gradient), keeps `E[d^2] - E[d]^2` of `d = x - center` as accurate as a
    two-pass variance: it is within a fraction of a standard deviation of
    the batch mean."""
    count = ops.cast(ops.size(x) // x.shape[-1], x.dtype)
    center = ops.mean(x[:, ::SAMPLE_STRIDE, ::SAMPLE_STRIDE], axis=(0, 1, 2))
    shifted = x - center
    total, total_square = _channel_sums([shifted, ops.square(shifted)])
    mean_shifted = total / count
    variance = ops.maximum(total_square / count - ops.square(mean_shifted), 0.0)
    mean = mean_shifted + center
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
    count = ops.cast(ops.size(x) // x.shape[-1], x.dtype)
    grad = ops.where(x * scale + shift > 0, grad, 0.0)
    normalized = (x - mean) * inverse
    grad_beta, grad_gamma = _channel_sums([grad, grad * normalized])
    grad_x = scale * (grad - grad_beta / count - normalized * (grad_gamma / count))
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
