"""The contract every public layer keeps, on every backend.

Config and `.keras` round trips give identical outputs, `jit_compile` gives
the eager result, and a `mixed_bfloat16` policy runs with its sensitive parts
in float32 and stays close to float32.
"""

import keras
import numpy as np
import pytest

from keras_spvit import layers
from tests.conftest import BACKEND, bf16_matmul_error_factor, to_numpy

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
    "AttentionRefiner": (lambda d: layers.AttentionRefiner(dtype=d), (2, 2, 6, 6)),
    "MultiHeadSelfAttention_refined": (
        lambda d: layers.MultiHeadSelfAttention(
            2, refiner=layers.AttentionRefiner(kernel_size=5), dtype=d
        ),
        (2, 7, 16),
    ),
    "TokenPooling_2d_conv_width": (
        lambda d: layers.TokenPooling("2d", "conv", output_dim=24, grid_shape=(2, 3), dtype=d),
        (2, 7, 16),
    ),
    "TokenPooling_1d_max": (lambda d: layers.TokenPooling("1d", "max", dtype=d), (2, 8, 16)),
    "TokenPooling_2d_avg": (
        lambda d: layers.TokenPooling("2d", "avg", num_prefix_tokens=0, dtype=d),
        (2, 9, 16),
    ),
}
# Layers that take the previous attention map: name -> (factory, shape, map shape).
MAP_LAYERS = {
    "SharedAttention_refined": (
        lambda d: layers.SharedAttention(
            2, refiner=layers.AttentionRefiner(), output_attention_map=True, dtype=d
        ),
        (2, 7, 16),
        (2, 2, 7, 7),
    ),
    "MultiHeadSelfAttention_previous_map": (
        lambda d: layers.MultiHeadSelfAttention(
            2, previous_map_scale=0.25, output_attention_map=True, dtype=d
        ),
        (2, 7, 16),
        (2, 2, 7, 7),
    ),
    "TransformerBlock_shared": (
        lambda d: layers.TransformerBlock(
            layers.SharedAttention(2, refiner=layers.AttentionRefiner()),
            branch_input_scale=0.5, skip_lam=0.5, mlp_scale_init=1e-5, dtype=d,
        ),
        (2, 7, 16),
        (2, 2, 7, 7),
    ),
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
    """A functional model around the layer, and an input for it.

    Map-taking layers get a second input, the previous attention map; `x` is
    then a list of both.
    """
    rng = np.random.default_rng(1)
    if name in MAP_LAYERS:
        factory, shape, map_shape = MAP_LAYERS[name]
        tokens = keras.Input(shape[1:])
        previous = keras.Input(map_shape[1:])
        layer = factory(dtype)
        model = keras.Model([tokens, previous], layer(tokens, attention_map=previous))
        maps = rng.uniform(size=map_shape)
        x = [rng.normal(size=shape).astype("float32"),
             (maps / maps.sum(-1, keepdims=True)).astype("float32")]
    else:
        factory, shape = LAYERS[name]
        inputs = keras.Input(shape[1:], batch_size=None)
        layer = factory(dtype)
        model = keras.Model(inputs, layer(inputs))
        x = rng.normal(size=shape).astype("float32")
    perturb(layer)
    return model, layer, x


ALL_LAYERS = sorted(LAYERS) + sorted(MAP_LAYERS)


def outputs(model_or_layer, x):
    """Numpy outputs of a model on `x`, flattened to a list."""
    return [to_numpy(t) for t in keras.tree.flatten(model_or_layer(x))]


@pytest.mark.parametrize("name", ALL_LAYERS)
def test_config_round_trip(name):
    model, layer, x = as_model(name)
    clone = layer.__class__.from_config(layer.get_config())
    clone_model = keras.Model(model.inputs, keras.tree.flatten(model.outputs))
    clone_model = keras.Model.from_config(
        clone_model.get_config(),
        custom_objects={type(layer).__name__: type(layer)},
    )
    clone_model.set_weights(model.get_weights())
    for actual, expected in zip(outputs(clone_model, x), outputs(model, x)):
        np.testing.assert_array_equal(actual, expected)
    assert clone.get_config() == layer.get_config()


@pytest.mark.parametrize("name", ALL_LAYERS)
def test_keras_file_round_trip(name, tmp_path):
    model, _, x = as_model(name)
    path = tmp_path / "layer.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    for actual, expected in zip(outputs(restored, x), outputs(model, x)):
        np.testing.assert_array_equal(actual, expected)


@pytest.mark.skipif(BACKEND == "torch", reason="jit_compile is XLA on TensorFlow and JAX")
@pytest.mark.parametrize("name", ALL_LAYERS)
def test_jit_compile_matches_eager(name):
    model, _, x = as_model(name)
    model.compile(jit_compile=True)
    jitted = [np.asarray(t) for t in keras.tree.flatten(model.predict(x, verbose=0))]
    for actual, expected in zip(jitted, outputs(model, x)):
        # Float32 reassociation only: 1e-5 of the output's scale.
        np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-5 * np.abs(expected).max())


@pytest.mark.parametrize("name", ALL_LAYERS)
def test_mixed_bfloat16_runs_close_to_float32(name):
    reference, _, x = as_model(name)
    mixed, layer, _ = as_model(name, dtype="mixed_bfloat16")
    assert all(w.dtype == "float32" for w in layer.weights)
    for actual, expected in zip(outputs(mixed, x), outputs(reference, x)):
        actual = actual.astype("float32")
        assert np.all(np.isfinite(actual))
        # Measured max |error| / max |output| over the table: 0.0082 (TF, JAX),
        # 0.0068 (torch); bound 2x. TensorFlow without native bfloat16 (AVX2):
        # 0.0164, its matmuls' factor ~2 (`bf16_matmul_error_factor`).
        error = np.abs(actual - expected).max() / np.abs(expected).max()
        assert error <= 0.016 * bf16_matmul_error_factor(), (name, error)


@pytest.mark.parametrize("path", ["default", "explicit"])
def test_mixed_bfloat16_attention_paths_against_float32(path):
    """The default path (the fused `dot_product_attention` on JAX and torch,
    explicit on TensorFlow under bfloat16) and the explicit one (forced by
    `return_attention_scores`), against the float32 layer with the same
    weights; the explicit path's softmax comes back float32."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 50, 32)).astype("float32")
    reference = layers.MultiHeadSelfAttention(2, dtype="float32")
    reference.build((None, 50, 32))
    for variable in reference.weights:
        variable.assign(rng.normal(0, 0.3, variable.shape).astype("float32"))
    mixed = layers.MultiHeadSelfAttention(2, dtype="mixed_bfloat16")
    mixed.build((None, 50, 32))
    mixed.set_weights(reference.get_weights())
    expected, expected_scores = reference(x, return_attention_scores=True)
    if path == "default":
        actual = mixed(x)
    else:
        actual, scores = mixed(x, return_attention_scores=True)
        assert keras.backend.standardize_dtype(scores.dtype) == "float32"
        # Softmax of float32 logits of bfloat16 q, k: measured 0.0084 (all
        # backends) max absolute error on weights in [0, 1]; bound 2x.
        score_error = np.abs(to_numpy(scores) - to_numpy(expected_scores)).max()
        assert score_error < 0.017, score_error
    expected = to_numpy(expected)
    # Measured max |error| / max |output|: 0.0078 on both paths, all backends;
    # bound 2x.
    error = np.abs(to_numpy(actual).astype("float32") - expected).max() / np.abs(expected).max()
    assert error < 0.016, error
