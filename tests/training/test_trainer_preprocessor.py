"""`keras_spvit.training.fit` on a model that carries a preprocessor (a preset's)."""

import json

import keras
import pytest

import keras_spvit
from keras_spvit.data.sources import source_dataset
from keras_spvit.models.presets import PRESETS_DIR
from keras_spvit.training import fit, get_recipe

NAME = "spvit_tiny_digits"


def test_fit_does_not_preprocess_the_pipelines_images_twice(tmp_path):
    # The pipelines hand `fit` normalised images; keras-hub's `fit` maps the
    # model's preprocessor over its input, so a preset's model validated on
    # doubly preprocessed digits (13% instead of 98.9%) and trained on them.
    model = keras_spvit.SPViT_Tiny(weights=NAME)
    preprocessor = model.preprocessor
    assert preprocessor is not None
    size = model.input_shape[1]
    train, _ = source_dataset("digits", "train", image_size=size, batch_size=64, training=True,
                              seed=0)
    test, _ = source_dataset("digits", "test", image_size=size, batch_size=128, training=False)
    frozen = get_recipe("digits", base_learning_rate=0.0, warmup_learning_rate=0.0,
                        min_learning_rate=0.0, ema_momentum=None)
    summary = fit(model, train.take(2), test, recipe=frozen, batch_size=64,
                  out_dir=str(tmp_path / "run"), epochs=1, steps_per_epoch=2, verbose=0,
                  jit_compile=keras.backend.backend() == "jax")
    stated = json.loads((PRESETS_DIR / NAME / "metadata.json").read_text())["held_out_accuracy"]
    # A learning rate of 0 keeps the preset's weights: its stated held-out accuracy
    # (one image of 359 for the backends' bicubic kernels, as in test_digits_preset.py).
    assert summary["val_accuracy"] == pytest.approx(stated, abs=1 / 359 + 1e-9)
    assert model.preprocessor is preprocessor  # back for model.keras and predict
