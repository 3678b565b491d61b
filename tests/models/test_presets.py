"""Presets the keras-hub way: folders, registered names, hub handles, every family."""

import json
import shutil
import warnings

import keras
import keras_hub
import numpy as np
import pytest
from keras_hub.src.utils import preset_utils

import keras_spvit
from keras_spvit.models.image_classifier_preprocessor import default_preprocessor
from keras_spvit.models.presets import (
    PRESETS_DIR,
    PresetError,
    register_presets,
    registered_presets,
    unregister_preset,
)
from tests.conftest import to_numpy
from tests.models.test_model_contract import COMMON
from tests.models.test_model_contract import build as contract_model

CLASSES = {
    "spvit": (keras_spvit.SPViTImageClassifier, keras_spvit.SPViTBackbone),
    "refined_vit": (keras_spvit.RefinedViTImageClassifier, keras_spvit.RefinedViTBackbone),
    "psvit": (keras_spvit.PSViTImageClassifier, keras_spvit.PSViTBackbone),
}
PRESET_FILES = {
    "config.json", "metadata.json", "model.weights.h5", "task.json", "task.weights.h5",
    "preprocessor.json", "image_converter.json",
}


def images(shape=(32, 32, 3), batch=2, seed=0):
    return np.random.default_rng(seed).normal(size=(batch, *shape)).astype("float32")


def perturb(model, seed=1):
    """Non-trivial values everywhere (zero biases would hide a missed head)."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        value = to_numpy(variable)
        noise = rng.normal(0, 0.05, value.shape).astype(value.dtype)
        if "moving_variance" in variable.path:
            noise = np.abs(noise)
        variable.assign(value + noise)


def with_preprocessing(model):
    model.preprocessor = default_preprocessor(model, crop_pct=0.875)
    return model


@pytest.fixture(scope="module")
def spvit_preset(tmp_path_factory):
    keras.utils.set_random_seed(0)
    model = with_preprocessing(keras_spvit.SPViT_Tiny(num_classes=4))
    perturb(model)
    folder = tmp_path_factory.mktemp("presets") / "spvit_tiny"
    model.save_to_preset(folder)
    return folder, to_numpy(model(images()))


@pytest.mark.parametrize("family", sorted(CLASSES))
def test_round_trip_of_every_family(family, tmp_path):
    """The model contract's configurations: non-square grid, each family's layers."""
    classifier_cls, backbone_cls = CLASSES[family]
    model = with_preprocessing(contract_model(family))
    perturb(model)
    model.save_to_preset(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == PRESET_FILES
    metadata = json.loads((tmp_path / "metadata.json").read_text())
    assert metadata["parameter_count"] == model.backbone.count_params()

    x = images(COMMON["image_shape"])
    expected = to_numpy(model(x))
    for loader in (classifier_cls.from_preset, keras_hub.models.ImageClassifier.from_preset):
        loaded = loader(str(tmp_path))  # keras-hub's takes strings only
        assert type(loaded) is classifier_cls
        np.testing.assert_array_equal(to_numpy(loaded(x)), expected)
        assert loaded.preprocessor.image_converter.get_config() == (
            model.preprocessor.image_converter.get_config()
        )
    backbone = backbone_cls.from_preset(tmp_path)
    np.testing.assert_array_equal(to_numpy(backbone(x)), to_numpy(model.backbone(x)))
    converter = keras_hub.layers.ImageConverter.from_preset(str(tmp_path))
    assert type(converter) is classifier_cls.preprocessor_cls.image_converter_cls


def test_predict_runs_the_preset_preprocessing(spvit_preset):
    folder, _ = spvit_preset
    model = keras_spvit.SPViTImageClassifier.from_preset(folder)
    raw = np.random.default_rng(0).integers(0, 256, (2, 40, 48, 3)).astype("uint8")
    expected = to_numpy(model(to_numpy(model.preprocessor(raw))))
    np.testing.assert_allclose(model.predict(raw, verbose=0), expected, atol=1e-4)


def test_backbone_only_preset(spvit_preset, tmp_path):
    folder, _ = spvit_preset
    keras_spvit.SPViTBackbone.from_preset(folder).save_to_preset(tmp_path)
    with pytest.raises(PresetError, match=r"holds a backbone only .*num_classes"):
        keras_spvit.SPViTImageClassifier.from_preset(tmp_path)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        model = keras_spvit.SPViTImageClassifier.from_preset(tmp_path, num_classes=3)
    assert len([w for w in record if "no classification heads" in str(w.message)]) == 1
    assert model.preprocessor is None and model(images()).shape == (2, 3)


@pytest.fixture
def registered(spvit_preset):
    """The preset registered under a name for the test's duration."""
    folder, _ = spvit_preset
    name = "keras_spvit_test_spvit_tiny"
    entry = {"metadata": {"description": "test", "params": 0}, "folder": str(folder)}
    register_presets({name: entry}, keras_spvit.SPViTBackbone)
    yield name
    unregister_preset(name)
    assert name not in preset_utils.BUILTIN_PRESETS


