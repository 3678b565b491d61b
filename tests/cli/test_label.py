"""`keras-spvit label`: dense labels from a teacher, resumption, the released files, errors."""

import json

import keras
import numpy as np
import pytest

import keras_spvit
from keras_spvit.cli import main
from keras_spvit.data.token_labels import TokenLabels
from tests.data.test_pipelines import autograph_conversions
from tests.data.test_token_labels import _released_tree

N = 12


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "small.npz"
    rng = np.random.default_rng(0)
    np.savez(path, images=rng.integers(0, 256, (N, 32, 32, 3), dtype=np.uint8),
             labels=np.arange(N) % 10)
    return path


@pytest.fixture(scope="module")
def teacher_logits(npz):
    """The preset's aux-head logits per token, computed without the label code."""
    model = keras_spvit.SPViTImageClassifier.from_preset("spvit_tiny_digits", return_dense=True)
    converter = model.preprocessor.image_converter
    with np.load(npz) as data:
        images = data["images"].astype("float32") / 255.0
    x = (images - np.array(converter.mean, "float32")) / np.array(converter.std, "float32")
    outputs = keras.Model(model.input, model.output).predict_on_batch(x)
    return keras.ops.convert_to_numpy(outputs["aux_logits"]).reshape(N, 8, 8, 10)


def _label(out, npz, *extra):
    return main(["label", "--teacher", "spvit_tiny_digits", "--data", f"npz:{npz}",
                 "--out", str(out), "--batch-size", "5", "--shard-size", "5", *extra])


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="the label pipeline is tf.data and the store numpy: backend-independent; the "
    "teacher's per-location logits are tested on every backend in "
    "tests/models/test_dense_teacher.py and the command runs on each below (a .keras teacher)",
)
def test_labels_are_the_teachers_top_k_and_a_rerun_continues(tmp_path, npz, teacher_logits,
                                                              capsys):
    out = tmp_path / "labels"
    assert _label(out, npz) == 0
    printed = capsys.readouterr().out
    assert "preprocessing: 32x32, crop_pct 1," in printed
    assert f"{N} images labelled ({N} in {out}), grid 8x8, top-5" in printed
    labels = TokenLabels.open(out)
    assert (labels.grid, labels.k, labels.num_classes) == ((8, 8), 5, 10)
    assert labels.keys() == [str(i) for i in range(N)]
    assert labels.teacher == "spvit_tiny_digits" and labels.crop_pct == 1.0
    expected = -np.sort(-teacher_logits, axis=-1)[..., :5]
    for i in range(N):
        scores, ids = labels.get(str(i))
        np.testing.assert_allclose(scores, expected[i], rtol=2e-3, atol=2e-3)
        # The ids name the classes of those scores (robust to ties).
        np.testing.assert_allclose(np.take_along_axis(teacher_logits[i], ids, -1), scores,
                                   rtol=2e-3, atol=2e-3)
        assert (np.sort(ids, -1)[..., 1:] != np.sort(ids, -1)[..., :-1]).all()
    before = {key: labels.get(key) for key in labels.keys()}

    # Killed after the first shard: the index lists it alone, the second was half written.
    index = json.loads((out / "index.json").read_text())
    (out / "index.json").write_text(json.dumps({**index, "shards": index["shards"][:1]}))
    (out / "scores-00001.npy").write_bytes(b"cut short")
    assert _label(out, npz) == 0
    printed = capsys.readouterr().out
    assert f"Continuing '{out}': 5 images already labelled" in printed
    assert f"7 images labelled ({N} in {out})" in printed
    labels = TokenLabels.open(out)
    assert sorted(labels.keys()) == sorted(before)
    for key, (scores, ids) in before.items():
        np.testing.assert_array_equal(labels.get(key)[0], scores)
        np.testing.assert_array_equal(labels.get(key)[1], ids)

    with pytest.raises(SystemExit) as exit_info:
        _label(out, npz, "--top-k", "3")
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: --out") and "\n" not in error
    assert "k=5; this run has k=3" in error


def test_a_keras_file_teacher(tmp_path, npz, capsys, monkeypatch):
    model = keras.Sequential([
        keras.Input((32, 32, 3)),
        keras.layers.Conv2D(8, 3, strides=4, padding="same", activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(10, activation="softmax"),
    ])
    model.save(tmp_path / "cnn.keras")
    converted = autograph_conversions(monkeypatch)
    assert main(["label", "--teacher", str(tmp_path / "cnn.keras"), "--data", f"npz:{npz}",
                 "--out", str(tmp_path / "l"), "--top-k", "3", "--crop-pct", "0.5"]) == 0
    labels = TokenLabels.open(tmp_path / "l")
    assert (labels.grid, labels.k, labels.num_classes, len(labels)) == ((8, 8), 3, 10, N)
    # The label pipeline runs the package's transforms as written (`taken_branch_only`).
    assert sorted({m for m in converted if m.startswith("keras_spvit")}) == []
    scores, _ = labels.get("3")
    assert (np.diff(scores, axis=-1) <= 0).all()  # logits, best first
    assert labels.crop_pct == 0.5 and "preprocessing: 32x32, crop_pct 0.5" in \
        capsys.readouterr().out


def test_released_labels_round_trip(tmp_path, capsys):
    expected = _released_tree(tmp_path / "released")
    assert main(["label", "--released", str(tmp_path / "released"), "--out",
                 str(tmp_path / "l"), "--image-size", "576"]) == 0
    assert "6 released labels converted" in capsys.readouterr().out
    labels = TokenLabels.open(tmp_path / "l")
    assert labels.image_size == [576, 576] and labels.num_classes == 1000
    for key, (scores, ids) in expected.items():
        np.testing.assert_array_equal(labels.get(key)[0], scores)
        np.testing.assert_array_equal(labels.get(key)[1], ids)


TEACHER = ["--teacher", "spvit_tiny_digits"]


@pytest.mark.parametrize("argv, text", [
    (["--data", "digits", "--out", "o"], "expected exactly one of --teacher"),
    (TEACHER + ["--out", "a_file"], "--out 'a_file' is a file"),
    (TEACHER + ["--out", "other"], "--out 'other' is a folder that holds no token labels"),
    (TEACHER + ["--out", "o", "--data", "folder:/nope"], "no such folder"),
    (["--teacher", "runs/nope", "--out", "o"], "--teacher 'runs/nope': no such run directory"),
    (["--teacher", "SPViT_Tiny", "--weights", "nope.weights.h5", "--out", "o"],
     "--weights 'nope.weights.h5'"),
    (TEACHER + ["--out", "o", "--image-size", "64"], "image_size 64x64: the teacher 'spvit_tiny_digits' takes 32x32"),
    (TEACHER + ["--out", "o", "--top-k", "0"], "expected a positive integer"),
    (["--released", "/nope", "--out", "o"], "--released '/nope': no such folder"),
])
def test_mistakes_are_one_line(argv, text, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x").write_text("x")
    with pytest.raises(SystemExit) as exit_info:
        main(["label", *argv])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and "\n" not in error and text in error, error
    assert not (tmp_path / "o").exists()
