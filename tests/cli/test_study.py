"""`keras-spvit study`: one-line errors before anything is written, and a resumed study.

The resumed study is the suite's one real mini-study (`tests/test_study.py`),
rerun through the command line: every cell is reused, nothing trains.
"""

import shutil

import pytest

from keras_spvit.cli import main
from tests.test_study import mini_study_dir

ARGS = ["study", "--data", "digits", "--models", "SPViT_Tiny", "LVViT_Tiny", "--sizes", "20",
        "50", "--seeds", "0", "--epochs", "1", "--image-size", "16", "--jit", "off"]


def _fails(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize("change, message", [
    (["--models", "SPViT_Tiny", "Nope"], "Unknown model 'Nope'. Expected builder names: "),
    (["--sizes", "5000"], "at most 1438 (the train split)"),
    (["--sizes", "5"], "at least 10 (one image per class)"),
    (["--sizes", "0"], "--sizes: expected a positive integer"),
    (["--baseline", "PlainViT_Tiny"], "baseline among"),
    (["--model-args", "SPViT_Tiny=[1]"], "--model-args 'SPViT_Tiny=[1]': expected MODEL=JSON"),
    (["--model-args", 'Nope={"a": 1}'], "model_args"),
    (["--recipe", "nope"], "nope"),
    (["--data", "folder:/nope"], "no such folder"),
    (["--set", "nope=1"], "nope"),
    (["--status-every", "-1"], "--status-every: expected seconds >= 0. Received: '-1'"),
])
def test_errors_are_one_line_and_write_nothing(tmp_path, capsys, change, message):
    out = tmp_path / "study"
    err = _fails([*ARGS, *change, "--out", str(out)], capsys)
    assert message in err
    assert not out.exists()


def test_other_settings_in_the_same_out_are_refused(tmp_path_factory, tmp_path, capsys):
    out = tmp_path / "study"
    shutil.copytree(mini_study_dir(tmp_path_factory), out)
    err = _fails([*ARGS[:-4], "--image-size", "32", "--jit", "off", "--out", str(out)], capsys)
    assert "other settings (image_size: 16 there, 32 now)" in err


def test_rerun_reuses_every_cell(tmp_path_factory, tmp_path, capsys):
    out = tmp_path / "study"
    shutil.copytree(mini_study_dir(tmp_path_factory), out)
    assert main([*ARGS, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "reusing 4 finished cell(s), 0 to run" in printed
    assert "| SPViT_Tiny − LVViT_Tiny | 50 | 1 |" in printed
    assert "Learning curves: " in printed and (out / "learning_curves.png").exists()
