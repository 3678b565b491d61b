"""The refiner's hand-written training kernels (TensorFlow, JAX): each op's
output and gradients equal autodiff of the plain formulation, on TensorFlow
both under XLA (variadic reductions) and outside it (one reduction per sum)."""

import numpy as np
import pytest
from keras import ops

from keras_spvit.layers import attention_refiner as refiner_module
from tests.conftest import BACKEND, to_numpy
from tests.layers.gradients import assert_same, value_and_grads

pytestmark = pytest.mark.skipif(
    BACKEND == "torch", reason="torch trains with its native kernels"
)


def training_ops():
    if BACKEND == "jax":
        return refiner_module._jax_training_ops()
    return refiner_module._tf_training_ops()


def plain_conv1x1(x, kernel):
    return ops.einsum("bcij,co->boij", x, kernel)


def plain_depthwise(x, kernel):
    """Keras' channels-last depthwise convolution, transposed around."""
    x = ops.transpose(x, (0, 2, 3, 1))
    out = ops.depthwise_conv(x, kernel[:, :, :, None], padding="same")
    return ops.transpose(out, (0, 3, 1, 2))


def plain_batch_norm(x, gamma, beta, epsilon):
    mean = ops.mean(x, axis=(0, 2, 3))
    variance = ops.var(x, axis=(0, 2, 3))
    scale = gamma * ops.rsqrt(variance + epsilon)
    out = (x - mean[:, None, None]) * scale[:, None, None] + beta[:, None, None]
    return out, mean, variance


COMPILED = [True, False] if BACKEND == "tensorflow" else [True]
# Odd and non-square grids, kernels 3 and 5.
SHAPES = [((2, 5, 9, 9), 3), ((3, 4, 7, 11), 5), ((1, 3, 6, 5), 3)]


@pytest.mark.parametrize("compiled", COMPILED)
@pytest.mark.parametrize("shape, size", SHAPES)
def test_depthwise_gradients_equal_autodiff(shape, size, compiled):
    rng = np.random.default_rng(size)
    x = rng.normal(size=shape).astype("float32")
    kernel = rng.normal(size=(size, size, shape[1])).astype("float32")
    cotangent = rng.normal(size=shape).astype("float32")
    depthwise = training_ops()[1]
    result = value_and_grads(depthwise, (x, kernel), cotangent, compiled)
    expected = value_and_grads(plain_depthwise, (x, kernel), cotangent, compiled)
    assert_same(result, expected)


@pytest.mark.parametrize("compiled", COMPILED)
@pytest.mark.parametrize("shape, out_channels", [((2, 4, 9, 9), 12), ((3, 12, 7, 5), 4)])
def test_conv1x1_gradients_equal_autodiff(shape, out_channels, compiled):
    rng = np.random.default_rng(out_channels)
    x = rng.normal(size=shape).astype("float32")
    kernel = rng.normal(size=(shape[1], out_channels)).astype("float32")
    out_shape = (shape[0], out_channels) + shape[2:]
    cotangent = rng.normal(size=out_shape).astype("float32")
    conv1x1 = training_ops()[0]
    result = value_and_grads(conv1x1, (x, kernel), cotangent, compiled)
    expected = value_and_grads(plain_conv1x1, (x, kernel), cotangent, compiled)
    assert_same(result, expected)


@pytest.mark.parametrize("compiled", COMPILED)
@pytest.mark.parametrize("shape", [(2, 6, 9, 9), (3, 4, 7, 11), (1, 3, 17, 17)])
def test_batch_norm_gradients_and_statistics_equal_autodiff(shape, compiled):
    rng = np.random.default_rng(shape[1])
    # Large offsets: the one-pass variance must not lose them to cancellation.
    x = (rng.normal(size=shape) * 0.1 + rng.uniform(-3, 3, size=(1, shape[1], 1, 1)))
    x = x.astype("float32")
    gamma = rng.uniform(0.5, 1.5, size=shape[1]).astype("float32")
    beta = rng.normal(size=shape[1]).astype("float32")
    cotangent = rng.normal(size=shape).astype("float32")
    batch_norm = training_ops()[2]
    fused = lambda *a: batch_norm(*a, 1e-5)  # noqa: E731
    plain = lambda *a: plain_batch_norm(*a, 1e-5)  # noqa: E731
    args = (x, gamma, beta)
    assert_same(
        value_and_grads(fused, args, cotangent, compiled),
        value_and_grads(plain, args, cotangent, compiled),
    )
    (_, mean, variance), (_, ref_mean, ref_variance) = fused(*args), plain(*args)
    np.testing.assert_allclose(to_numpy(mean), to_numpy(ref_mean), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(to_numpy(variance), to_numpy(ref_variance), rtol=1e-4)
