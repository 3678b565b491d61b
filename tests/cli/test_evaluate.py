"""`keras-spvit evaluate`: top-1 / top-5 / loss against numpy on the model's own logits,
images/s on a known clock, a builder name with `--weights`."""

import json
import sys
import types

import keras
import numpy as np
import pytest

from keras_spvit.cli import main
from keras_spvit.data.sources import source_dataset

SPLIT = 359  # digits' held-out split


def _run_logits(trained_run, quantize=None):
    """The run's model.keras on the held-out digits, preprocessed as its
    train_config.json says (read here, not through the CLI): logits, labels.
    `quantize`: a mode for Keras' `model.quantize` applied after loading."""
    config = json.loads((trained_run / "train_config.json").read_text())
    pre = config["preprocessing"]
    dataset, _ = source_dataset("digits", "test", image_size=config["image_size"],
                                batch_size=100, training=False, crop_pct=pre["crop_pct"],
                                mean=pre["mean"], std=pre["std"])
    model = keras.saving.load_model(trained_run / "model.keras", compile=False)
    if quantize:
        model.quantize(quantize)
    logits, labels = [], []
    for images, y in dataset:
        out = model(images, training=False)
        out = out["logits"] if isinstance(out, dict) else out
        logits.append(keras.ops.convert_to_numpy(out).astype("float64"))
        labels.append(np.asarray(y))
    return np.concatenate(logits), np.concatenate(labels)


def test_evaluate_top5_and_loss_equal_numpys_on_the_logits(trained_run, tmp_path):
    assert main(["evaluate", str(trained_run), "--data", "digits", "--split", "test",
                 "--json", str(tmp_path / "eval.json")]) == 0
    results = json.loads((tmp_path / "eval.json").read_text())
    logits, labels = _run_logits(trained_run)
    assert results["examples"] == len(labels) == SPLIT
    # top-k: the label's rank (how many logits beat it) is below k.
    rank = (logits > logits[np.arange(SPLIT), labels][:, None]).sum(-1)
    assert results["top1"] == pytest.approx((rank < 1).mean(), abs=1e-12)
    assert results["top5"] == pytest.approx((rank < 5).mean(), abs=1e-12)
    # The run is not perfect at top-1 (else top-5 would prove nothing beyond it).
    assert (rank < 1).mean() < (rank < 5).mean() or (rank < 1).mean() < 1
    # Cross-entropy through logaddexp (a different route than the code's).
    loss = np.mean(np.logaddexp.reduce(logits, axis=-1) - logits[np.arange(SPLIT), labels])
    assert results["loss"] == pytest.approx(loss, rel=1e-5)


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="--quantize is backend-independent plumbing (tested here on TensorFlow); "
    "int8 on every backend is tests/models/test_quantize.py",
)
def test_evaluate_quantized_is_the_quantized_models_numbers(trained_run, tmp_path, capsys):
    assert main(["evaluate", str(trained_run), "--data", "digits", "--quantize", "int8",
                 "--json", str(tmp_path / "int8.json")]) == 0
    assert "quantized: int8" in capsys.readouterr().out
    results = json.loads((tmp_path / "int8.json").read_text())
    assert results["quantize"] == "int8"
    logits, labels = _run_logits(trained_run, quantize="int8")
    float_logits, _ = _run_logits(trained_run)
    assert np.abs(logits - float_logits).max() > 1e-4  # int8 changes the logits
    loss = np.mean(np.logaddexp.reduce(logits, axis=-1) - logits[np.arange(SPLIT), labels])
    assert results["loss"] == pytest.approx(loss, rel=1e-5)
    assert results["top1"] == pytest.approx(np.mean(logits.argmax(-1) == labels), abs=1e-12)


def test_evaluate_images_per_second_leaves_out_the_first_batch(trained_run, monkeypatch,
                                                               capsys):
    # A clock that advances 1 s per reading: each batch takes exactly 1 s.
    module = sys.modules["keras_spvit.cli.evaluate"]
    ticks = iter(range(10**6))
    monkeypatch.setattr(module, "time", types.SimpleNamespace(perf_counter=lambda: next(ticks)))
    assert main(["evaluate", str(trained_run), "--data", "digits", "--batch-size", "100"]) == 0
    # Batches of 100, 100, 100, 59; the first (tracing) is not timed: 259 images in 3 s.
    out = capsys.readouterr().out
    assert f"{259 / 3:.1f} images/s" in out
    assert "top-5" in out and "loss" in out


def test_evaluate_loads_a_builder_name_with_weights(tmp_path):
    from keras_spvit.models.presets import PRESETS_DIR

    metadata = json.loads((PRESETS_DIR / "spvit_tiny_digits" / "metadata.json").read_text())
    assert main(["evaluate", "SPViT_Tiny", "--weights", "spvit_tiny_digits", "--data", "digits",
                 "--json", str(tmp_path / "eval.json")]) == 0
    results = json.loads((tmp_path / "eval.json").read_text())
    # The preset's right answers exactly (its top-2 logit margins are >= 0.21,
    # tests/models/spvit/test_digits_preset.py): the weights were loaded.
    assert round(results["top1"] * SPLIT) == round(metadata["held_out_accuracy"] * SPLIT)
    assert results["top5"] >= results["top1"]

    # Random weights (the builder without --weights) are far from it.
    assert main(["evaluate", "SPViT_Tiny", "--num-classes", "10", "--data", "digits",
                 "--json", str(tmp_path / "random.json")]) == 0
    assert json.loads((tmp_path / "random.json").read_text())["top1"] < 0.5
