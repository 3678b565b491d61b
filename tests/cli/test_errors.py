"""A user's mistake on the command line: one line `error: ...`, exit code 2, nothing written.

Every case runs in-process through `keras_spvit.cli.main` (arguments and data
are checked before any model is trained, so each takes a fraction of a
second); two run the real command in a subprocess to check its actual stderr
and exit code, and two check that `--help` starts no backend.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest

from keras_spvit.cli import main
from keras_spvit.cli.common import UsageError

ROOT = Path(__file__).resolve().parents[2]
# `keras-spvit --help` can only skip TensorFlow when `import keras_spvit` itself
# imports nothing heavy (public names loaded on first use).
@pytest.fixture
def files(tmp_path, monkeypatch):
    """A scratch folder (the working directory) with the bad inputs the cases name."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KERAS_SPVIT_DEBUG", raising=False)
    (tmp_path / "empty_class" / "cats").mkdir(parents=True)
    (tmp_path / "empty_class" / "dogs").mkdir()
    (tmp_path / "empty_class" / "cats" / "a.png").write_bytes(b"")
    (tmp_path / "not_an_image.png").write_bytes(os.urandom(300))
    (tmp_path / "good.png").write_bytes(_png())
    np.savez(tmp_path / "no_labels.npz", images=np.zeros((4, 8, 8), "uint8"))
    (tmp_path / "names.json").write_text(json.dumps({"0": "zero"}))
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "done").mkdir()
    (tmp_path / "done" / "summary.json").write_text("{}")
    (tmp_path / "no_model").mkdir()
    return tmp_path


def _png():
    import tensorflow as tf

    return tf.io.encode_png(np.zeros((8, 8, 3), "uint8")).numpy()


def _listing(root):
    return sorted(
        (os.path.relpath(os.path.join(d, n), root), os.path.getsize(os.path.join(d, n)))
        for d, dirs, names in os.walk(root) for n in names + dirs
    )


OUT = ["--out", "run"]

# (arguments, text the one error line must contain: the bad value)
CASES = [
    # The cases of issue #11.
    (["train", "--data", "folder:/nope", *OUT], "folder:/nope"),
    (["train", "--data", "folder:empty_class", *OUT], "empty_class/dogs"),
    (["train", "--image-size", "30", *OUT], "30"),
    (["train", "--recipe", "nope", *OUT], "'nope'"),
    (["train", "--set", "nonsense=1", *OUT], "nonsense"),
    (["train", "--set", "mixup_alpha=abc", *OUT], "mixup_alpha='abc': expected a number"),
    (["train", "--batch-size", "0", *OUT], "--batch-size"),
    (["train", "--epochs", "-1", *OUT], "'-1'"),
    (["evaluate", "/no/such/run"], "no such run directory: '/no/such/run'"),
    # More.
    (["train", "--model", "SPViT_XL", *OUT], "'SPViT_XL'"),
    (["train", "--model-args", "{bad", *OUT], "'{bad'"),
    (["train", "--model-args", "[1, 2]", *OUT], "'[1, 2]'"),
    (["train", "--model-args", '{"bogus": 1}', *OUT], "'bogus'"),
    (["train", "--weights", "/nope", *OUT], "'/nope'"),
    (["train", "--save-every", "0", *OUT], "--save-every"),
    (["train", "--precision", "fp8", *OUT], "'fp8'"),
    (["train", "--jit", "maybe", *OUT], "'maybe'"),
    (["train", "--data", "tfds:", *OUT], "'tfds:'"),
    (["train", "--data", "npz:/nope", *OUT], "npz:/nope"),
    (["train", "--data", "npz:no_labels.npz", *OUT], "labels"),
    (["train", "--data", "mnist", *OUT], "'mnist'"),
    (["train", "--data", "folder:a_file", *OUT], "folder:a_file"),
    (["train", "--val-split", "nope", *OUT], "--val-split 'nope'"),
    (["train", "--val-data", "folder:/nope2", *OUT], "folder:/nope2"),
    (["train", "--num-classes", "0", *OUT], "--num-classes"),
    (["train", "--num-classes", "3", *OUT], "--num-classes 3"),
    (["train", "--set", "crop_scale=1", *OUT], "crop_scale=1"),
    (["train", "--set", "epochs", *OUT], "'epochs'"),
    (["train", "--set", "mixup_alpha=-1", *OUT], "mixup_alpha=-1"),
    (["train", "--mean", "2", "0", "0", *OUT], "'2'"),
    (["train", "--out", "a_file"], "'a_file'"),
    (["train", "--out", "done"], "done"),
    (["evaluate", "SPViT_Tiny", "--crop-pct", "0"], "--crop-pct"),
    (["evaluate", "SPViT_Tiny", "--mean", "0.5", "x", "0.5"], "'x'"),
    (["evaluate", "SPViT_Tiny", "--std", "0", "1", "1"], "--std"),
    (["evaluate", "SPViT_Tiny", "--split", "nope"], "'nope'"),
    (["evaluate", "SPViT_Tiny", "--image-size", "30"], "--image-size 30"),
    (["evaluate", "no_model"], "'no_model'"),
    (["evaluate", "missing.keras"], "'missing.keras'"),
    (["evaluate", "SPViT_Tiny", "--batch-size", "abc"], "'abc'"),
    (["evaluate", "SPViT_Tiny", "--quantize", "int4"], "'int4'"),
    (["export", "SPViT_Tiny", "out", "--quantize", "float8"], "'float8'"),
    (["predict", "SPViT_Tiny", "good.png", "--top-k", "-1"], "'-1'"),
    (["predict", "SPViT_Tiny", "missing.png"], "'missing.png'"),
    (["predict", "SPViT_Tiny", "not_an_image.png"], "'not_an_image.png'"),
    (["predict", "SPViT_Tiny", "good.png", "--class-names", "nope.json"], "'nope.json'"),
    (["predict", "SPViT_Tiny", "good.png", "--class-names", "names.json"], "'names.json'"),
    (["predict", "SPViT_Tiny", "good.png", "--weights", "nope_preset"], "'nope_preset'"),
    (["convert", "/nope.pth", "out", "--variant", "spvit_s"], "'/nope.pth'"),
    (["convert", "good.png", "out", "--variant", "spvit_xxl"], "'spvit_xxl'"),
    (["convert", "good.png", "out", "--variant", "spvit_s", "--crop-pct", "1.5"], "'1.5'"),
    (["nope"], "'nope'"),
    # Session 6: devices, steps per call, the IDX sources.
    (["train", "--device", "gpu", *OUT], "--device gpu: "),
    (["train", "--device", "quantum", *OUT], "'quantum'"),
    (["train", "--steps-per-execution", "7", *OUT], "--steps-per-execution 7"),
    (["train", "--steps-per-execution", "x", *OUT], "'x'"),
    (["train", "--data", "fashion_mnist", "--split", "val", *OUT], "--split 'val'"),
    (["train", "--data", "idx:/nope", *OUT], "idx:/nope"),
]


