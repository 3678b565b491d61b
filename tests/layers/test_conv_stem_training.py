"""ConvStem in training: its fused BatchNorm + ReLU (TensorFlow) computes
what Keras' `BatchNormalization` then `ReLU` compute: outputs, gradients,
moving statistics."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_spvit import layers
from keras_spvit.layers import _batch_norm_relu
from tests.conftest import BACKEND, to_numpy
from tests.layers.test_attention_refiner_kernels import assert_same, value_and_grads

EPSILON = 1e-5


def plain_batch_norm_relu(x, gamma, beta):
    mean = ops.mean(x, axis=(0, 1, 2))
    variance = ops.var(x, axis=(0, 1, 2))
    return ops.relu((x - mean) * gamma * ops.rsqrt(variance + EPSILON) + beta)


@pytest.mark.skipif(BACKEND != "tensorflow", reason="JAX and torch keep Keras' layers")
@pytest.mark.parametrize("compiled", [True, False], ids=["xla", "eager"])
def test_fused_op_gradients_equal_autodiff(compiled):
    rng = np.random.default_rng(0)
    # An offset mean and a spread like a convolution's output's.
    x = (rng.standard_normal((2, 6, 10, 8)) * 3 + 5).astype("float32")
    gamma = rng.uniform(0.5, 1.5, 8).astype("float32")
    beta = rng.standard_normal(8).astype("float32")
    cotangent = rng.standard_normal(x.shape).astype("float32")
    fused = _batch_norm_relu._fused_op()

    def fn(x, gamma, beta):
        return fused(x, gamma, beta, EPSILON)

    assert_same(
        value_and_grads(fn, (x, gamma, beta), cotangent, compiled),
        value_and_grads(plain_batch_norm_relu, (x, gamma, beta), cotangent, compiled),
    )


def test_stem_training_equals_keras_layers():
    """Output and moving statistics of a training call, against the stem's
    own Keras layers run one by one (fresh copies of the same weights)."""
    images = np.random.default_rng(1).standard_normal((2, 32, 48, 3)).astype("float32")
    stem = layers.ConvStem(16, stem="4_2")
    stem.build(images.shape)
    for norm in stem.conv_layers[2::3]:  # non-trivial statistics to carry over
        norm.moving_mean.assign(np.full(norm.moving_mean.shape, 0.3, "float32"))
        norm.gamma.assign(np.linspace(0.5, 1.5, norm.gamma.shape[0]).astype("float32"))
    reference = layers.ConvStem.from_config(stem.get_config())
    reference.build(images.shape)
    reference.set_weights(stem.get_weights())

    out = to_numpy(stem(images, training=True))
    x = images
    for layer in reference.conv_layers:
        is_norm = isinstance(layer, keras.layers.BatchNormalization)
        x = layer(x, training=True) if is_norm else layer(x)
    expected = to_numpy(reference.proj(x))

    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    for got, want in zip(stem.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
