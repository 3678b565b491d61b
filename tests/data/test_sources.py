"""The `npz:PATH` source string of the CLI: what it reads, what it says, what it refuses."""

import numpy as np
import pytest

from keras_spvit.data.sources import SourceError, check_source, source_dataset


def _archive(path, count=10, size=8, channels=3, classes=(0, 1, 4)):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (count, size, size, channels), dtype=np.uint8)
    labels = np.resize(np.asarray(classes), count)
    np.savez(path, images=images, labels=labels)
    return images, labels


def test_npz_source_gives_its_images_and_labels_in_order(tmp_path):
    images, labels = _archive(tmp_path / "data.npz")
    source = f"npz:{tmp_path / 'data.npz'}"
    # Classes from the largest label (4 -> 5: the absent ones are classes too).
    assert check_source(source, "train")["num_classes"] == 5
    # Evaluation at the stored size, mean 0 / std 1, crop_pct 1: pixels / 255 exactly.
    dataset, info = source_dataset(source, "ignored", image_size=8, batch_size=4,
                                   training=False, mean=(0, 0, 0), std=(1, 1, 1), crop_pct=1.0)
    assert info == {"num_classes": 5, "class_names": None}
    batches = list(dataset)
    got_images = np.concatenate([x.numpy() for x, _ in batches])
    got_labels = np.concatenate([y.numpy() for _, y in batches])
    np.testing.assert_array_equal(got_labels, labels)
    np.testing.assert_allclose(got_images, images / 255.0, rtol=0, atol=1e-6)


def test_npz_source_trains_on_every_example_once_per_epoch(tmp_path):
    _, labels = _archive(tmp_path / "data.npz", count=12, classes=range(12))
    dataset, _ = source_dataset(f"npz:{tmp_path / 'data.npz'}", "train", image_size=8,
                                batch_size=4, training=True, seed=1)
    seen = np.concatenate([y.numpy() for _, y in dataset])
    # One-hot or sparse: the label ids drawn, shuffled, each once.
    seen = seen.argmax(-1) if seen.ndim == 2 else seen
    assert sorted(seen.tolist()) == sorted(labels.tolist())
    assert seen.tolist() != labels.tolist()  # shuffled


def test_npz_source_errors_name_the_file_and_the_arrays(tmp_path):
    with pytest.raises(SourceError, match="no such file"):
        check_source(f"npz:{tmp_path / 'missing.npz'}", "train")
    np.savez(tmp_path / "bad.npz", x=np.zeros((2, 8, 8, 3)), y=np.zeros(2))
    with pytest.raises((SourceError, ValueError), match=r"lacks arrays \['images', 'labels'\]"):
        check_source(f"npz:{tmp_path / 'bad.npz'}", "train")
