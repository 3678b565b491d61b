"""Tests for keras_spvit.utils.torch_checkpoint (torch-free checkpoint reader)."""

import argparse
import collections
import os
import pickle
import struct
import types
import zipfile

import numpy as np
import pytest

from keras_spvit.utils import torch_checkpoint
from keras_spvit.utils.torch_checkpoint import CheckpointFormatError
from keras_spvit.utils.torch_checkpoint import UnsafeCheckpointError
from keras_spvit.utils.torch_checkpoint import extract_state_dict
from keras_spvit.utils.torch_checkpoint import load_torch_state_dict
from keras_spvit.utils.torch_checkpoint import read_torch_checkpoint
from tests.torch_format import (
    pickle_dict,
    pickle_global,
    pickle_int,
    pickle_str,
    pickle_tensor,
    pickle_tuple,
    write_torch_zip,
)

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
SYS_INFO = {
    "protocol_version": 1001,
    "little_endian": True,
    "type_sizes": {"short": 2, "int": 4, "long": 8},
}


# --------------------------------------------------------------------------
# Hand-written pickles, so the format tests do not depend on torch.
# --------------------------------------------------------------------------


def _handmade_pickle(legacy=False):
    """{"model": {w, wt (transposed view of w), n (0-d int64), h}, "epoch": 3}."""
    model = pickle_dict(dict(
        w=pickle_tensor("FloatStorage", "0", 6, 0, (2, 3), (3, 1), legacy),
        wt=pickle_tensor("FloatStorage", "0", 6, 0, (3, 2), (1, 3), legacy),
        n=pickle_tensor("LongStorage", "1", 1, 0, (), (), legacy),
        h=pickle_tensor("HalfStorage", "2", 4, 1, (3,), (1,), legacy),
    ))
    return b"\x80\x02" + pickle_dict(dict(model=model, epoch=pickle_int(3))) + b"."


HANDMADE_W = np.arange(6, dtype=np.float32).reshape(2, 3) - 2.5
HANDMADE_N = np.array(123456789012, dtype=np.int64)
HANDMADE_H = np.array([0.5, -1.0, 65504.0, 1e-3], dtype=np.float16)
HANDMADE_STORAGES = {"0": HANDMADE_W, "1": HANDMADE_N, "2": HANDMADE_H}


def _check_handmade(checkpoint):
    assert checkpoint["epoch"] == 3
    model = checkpoint["model"]
    _assert_bit_exact(model["w"], HANDMADE_W)
    _assert_bit_exact(model["wt"], HANDMADE_W.T)
    _assert_bit_exact(model["n"], HANDMADE_N)
    _assert_bit_exact(model["h"], HANDMADE_H[1:])


def _write_legacy(path, main_pickle, storages):
    with open(path, "wb") as file:
        for header in (LEGACY_MAGIC, 1001, SYS_INFO):
            pickle.dump(header, file, protocol=2)
        file.write(main_pickle)
        pickle.dump(sorted(storages), file, protocol=2)
        for key in sorted(storages):
            file.write(struct.pack("<q", storages[key].size))
            file.write(storages[key].tobytes())


def _assert_bit_exact(actual, expected):
    assert isinstance(actual, np.ndarray)
    assert actual.dtype == expected.dtype
    assert actual.shape == expected.shape
    assert actual.tobytes() == np.ascontiguousarray(expected).tobytes()


def test_handmade_zip_checkpoint(tmp_path):
    path = tmp_path / "handmade.pth"
    write_torch_zip(path, _handmade_pickle(), HANDMADE_STORAGES)
    _check_handmade(read_torch_checkpoint(path))


def test_handmade_zip_without_byteorder_record(tmp_path):
    # Archives from PyTorch < 1.13 have no byteorder record.
    path = tmp_path / "old.pt"
    write_torch_zip(path, _handmade_pickle(), HANDMADE_STORAGES, byteorder=None)
    _check_handmade(read_torch_checkpoint(path))


