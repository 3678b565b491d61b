"""The built-in preset: trained by this package on the bundled digits, and
right on the images the public digits loader returns."""

import json

import keras
import numpy as np
import pytest

import keras_spvit
from keras_spvit.data import digits_split
from keras_spvit.models.presets import PRESETS_DIR, registered_presets

NAME = "spvit_tiny_digits"


def _held_out():
    return digits_split("test")  # what a user gets: uint8 (359, 8, 8, 3) in 0..255


def _accuracy(model, images, labels):
    logits = keras.ops.convert_to_numpy(model.predict(images, batch_size=512, verbose=0))
    return float(np.mean(logits.argmax(-1) == labels))


def test_loads_by_name_offline_with_its_stated_accuracy():
    assert NAME in registered_presets()
    metadata = json.loads((PRESETS_DIR / NAME / "metadata.json").read_text())
    model = keras_spvit.SPViTImageClassifier.from_preset(NAME)
    assert model.preprocessor is not None  # uint8 images in, as the metadata says
    images, labels = _held_out()
    accuracy = _accuracy(model, images, labels)
    # Measured on TensorFlow when the preset was made; bicubic upsampling differs
    # slightly between backends' resize kernels, so allow one image of 359 there.
    tolerance = 0.0 if keras.backend.backend() == "tensorflow" else 1 / 359 + 1e-9
    assert accuracy == pytest.approx(metadata["held_out_accuracy"], abs=tolerance)
    assert accuracy > 0.95


def test_builder_takes_the_preset_name():
    model = keras_spvit.SPViT_Tiny(weights=NAME)
    reference = keras_spvit.SPViTImageClassifier.from_preset(NAME)
    images, _ = _held_out()
    # The builder path gives the same network (no preprocessor: feed normalised input).
    x = reference.preprocessor(images[:8])
    x = x[0] if isinstance(x, tuple) else x
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(model(x)),
        keras.ops.convert_to_numpy(reference.predict(images[:8], verbose=0)),
        atol=1e-5,
    )
