"""The examples run, at toy scale."""

import importlib.util
from pathlib import Path

import pytest

from tests.conftest import BACKEND, on_one_backend

EXAMPLES = Path(__file__).parent.parent / "examples"


def load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def assert_holds_the_ema_weights(path):
    """`model.keras` of an EMA run: its weights are the optimizer's moving averages.

    The file also stores the optimizer's variables: `iterations`, then one
    moving average per trainable variable, in order. With the recipe's
    momentum (0.99992) a few steps leave the averages far (~1e-2) from the raw
    trained weights, so a file holding the raw weights fails this.
    """
    import io
    import zipfile

    import h5py
    import keras
    import numpy as np

    model = keras.saving.load_model(path, compile=False)
    with zipfile.ZipFile(path) as archive:
        with h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r") as weights:
            group = weights["optimizer"]["vars"]
            saved = [group[str(i)][()] for i in range(len(group))]
    trainable = [keras.ops.convert_to_numpy(v) for v in model.trainable_variables]
    assert saved[0] > 0 and len(saved) >= 1 + len(trainable)  # steps were taken
    for variable, weight, average in zip(model.trainable_variables, trainable, saved[1:]):
        np.testing.assert_array_equal(weight, average, err_msg=variable.path)


@on_one_backend("the example's plumbing; PSViT trains on every backend in "
                "tests/models/test_model_contract.py")
def test_psvit_search_example(tmp_path):
    best, tuner = load("psvit_search").main(
        ["--trials", "2", "--epochs", "1", "--limit", "3", "--depth", "4",
         "--directory", str(tmp_path), "--jit", "off"]
    )
    trials = list(tuner.oracle.trials.values())
    assert len(trials) == 2 and all(t.status == "COMPLETED" for t in trials)
    assert sum(best["stage_depths"]) == 4


# On TensorFlow, not torch: eager torch trains this example no faster (258 s on torch
# at load 9, ~3.5x its quiet time; 71 s on TensorFlow in a quiet suite run).
@pytest.mark.skipif(BACKEND != "tensorflow", reason="the example's plumbing; the trainer it "
                    "calls is tested on every backend (tests/cli, tests/training)")
def test_digits_demo(tmp_path, capsys):
    results = load("digits_demo").main(
        # XLA compiles for longer than one toy epoch trains on a CPU.
        ["--epochs", "1", "--seeds", "0", "--out", str(tmp_path), "--jit", "off"]
    )
    import keras
    import numpy as np

    from keras_spvit.data.sources import source_dataset

    assert set(results) == {"SPViT_Tiny", "LVViT_Tiny"}
    for name, runs in results.items():
        # The reported accuracy is the saved model's on the 359 held-out digits,
        # recomputed from its logits (not read back from fit's metric).
        model = keras.saving.load_model(tmp_path / f"{name}_seed0" / "model.keras",
                                        compile=False)
        held_out, _ = source_dataset("digits", "test", image_size=model.input_shape[1],
                                     batch_size=359, training=False)
        images, labels = next(iter(held_out))
        logits = keras.ops.convert_to_numpy(model(images, training=False))
        top2 = np.sort(logits, -1)[:, -2:]
        # Near ties (top two logits within 1e-4; float32 kernels differ by ~1e-6
        # between a compiled and an eager call) may go either way.
        ties = int((top2[:, 1] - top2[:, 0] < 1e-4).sum())
        correct = int((logits.argmax(-1) == np.asarray(labels)).sum())
        assert abs(round(runs[0]["val_accuracy"] * 359) - correct) <= ties, (correct, ties)
    png = tmp_path / "SPViT_Tiny_seed0" / "spatial_priors.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = capsys.readouterr().out
    assert "SPViT_Tiny" in out and "LVViT_Tiny" in out and "mean" in out


@pytest.mark.skipif(BACKEND == "jax", reason="the train command is tested on every backend "
                    "(tests/cli); this adds the paper's recipe and fine-tuning at toy scale")
def test_imagenet_training_then_384_finetune_examples(tmp_path):
    import json

    pretrain = tmp_path / "pretrain"
    # XLA compiles for longer than these toy runs train on a CPU.
    assert load("train_imagenet").main(["--toy", "--out", str(pretrain), "--jit", "off"]) == 0
    summary = json.loads((pretrain / "summary.json").read_text())
    config = json.loads((pretrain / "train_config.json").read_text())
    # The paper's recipe ran: token labeling with MixToken, EMA.
    assert config["recipe"]["mix_token"] and config["recipe"]["token_label_weight"] == 1.0
    assert config["recipe"]["ema_momentum"] is not None
    assert summary["epochs"] == 2 and summary["val_accuracy"] is not None
    assert_holds_the_ema_weights(pretrain / "model.keras")

    weights = pretrain / "checkpoints" / "epoch_002.weights.h5"
    finetune = tmp_path / "finetune"
    assert load("finetune_384").main(
        ["--toy", "--weights", str(weights), "--out", str(finetune), "--jit", "off"]
    ) == 0
    tuned = json.loads((finetune / "train_config.json").read_text())
    assert tuned["image_size"] == 48 and tuned["recipe"]["name"] == "spvit_finetune_384"
    assert (finetune / "model.keras").exists()
