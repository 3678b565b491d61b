"""A trained classifier's `.keras` round trip keeps how it was compiled and its optimizer state.

Keras skips `compile_from_config` for models whose `compile` is overridden
(keras-hub's tasks and ours); `TokenLabelingImageClassifier` restores it.
"""

import warnings

import keras
import numpy as np
import pytest

import keras_spvit


def _save_and_load_without_warnings(model, tmp_path):
    """`model` through a `.keras` file; Keras warns when it skips the compile state."""
    path = str(tmp_path / "m.keras")
    model.save(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = keras.saving.load_model(path)
    assert not [w for w in caught if "compile" in str(w.message) or "optimizer" in str(w.message)]
    return loaded


def test_save_load_keeps_optimizer_loss_and_optimizer_state(tmp_path):
    model = keras_spvit.SPViT(embed_dim=16, depth=2, num_heads=2, spatial_prior_blocks=1,
                              stem="patch", patch_size=4, num_classes=3, image_shape=(8, 8, 3))
    model.compile(optimizer=keras.optimizers.AdamW(2e-3, weight_decay=0.01),
                  loss=keras.losses.CategoricalCrossentropy(from_logits=True,
                                                            label_smoothing=0.1),
                  metrics=[keras.metrics.CategoricalAccuracy(name="acc")])
    rng = np.random.default_rng(0)
    x = rng.random((4, 8, 8, 3)).astype("float32")
    y = np.eye(3, dtype="float32")[[0, 1, 2, 0]]
    model.fit(x, y, epochs=1, batch_size=4, verbose=0)
    loaded = _save_and_load_without_warnings(model, tmp_path)
    assert isinstance(loaded.optimizer, keras.optimizers.AdamW)
    assert float(loaded.optimizer.learning_rate) == np.float32(2e-3)
    assert loaded.optimizer.weight_decay == 0.01
    assert loaded.loss.label_smoothing == 0.1
    assert int(loaded.optimizer.iterations) == 1
    saved = {v.path: keras.ops.convert_to_numpy(v) for v in model.optimizer.variables}
    restored = {v.path: keras.ops.convert_to_numpy(v) for v in loaded.optimizer.variables}
    assert saved.keys() == restored.keys() and len(saved) > 2
    for key, value in saved.items():
        np.testing.assert_array_equal(restored[key], value)
    # Training continues from the same state: one more step gives the same weights.
    model.fit(x, y, epochs=1, batch_size=4, verbose=0)
    loaded.fit(x, y, epochs=1, batch_size=4, verbose=0)
    for a, b in zip(model.weights, loaded.weights):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(b), keras.ops.convert_to_numpy(a),
                                   rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("return_dense", [False, True])
def test_a_recipe_compiled_classifier_loads_with_its_optimizer_losses_and_metric(
    tmp_path, return_dense
):
    # What `keras-spvit train` saves: the recipe's ParamGroupAdamW and schedule, its losses
    # (soft-target and token-label cross-entropy) and the weighted top-1 accuracy.
    from keras_spvit.training import ParamGroupAdamW, compile_for_training

    model = keras_spvit.SPViT(embed_dim=16, depth=2, num_heads=2, spatial_prior_blocks=1,
                              stem="patch", patch_size=4, num_classes=3, image_shape=(8, 8, 3),
                              return_dense=return_dense)
    compile_for_training(model, "spvit", batch_size=4, steps_per_epoch=2, epochs=1)
    model.optimizer.build(model.trainable_variables)
    loaded = _save_and_load_without_warnings(model, tmp_path)
    assert isinstance(loaded.optimizer, ParamGroupAdamW)
    assert loaded.optimizer.get_config() == model.optimizer.get_config()
    assert len(loaded.optimizer.variables) == len(model.optimizer.variables)
    kinds = lambda loss: sorted(type(v).__name__ for v in (  # noqa: E731
        loss.values() if isinstance(loss, dict) else [loss]))
    assert kinds(loaded.loss) == kinds(model.loss)
    assert "accuracy" in str(loaded.get_compile_config())
