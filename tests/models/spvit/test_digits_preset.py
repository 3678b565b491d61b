"""The built-in preset: trained by this package on the bundled digits, and
right on the images the public digits loader returns."""

import json

import keras
import numpy as np

import keras_spvit
from keras_spvit.data import digits_split
from keras_spvit.models.presets import PRESETS_DIR, registered_presets

NAME = "spvit_tiny_digits"


def _held_out():
    return digits_split("test")  # what a user gets: uint8 (359, 8, 8, 3) in 0..255


def test_loads_by_name_offline_with_its_stated_accuracy():
    assert NAME in registered_presets()
    metadata = json.loads((PRESETS_DIR / NAME / "metadata.json").read_text())
    model = keras_spvit.SPViTImageClassifier.from_preset(NAME)
    assert model.preprocessor is not None  # uint8 images in, as the metadata says
    images, labels = _held_out()
    logits = keras.ops.convert_to_numpy(model.predict(images, batch_size=512, verbose=0))
    top2 = np.sort(logits.astype("float64"), axis=-1)[:, -2:]
    # Only an image whose top two logits nearly tie can change class between
    # machines and backends. Measured (2026-12-01): logits differ by <= 4.5e-6
    # between TensorFlow, JAX and torch, and the smallest top-2 margin is 0.21;
    # 1e-3 leaves a 200x margin over the kernel differences. So the count of right
    # answers is the stated one exactly, give or take the near ties (none today).
    near_ties = int(((top2[:, 1] - top2[:, 0]) < 1e-3).sum())
    correct = int((logits.argmax(-1) == labels).sum())
    expected = round(metadata["held_out_accuracy"] * len(labels))
    assert abs(correct - expected) <= near_ties, (correct, expected, near_ties)
    accuracy = correct / len(labels)
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
