"""TokenPooling: what it computes and what it refuses."""

import numpy as np
import pytest

from keras_spvit import layers
from tests.conftest import to_numpy


def tokens(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def test_2d_average_pools_grid_windows_and_keeps_the_class_token():
    x = tokens((2, 1 + 4 * 6, 3))
    pool = layers.TokenPooling("2d", "avg", grid_shape=(4, 6))
    y = to_numpy(pool(x))
    np.testing.assert_array_equal(y[:, 0], x[:, 0])
    grid = x[:, 1:].reshape(2, 2, 2, 3, 2, 3).mean(axis=(2, 4)).reshape(2, 6, 3)
    np.testing.assert_allclose(y[:, 1:], grid, atol=1e-6)
    assert pool.output_grid_shape == (2, 3)


def test_1d_max_pools_neighbouring_tokens():
    x = tokens((2, 1 + 6, 3))
    y = to_numpy(layers.TokenPooling("1d", "max")(x))
    np.testing.assert_allclose(y[:, 1:], x[:, 1:].reshape(2, 3, 2, 3).max(axis=2), atol=0)


def test_odd_grid_rounds_up_and_width_change_projects_the_class_token():
    x = tokens((2, 1 + 5 * 5, 8))
    pool = layers.TokenPooling("2d", "conv", output_dim=12)
    y = to_numpy(pool(x))
    assert y.shape == (2, 1 + 9, 12) and pool.output_grid_shape == (3, 3)
    expected_cls = x[:, :1] @ to_numpy(pool.prefix_proj.kernel) + to_numpy(pool.prefix_proj.bias)
    np.testing.assert_allclose(y[:, :1], expected_cls, atol=1e-5)


@pytest.mark.parametrize(
    "pool, shape, match",
    [
        (layers.TokenPooling("2d", grid_shape=(1, 8)), (1, 9, 4), r"1 x 8 token grid"),
        (layers.TokenPooling("1d"), (1, 2, 4), r"1 x 1 token grid"),
        (layers.TokenPooling("2d"), (1, 1 + 6, 4), "6 patch tokens"),
    ],
)
def test_grids_that_cannot_be_pooled_are_named(pool, shape, match):
    with pytest.raises(ValueError, match=match):
        pool(np.zeros(shape, "float32"))


@pytest.mark.parametrize(
    "kwargs, match",
    [(dict(mode="3d"), "'3d'"), (dict(pooling="mean"), "'mean'"), (dict(output_dim=0), "output_dim=0")],
)
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        layers.TokenPooling(**kwargs)
