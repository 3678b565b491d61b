"""Pretrained weights of every kind: new resolutions, new heads, bad files.

The official `spvit_tiny_k2` weights (dim 64, 4 blocks, K=2, `4_2` stem,
64 px) are `SPViT_Tiny`'s table row with `stem="4_2", patch_size=16`.
`spvit_tiny_k2_res96` holds the same weights run at 96 px after the official
fine-tuning loader's bicubic resize of `pos_embed` (PyTorch's kernel,
a = -0.75): every loading path must land within 1e-5 of its logits.
"""

import warnings

import h5py
import numpy as np
import pytest

import keras_spvit
from keras_spvit.models.presets import PresetError
from keras_spvit.utils.torch_checkpoint import CheckpointFormatError
from tests.conftest import load_fixture, nhwc, to_numpy
from tests.torch_format import write_torch_checkpoint

ARCH = {"stem": "4_2", "patch_size": 16}  # the fixture's, on SPViT_Tiny's row
RES96 = (96, 96, 3)
LOGITS_TOL = 1e-5  # the bound for the resolution change
FRESH = "start from a fresh initialization"


@pytest.fixture(scope="module")
def k2():
    return load_fixture("spvit_tiny_k2")


@pytest.fixture(scope="module")
def res96():
    arrays, state_dict, _ = load_fixture("spvit_tiny_k2_res96")
    return arrays, state_dict


@pytest.fixture(scope="module")
def files(k2, tmp_path_factory):
    """The k2 weights as an official checkpoint, a preset and Keras weights files."""
    _, state_dict, _ = k2
    folder = tmp_path_factory.mktemp("k2")
    checkpoint = folder / "spvit_tiny_k2.pth"
    write_torch_checkpoint(checkpoint, {"state_dict": state_dict, "epoch": 299})
    model = keras_spvit.SPViT_Tiny(weights=checkpoint, **ARCH)
    model.save_to_preset(folder / "preset")
    model.save_weights(folder / "classifier.weights.h5")
    model.backbone.save_weights(folder / "backbone.weights.h5")
    return {
        "official": checkpoint,
        "preset": folder / "preset",
        "keras": folder / "classifier.weights.h5",
        "backbone": folder / "backbone.weights.h5",
    }


def logits(model, images):
    return to_numpy(model(nhwc(images)))


def max_error(actual, expected):
    return float(np.max(np.abs(actual - expected)))


def fresh_head_notices(record):
    return [w for w in record if FRESH in str(w.message)]


def test_official_checkpoint_with_released_preprocessing(k2, files):
    arrays, _, _ = k2
    model = keras_spvit.SPViT_Tiny(weights=files["official"], **ARCH)
    assert model.backbone.image_shape == (64, 64, 3)  # the checkpoint's, not the row's 32 px
    assert model.num_classes == 10
    assert max_error(logits(model, arrays["input"]), arrays["logits"]) <= 5e-6
    converter = model.preprocessor.image_converter
    assert isinstance(converter, keras_spvit.SPViTImageConverter)
    assert converter.image_size == (64, 64)
    assert (converter.crop_pct, converter.interpolation) == (0.9, "bicubic")
    np.testing.assert_allclose(converter.mean, (0.485, 0.456, 0.406))
    np.testing.assert_allclose(converter.std, (0.229, 0.224, 0.225))


def load_at_96(kind, files):
    if kind == "official":
        return keras_spvit.SPViT_Tiny(weights=files["official"], image_shape=RES96, **ARCH)
    if kind == "load_official_weights":
        model = keras_spvit.SPViT_Tiny(num_classes=10, image_shape=RES96, **ARCH)
        return keras_spvit.load_official_weights(model, files["official"])
    if kind == "preset":
        return keras_spvit.SPViT_Tiny(weights=files["preset"], image_shape=RES96, **ARCH)
    if kind == "from_preset":
        return keras_spvit.SPViTImageClassifier.from_preset(files["preset"], image_shape=RES96)
    return keras_spvit.SPViT_Tiny(weights=files["keras"], image_shape=RES96, **ARCH)


@pytest.mark.parametrize(
    "kind", ["official", "load_official_weights", "preset", "from_preset", "keras"]
)
def test_new_resolution_matches_the_official_fine_tuning_resize(kind, files, res96):
    arrays, state_dict = res96
    model = load_at_96(kind, files)
    assert model.backbone.image_shape == RES96
    position = to_numpy(model.backbone.position_embedding.embedding)
    np.testing.assert_allclose(position, state_dict["pos_embed"], rtol=0, atol=1e-6)
    assert max_error(logits(model, arrays["input"]), arrays["logits"]) <= LOGITS_TOL
    if kind in ("preset", "from_preset"):
        assert model.preprocessor.image_converter.image_size == (96, 96)


def test_backbone_from_preset_at_new_resolution(files, res96):
    arrays, _ = res96
    backbone = keras_spvit.SPViTBackbone.from_preset(files["preset"], image_shape=RES96)
    features = arrays["features"]
    error = max_error(to_numpy(backbone(nhwc(arrays["input"]))), features)
    assert error <= 1e-5 * np.abs(features).max()