def test_handmade_big_endian_zip(tmp_path):
    path = tmp_path / "big.bin"
    big = {k: v.astype(v.dtype.newbyteorder(">")) for k, v in HANDMADE_STORAGES.items()}
    write_torch_zip(path, _handmade_pickle(), big, byteorder="big")
    _check_handmade(read_torch_checkpoint(path))


def test_handmade_legacy_checkpoint(tmp_path):
    path = tmp_path / "handmade_legacy.pth.tar"
    _write_legacy(path, _handmade_pickle(legacy=True), HANDMADE_STORAGES)
    _check_handmade(read_torch_checkpoint(path))


def test_load_torch_state_dict_handmade(tmp_path):
    path = tmp_path / "handmade.pth"
    write_torch_zip(path, _handmade_pickle(), HANDMADE_STORAGES)
    state = load_torch_state_dict(path)
    assert sorted(state) == ["h", "n", "w", "wt"]
    # Views of one storage must come back as independent arrays.
    state["w"][0, 0] = 100.0
    assert state["wt"][0, 0] == HANDMADE_W[0, 0]


def test_bfloat16_is_exact(tmp_path, monkeypatch):
    bits = np.array([0x3F80, 0xC0A0, 0x7F80, 0x0001], dtype=np.uint16)
    expected = (bits.astype(np.uint32) << 16).view(np.float32)
    data_pkl = (
        b"\x80\x02"
        + pickle_dict(dict(b=pickle_tensor("BFloat16Storage", "0", 4, 0, (4,), (1,))))
        + b"."
    )
    path = tmp_path / "bf16.pth"
    write_torch_zip(path, data_pkl, {"0": bits})
    if torch_checkpoint.ml_dtypes is not None:
        array = read_torch_checkpoint(path)["b"]
        assert array.dtype == torch_checkpoint.ml_dtypes.bfloat16
        _assert_bit_exact(array.view(np.uint16), bits)
    monkeypatch.setattr(torch_checkpoint, "ml_dtypes", None)
    _assert_bit_exact(read_torch_checkpoint(path)["b"], expected)


# --------------------------------------------------------------------------
# Checkpoints written by torch itself.
# --------------------------------------------------------------------------


def _to_numpy(tensor):
    """Bit-exact numpy copy of a torch tensor, in the reader's dtype."""
    torch = pytest.importorskip("torch")
    if tensor.dtype == torch.bfloat16:
        bits = tensor.contiguous().view(torch.int16).numpy().view(np.uint16)
        if torch_checkpoint.ml_dtypes is not None:
            return bits.view(torch_checkpoint.ml_dtypes.bfloat16)
        return (bits.astype(np.uint32) << 16).view(np.float32)
    return tensor.contiguous().numpy()


def _torch_checkpoint():
    torch = pytest.importorskip("torch")
    generator = torch.Generator().manual_seed(0)
    w = torch.randn(3, 5, generator=generator)
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    state_dict = collections.OrderedDict(
        [
            ("module.w", w),
            ("module.w_t", w.t()),  # non-contiguous, shares w's storage
            ("module.row", base[1]),  # views of one base: offset 6
            ("module.col", base[:, 2]),  # offset 2, stride 6
            ("module.half", torch.randn(7, generator=generator).half()),
            ("module.bf16", torch.randn(2, 3, generator=generator).bfloat16()),
            ("module.idx", torch.arange(-3, 5, dtype=torch.int64)),
            ("module.i32", torch.tensor([1, -2, 2**31 - 1], dtype=torch.int32)),
            ("module.u8", torch.tensor([0, 255], dtype=torch.uint8)),
            ("module.mask", torch.tensor([True, False, True])),
            ("module.f64", torch.tensor([1 / 3], dtype=torch.float64)),
            ("module.bn.num_batches_tracked", torch.tensor(1234, dtype=torch.int64)),
            ("module.empty", torch.zeros(0, 4)),
            ("module.param", torch.nn.Parameter(torch.ones(2, 2))),
        ]
    )
    ema = collections.OrderedDict(
        (k, v.detach() * 2) for k, v in state_dict.items() if v.is_floating_point()
    )
    args = argparse.Namespace(model="spvit_tiny", lr=1e-3, sched=["cosine"])
    checkpoint = {
        "state_dict": state_dict,
        "state_dict_ema": ema,
        "args": args,
        "epoch": 42,
        "metric": 81.25,
        "amp_dtype": torch.float16,
        "tags": {"a", "b"},
        "nested": {
            "list": [1, 2.5, "x", (3, None)],
            "od": collections.OrderedDict(z=1),
        },
    }
    return torch, checkpoint


