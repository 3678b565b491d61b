"""The JAX test sessions' initializer path (tests/jax_initializers.py) gives Keras'
own weights, bit for bit: the suite's numbers do not depend on it."""

import keras
import numpy as np
import pytest

from tests.conftest import BACKEND

pytestmark = pytest.mark.skipif(BACKEND != "jax", reason="a JAX test-session helper")

# Below, at and above the smallest size class (1,024), in one to four dimensions.
SHAPES = [(1,), (3, 5, 7), (64, 16), (1025,), (8, 8, 3, 32)]


def _draws(module, kind, shape, seed):
    if kind == "uniform":
        return module.uniform(shape, -0.37, 0.21, "float32", seed)
    return getattr(module, kind)(shape, 0.25, 0.02, "float32", seed)


@pytest.mark.parametrize("kind", ["normal", "uniform", "truncated_normal"])
def test_every_shape_draws_keras_own_values(kind):
    from tests import jax_initializers

    for i, shape in enumerate(SHAPES):
        expected = np.asarray(_draws(_Original, kind, shape, 1000 + i))
        actual = np.asarray(_draws(jax_initializers, kind, shape, 1000 + i))
        assert actual.shape == shape and actual.dtype == np.float32
        np.testing.assert_array_equal(actual, expected, err_msg=f"{kind} {shape}")


def test_a_model_builds_with_keras_own_weights():
    from keras.src.backend.jax import random as keras_jax_random

    import keras_spvit
    from tests import jax_initializers

    def build():
        keras.utils.set_random_seed(3)
        # Truncated-normal, Glorot-uniform, zeros and ones initializers, a prior.
        return keras_spvit.SPViT(embed_dim=32, depth=2, num_heads=2, spatial_prior_blocks=1,
                                 stem="patch", patch_size=8, num_classes=5,
                                 image_shape=(24, 40, 3))

    assert keras_jax_random.normal is jax_initializers.normal  # installed by conftest
    patched = build().get_weights()
    try:
        for name, function in jax_initializers.ORIGINAL.items():
            setattr(keras_jax_random, name, function)
        original = build().get_weights()
    finally:
        jax_initializers.install()
    assert len(patched) == len(original) > 10
    for a, b in zip(patched, original):
        np.testing.assert_array_equal(a, b)


class _Original:
    """Keras' unpatched functions, under the names the test calls."""

    @staticmethod
    def normal(*args):
        from tests import jax_initializers

        return jax_initializers.ORIGINAL["normal"](*args)

    @staticmethod
    def uniform(*args):
        from tests import jax_initializers

        return jax_initializers.ORIGINAL["uniform"](*args)

    @staticmethod
    def truncated_normal(*args):
        from tests import jax_initializers

        return jax_initializers.ORIGINAL["truncated_normal"](*args)
