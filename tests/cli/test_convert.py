"""`keras-spvit convert` end to end on official-format checkpoints the tests write.

Checkpoints are written by `torch.save` when torch is importable and, always,
by `tests/torch_format.py` (numpy only). The written presets must reproduce
the official code's logits stored in the fixtures, and `--reference` (those
logits) must catch a mapping that loads but is wrong.
"""

import json

import numpy as np
import pytest

import keras_spvit
from keras_spvit.cli import main as cli_main
from keras_spvit.zoo.convert import VerificationError, convert_checkpoint
from keras_spvit.zoo.families import variant_names
from tests.conftest import load_fixture, nhwc, to_numpy
from tests.torch_format import write_torch_checkpoint

K2_ARGS = ["--variant", "spvit_tiny", "--set", "stem=4_2", "--set", "patch_size=16"]


def run_cli(argv):
    """`keras-spvit convert ARGV...` in-process: its exit code (2 for a user error)."""
    try:
        return cli_main(["convert", *map(str, argv)])
    except SystemExit as exit_info:
        return exit_info.code


@pytest.fixture(scope="module")
def k2():
    return load_fixture("spvit_tiny_k2")


def write_reference(arrays, path):
    """The official code's eval input and logits, as `--reference` takes them."""
    np.savez(path, input=arrays["input"], logits=arrays["logits"])
    return path


def write_checkpoint(state_dict, path, writer):
    if writer == "torch":
        import torch  # installed by the project's setup: a missing torch is a failure, not a skip
        torch.save({"state_dict": {k: torch.from_numpy(v.copy()) for k, v in state_dict.items()}}, path)
    else:
        write_torch_checkpoint(path, state_dict)
    return path


@pytest.mark.parametrize("writer", ["numpy", "torch"])
def test_convert_writes_a_verified_preset(writer, k2, tmp_path, capsys):
    arrays, state_dict, _ = k2
    checkpoint = write_checkpoint(state_dict, tmp_path / "spvit_tiny_k2.pth", writer)
    out = tmp_path / "preset"
    reference = write_reference(arrays, tmp_path / "reference.npz")
    assert run_cli([checkpoint, out, *K2_ARGS, "--reference", reference]) == 0
    printed = capsys.readouterr().out
    assert "reproduces the official code's logits" in printed
    assert "Status: verified against the official code." in printed

    model = keras_spvit.SPViTImageClassifier.from_preset(out)
    error = np.abs(to_numpy(model(nhwc(arrays["input"]))) - arrays["logits"]).max()
    assert error <= 5e-6
    converter = json.loads((out / "image_converter.json").read_text())["config"]
    assert converter["image_size"] == [64, 64]
    assert (converter["crop_pct"], converter["interpolation"]) == (0.9, "bicubic")
    assert converter["mean"] == [0.485, 0.456, 0.406]
    assert converter["std"] == [0.229, 0.224, 0.225]


def test_convert_to_a_new_resolution_and_class_count(k2, tmp_path):
    _, state_dict, _ = k2
    res96, _, _ = load_fixture("spvit_tiny_k2_res96")
    checkpoint = write_checkpoint(state_dict, tmp_path / "k2.pth", "numpy")
    with pytest.warns(UserWarning, match="trained for 10 classes"):
        report = convert_checkpoint(
            checkpoint, tmp_path / "out", "spvit_tiny", num_classes=5, image_size=96,
            crop_pct=1.0, overrides={"stem": "4_2", "patch_size": 16},
        )
    assert report.verified and report.max_abs_difference == 0.0
    assert (report.image_shape, report.num_classes, report.crop_pct) == ((96, 96, 3), 5, 1.0)
    model = keras_spvit.SPViTImageClassifier.from_preset(tmp_path / "out")
    features = res96["features"]
    error = np.abs(to_numpy(model.backbone(nhwc(res96["input"]))) - features).max()
    assert error <= 1e-5 * np.abs(features).max()


def test_convert_refined_vit(tmp_path):
    arrays, state_dict, _ = load_fixture("refiner_tiny")
    checkpoint = write_checkpoint(state_dict, tmp_path / "refiner_tiny.pth", "numpy")
    report = convert_checkpoint(
        checkpoint, tmp_path / "out", "refined_vit_tiny",
        overrides={"stem": "refiner", "patch_size": 16},
    )
    assert report.model_class == "RefinedViTImageClassifier"
    model = keras_spvit.RefinedViTImageClassifier.from_preset(tmp_path / "out")
    assert np.abs(to_numpy(model(nhwc(arrays["input"]))) - arrays["logits"]).max() <= 5e-6


def swap_first_two_blocks_qk(state_dict):
    """A wrong but loadable checkpoint: blocks 0 and 1 trade their q/k weights."""
    swapped = dict(state_dict)
    first, second = "blocks.0.attn.qk.weight", "blocks.1.attn.qk.weight"
    assert swapped[first].shape == swapped[second].shape
    assert not np.array_equal(swapped[first], swapped[second])
    swapped[first], swapped[second] = state_dict[second], state_dict[first]
    return swapped


