import keras
import pytest

from keras_spvit.training import hardware

BACKEND = keras.backend.backend()


def test_this_machine_is_cpu_only_and_trains_in_float32():
    assert hardware.accelerator() is None
    assert hardware.resolve_precision("auto") == "float32"


@pytest.mark.parametrize(
    "name, policy",
    [("float32", "float32"), ("bf16", "mixed_bfloat16"), ("fp16", "mixed_float16"),
     ("mixed_bfloat16", "mixed_bfloat16")],
)
def test_precision_names(name, policy):
    assert hardware.resolve_precision(name) == policy


def test_bad_precision_names_the_value():
    with pytest.raises(ValueError, match="precision='int4'"):
        hardware.resolve_precision("int4")


@pytest.mark.parametrize(
    "kind, capability, expected",
    [("gpu", (7, 5), False), ("gpu", (8, 0), True), ("gpu", (9, 0), True),
     ("gpu", None, False), ("tpu", None, True)],
)
def test_bfloat16_on_accelerators(monkeypatch, kind, capability, expected):
    monkeypatch.setattr(hardware, "accelerator", lambda: kind)
    monkeypatch.setattr(hardware, "_gpu_compute_capability", lambda: capability)
    assert hardware.supports_bfloat16() is expected
    assert hardware.resolve_precision("auto") == ("mixed_bfloat16" if expected else "float32")


def test_explicit_jit():
    assert hardware.resolve_jit("on") is True
    assert hardware.resolve_jit("off") is False
    assert hardware.resolve_jit(False) is False
    with pytest.raises(ValueError, match="jit='yes'"):
        hardware.resolve_jit("yes")


def test_auto_jit_on_this_cpu():
    if BACKEND == "torch":
        assert hardware.resolve_jit("auto") is False
    else:
        assert hardware.resolve_jit("auto", replicas=1) is True
    # Several virtual CPU devices: TensorFlow cannot compile one XLA cluster over them.
    assert hardware.resolve_jit("auto", replicas=2) is (BACKEND == "jax")


def test_auto_jit_on_gpus_even_under_a_strategy(monkeypatch):
    monkeypatch.setattr(hardware, "accelerator", lambda: "gpu")
    assert hardware.resolve_jit("auto", replicas=8) is (BACKEND != "torch")


def test_bfloat16_on_a_tensorflow_cpu_with_bf16_instructions_runs_without_xla(monkeypatch):
    # oneDNN's bf16 kernels (graph mode) beat XLA's on CPUs with AVX512-BF16 /
    # AMX; float32 keeps XLA.
    monkeypatch.setattr(hardware, "cpu_has_bfloat16_instructions", lambda: True)
    expected = {"tensorflow": False, "jax": True, "torch": False}[BACKEND]
    assert hardware.resolve_jit("auto", 1, "mixed_bfloat16") is expected
    assert hardware.resolve_jit("auto", 1, "float32") is (BACKEND != "torch")
    assert hardware.resolve_jit("on", 1, "mixed_bfloat16") is True


def test_bfloat16_on_a_cpu_without_bf16_instructions_keeps_xla(monkeypatch):
    # There oneDNN emulates bfloat16 (4x slower than XLA): XLA stays on.
    monkeypatch.setattr(hardware, "cpu_has_bfloat16_instructions", lambda: False)
    assert hardware.resolve_jit("auto", 1, "mixed_bfloat16") is (BACKEND != "torch")
    assert hardware.resolve_jit("off", 1, "mixed_bfloat16") is False


@pytest.mark.parametrize(
    "text, expected",
    [
        ("processor\t: 0\nflags\t\t: fpu avx512f avx512_vnni\n", False),
        ("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16 avx512_vnni\n", True),
        ("flags\t\t: fpu amx_bf16 amx_tile amx_int8\n", True),
        ("processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n", True),
        ("processor\t: 0\nFeatures\t: fp asimd sve\n", False),
        ("no flags line at all\n", False),
    ],
)
def test_cpu_bfloat16_instructions_from_cpuinfo(tmp_path, text, expected):
    path = tmp_path / "cpuinfo"
    path.write_text(text)
    assert hardware.cpu_has_bfloat16_instructions(str(path)) is expected
    # A missing file (not Linux) counts as no bfloat16 instructions.
    assert hardware.cpu_has_bfloat16_instructions(str(tmp_path / "missing")) is False
