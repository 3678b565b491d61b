"""The contract every public layer keeps, on every backend.

Config and `.keras` round trips give identical outputs, `jit_compile` gives
the eager result, and a `mixed_bfloat16` policy runs with its sensitive parts
in float32 and stays close to float32.
"""

import keras
import numpy as np
import pytest

from keras_spvit import layers
from tests.conftest import BACKEND, to_numpy

# name -> (factory(dtype), input shape)
LAYERS = {
    "ClassToken": (lambda d: layers.ClassToken(dtype=d), (2, 6, 16)),
    "PositionEmbedding": (lambda d: layers.PositionEmbedding(dtype=d), (2, 6, 16)),
    "DropPath": (lambda d: layers.DropPath(0.2, seed=1, dtype=d), (2, 6, 16)),
    "MLP": (lambda d: layers.MLP(24, dtype=d), (2, 6, 16)),
    "MultiHeadSelfAttention": (
        lambda d: layers.MultiHeadSelfAttention(2, qkv_bias=True, dtype=d),
        (2, 7, 16),
    ),
    "SpatialPriorAttention": (
        lambda d: layers.SpatialPriorAttention(2, grid_shape=(2, 3), dtype=d),
        (2, 6, 16),
    ),
    "PosCNN": (lambda d: layers.PosCNN(grid_shape=(3, 2), num_prefix_tokens=1, dtype=d), (2, 7, 16)),
    "ConvStem_4_2": (lambda d: layers.ConvStem(16, stem="4_2", dtype=d), (2, 32, 48, 3)),
    "ConvStem_patch": (
        lambda d: layers.ConvStem(16, stem="patch", patch_size=4, dtype=d),
        (2, 8, 12, 3),
    ),
    "TransformerBlock_spatial_prior": (
        lambda d: layers.TransformerBlock(
            layers.SpatialPriorAttention(2, grid_shape=(2, 3), dtype=d),
            mlp_ratio=2.0, skip_lam=2.0, drop_path_rate=0.1, dtype=d,
        ),
        (2, 6, 16),
    ),
    "TransformerBlock_vanilla": (
        lambda d: layers.TransformerBlock(
            layers.MultiHeadSelfAttention(4, dtype=d), mlp_ratio=3.0, dtype=d
        ),
        (2, 7, 16),
    ),
    "TokenLabelingHead": (lambda d: layers.TokenLabelingHead(5, dtype=d), (2, 7, 16)),
}


def perturb(layer, seed=0):
    """Randomises every variable so no output is trivially the init's."""
    rng = np.random.default_rng(seed)
    for variable in layer.weights:
        value = rng.normal(0.0, 0.3, variable.shape)
        if "variance" in variable.path:
            value = np.abs(value) + 0.5
        variable.assign(value.astype(variable.dtype))


def as_model(name, dtype=None):
    factory, shape = LAYERS[name]
    inputs = keras.Input(shape[1:], batch_size=None)
    layer = factory(dtype)
    model = keras.Model(inputs, layer(inputs))
    perturb(layer)
    x = np.random.default_rng(1).normal(size=shape).astype("float32")
    return model, layer, x


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_config_round_trip(name):
    model, layer, x = as_model(name)
    clone = layer.__class__.from_config(layer.get_config())
    clone.build(x.shape)
    clone.set_weights(layer.get_weights())
    np.testing.assert_array_equal(to_numpy(clone(x)), to_numpy(layer(x)))
    assert clone.get_config() == layer.get_config()


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_keras_file_round_trip(name, tmp_path):
    model, _, x = as_model(name)
    path = tmp_path / "layer.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    np.testing.assert_array_equal(to_numpy(restored(x)), to_numpy(model(x)))


@pytest.mark.skipif(BACKEND == "torch", reason="jit_compile is XLA on TensorFlow and JAX")
@pytest.mark.parametrize("name", sorted(LAYERS))
def test_jit_compile_matches_eager(name):
    model, _, x = as_model(name)
    model.compile(jit_compile=True)
    expected = to_numpy(model(x))
    # Float32 reassociation only: 1e-5 of the output's scale.
    np.testing.assert_allclose(
        model.predict(x, verbose=0), expected, rtol=0, atol=1e-5 * np.abs(expected).max()
    )


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_mixed_bfloat16_runs_close_to_float32(name):
    reference, _, x = as_model(name)
    mixed, layer, _ = as_model(name, dtype="mixed_bfloat16")
    assert all(w.dtype == "float32" for w in layer.weights)
    expected = to_numpy(reference(x))
    actual = to_numpy(mixed(x)).astype("float32")
    assert np.all(np.isfinite(actual))
    scale = np.abs(expected).max()
    assert np.abs(actual - expected).max() <= 0.05 * scale + 0.05