def test_reference_catches_a_wrong_mapping_that_loads(k2, tmp_path, capsys):
    arrays, state_dict, _ = k2
    reference = write_reference(arrays, tmp_path / "reference.npz")
    wrong = write_checkpoint(swap_first_two_blocks_qk(state_dict), tmp_path / "wrong.pth", "numpy")
    overrides = {"stem": "4_2", "patch_size": 16}

    # The round trip alone cannot see it: the folder holds what was converted.
    report = convert_checkpoint(wrong, tmp_path / "a", "spvit_tiny", overrides=overrides)
    assert report.round_trip_ok and report.reference_ok is None
    assert not report.checked_against_reference
    assert "not verified against the official code" in str(report)

    with pytest.raises(VerificationError, match="Reference: .*FAILED"):
        convert_checkpoint(wrong, tmp_path / "b", "spvit_tiny", overrides=overrides,
                           reference=reference)
    assert run_cli([wrong, tmp_path / "c", *K2_ARGS, "--reference", reference]) == 1
    assert "verification failed" in capsys.readouterr().err

    right = write_checkpoint(state_dict, tmp_path / "right.pth", "numpy")
    report = convert_checkpoint(right, tmp_path / "d", "spvit_tiny", overrides=overrides,
                                reference=reference)
    # Measured 1.8e-7 against the fixture's logits (TensorFlow); the swap gives 3.0e-2.
    assert report.verified and report.reference_difference <= 5e-6


def test_bad_reference_files_are_user_errors(k2, tmp_path, capsys):
    arrays, state_dict, _ = k2
    checkpoint = write_checkpoint(state_dict, tmp_path / "k2.pth", "numpy")
    assert run_cli([checkpoint, tmp_path / "a", *K2_ARGS, "--reference",
                    tmp_path / "missing.npz"]) == 2
    assert "missing.npz" in capsys.readouterr().err
    np.savez(tmp_path / "no_logits.npz", input=arrays["input"])
    assert run_cli([checkpoint, tmp_path / "b", *K2_ARGS, "--reference",
                    tmp_path / "no_logits.npz"]) == 2
    assert "['logits']" in capsys.readouterr().err


def test_verification_failure_is_reported(k2, tmp_path, capsys):
    _, state_dict, _ = k2
    checkpoint = write_checkpoint(state_dict, tmp_path / "k2.pth", "numpy")
    with pytest.raises(VerificationError, match="FAILED"):
        convert_checkpoint(checkpoint, tmp_path / "a", "spvit_tiny", tolerance=-1.0,
                           overrides={"stem": "4_2", "patch_size": 16})
    assert run_cli([checkpoint, tmp_path / "b", *K2_ARGS, "--tolerance", "-1"]) == 1
    assert "verification failed" in capsys.readouterr().err


def test_bad_inputs_give_errors_naming_the_file(k2, tmp_path, capsys):
    _, state_dict, _ = k2
    checkpoint = write_checkpoint(state_dict, tmp_path / "k2.pth", "numpy")
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(checkpoint.read_bytes()[:-3000])
    assert run_cli([truncated, tmp_path / "out", *K2_ARGS]) == 2
    assert "truncated.pth" in capsys.readouterr().err

    assert run_cli([checkpoint, tmp_path / "out", "--variant", "lvvit_tiny",
                    "--set", "stem=4_2", "--set", "patch_size=16"]) == 2
    err = capsys.readouterr().err
    assert "k2.pth" in err and "spatial_prior_blocks=2" in err

    assert run_cli([checkpoint, tmp_path / "out", *K2_ARGS]) == 0
    assert run_cli([checkpoint, tmp_path / "out", *K2_ARGS]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert run_cli([checkpoint, tmp_path / "out", *K2_ARGS, "--overwrite"]) == 0

    capsys.readouterr()
    assert run_cli([checkpoint, tmp_path / "x", "--variant", "spvit_xxl"]) == 2
    assert "'spvit_xxl'" in capsys.readouterr().err
    assert run_cli([checkpoint, tmp_path / "x", *K2_ARGS, "--image-size", "abc"]) == 2
    assert "'abc'" in capsys.readouterr().err
    assert run_cli([tmp_path / "missing.pth", tmp_path / "x", *K2_ARGS]) == 2
    assert "no such checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_variant_names_are_the_tables_keys():
    names = variant_names()
    for expected in ("spvit_s", "spvit_m", "spvit_l", "spvit_l_released", "lvvit_s",
                     "refined_vit_s", "spvit_tiny", "psvit_2d_tiny"):
        assert expected in names


def test_main_dispatches_convert(k2, tmp_path):
    import importlib

    main = importlib.import_module("keras_spvit.cli.main")
    main.build_parser()  # every subcommand registers; an ImportError fails the test
    _, state_dict, _ = k2
    checkpoint = write_checkpoint(state_dict, tmp_path / "k2.pth", "numpy")
    assert main.main(["convert", str(checkpoint), str(tmp_path / "out"), *K2_ARGS]) == 0
