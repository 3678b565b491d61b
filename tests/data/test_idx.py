"""MNIST-format (IDX) files and the Fashion-MNIST / `idx:` sources."""

import gzip
import struct

import numpy as np
import pytest

from keras_spvit.data import idx
from keras_spvit.data.sources import SourceError, check_source, source_dataset, source_info

pytestmark = pytest.mark.skipif(
    __import__("keras").backend.backend() != "tensorflow",
    reason="tf.data and numpy only: run once, on TensorFlow",
)


def _write_idx(path, array, gz=False):
    """IDX from its definition: 0, 0, type code, ndim, big-endian uint32 dims, data."""
    codes = {np.dtype("u1"): 0x08, np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D}
    array = np.asarray(array)
    if array.dtype != np.uint8:
        array = array.astype(array.dtype.newbyteorder(">"))
    header = bytes([0, 0, codes[array.dtype], array.ndim])
    header += b"".join(struct.pack(">I", n) for n in array.shape)
    data = header + array.tobytes()
    with (gzip.open if gz else open)(path, "wb") as file:
        file.write(data)
    return path


def _mnist_folder(root, n_train=20, n_test=6, classes=4, gz=True):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        images = rng.integers(0, 256, (n, 12, 12), dtype=np.uint8)
        labels = (np.arange(n) % classes).astype(np.uint8)
        ext = ".gz" if gz else ""
        _write_idx(root / f"{prefix}-images-idx3-ubyte{ext}", images, gz)
        _write_idx(root / f"{prefix}-labels-idx1-ubyte{ext}", labels, gz)
        arrays[split] = images, labels
    return arrays


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_types(tmp_path, gz):
    values = {
        "u1": np.arange(24, dtype=np.uint8).reshape(2, 3, 4),
        "i4": np.array([[-5, 70000], [1, -2]], dtype=np.int32),
        "f4": np.array([1.5, -2.25, 3e7], dtype=np.float32),
    }
    for name, array in values.items():
        path = _write_idx(tmp_path / f"{name}.idx", array, gz)
        read = idx.read_idx(path)
        np.testing.assert_array_equal(read, array)
        assert read.dtype.isnative and read.shape == array.shape


def test_read_idx_rejects_bad_files(tmp_path):
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x01\x02\x08\x01" + b"\x00" * 8)
    with pytest.raises(ValueError, match="not an IDX file"):
        idx.read_idx(bad)
    short = _write_idx(tmp_path / "short", np.zeros((3, 4), np.uint8))
    short.write_bytes(short.read_bytes()[:-1])
    with pytest.raises(ValueError, match=r"truncated or padded: its header says \(3, 4\)"):
        idx.read_idx(short)


def test_idx_source(tmp_path):
    arrays = _mnist_folder(tmp_path)
    for split in ("train", "test"):
        images, labels = idx.load_idx_split(tmp_path, split)
        np.testing.assert_array_equal(images, arrays[split][0])
        np.testing.assert_array_equal(labels, arrays[split][1])
        assert labels.dtype == np.int32
    source = f"idx:{tmp_path}"
    assert check_source(source, "test") == {"num_classes": 4, "class_names": None}
    with pytest.raises(SourceError, match=r"--split 'val' of .*expected one of \['train', 'test'\]"):
        check_source(source, "val")
    with pytest.raises(SourceError, match=r"--split 'train\[:x\]'.*NAME\[start:stop\]"):
        check_source(source, "train[:x]")
    sliced, _ = source_dataset(source, "train[2:7]", image_size=12, batch_size=10,
                               training=False)
    np.testing.assert_array_equal(next(iter(sliced))[1].numpy(), arrays["train"][1][2:7])
    with pytest.raises(SourceError, match="selects no example"):
        source_dataset(source, "test[6:]", image_size=12, batch_size=2, training=False)
    with pytest.raises(SourceError, match="expected idx:PATH"):
        check_source(f"idx:{tmp_path / 'nope'}", "train")
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(SourceError, match=r"No t10k-labels-idx1-ubyte\[.gz\] in"):
        check_source(source, "test")

    # The evaluation pipeline: no crop, mean = std = 0.5, grey to RGB, bilinear
    # resize of the whole image (12 -> 24 px), in order.
    dataset, info = source_dataset(source, "train", image_size=24, batch_size=5,
                                   training=False, interpolation="bilinear")
    assert info == {"num_classes": 4, "class_names": None}
    batches = list(dataset)
    images = np.concatenate([b[0].numpy() for b in batches])
    labels = np.concatenate([b[1].numpy() for b in batches])
    np.testing.assert_array_equal(labels, arrays["train"][1])
    first = arrays["train"][0][0].astype(np.float64) / 255.0
    # 2x bilinear upsampling, half-pixel centres: output 2k samples source
    # k - 1/4, output 2k + 1 samples k + 1/4 (edges clamped).
    up = np.zeros((24, 12))
    for k in range(12):
        up[2 * k, k] += 0.75
        up[2 * k, max(k - 1, 0)] += 0.25
        up[2 * k + 1, k] += 0.75
        up[2 * k + 1, min(k + 1, 11)] += 0.25
    expected = (up @ first @ up.T - 0.5) / 0.5
    np.testing.assert_allclose(images[0, :, :, 0], expected, atol=1e-5)
    np.testing.assert_array_equal(images[..., 0], images[..., 2])


def test_fashion_mnist_not_found(tmp_path, monkeypatch):
    monkeypatch.setenv(idx.FASHION_MNIST_ENV, str(tmp_path))
    monkeypatch.setattr(idx, "FASHION_MNIST_DIRS", (str(tmp_path / "none"),))
    monkeypatch.setattr(idx, "_prepared_tfds_builder", lambda data_dir=None: None)
    with pytest.raises(SourceError) as error:
        check_source("fashion_mnist", "train")
    message = str(error.value)
    assert "\n" not in message
    for way in ("KERAS_SPVIT_FASHION_MNIST", "apt-get install dataset-fashion-mnist",
                "tfds.load('fashion_mnist')", "idx:PATH"):
        assert way in message
    # The environment variable is looked in first.
    _mnist_folder(tmp_path, gz=False)
    assert idx.find_fashion_mnist() == str(tmp_path)
    assert idx.load_fashion_mnist("test")[0].shape == (6, 12, 12)


needs_fashion_mnist = pytest.mark.skipif(
    idx.find_fashion_mnist() is None,
    reason="Fashion-MNIST's IDX files are not installed (make datasets / "
    "apt-get install dataset-fashion-mnist)",
)


@needs_fashion_mnist
def test_fashion_mnist_files():
    train_images, train_labels = idx.load_fashion_mnist("train")
    test_images, test_labels = idx.load_fashion_mnist("test")
    assert train_images.shape == (60000, 28, 28) and test_images.shape == (10000, 28, 28)
    # The dataset's published facts: 6,000 / 1,000 images per class, and the
    # first test image an ankle boot.
    np.testing.assert_array_equal(np.bincount(train_labels), [6000] * 10)
    np.testing.assert_array_equal(np.bincount(test_labels), [1000] * 10)
    assert idx.FASHION_MNIST_CLASSES[test_labels[0]] == "Ankle boot"
    assert source_info("fashion_mnist")["class_names"][9] == "Ankle boot"
    assert check_source("fashion_mnist", "test")["num_classes"] == 10