def test_registered_name_loads_offline(registered, spvit_preset):
    _, expected = spvit_preset
    assert registered in keras_spvit.SPViTImageClassifier.presets
    assert registered in keras_spvit.SPViTBackbone.presets
    assert registered not in keras_spvit.RefinedViTBackbone.presets
    for model in (
        keras_spvit.SPViTImageClassifier.from_preset(registered),
        keras_spvit.SPViT_Tiny(weights=registered),
        keras_hub.models.ImageClassifier.from_preset(registered),
    ):
        np.testing.assert_array_equal(to_numpy(model(images())), expected)


def test_registry_paths_and_name_clashes(monkeypatch):
    name = "keras_spvit_test_relative"
    register_presets({name: {"metadata": {}, "folder": "spvit_tiny_digits"}}, keras_spvit.SPViTBackbone)
    try:
        assert registered_presets()[name] == str(PRESETS_DIR / "spvit_tiny_digits")
        assert PRESETS_DIR.name == "presets" and PRESETS_DIR.parent.name == "keras_spvit"
    finally:
        unregister_preset(name)
    # A name keras-hub holds (put there by the test: its registry's contents vary by
    # version, and an empty one would make this check vacuous).
    taken = "keras_spvit_test_hub_owned"
    monkeypatch.setitem(preset_utils.BUILTIN_PRESETS, taken, {"kaggle_handle": "x"})
    with pytest.raises(ValueError, match=f"The preset name '{taken}' is already taken by a "
                       "keras-hub preset"):
        register_presets({taken: {"folder": "x"}}, keras_spvit.SPViTBackbone)
    with pytest.raises(ValueError, match="needs a `folder` or a `kaggle_handle`"):
        register_presets({"keras_spvit_test_empty": {"metadata": {}}}, keras_spvit.SPViTBackbone)
    with pytest.raises(ValueError, match="No keras_spvit preset named"):
        unregister_preset("keras_spvit_test_never_registered")


def test_hub_handles(spvit_preset, tmp_path, monkeypatch):
    """`hf://` and `kaggle://` handles go through keras-hub's download functions."""
    folder, expected = spvit_preset
    requested = []

    def hf_hub_download(repo_id, filename):
        requested.append(("hf", repo_id, filename))
        return _fetch(folder, filename)

    def model_download(handle, path):
        requested.append(("kaggle", handle, path))
        return _fetch(folder, path)

    monkeypatch.setattr(preset_utils.huggingface_hub, "hf_hub_download", hf_hub_download)
    monkeypatch.setattr(preset_utils.kagglehub, "model_download", model_download)
    hf = keras_spvit.SPViTImageClassifier.from_preset("hf://someone/spvit_tiny")
    kaggle = keras_spvit.SPViT_Tiny(weights="kaggle://someone/spvit/keras/spvit_tiny")
    for model in (hf, kaggle):
        np.testing.assert_array_equal(to_numpy(model(images())), expected)
    assert ("hf", "someone/spvit_tiny", "model.weights.h5") in requested
    assert ("kaggle", "someone/spvit/keras/spvit_tiny", "task.weights.h5") in requested


def _fetch(folder, filename):
    path = folder / filename
    if not path.exists():
        raise FileNotFoundError(f"`{filename}` doesn't exist in the hub repository.")
    return str(path)


def test_folder_that_is_not_a_preset(tmp_path):
    with pytest.raises(PresetError, match=r"missing 'config\.json'"):
        keras_spvit.SPViTImageClassifier.from_preset(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "vit"}))
    shutil.copy(tmp_path / "config.json", tmp_path / "other.json")
    with pytest.raises(PresetError, match=r"not a Keras-serialized backbone"):
        keras_spvit.SPViTBackbone.from_preset(tmp_path)
    with pytest.raises(PresetError, match=r"is a file; a preset is a folder"):
        keras_spvit.SPViTBackbone.from_preset(tmp_path / "other.json")
