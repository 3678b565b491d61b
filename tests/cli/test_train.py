"""`keras-spvit train | evaluate | predict` end to end on the bundled digits."""

import csv
import json
import os
import subprocess
import sys
import warnings
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
        command = [sys.executable, "-m", "keras_spvit.cli"]
    return subprocess.run(command + args, env=env, capture_output=True, text=True, timeout=900,
                          check=False)


def _epochs_logged(out):
    with open(out / "log.csv") as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="the command's resume wiring is backend-independent (tested here on TensorFlow); "
    "exact resumption on every backend is tests/training/test_resume.py",
)
def test_killed_mid_epoch_resumes_and_finishes(tmp_path, trained_run, capsys):
    out = tmp_path / "run"
    # The crash needs a process of its own; the resumed run does not (in this one,
    # it saves a process start-up: ~10-15 s of TensorFlow imports at load 3).
    crashed = _run(_train_args(out), crash_at=(1, 7))
    assert crashed.returncode == -9, crashed.stderr[-3000:]
    metadata = json.loads((out / "backup" / "training_metadata.json").read_text())
    done = metadata["batches_done"]
    assert metadata["epoch"] == 1 and 0 < done <= 8  # a mid-epoch backup
    assert _epochs_logged(out) == [0]
    assert not (out / "summary.json").exists()

    assert main(_train_args(out)) == 0
    resumed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert _epochs_logged(out) == [0, 1]  # epoch 0 was not redone
    # Resumed mid-epoch where the backup left off: as many optimizer steps as an
    # uninterrupted run (no batch replayed, none skipped).
    assert summary["optimizer_steps"] == 2 * STEPS
    assert f"Resuming from {out / 'backup'}: epoch 2/2, after batch {done}/{STEPS}" in resumed
    assert "new pass" not in resumed  # the position-addressed stream: the same batches
    # ... so it ends where the uninterrupted run of the same command ends (the
    # `trained_run` fixture). A replayed or reshuffled batch moves weights by
    # ~1e-3; 1e-5 leaves room for TensorFlow's CPU kernels without op determinism.
    with warnings.catch_warnings():  # the files' optimizer state is not needed here
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        ours = keras.saving.load_model(out / "model.keras", compile=False)
        theirs = keras.saving.load_model(trained_run / "model.keras", compile=False)
    for a, b in zip(ours.weights, theirs.weights):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b),
                                   rtol=0, atol=1e-5, err_msg=a.path)
    assert sorted(os.listdir(out / "checkpoints")) == ["epoch_001.weights.h5",
                                                        "epoch_002.weights.h5"]
    assert "val accuracy" in resumed and str(out / "model.keras") in resumed
    assert "on digits [train] (recipe digits" in resumed  # the data source, named
    assert summary["val_accuracy"] is not None and summary["images_per_second"] > 0

    # A finished run is not overwritten.
    with pytest.raises(SystemExit) as exit_info:
        main(_train_args(out))
    assert exit_info.value.code == 2


def test_evaluate_reproduces_validation_accuracy(trained_run, tmp_path, capsys):
    summary = json.loads((trained_run / "summary.json").read_text())
    assert main(["evaluate", str(trained_run), "--data", "digits", "--split", "test",
                 "--json", str(tmp_path / "eval.json")]) == 0
    results = json.loads((tmp_path / "eval.json").read_text())
    assert results["examples"] == 359
    assert results["top1"] == pytest.approx(summary["val_accuracy"], abs=1e-6)
    out = capsys.readouterr().out
    assert "top-1" in out
    assert ("preprocessing: 16x16, crop_pct 1, mean (0.5, 0.5, 0.5), std (0.5, 0.5, 0.5), "
            f"bicubic (from the run's train_config.json in {trained_run})") in out
    assert results["preprocessing"]["crop_pct"] == 1.0


def _write_test_digits(folder, count=None):
    """The held-out digits as grey PNG files written by Pillow: paths and labels."""
    from PIL import Image

    from keras_spvit.data.sources import digits_uint8

    images, labels = digits_uint8("test")
    count = count or len(labels)
    paths = []
    for i in range(count):
        path = folder / f"digit_{i:03d}.png"
        Image.fromarray(images[i]).save(path)
        paths.append(str(path))
    return paths, labels[:count]


NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def _predicted_names(capsys, paths):
    captured = capsys.readouterr()
    lines = [json.loads(line) for line in captured.out.strip().splitlines()]
    assert [line["image"] for line in lines] == paths
    for line in lines:
        probabilities = [entry["probability"] for entry in line["top"]]
        assert probabilities == sorted(probabilities, reverse=True)
    return [line["top"][0]["name"] for line in lines], captured.err


def test_predict_uses_the_runs_preprocessing(trained_run, tmp_path, capsys):
    summary = json.loads((trained_run / "summary.json").read_text())
    paths, labels = _write_test_digits(tmp_path)
    names_file = tmp_path / "names.json"
    names_file.write_text(json.dumps(NAMES))
    assert main(["predict", str(trained_run), *paths, "--top-k", "3", "--json",
                 "--class-names", str(names_file)]) == 0
    predicted, err = _predicted_names(capsys, paths)
    assert "from the run's train_config.json" in err and "crop_pct 1," in err
    correct = sum(name == NAMES[label] for name, label in zip(predicted, labels))
    # The same preprocessing as the run's validation: the same accuracy.
    assert correct == round(summary["val_accuracy"] * len(labels))



def test_predict_names_classes_with_the_runs_class_names(trained_run, tmp_path, capsys):
    # Digits' own names are "0".."9", which the fallback `str(class)` also
    # gives: a copy of the run whose class_names.json differs from the indices.
    import shutil

    summary = json.loads((trained_run / "summary.json").read_text())
    run = tmp_path / "run"
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns("backup", "checkpoints"))
    names = [f"digit {name}" for name in NAMES]
    (run / "class_names.json").write_text(json.dumps(names))
    paths, labels = _write_test_digits(tmp_path)
    assert main(["predict", str(run), *paths, "--top-k", "3", "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    for line in lines:
        assert all(entry["name"] == names[entry["class"]] for entry in line["top"])
    assert [line["image"] for line in lines] == paths
    predicted = np.asarray([line["top"][0]["class"] for line in lines])
    # The classes the run's validation counted right: its accuracy exactly.
    assert (predicted == labels).sum() == round(summary["val_accuracy"] * len(labels))


def test_predict_with_the_builtin_preset_reproduces_its_accuracy(tmp_path, capsys):
    from keras_spvit.models.presets import PRESETS_DIR

    metadata = json.loads((PRESETS_DIR / "spvit_tiny_digits" / "metadata.json").read_text())
    paths, labels = _write_test_digits(tmp_path)
    assert str(len(labels)) in metadata["held_out_split"]
    names_file = tmp_path / "names.json"
    names_file.write_text(json.dumps(NAMES))
    assert main(["predict", "SPViT_Tiny", "--weights", "spvit_tiny_digits", *paths, "--json",
                 "--class-names", str(names_file), "--top-k", "1"]) == 0
    predicted, err = _predicted_names(capsys, paths)
    assert "crop_pct 1, mean (0.5, 0.5, 0.5), std (0.5, 0.5, 0.5)" in err
    assert "the model's preprocessor (--weights spvit_tiny_digits)" in err
    correct = sum(name == NAMES[label] for name, label in zip(predicted, labels))
    assert correct == round(metadata["held_out_accuracy"] * len(labels))

    # Flags override the preset's preprocessing, and the output says so.
    assert main(["predict", "SPViT_Tiny", "--weights", "spvit_tiny_digits", paths[0],
                 "--crop-pct", "0.875", "--mean", "0.485", "0.456", "0.406",
                 "--std", "0.229", "0.224", "0.225"]) == 0
    out = capsys.readouterr().out
    assert "crop_pct 0.875, mean (0.485, 0.456, 0.406)" in out
    assert "--crop-pct, --mean, --std from the command line" in out


def test_bad_arguments_say_what_to_fix(tmp_path, capsys):
    for argv, expected in [
        (["train", "--model", "SPViT_XL", "--out", str(tmp_path / "x")], "unknown model 'SPViT_XL'"),
        (["train", "--data", "mnist", "--out", str(tmp_path / "y")], "Unknown data source 'mnist'"),
        (["train", "--set", "learning_rate=1", "--out", str(tmp_path / "z")],
         "unknown recipe field(s) ['learning_rate']"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        assert expected in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


def _folder_with_a_corrupt_image(root):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(2):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(12):
            Image.fromarray(rng.integers(0, 255, (16, 16, 3)).astype("uint8")).save(
                root / f"c{c}" / f"{i}.png")
    bad = root / "c1" / "broken.png"
    bad.write_bytes(rng.bytes(300))  # random bytes: no image format
    return bad


def test_a_corrupt_image_is_skipped_listed_and_warned_about(tmp_path, capsys):
    bad = _folder_with_a_corrupt_image(tmp_path / "images")

    def args(out, *extra):
        return ["train", "--model", "SPViT", "--model-args", TINY, "--image-size", "16",
                "--data", f"folder:{tmp_path / 'images'}", "--epochs", "2", "--batch-size", "8",
                "--out", str(tmp_path / out), "--verbose", "0", *extra,
                *(["--jit", "off"] if keras.backend.backend() == "tensorflow" else [])]

    assert main(args("run")) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    # 25 files, 3 batches of 8 per epoch: the run kept its steps (the bad
    # image's slot took another image of its batch) and says which file.
    assert summary["optimizer_steps"] == 6
    assert summary["bad_files"] == [str(bad)] and summary["bad_file_count"] == 1
    warning = capsys.readouterr().err
    assert "1 image file(s) did not decode" in warning and str(bad) in warning

    # --strict-data: one line naming the file, exit 2, no traceback.
    with pytest.raises(SystemExit) as exit_info:
        main(args("strict", "--strict-data"))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: cannot decode") and str(bad) in err and "\n" not in err


def test_cli_mix_token_relabels_exactly_the_tokens_inside_its_box():
    """`with_mix_token` (the train command's MixToken): pixels, token targets and
    image labels checked against the box read back from the pixels."""
    import types

    import tensorflow as tf

    from keras_spvit.cli.train import with_mix_token

    batch, side, patch, classes = 4, 4, 4, 10
    labels = np.array([3, 1, 4, 7], "int32")
    # Image i is the constant i + 1: every pixel says which image it came from.
    images = np.broadcast_to(np.arange(1, batch + 1, dtype="float32")[:, None, None, None],
                             (batch, side * patch, side * patch, 3))
    dataset = tf.data.Dataset.from_tensors((images, labels)).repeat(12)
    model = types.SimpleNamespace(output={"aux_logits": types.SimpleNamespace(
        shape=(None, side * side, classes))})
    partial_boxes = 0
    for mixed, targets in with_mix_token(dataset, model, classes, side * patch, seed=0):
        mixed = np.asarray(mixed)
        tokens = mixed[..., 0].reshape(batch, side, patch, side, patch).transpose(0, 1, 3, 2, 4)
        assert (tokens == tokens[..., :1, :1]).all()  # the box follows the patch grid
        source = tokens[..., 0, 0].astype(int) - 1  # (batch, side, side): image per token
        box = source[0] != 0
        for i in range(batch):
            # Inside the box the batch in reverse order; outside, the image itself.
            np.testing.assert_array_equal(source[i], np.where(box, batch - 1 - i, i))
            np.testing.assert_array_equal(
                np.asarray(targets["token_labels"])[i],
                np.where(box, labels[batch - 1 - i], labels[i]))
            kept = 1.0 - box.mean()
            expected = np.zeros(classes, "float32")
            expected[labels[i]] += kept
            expected[labels[batch - 1 - i]] += 1.0 - kept
            np.testing.assert_allclose(np.asarray(targets["labels"])[i], expected, atol=1e-6)
        rows, cols = np.nonzero(box)
        if rows.size:  # a rectangle of tokens
            assert box[rows.min():rows.max() + 1, cols.min():cols.max() + 1].all()
        partial_boxes += 0 < box.sum() < side * side
    assert partial_boxes >= 3  # the checks above ran on real boxes
