"""`keras-spvit train --token-labels`: training on a teacher's dense labels from the CLI.

The label store is written directly (`TokenLabelWriter`) for a small `npz:`
source; the targets themselves are tested in tests/data/test_dense_targets.py.
"""

import json

import keras
import numpy as np
import pytest

from keras_spvit.cli import main
from keras_spvit.data.token_labels import TokenLabelWriter

pytestmark = pytest.mark.skipif(
    keras.backend.backend() == "jax",
    reason="the CLI path is backend-independent up to fit; TensorFlow and torch run it "
    "(JAX's training on dense targets: tests/data/test_dense_targets.py)",
)
N, CLASSES = 16, 3
TINY = '{"embed_dim": 16, "depth": 2, "num_heads": 2, "spatial_prior_blocks": 1}'


@pytest.fixture
def data(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", images=rng.integers(0, 256, (N, 32, 32, 3), dtype=np.uint8),
             labels=np.arange(N) % CLASSES)
    return tmp_path


def _labels(path, keys, num_classes=CLASSES):
    rng = np.random.default_rng(1)
    with TokenLabelWriter(path, grid=(4, 4), k=2, num_classes=num_classes,
                          teacher="test") as writer:
        scores = rng.normal(size=(len(keys), 4, 4, 2)).astype("float32")
        ids = np.stack([np.zeros((len(keys), 4, 4), int), np.ones((len(keys), 4, 4), int)], -1)
        writer.add(keys, scores, ids)
    return str(path)


def _train(data, labels, *extra, out="run"):
    return main(["train", "--data", f"npz:{data / 'd.npz'}", "--model", "SPViT_Tiny",
                 "--model-args", TINY, "--image-size", "32", "--batch-size", "8",
                 "--epochs", "1", "--jit", "off", "--recipe", "digits",
                 "--set", "token_label_weight=1.0", "--set", "mix_token=True",
                 "--token-labels", labels, "--out", str(data / out), *extra])


def test_train_on_token_labels(data, capsys):
    labels = _labels(data / "labels", [str(i) for i in range(N)])
    assert _train(data, labels) == 0
    summary = json.loads((data / "run" / "summary.json").read_text())
    assert summary["optimizer_steps"] == N // 8
    assert summary["missing_token_label_count"] == 0
    config = json.loads((data / "run" / "train_config.json").read_text())
    assert config["token_labels"] == labels and config["token_label_box"] == "release"


def _error(capsys, *args, **kwargs):
    with pytest.raises(SystemExit) as exit_info:
        _train(*args, **kwargs)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1, err
    return err[0]


def test_token_label_errors(data, capsys):
    partial = _labels(data / "partial", [str(i) for i in range(N) if i not in (3, 11)])
    line = _error(capsys, data, partial)
    assert "no label for 2 of 16 training images ('3', '11')" in line
    assert "--allow-missing-token-labels" in line
    assert not (data / "run").exists()

    wrong = _labels(data / "wrong", [str(i) for i in range(N)], num_classes=5)
    line = _error(capsys, data, wrong)
    assert "the labels have 5 classes; the run has 3" in line

    line = _error(capsys, data, str(data / "nowhere"))
    assert "--token-labels" in line and "nowhere" in line


def test_missing_labels_allowed_are_named(data, capsys):
    partial = _labels(data / "partial", [str(i) for i in range(N) if i != 5])
    assert _train(data, partial, "--allow-missing-token-labels") == 0
    assert "no label for 1 of 16 training images ('5')" in capsys.readouterr().err
    summary = json.loads((data / "run" / "summary.json").read_text())
    assert summary["missing_token_labels"] == ["5"]