@pytest.mark.parametrize(
    "filename,zip_format",
    [
        ("ckpt.pth", True),
        ("ckpt.bin", True),
        ("ckpt.pth.tar", False),
        ("ckpt.pt", False),
    ],
)
def test_torch_written_checkpoint(tmp_path, filename, zip_format):
    torch, original = _torch_checkpoint()
    path = tmp_path / filename
    torch.save(original, path, _use_new_zipfile_serialization=zip_format)
    assert zipfile.is_zipfile(path) == zip_format

    checkpoint = read_torch_checkpoint(str(path))

    assert checkpoint["epoch"] == 42
    assert checkpoint["metric"] == 81.25
    assert checkpoint["amp_dtype"] == "torch.float16"
    assert checkpoint["tags"] == {"a", "b"}
    assert checkpoint["nested"] == original["nested"]
    assert isinstance(checkpoint["nested"]["od"], collections.OrderedDict)
    assert isinstance(checkpoint["args"], types.SimpleNamespace)
    assert vars(checkpoint["args"]) == vars(original["args"])
    for group in ("state_dict", "state_dict_ema"):
        assert list(checkpoint[group]) == list(original[group])
        for name, tensor in original[group].items():
            _assert_bit_exact(checkpoint[group][name], _to_numpy(tensor.detach()))
    assert checkpoint["state_dict"]["module.bn.num_batches_tracked"].shape == ()

    state = load_torch_state_dict(path)
    assert list(state) == [k[len("module."):] for k in original["state_dict"]]
    ema = load_torch_state_dict(path, prefer_ema=True)
    _assert_bit_exact(ema["w"], _to_numpy(original["state_dict_ema"]["module.w"]))


@pytest.mark.parametrize("zip_format", [True, False])
def test_torch_module_state_dict(tmp_path, zip_format):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Linear(4, 2)
    )
    compiled_names = {"_orig_mod." + k: v for k, v in model.state_dict().items()}
    path = tmp_path / "model.pth"
    torch.save(
        {"model": model.state_dict(), "compiled": compiled_names},
        path,
        _use_new_zipfile_serialization=zip_format,
    )
    state = load_torch_state_dict(path)
    assert list(state) == list(model.state_dict())
    for name, tensor in model.state_dict().items():
        _assert_bit_exact(state[name], _to_numpy(tensor))
    checkpoint = read_torch_checkpoint(path)
    assert list(extract_state_dict(checkpoint["compiled"])) == list(state)


# --------------------------------------------------------------------------
# extract_state_dict (no torch needed).
# --------------------------------------------------------------------------


def _arrays(*names):
    return {name: np.full((2,), i, dtype=np.float32) for i, name in enumerate(names)}


def test_extract_state_dict_preference_order():
    model, ema, plain = _arrays("m"), _arrays("e"), _arrays("s")
    assert list(extract_state_dict({"model": model, "epoch": 1})) == ["m"]
    assert list(extract_state_dict({"model": model, "state_dict": plain})) == ["s"]
    assert list(extract_state_dict({"state_dict_ema": ema, "state_dict": plain})) == [
        "s"
    ]
    both = {"state_dict_ema": ema, "state_dict": plain}
    assert list(extract_state_dict(both, prefer_ema=True)) == ["e"]
    assert list(extract_state_dict({"state_dict_ema": ema, "epoch": 3})) == ["e"]
    assert list(extract_state_dict(plain)) == ["s"]
    # DeiT-style training scripts name the EMA weights model_ema.
    deit = {"model": model, "model_ema": ema}
    assert list(extract_state_dict(deit, prefer_ema=True)) == ["e"]
    assert list(extract_state_dict(deit, prefer_ema=False)) == ["m"]


