"""Weights files and presets written at another image shape: no twin model, same weights.

The loader reads the stored position embedding from the file and resamples it
(`keras_spvit.models.keras_weights`). The reference here is the path it
replaced, written out independently: a model of the file's shape loads the
file with Keras, every weight is copied, and the position embedding is
resampled by `resample_position_embedding` (PyTorch's bicubic kernel in
numpy) from the file's grid. The weights must be equal bit for bit, on every
family, for backbone files, classifier files (same and other class counts)
and presets (square and non-square grids).
"""

import warnings

import h5py
import keras
import numpy as np
import pytest

import keras_spvit
from keras_spvit.models.keras_weights import load_h5, load_keras_weights
from keras_spvit.utils.resample import resample_position_embedding
from tests.conftest import to_numpy

# One small builder per family (`keras_spvit.zoo.families.FAMILIES`), each with
# a class token or without one (SPViT_Tiny has none).
BUILDERS = ["SPViT_Tiny", "LVViT_Tiny", "RefinedViT_Tiny", "PSViT_Tiny_CPU"]
SOURCE = (32, 32, 3)


def build(name, image_shape, num_classes=3):
    keras.utils.set_random_seed(len(name) + image_shape[0] + 7 * image_shape[1] + num_classes)
    return getattr(keras_spvit, name)(num_classes=num_classes, image_shape=image_shape)


def twin_weights(model, path, image_shape, num_classes=None):
    """Weights the removed twin path gave: a model of the file's shape, copied and resampled."""
    config = model.get_config()
    if "backbone" in config:
        config["backbone"]["config"]["image_shape"] = tuple(image_shape)
        config["num_classes"] = num_classes
    else:
        config["image_shape"] = tuple(image_shape)
    twin = type(model).from_config(config)
    twin.load_weights(path)
    source, target = getattr(twin, "backbone", twin), getattr(model, "backbone", model)
    patch = target.patch_size
    source_grid = (image_shape[0] // patch, image_shape[1] // patch)
    grid = (target.image_shape[0] // patch, target.image_shape[1] // patch)
    prefix = source.position_embedding.embedding.shape[1] - source_grid[0] * source_grid[1]
    expected = []
    for variable in twin.weights:
        value = keras.ops.convert_to_numpy(variable)
        if variable is source.position_embedding.embedding:
            value = resample_position_embedding(value, source_grid, grid, num_prefix_tokens=prefix)
        expected.append(value)
    return expected


def assert_same(actual_weights, expected):
    assert len(actual_weights) == len(expected)
    for variable, value in zip(actual_weights, expected):
        actual = keras.ops.convert_to_numpy(variable)
        assert actual.shape == value.shape, variable.path
        np.testing.assert_array_equal(actual, value.astype(actual.dtype), err_msg=variable.path)


@pytest.mark.parametrize("name", BUILDERS)
@pytest.mark.parametrize("target", [(48, 48, 3), (24, 24, 3)])
def test_backbone_file_at_another_resolution(name, target, tmp_path):
    path = str(tmp_path / "backbone.weights.h5")
    build(name, SOURCE).backbone.save_weights(path)
    model = build(name, target).backbone
    expected = twin_weights(model, path, SOURCE)
    load_keras_weights(model, path)
    assert_same(model.weights, expected)


@pytest.mark.parametrize("name", BUILDERS)
def test_classifier_file_at_another_resolution_keeps_the_heads(name, tmp_path):
    path = str(tmp_path / "classifier.weights.h5")
    build(name, SOURCE).save_weights(path)
    model = build(name, (48, 48, 3))
    expected = twin_weights(model, path, SOURCE, num_classes=3)
    load_keras_weights(model, path)
    assert_same(model.weights, expected)


@pytest.mark.parametrize("name", BUILDERS)
def test_classifier_file_of_other_classes_fills_the_backbone_only(name, tmp_path):
    path = str(tmp_path / "classifier.weights.h5")
    build(name, SOURCE, num_classes=10).save_weights(path)
    model = build(name, (48, 48, 3), num_classes=4)
    heads = [keras.ops.convert_to_numpy(w) for w in model.head.weights]
    expected = twin_weights(model, path, SOURCE, num_classes=10)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        load_keras_weights(model, path)
    assert sum("fresh initialization" in str(w.message) for w in record) == 1
    backbone_count = len(model.backbone.weights)
    assert_same(model.backbone.weights, expected[:backbone_count])
    assert_same(model.head.weights, heads)  # untouched


@pytest.mark.parametrize("name", BUILDERS)
def test_preset_of_a_non_square_grid(name, tmp_path):
    source = (32, 48, 3)
    build(name, source).save_to_preset(tmp_path / "preset")
    classifier_cls = type(build(name, SOURCE))
    model = classifier_cls.from_preset(tmp_path / "preset", image_shape=(40, 40, 3))
    assert model.backbone.image_shape == (40, 40, 3)
    # The preset's `model.weights.h5` is the backbone's file.
    expected = twin_weights(model.backbone, str(tmp_path / "preset" / "model.weights.h5"), source)
    assert_same(model.backbone.weights, expected)
    twin = classifier_cls.from_preset(tmp_path / "preset")
    assert_same(model.head.weights, [keras.ops.convert_to_numpy(w) for w in twin.head.weights])


def test_same_resolution_equals_keras_load_weights(tmp_path):
    path = str(tmp_path / "classifier.weights.h5")
    build("RefinedViT_Tiny", SOURCE).save_weights(path)
    reference = build("RefinedViT_Tiny", SOURCE, num_classes=3)
    reference.load_weights(path)
    model = build("RefinedViT_Tiny", SOURCE, num_classes=3)
    load_h5(model, path, "The file")
    assert_same(model.weights, [keras.ops.convert_to_numpy(w) for w in reference.weights])


def test_sharded_weights_at_another_resolution(tmp_path):
    source = build("SPViT_Tiny", SOURCE).backbone
    source.save_weights(tmp_path / "backbone.weights.json", max_shard_size=0.00005)
    shards = sorted(p.name for p in tmp_path.glob("*.weights.h5"))
    assert len(shards) > 1, shards
    model = build("SPViT_Tiny", (48, 48, 3)).backbone
    load_h5(model, str(tmp_path / "backbone.weights.json"), "The sharded file", (8, 8))
    reference = build("SPViT_Tiny", (48, 48, 3)).backbone
    single = str(tmp_path / "backbone.weights.h5")
    source.save_weights(single)
    load_h5(reference, single, "The file", (8, 8))
    assert_same(model.weights, [keras.ops.convert_to_numpy(w) for w in reference.weights])


def test_a_position_embedding_that_fits_no_grid_is_named(tmp_path):
    path = str(tmp_path / "backbone.weights.h5")
    build("SPViT_Tiny", SOURCE).backbone.save_weights(path)
    model = build("SPViT_Tiny", (48, 48, 3)).backbone
    with pytest.raises(ValueError, match=r"backbone\.weights\.h5.*\(1, 64, 64\)"):
        load_h5(model, path, "The file", source_grid=(4, 4))  # 16 entries, the file has 64
    with h5py.File(path, "r+") as file:  # 63 entries: no grid of this architecture
        del file["layers/position_embedding/vars/0"]
        file["layers/position_embedding/vars/0"] = np.zeros((1, 63, 64), "float32")
    before = [to_numpy(w) for w in model.weights]
    with pytest.raises(ValueError, match=r"backbone\.weights\.h5.*\[1, 63, 64\].*another archi"):
        load_h5(model, path, "The file")
    assert_same(model.weights, before)  # nothing loaded
