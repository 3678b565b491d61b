"""`load_official_weights`: checkpoint files, strictness, and full-size key lists."""

import numpy as np
import pytest

import keras_spvit
from keras_spvit.conversion.spvit import spvit_weight_map
from keras_spvit.utils.torch_checkpoint import UnsafeCheckpointError
from tests.conftest import BACKEND, FIXTURES, load_fixture, nhwc, to_numpy
from tests.models.spvit.test_spvit_parity import build_from_meta
from tests.torch_format import write_torch_checkpoint, write_torch_zip

LOGITS_TOL = 5e-6


@pytest.fixture(scope="module")
def k2():
    arrays, state_dict, meta = load_fixture("spvit_tiny_k2")
    return arrays, state_dict, meta


def logits(model, arrays):
    out = model(nhwc(arrays["input"]))
    return to_numpy(out["logits"] if isinstance(out, dict) else out)


def test_numpy_written_checkpoint_with_ema_and_module_prefix(k2, tmp_path):
    arrays, state_dict, meta = k2
    noisy = {k: v + 1.0 if v.dtype == np.float32 else v for k, v in state_dict.items()}
    path = tmp_path / "spvit.pth.tar"
    write_torch_checkpoint(
        path,
        {
            "epoch": 300,
            "state_dict": {f"module.{k}": v for k, v in noisy.items()},
            "state_dict_ema": {f"module.{k}": v for k, v in state_dict.items()},
        },
    )
    model = build_from_meta(meta)
    keras_spvit.load_official_weights(model, path, prefer_ema=True)
    assert np.abs(logits(model, arrays) - arrays["logits"]).max() <= LOGITS_TOL
    keras_spvit.load_official_weights(model, path)
    assert np.abs(logits(model, arrays) - arrays["logits"]).max() > 1e-2


def test_torch_saved_checkpoint(k2, tmp_path):
    torch = pytest.importorskip("torch")
    arrays, state_dict, meta = k2
    path = tmp_path / "spvit.pth"
    torch.save({k: torch.from_numpy(v.copy()) for k, v in state_dict.items()}, path)
    model = build_from_meta(meta)
    keras_spvit.load_official_weights(model, path)
    assert np.abs(logits(model, arrays) - arrays["logits"]).max() <= LOGITS_TOL


def test_backbone_skips_the_heads(k2):
    arrays, state_dict, meta = k2
    backbone = build_from_meta(meta).backbone
    keras_spvit.load_official_weights(backbone, state_dict)
    features = arrays["features"]
    error = np.abs(to_numpy(backbone(nhwc(arrays["input"]))) - features).max()
    assert error <= 1e-5 * np.abs(features).max()


def test_malicious_checkpoint_is_refused(k2, tmp_path):
    _, _, meta = k2
    path = tmp_path / "evil.pth"
    marker = tmp_path / "pwned"
    payload = (
        b"\x80\x02cos\nsystem\n(X"
        + len(f"touch {marker}").to_bytes(4, "little")
        + f"touch {marker}".encode()
        + b"tR."
    )
    write_torch_zip(path, payload, {})
    with pytest.raises(UnsafeCheckpointError, match="system"):
        keras_spvit.load_official_weights(build_from_meta(meta), path)
    assert not marker.exists()


def test_missing_unexpected_and_mismatched_keys_are_named(k2):
    _, state_dict, meta = k2
    model = build_from_meta(meta)
    before = [to_numpy(w).copy() for w in model.weights]
    broken = dict(state_dict)
    del broken["blocks.1.mlp.fc1.bias"]
    broken["blocks.9.extra.weight"] = np.zeros((3, 4), "float32")
    broken["norm.weight"] = np.zeros((65,), "float32")
    with pytest.raises(ValueError) as info:
        keras_spvit.load_official_weights(model, broken)
    message = str(info.value)
    assert "blocks.1.mlp.fc1.bias" in message and "[192]" in message
    assert "blocks.9.extra.weight [3, 4]" in message
    assert "norm.weight: checkpoint [65]" in message and "[64]" in message
    # Nothing was assigned.
    for variable, value in zip(model.weights, before):
        np.testing.assert_array_equal(to_numpy(variable), value)


def test_spatial_prior_layout_mismatch_gets_a_hint(k2):
    _, state_dict, meta = k2
    meta = dict(meta, constructor_kwargs=dict(meta["constructor_kwargs"], local_up_to_layer=1))
    with pytest.raises(ValueError, match=r"blocks \[0, 1\].*spatial_prior_blocks=2"):
        keras_spvit.load_official_weights(build_from_meta(meta), state_dict)


def official_keys(name):
    lines = (FIXTURES / f"keys_{name}_224.txt").read_text().splitlines()
    keys = {}
    for line in lines:
        if line.startswith("#") or not line.strip():
            continue
        key, rest = line.split(" ", 1)
        shape = rest[rest.index("[") + 1 : rest.index("]")]
        keys[key] = tuple(int(s) for s in shape.split(",") if s.strip())
    return keys


@pytest.mark.large
@pytest.mark.skipif(BACKEND != "tensorflow", reason="backend-independent; built once")
@pytest.mark.parametrize(
    "name, builder",
    [
        ("spvit_s", keras_spvit.SPViT_S),
        ("spvit_m", keras_spvit.SPViT_M),
        ("spvit_l", keras_spvit.SPViT_L_Released),
        ("spvit_l_spsa", keras_spvit.SPViT_L),
    ],
)
@pytest.mark.usefixtures("zero_initializers")  # shapes only
def test_mapping_covers_the_full_size_state_dicts(name, builder):
    keys = official_keys(name)
    model = builder()
    weight_map = spvit_weight_map(model.backbone, model.head)
    expected = {k for k in keys if not k.endswith("num_batches_tracked")}
    assert set(weight_map) == expected
    for key, (variable, transform) in weight_map.items():
        converted = transform(np.zeros(keys[key], "float32"))
        assert converted.shape == tuple(variable.shape), key