def test_extract_state_dict_strips_wrapper_prefixes():
    state = _arrays("module._orig_mod.a.weight", "module._orig_mod.b")
    assert list(extract_state_dict({"state_dict": state})) == ["a.weight", "b"]
    mixed = _arrays("module.a", "b")
    assert list(extract_state_dict(mixed)) == ["module.a", "b"]


def test_extract_state_dict_returns_new_dict_with_same_arrays():
    state = _arrays("module.a")
    result = extract_state_dict({"state_dict": state})
    assert result["a"] is state["module.a"]
    assert "module.a" in state


def test_extract_state_dict_without_weights_lists_keys():
    with pytest.raises(ValueError, match=r"ckpt\.pth.*'epoch', 'optimizer'"):
        extract_state_dict({"epoch": 1, "optimizer": {"lr": 0.1}}, "ckpt.pth")
    with pytest.raises(ValueError, match="no state dict"):
        extract_state_dict({"state_dict": {}})
    with pytest.raises(ValueError, match="expected the checkpoint to be a dict"):
        extract_state_dict([np.zeros(2)])


# --------------------------------------------------------------------------
# Security: nothing but the allow-list is ever resolved.
# --------------------------------------------------------------------------


class _Exploit:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


@pytest.mark.parametrize("layout", ["zip", "raw_pickle", "legacy"])
def test_malicious_pickle_is_refused_without_running(tmp_path, layout):
    pwned = tmp_path / "pwned"
    payload = pickle.dumps({"state_dict": _Exploit(f"touch {pwned}")}, protocol=2)
    assert b"system" in payload
    path = tmp_path / "evil.pth"
    if layout == "zip":
        write_torch_zip(path, payload, {})
    elif layout == "raw_pickle":
        path.write_bytes(payload)
    else:
        _write_legacy(path, payload, {})

    with pytest.raises(UnsafeCheckpointError, match="system") as info:
        read_torch_checkpoint(path)
    message = str(info.value)
    assert str(path) in message
    assert "only tensors and plain containers" in message.lower()
    assert "malicious" in message
    assert isinstance(info.value, ValueError)
    assert not pwned.exists()


@pytest.mark.parametrize(
    "module,name",
    [
        ("builtins", "eval"),
        ("__builtin__", "eval"),
        ("subprocess", "Popen"),
        ("torch.nn.modules.linear", "Linear"),
        ("torch._utils", "_rebuild_device_tensor_from_numpy"),
        ("numpy.core.multiarray", "_reconstruct"),
    ],
)
def test_unknown_globals_are_refused(tmp_path, module, name):
    path = tmp_path / "unknown.pth"
    write_torch_zip(path, b"\x80\x02" + pickle_global(module, name) + b")R.", {})
    with pytest.raises(UnsafeCheckpointError, match=name):
        read_torch_checkpoint(path)


def test_pickle_cannot_modify_allowed_globals(tmp_path):
    # BUILD on an allowed function would otherwise let a file replace e.g.
    # its __defaults__ for every later checkpoint read in the process.
    state = pickle_dict(dict(__defaults__=pickle_tuple(pickle_int(1))))
    data_pkl = (
        b"\x80\x02" + pickle_global("torch._utils", "_rebuild_tensor_v2") + state + b"b."
    )
    path = tmp_path / "build.pth"
    write_torch_zip(path, data_pkl, {})
    with pytest.raises(CheckpointFormatError, match="set the state"):
        read_torch_checkpoint(path)

    good = tmp_path / "good.pth"
    write_torch_zip(good, _handmade_pickle(), HANDMADE_STORAGES)
    _check_handmade(read_torch_checkpoint(good))


