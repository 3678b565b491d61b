"""`keras-spvit train | evaluate | predict` end to end on the bundled digits."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from keras_spvit.cli import main

HERE = Path(__file__).parent
TINY = json.dumps({"embed_dim": 16, "depth": 2, "num_heads": 2, "spatial_prior_blocks": 1,
                   "stem": "patch", "patch_size": 4})
STEPS = 1438 // 64  # digits train split, drop_remainder


def _train_args(out, epochs=2):
    return ["train", "--model", "SPViT", "--model-args", TINY, "--image-size", "16",
            "--data", "digits", "--epochs", str(epochs), "--batch-size", "64",
            "--save-every", "3", "--out", str(out), "--verbose", "0",
            # XLA compiles for longer than these 22-step runs last on TensorFlow's
            # CPU (its default, `--jit auto` = on, is tested in training/test_hardware.py
            # and runs in tests/test_examples.py).
            *(["--jit", "off"] if keras.backend.backend() == "tensorflow" else [])]


def _run(args, crash_at=None):
    env = dict(os.environ, KERAS_BACKEND=keras.backend.backend())
    if crash_at:
        command = [sys.executable, str(HERE / "killed_train.py"), *map(str, crash_at), "--"]
    else:
        command = [sys.executable, "-m", "keras_spvit.cli.main"]
    return subprocess.run(command + args, env=env, capture_output=True, text=True, timeout=900,
                          check=False)


def _epochs_logged(out):
    with open(out / "log.csv") as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


def test_killed_mid_epoch_resumes_and_finishes(tmp_path):
    out = tmp_path / "run"
    crashed = _run(_train_args(out), crash_at=(1, 7))
    assert crashed.returncode == -9, crashed.stderr[-3000:]
    metadata = json.loads((out / "backup" / "training_metadata.json").read_text())
    assert metadata["epoch"] == 1 and metadata["batch"] > 0  # a mid-epoch backup
    assert _epochs_logged(out) == [0]
    assert not (out / "summary.json").exists()

    resumed = _run(_train_args(out))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert _epochs_logged(out) == [0, 1]  # epoch 0 was not redone
    # The optimizer resumed from the mid-epoch backup (the interrupted epoch is
    # replayed from its start on the restored weights), not from scratch.
    assert summary["optimizer_steps"] > 2 * STEPS
    assert sorted(os.listdir(out / "checkpoints")) == ["epoch_001.weights.h5",
                                                        "epoch_002.weights.h5"]
    assert "val accuracy" in resumed.stdout and str(out / "model.keras") in resumed.stdout
    assert summary["val_accuracy"] is not None and summary["images_per_second"] > 0

    # A finished run is not overwritten.
    with pytest.raises(SystemExit, match="summary.json exists"):
        main(_train_args(out))


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(_train_args(out, epochs=2)) == 0
    return out


def test_evaluate_reproduces_validation_accuracy(trained_run, tmp_path, capsys):
    summary = json.loads((trained_run / "summary.json").read_text())
    assert main(["evaluate", str(trained_run), "--data", "digits", "--split", "test",
                 "--json", str(tmp_path / "eval.json")]) == 0
    results = json.loads((tmp_path / "eval.json").read_text())
    assert results["examples"] == 359
    assert results["top1"] == pytest.approx(summary["val_accuracy"], abs=1e-6)
    assert "top-1" in capsys.readouterr().out


def test_predict_prints_top_k(trained_run, tmp_path, capsys):
    import tensorflow as tf

    from keras_spvit.data import load_digits

    images, _ = load_digits()
    paths = []
    for i in range(2):
        path = tmp_path / f"digit{i}.png"
        pixels = np.repeat((images[i] * 15).astype("uint8")[..., None], 3, -1)
        tf.io.write_file(str(path), tf.io.encode_png(pixels))
        paths.append(str(path))
    assert main(["predict", str(trained_run), *paths, "--top-k", "3", "--json",
                 "--crop-pct", "1", "--mean", ".5", ".5", ".5", "--std", ".5", ".5", ".5"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [line["image"] for line in lines] == paths
    for line in lines:
        probabilities = [entry["probability"] for entry in line["top"]]
        assert len(probabilities) == 3 and probabilities == sorted(probabilities, reverse=True)
        assert {entry["name"] for entry in line["top"]} <= {str(i) for i in range(10)}


def test_bad_arguments_say_what_to_fix(tmp_path):
    with pytest.raises(SystemExit, match="unknown model 'SPViT_XL'"):
        main(["train", "--model", "SPViT_XL", "--out", str(tmp_path / "x")])
    with pytest.raises(ValueError, match="Unknown data source 'mnist'"):
        main(["train", "--data", "mnist", "--out", str(tmp_path / "y")])
    with pytest.raises(ValueError, match="Unknown recipe fields"):
        main(["train", "--set", "learning_rate=1", "--out", str(tmp_path / "z")])
