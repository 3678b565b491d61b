"""`depthwise_conv_same` (PosCNN's convolution): on TensorFlow and JAX its
hand-written gradient equals autodiff of Keras' own depthwise convolution,
with and without a bias, compiled and (TensorFlow) not; bfloat16 inputs
keep float32 sums for the kernel's gradient."""

import numpy as np
import pytest
from keras import ops

from keras_spvit.layers.depthwise import depthwise_conv_same
from tests.conftest import BACKEND
from tests.layers.gradients import assert_same, value_and_grads

pytestmark = pytest.mark.skipif(
    BACKEND == "torch", reason="torch runs its native depthwise kernel and autodiff"
)

COMPILED = [True, False] if BACKEND == "tensorflow" else [True]
# Odd and non-square grids, kernels 3 and 5 (channels last).
SHAPES = [((2, 9, 9, 5), 3), ((3, 7, 11, 4), 5), ((1, 6, 5, 3), 3)]


def keras_depthwise(x, kernel, bias=None):
    out = ops.depthwise_conv(x, kernel, padding="same")
    return out if bias is None else out + bias


def arguments(shape, size, with_bias, dtype="float32"):
    rng = np.random.default_rng(size + 10 * with_bias)
    x = rng.normal(size=shape).astype(dtype)
    kernel = rng.normal(size=(size, size, shape[-1], 1)).astype(dtype)
    bias = rng.normal(size=shape[-1]).astype(dtype)
    cotangent = rng.normal(size=shape).astype(dtype)
    return ((x, kernel, bias) if with_bias else (x, kernel)), cotangent


@pytest.mark.parametrize("compiled", COMPILED)
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("shape, size", SHAPES)
def test_gradients_equal_autodiff_of_keras_depthwise_conv(shape, size, with_bias, compiled):
    args, cotangent = arguments(shape, size, with_bias)
    result = value_and_grads(depthwise_conv_same, args, cotangent, compiled)
    expected = value_and_grads(keras_depthwise, args, cotangent, compiled)
    assert_same(result, expected)


def test_bfloat16_kernel_gradient_is_summed_in_float32():
    # 16 * 28 * 28 products per tap. Summed in float32 and rounded once, the
    # kernel's and bias' gradients are within 0.0031 (of the largest) of
    # float32's, the error of the inputs' own rounding; summed in bfloat16
    # they were 0.025 and 0.010 off (measured on TensorFlow and JAX).
    args, cotangent = arguments((16, 28, 28, 8), 3, True)
    expected = value_and_grads(depthwise_conv_same, args, cotangent, True)[1]
    low = [ops.cast(a, "bfloat16") for a in args]
    grads = value_and_grads(depthwise_conv_same, low, ops.cast(cotangent, "bfloat16"), True)[1]
    for grad, ref in zip(grads[1:], expected[1:]):
        assert str(grad.dtype) == "bfloat16"
        error = np.abs(grad.astype("float32") - ref) / np.abs(ref).max()
        assert error.max() < 0.005, error.max()
