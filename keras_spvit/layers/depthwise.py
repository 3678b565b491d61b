"""Depthwise 'same' convolution that is fast under XLA on CPU."""

import keras
from keras import ops


def depthwise_conv_same(x, kernel, bias=None):
    """Depthwise convolution, stride 1, zero padding, channels-last.

    Args:
        x: `(batch, rows, cols, channels)`.
        kernel: `(k, k, channels, 1)`, a Keras `DepthwiseConv2D` kernel with
            odd `k`.
        bias: optional `(channels,)`.

    On TensorFlow and JAX it runs as k*k shifted multiply-adds: XLA's CPU
    depthwise convolution is ~25x slower (27 ms vs 1 ms on SPViT_S's PosCNN
    at batch 16), and TensorFlow's default `jit_compile="auto"` uses XLA. On
    PyTorch the native kernel is faster and is used.
    """
    kernel = ops.cast(kernel, x.dtype)
    size = kernel.shape[0]
    if keras.backend.backend() == "torch":
        out = ops.depthwise_conv(x, kernel, padding="same")
        return out if bias is None else out + ops.cast(bias, x.dtype)
    pad = size // 2
    rows, cols = x.shape[1], x.shape[2]
    if rows is None or cols is None:
        rows, cols = ops.shape(x)[1], ops.shape(x)[2]
    padded = ops.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    out = 0.0 if bias is None else ops.cast(bias, x.dtype)
    for dy in range(size):
        for dx in range(size):
            out = out + padded[:, dy : dy + rows, dx : dx + cols] * kernel[dy, dx, :, 0]
    return out