@pytest.mark.parametrize("kind", ["official", "preset", "from_preset", "keras", "backbone"])
def test_new_heads_keep_the_backbone_and_say_so_once(kind, files, k2):
    arrays, _, _ = k2
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        if kind == "from_preset":
            model = keras_spvit.SPViTImageClassifier.from_preset(files["preset"], num_classes=3)
        elif kind == "backbone":  # a backbone's file has no heads at all
            model = keras_spvit.SPViT_Tiny(weights=files["backbone"], num_classes=3, **ARCH)
        else:
            model = keras_spvit.SPViT_Tiny(weights=files[kind], num_classes=3, **ARCH)
    assert len(fresh_head_notices(record)) == 1, [str(w.message) for w in record]
    assert model.num_classes == 3
    assert logits(model, arrays["input"]).shape == (2, 3)
    features = arrays["features"]
    error = max_error(to_numpy(model.backbone(nhwc(arrays["input"]))), features)
    assert error <= 1e-5 * np.abs(features).max()


def test_the_same_class_count_keeps_the_trained_heads(files, k2):
    arrays, _, _ = k2
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        model = keras_spvit.SPViTImageClassifier.from_preset(files["preset"], num_classes=10)
    assert not fresh_head_notices(record)
    assert max_error(logits(model, arrays["input"]), arrays["logits"]) <= 5e-6


def test_checkpoint_of_another_variant_is_named(files):
    with pytest.raises(ValueError, match=r"spatial_prior_blocks=2") as info:
        keras_spvit.LVViT_Tiny(weights=files["official"], **ARCH)
    assert str(files["official"]) in str(info.value)
    with pytest.raises(PresetError, match=r"spatial_prior_blocks: preset 2, model 0") as info:
        keras_spvit.LVViT_Tiny(weights=files["preset"], **ARCH)
    assert str(files["preset"]) in str(info.value)
    with pytest.raises(PresetError, match=r"SPViTBackbone, not a RefinedViTBackbone"):
        keras_spvit.RefinedViT_Tiny(weights=files["preset"], image_shape=(32, 32, 3))
    with pytest.raises(ValueError, match=r"classifier\.weights\.h5 .*another architecture"):
        keras_spvit.LVViT_Tiny(weights=files["keras"], **ARCH)
    with pytest.raises(ValueError, match=r"classifier\.weights\.h5\) holds 87 weights, .* has 82"):
        keras_spvit.SPViT_Tiny(weights=files["keras"], **ARCH, spatial_prior_blocks=1)


def test_corrupted_and_truncated_files_are_named(files, tmp_path):
    truncated = tmp_path / "truncated.weights.h5"
    truncated.write_bytes(files["keras"].read_bytes()[:5000])
    with pytest.raises(ValueError, match=r"truncated\.weights\.h5.*(truncated|corrupted)"):
        keras_spvit.SPViT_Tiny(weights=truncated, **ARCH)

    garbage = tmp_path / "garbage.weights.h5"
    garbage.write_bytes(b"\x89HDF\r\n" + bytes(range(256)) * 8)
    with pytest.raises(ValueError, match=r"garbage\.weights\.h5"):
        keras_spvit.SPViT_Tiny(weights=garbage, **ARCH)

    checkpoint = tmp_path / "truncated.pth"
    checkpoint.write_bytes(files["official"].read_bytes()[:-4000])
    with pytest.raises(CheckpointFormatError, match=r"truncated\.pth.*truncated or corrupted"):
        keras_spvit.SPViT_Tiny(weights=checkpoint, **ARCH)


def copy_preset(source, target, skip=(), truncate=()):
    target.mkdir()
    for path in source.iterdir():
        if path.name in skip:
            continue
        data = path.read_bytes()
        (target / path.name).write_bytes(data[: len(data) // 2] if path.name in truncate else data)
    return target


@pytest.mark.parametrize(
    "skip, truncate, message",
    [
        (("model.weights.h5",), (), r"missing 'model\.weights\.h5'"),
        (("task.weights.h5",), (), r"missing 'task\.weights\.h5'"),
        (("config.json",), (), r"missing 'config\.json'"),
        ((), ("model.weights.h5",), r"'model\.weights\.h5' of the preset .*truncated"),
        ((), ("task.weights.h5",), r"'task\.weights\.h5' of the preset .*truncated"),
        ((), ("config.json",), r"'config\.json' of the preset .* not valid JSON"),
    ],
)
def test_broken_presets_are_named(files, tmp_path, skip, truncate, message):
    broken = copy_preset(files["preset"], tmp_path / "broken", skip, truncate)
    with pytest.raises(PresetError, match=message) as info:
        keras_spvit.SPViTImageClassifier.from_preset(broken)
    assert str(broken) in str(info.value)
    with pytest.raises(PresetError, match=message):
        keras_spvit.SPViT_Tiny(weights=broken, **ARCH)


def test_weights_argument_is_checked(tmp_path):
    with pytest.raises(TypeError, match=r"weights=123"):
        keras_spvit.SPViT_Tiny(weights=123)
    with pytest.raises(FileNotFoundError, match=r"no_such_thing.*neither a registered preset"):
        keras_spvit.SPViT_Tiny(weights=str(tmp_path / "no_such_thing"))
    saved = tmp_path / "model.keras"
    saved.write_bytes(b"PK")
    with pytest.raises(ValueError, match=r"keras\.saving\.load_model"):
        keras_spvit.SPViT_Tiny(weights=saved)


def test_weights_file_without_a_position_embedding_is_refused(tmp_path):
    path = tmp_path / "other.weights.h5"
    with h5py.File(path, "w") as file:
        file.create_dataset("layers/dense/vars/0", data=np.zeros((3, 4), "float32"))
    with pytest.raises(ValueError, match=r"other\.weights\.h5 holds no position embedding"):
        keras_spvit.SPViT_Tiny(weights=path)