@pytest.mark.parametrize("argv,names", CASES, ids=[" ".join(c[0])[:60] for c in CASES])
def test_a_user_error_is_one_line_with_exit_code_2(argv, names, files, capsys):
    before = _listing(files)
    start = time.perf_counter()
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    seconds = time.perf_counter() - start
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert exit_info.value.code == 2, captured
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("error: ") and names in lines[0], lines[0]
    assert "Traceback" not in captured.err + captured.out
    assert _listing(files) == before  # nothing written, no run directory
    print(f"{seconds:.2f} s")  # shown with -s; no speed is asserted


def test_at_least_25_cases():
    assert len(CASES) >= 25


def test_debug_shows_the_traceback(files, monkeypatch):
    with pytest.raises(UsageError, match="batch-size"):
        main(["train", "--batch-size", "0", "--out", "run", "--debug"])
    monkeypatch.setenv("KERAS_SPVIT_DEBUG", "1")
    with pytest.raises(UsageError, match="unknown recipe 'nope'"):
        main(["train", "--recipe", "nope", "--out", "run"])
    assert not (files / "run").exists()


def test_a_bug_keeps_its_traceback(files, monkeypatch):
    import keras_spvit.cli.evaluate as evaluate_cli

    def broken(model, dataset):
        raise RuntimeError("a bug")

    monkeypatch.setattr(evaluate_cli, "evaluate", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["evaluate", "SPViT_Tiny", "--num-classes", "10"])


def _command(args, env=None):
    env = dict(os.environ, KERAS_BACKEND=keras.backend.backend(), **(env or {}))
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    env.pop("KERAS_SPVIT_DEBUG", None)
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True,
                          timeout=300, check=False)


@pytest.mark.parametrize("argv,names", [
    (["train", "--data", "folder:/nope", "--out", "run"], "folder:/nope"),
    (["predict", "SPViT_Tiny", "not_an_image.png"], "not_an_image.png"),
])
def test_the_command_prints_one_line_and_exits_2(argv, names, files):
    result = _command(["-m", "keras_spvit.cli", *argv])
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [result.stderr.strip()], result.stderr
    assert result.stderr.startswith("error: ") and names in result.stderr
    assert not (files / "run").exists()


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"]])
def test_help_starts_no_backend(argv):
    # As the console script's wrapper does: argv[0] is the command's name
    # when the package is imported.
    script = (
        "import sys\n"
        "sys.argv = ['keras-spvit']\n"
        "from keras_spvit.cli import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit as e:\n"
        "    assert e.code == 0, e.code\n"
        "heavy = [m for m in ('tensorflow', 'keras', 'jax', 'torch') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    result = _command(["-c", script])
    assert result.returncode == 0, result.stderr
    assert "--out" in result.stdout if argv[0] == "train" else "COMMAND" in result.stdout
    assert result.stderr == ""


@pytest.mark.parametrize("command,says,not_says", [
    ("evaluate", ["Keras' model.quantize"], ["LiteRT", "onnxruntime"]),
    ("export", ["LiteRT converter's dynamic-range", "onnxruntime's quantize_dynamic",
                "Keras' model.quantize on a copy"], []),
])
def test_quantize_help_says_how_this_command_quantizes(command, says, not_says, capsys):
    # export quantizes by each format's own route, not by model.quantize alone.
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    help_ = text[text.index("--quantize {int8} "):]
    help_ = help_[:help_.index(" --", 1)]
    for phrase in says:
        assert phrase in help_, help_
    for phrase in not_says:
        assert phrase not in help_, help_
