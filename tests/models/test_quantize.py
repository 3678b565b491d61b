"""Keras' `model.quantize("int8")` on our classifiers: accuracy kept, float
islands kept, saved and reloaded, exported."""

import keras
import numpy as np
import pytest

import keras_spvit
from keras_spvit.data import digits_split
from tests.conftest import to_numpy


@pytest.fixture(scope="module")
def digits():
    return digits_split("test")


@pytest.fixture
def quantized(int8_digits_preset):
    return int8_digits_preset


def _accuracy(model, images, labels):
    logits = to_numpy(model.predict(images, batch_size=128, verbose=0))
    return float(np.mean(logits.argmax(-1) == labels))


def test_int8_keeps_the_presets_held_out_accuracy(quantized, digits):
    images, labels = digits
    float_model = keras_spvit.SPViTImageClassifier.from_preset("spvit_tiny_digits")
    before, after = _accuracy(float_model, *digits), _accuracy(quantized, *digits)
    assert before == pytest.approx(0.9889, abs=0.0015)  # the preset's stated accuracy
    # Target of the issue: within 0.5 points (two of the 359 images).
    assert abs(after - before) <= 0.005, (before, after)
    # Quantization changed the arithmetic: the logits are not the float ones.
    diff = np.abs(to_numpy(quantized.predict(images[:8], verbose=0))
                  - to_numpy(float_model.predict(images[:8], verbose=0))).max()
    assert diff > 0


def test_projections_are_int8_and_priors_norms_stay_float(quantized):
    policies = {layer.path: layer.dtype_policy.name for layer in quantized._flatten_layers()}
    int8 = {path for path, name in policies.items() if name.startswith("int8")}
    # The attention projections, MLPs and heads.
    for path in ("block_0/attn/qk", "block_0/attn/v", "block_2/attn/qkv", "block_0/mlp/fc1"):
        assert any(p.endswith(path) for p in int8), path
    # The heads keep their head_dtype (recorded in the classifier's config).
    assert not any("token_labeling_head" in p for p in int8)
    # Norms, the spatial-prior weights and the convolutions keep float32.
    for layer in quantized._flatten_layers():
        if isinstance(layer, keras.layers.LayerNormalization):
            assert layer.dtype_policy.name == "float32"
    # The spatial-prior MLP's weights (w1, b1, w2, b2 of each SP-SA layer).
    prior = [w for w in quantized.weights
             if w.path.split("/")[-1] in ("w1_kernel", "w1_bias", "w2", "b2")]
    assert len(prior) == 4 * 2 and all(w.dtype == "float32" for w in prior)


def test_quantized_model_saves_and_reloads(quantized, digits, tmp_path):
    path = tmp_path / "int8.keras"
    quantized.save(path)
    reloaded = keras.saving.load_model(path)
    images = digits[0][:16]
    got = to_numpy(reloaded.predict(images, verbose=0))
    expected = to_numpy(quantized.predict(images, verbose=0))
    if keras.backend.backend() == "tensorflow":
        # oneDNN's float rounding differs between the two graphs (1.2e-7); where
        # it moves an activation across an int8 rounding step a logit moves by
        # up to 5e-3 (measured, one image of 16). A lost scale moves them by O(1).
        np.testing.assert_allclose(got, expected, rtol=0, atol=2e-2)
        np.testing.assert_array_equal(got.argmax(-1), expected.argmax(-1))
    else:
        np.testing.assert_array_equal(got, expected)
    for saved, loaded in zip(quantized.weights, reloaded.weights):
        assert saved.path == loaded.path
        np.testing.assert_array_equal(to_numpy(saved), to_numpy(loaded))


def test_quantize_collects_garbage_once_not_once_per_layer(monkeypatch):
    # Keras' `Layer.__delattr__` runs a full `gc.collect()` per deleted kernel
    # (seconds each in a process holding TensorFlow and a few models).
    import gc

    tiny = dict(num_classes=3, image_shape=(16, 16, 3), embed_dim=16, depth=2, num_heads=2,
                spatial_prior_blocks=1, stem="patch", patch_size=4)
    calls = []

    def counting_collect(*args):
        calls.append(args)
        return 0

    monkeypatch.setattr(gc, "collect", counting_collect)
    classifier = keras_spvit.SPViT(**tiny)
    classifier.quantize("int8")
    assert any(layer.quantization_mode == "int8" for layer in classifier._flatten_layers())
    assert len(calls) == 1 and gc.collect is counting_collect
    backbone = keras_spvit.SPViT(**tiny).backbone
    backbone.quantize("int8")
    assert len(calls) == 2 and gc.collect is counting_collect
