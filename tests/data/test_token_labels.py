"""The token labels store: shards, resumption, tf.data lookup, the released `.pt` files."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from keras_spvit.data.token_labels import (
    TokenLabels,
    TokenLabelWriter,
    convert_released_labels,
    read_released_label,
)
from tests.torch_format import pickle_tensor, write_torch_zip

GRID, K, CLASSES = (3, 4), 5, 50
SETTINGS = dict(grid=GRID, k=K, num_classes=CLASSES, teacher="t", image_size=(24, 32),
                crop_pct=1.0)


def _records(n, seed=0):
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=(n,) + GRID + (K,)).astype(np.float32) * 10
    ids = np.stack([rng.permutation(CLASSES)[:K] for _ in range(n * GRID[0] * GRID[1])])
    return [f"c{i % 3}/img_{i}" for i in range(n)], scores, ids.reshape(scores.shape)


def test_round_trip_in_shards(tmp_path):
    keys, scores, ids = _records(7)
    with TokenLabelWriter(tmp_path / "l", shard_size=3, class_names=["a"] * CLASSES,
                          **SETTINGS) as writer:
        assert writer.add(keys[:4], scores[:4], ids[:4]) == 4
        assert writer.add(keys[4:], scores[4:], ids[4:]) == 3
    index = json.loads((tmp_path / "l" / "index.json").read_text())
    assert [s["count"] for s in index["shards"]] == [3, 3, 1]
    assert index["grid"] == [3, 4] and index["image_size"] == [24, 32]
    assert np.load(tmp_path / "l" / "scores-00000.npy").dtype == np.float16
    assert np.load(tmp_path / "l" / "ids-00002.npy").dtype == np.int16
    labels = TokenLabels.open(tmp_path / "l")
    assert (labels.grid, labels.k, labels.num_classes, len(labels)) == (GRID, K, CLASSES, 7)
    assert labels.keys() == keys and labels.class_names == ["a"] * CLASSES
    for i, key in enumerate(keys):
        got_scores, got_ids = labels.get(key)
        assert got_scores.dtype == np.float32 and got_ids.dtype == np.int32
        np.testing.assert_array_equal(got_scores, scores[i].astype(np.float16).astype(np.float32))
        np.testing.assert_array_equal(got_ids, ids[i])
    assert not any(name.startswith(".") or ".tmp" in name for name in os.listdir(tmp_path / "l"))


def test_many_classes_store_int32_ids(tmp_path):
    ids = np.full((1,) + GRID + (K,), 40000) + np.arange(K)
    with TokenLabelWriter(tmp_path, **{**SETTINGS, "num_classes": 40010}) as writer:
        writer.add(["x"], np.zeros(ids.shape), ids)
    assert np.load(tmp_path / "ids-00000.npy").dtype == np.int32
    np.testing.assert_array_equal(TokenLabels.open(tmp_path).get("x")[1], ids[0])


def test_killed_writer_loses_only_its_open_shard_and_resumes(tmp_path):
    keys, scores, ids = _records(7)
    writer = TokenLabelWriter(tmp_path, shard_size=3, **SETTINGS)
    writer.add(keys[:5], scores[:5], ids[:5])  # "killed" here: two records buffered
    (tmp_path / "scores-00001.npy").write_bytes(b"half a file")  # a write cut short
    assert len(TokenLabels.open(tmp_path)) == 3
    again = TokenLabelWriter(tmp_path, shard_size=3, **SETTINGS)
    assert again.resumed and again.done_keys() == set(keys[:3])
    with again:
        assert again.add(keys, scores, ids) == 4  # the stored three are skipped
    labels = TokenLabels.open(tmp_path)
    assert sorted(labels.keys()) == sorted(keys)
    np.testing.assert_array_equal(labels.get(keys[4])[1], ids[4])


@pytest.mark.parametrize("change, message", [
    ({"teacher": "other"}, "teacher='t'; this run has teacher='other'"),
    ({"k": 3}, "k=5; this run has k=3"),
    ({"crop_pct": 0.875}, "crop_pct=1.0"),
    ({"grid": (4, 4)}, "grid=[3, 4]"),
])
def test_other_settings_in_an_existing_directory_are_refused(tmp_path, change, message):
    TokenLabelWriter(tmp_path, **SETTINGS).close()
    with pytest.raises(ValueError, match="Expected the same settings") as error:
        TokenLabelWriter(tmp_path, **{**SETTINGS, **change})
    assert message in str(error.value) and "\n" not in str(error.value)


def test_errors_are_one_line(tmp_path):
    with pytest.raises(ValueError, match="is not a token labels directory") as error:
        TokenLabels.open(tmp_path / "nope")
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="has no index.json"):
        TokenLabels.open(tmp_path)
    keys, scores, ids = _records(2)
    with TokenLabelWriter(tmp_path / "l", **SETTINGS) as writer:
        writer.add(keys[:1], scores[:1], ids[:1])
        with pytest.raises(ValueError, match="Duplicate label key 'c0/img_0'"):
            writer.add(keys[:1], scores[:1], ids[:1])
        with pytest.raises(ValueError, match="Duplicate label key 'c1/img_1'"):
            writer.add([keys[1]] * 2, scores, ids)
        assert len(writer) == 1  # a refused batch adds nothing
        with pytest.raises(ValueError, match=r"Expected scores and ids shaped \(2, 3, 4, 5\)"):
            writer.add(keys, scores[:, :2], ids[:, :2])
        with pytest.raises(ValueError, match=r"Expected class ids in \[0, 50\)"):
            writer.add(keys[1:], scores[1:], ids[1:] + CLASSES)
    index_path = tmp_path / "l" / "index.json"
    index = json.loads(index_path.read_text())
    index_path.write_text(json.dumps({**index, "version": 99}))
    with pytest.raises(ValueError, match="format version 99; this keras_spvit reads version 1"):
        TokenLabels.open(tmp_path / "l")
    with pytest.raises(ValueError, match="format version 99"):
        TokenLabelWriter(tmp_path / "l", **SETTINGS)


def test_lookup_inside_a_parallel_tf_data_map(tmp_path):
    keys, scores, ids = _records(9)
    with TokenLabelWriter(tmp_path, shard_size=4, **SETTINGS) as writer:
        writer.add(keys, scores, ids)
    labels = TokenLabels.open(tmp_path)
    asked = keys[::-1] + ["missing/key"]
    dataset = tf.data.Dataset.from_tensor_slices(asked).map(
        lambda key: (key,) + labels.lookup(key), num_parallel_calls=4, deterministic=True)
    for key, got_scores, got_ids, found in dataset:
        assert got_scores.shape == GRID + (K,) and got_ids.dtype == tf.int32
        key = key.numpy().decode()
        if key == "missing/key":
            assert not found and not np.any(got_scores) and not np.any(got_ids)
            continue
        i = keys.index(key)
        assert found
        np.testing.assert_array_equal(got_scores, scores[i].astype(np.float16).astype(np.float32))
        np.testing.assert_array_equal(got_ids, ids[i])
    batch_scores, batch_ids, batch_found = labels.lookup(tf.constant([keys[2], "no"]))
    assert batch_scores.shape == (2,) + GRID + (K,)
    np.testing.assert_array_equal(batch_found, [True, False])
    np.testing.assert_array_equal(batch_ids[0], ids[2])
    with pytest.raises(KeyError, match="No token labels for key 'no'"):
        labels.get("no")


# === The released files, written as the release writes them ===


def write_released_label(path, scores, ids):
    """Writes what `torch.save(torch.stack([value, index.half()]).permute(0, 3, 1, 2))`
    writes: `value`/`index` are `(h, w, k)`, so the saved tensor is a strided view
    `(2, k, h, w)` of a contiguous `(2, h, w, k)` half storage."""
    storage = np.stack([scores, ids]).astype(np.float16)  # (2, h, w, k)
    _, h, w, k = storage.shape
    tensor = pickle_tensor("HalfStorage", "0", storage.size, 0, (2, k, h, w),
                           (h * w * k, 1, w * k, k))
    write_torch_zip(path, b"\x80\x02" + tensor + b".", {"0": storage},
                    name=os.path.basename(path)[:-3])


def _released_tree(root, n_per_class=3, grid=(2, 3), seed=0):
    rng = np.random.default_rng(seed)
    expected = {}
    for cls in ("n01", "n02"):
        os.makedirs(root / cls)
        for i in range(n_per_class):
            scores = np.sort(rng.normal(size=grid + (5,)), -1)[..., ::-1].astype(np.float16)
            ids = rng.integers(0, 1000, size=grid + (5,))
            write_released_label(str(root / cls / f"{cls}_{i}.pt"), scores, ids)
            expected[f"{cls}/{cls}_{i}"] = (scores.astype(np.float32), ids)
    return expected


def test_read_released_label(tmp_path):
    expected = _released_tree(tmp_path)
    scores, ids = read_released_label(tmp_path / "n02" / "n02_1.pt")
    assert scores.shape == ids.shape == (2, 3, 5)
    assert scores.dtype == np.float32 and ids.dtype == np.int32
    np.testing.assert_array_equal(scores, expected["n02/n02_1"][0])
    np.testing.assert_array_equal(ids, expected["n02/n02_1"][1])


def test_a_file_that_is_not_a_released_label_is_named(tmp_path):
    from tests.torch_format import write_torch_checkpoint

    write_torch_checkpoint(str(tmp_path / "x.pt"), {"a": np.zeros((2, 5, 3), np.float16)})
    with pytest.raises(ValueError, match=r"x.pt' is not a released token label: expected a "
                       r"\(2, k, h, w\) tensor"):
        read_released_label(tmp_path / "x.pt")
    storage = np.full((2, 1, 1, 5), 0.5, np.float16)
    tensor = pickle_tensor("HalfStorage", "0", 10, 0, (2, 5, 1, 1), (5, 1, 5, 5))
    write_torch_zip(str(tmp_path / "y.pt"), b"\x80\x02" + tensor + b".", {"0": storage})
    with pytest.raises(ValueError, match="expected non-negative integer class ids"):
        read_released_label(tmp_path / "y.pt")


def test_convert_released_labels_resumes(tmp_path):
    root = tmp_path / "released"
    expected = _released_tree(root)
    os.remove(root / "n02" / "n02_2.pt")  # arrives later
    assert convert_released_labels(root, tmp_path / "l", shard_size=4, verbose=0) == 5
    write_released_label(str(root / "n02" / "n02_2.pt"), expected["n02/n02_2"][0],
                         expected["n02/n02_2"][1])
    assert convert_released_labels(root, tmp_path / "l", shard_size=4, verbose=0) == 1
    labels = TokenLabels.open(tmp_path / "l")
    assert (labels.grid, labels.k, labels.num_classes) == ((2, 3), 5, 1000)
    assert sorted(labels.keys()) == sorted(expected)
    for key, (scores, ids) in expected.items():
        got_scores, got_ids = labels.get(key)
        np.testing.assert_array_equal(got_scores, scores)
        np.testing.assert_array_equal(got_ids, ids)
    with pytest.raises(ValueError, match="holds no <class>/<stem>.pt label files"):
        convert_released_labels(tmp_path / "l", tmp_path / "m", verbose=0)