def test_bytes_need_latin1(tmp_path):
    def encode(encoding):
        call = pickle_tuple(pickle_str("ab"), pickle_str(encoding))
        return b"\x80\x02" + pickle_global("_codecs", "encode") + call + b"R."

    path = tmp_path / "bytes.pth"
    write_torch_zip(path, encode("latin1"), {})
    assert read_torch_checkpoint(path) == b"ab"
    write_torch_zip(path, encode("zlib"), {})
    with pytest.raises(CheckpointFormatError, match="zlib"):
        read_torch_checkpoint(path)


# --------------------------------------------------------------------------
# Damaged and missing files.
# --------------------------------------------------------------------------


def test_missing_file(tmp_path):
    path = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        read_torch_checkpoint(path)


@pytest.mark.parametrize("zip_format", [True, False])
def test_truncated_file(tmp_path, zip_format):
    path = tmp_path / "cut.pth"
    if zip_format:
        write_torch_zip(path, _handmade_pickle(), HANDMADE_STORAGES)
    else:
        _write_legacy(path, _handmade_pickle(legacy=True), HANDMADE_STORAGES)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointFormatError, match="cut.pth") as info:
        read_torch_checkpoint(path)
    assert isinstance(info.value, ValueError)


def test_truncated_legacy_storage_reports_sizes(tmp_path):
    path = tmp_path / "short.pth"
    _write_legacy(path, _handmade_pickle(legacy=True), HANDMADE_STORAGES)
    path.write_bytes(path.read_bytes()[:-2])
    # The last storage ("2") holds four float16 values.
    message = "storage 2 has 6 bytes, expected 8"
    with pytest.raises(CheckpointFormatError, match=message):
        read_torch_checkpoint(path)


def test_wrong_storage_size_in_zip(tmp_path):
    path = tmp_path / "bad_size.pth"
    storages = dict(HANDMADE_STORAGES, **{"0": HANDMADE_W[:1]})
    write_torch_zip(path, _handmade_pickle(), storages)
    message = "storage 0 has 12 bytes, expected 24"
    with pytest.raises(CheckpointFormatError, match=message):
        read_torch_checkpoint(path)


def test_tensor_outside_its_storage_is_refused(tmp_path):
    # Without the bounds check as_strided would read arbitrary memory.
    data_pkl = b"\x80\x02" + pickle_tensor("FloatStorage", "0", 6, 4, (3,), (1,)) + b"."
    path = tmp_path / "oob.pth"
    write_torch_zip(path, data_pkl, {"0": HANDMADE_W})
    with pytest.raises(CheckpointFormatError, match="past the end of storage 0"):
        read_torch_checkpoint(path)


def test_corrupted_zip_record(tmp_path):
    path = tmp_path / "crc.pth"
    write_torch_zip(path, _handmade_pickle(), HANDMADE_STORAGES)
    data = bytearray(path.read_bytes())
    position = data.index(HANDMADE_H.tobytes())
    data[position] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointFormatError, match="crc.pth.*CRC"):
        read_torch_checkpoint(path)


@pytest.mark.parametrize(
    "content",
    [b"", b"\x00\x01garbage bytes\xff" * 8, b"PK\x03\x04 not really a zip"],
    ids=["empty", "garbage", "fake_zip"],
)
def test_not_a_checkpoint(tmp_path, content):
    path = tmp_path / "junk.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointFormatError, match="junk.pth"):
        read_torch_checkpoint(path)


def test_plain_pickle_without_magic(tmp_path):
    path = tmp_path / "plain.pkl"
    path.write_bytes(pickle.dumps({"a": 1}, protocol=2))
    with pytest.raises(CheckpointFormatError, match="bad magic number"):
        read_torch_checkpoint(path)


def test_zip_without_data_pkl(tmp_path):
    path = tmp_path / "other.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(CheckpointFormatError, match="no <archive>/data.pkl"):
        read_torch_checkpoint(path)
