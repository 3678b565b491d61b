"""MNIST-format (IDX) files, and Fashion-MNIST read from them offline.

The IDX format (LeCun's MNIST files): a 4-byte magic number (two zero bytes,
a type code, the number of dimensions), one big-endian uint32 per dimension,
then the values, big-endian, row-major. Files may be gzipped (`.gz`).

A split of an IDX dataset is a pair of files in one folder:
`<split>-images-idx3-ubyte[.gz]` and `<split>-labels-idx1-ubyte[.gz]`, with
`<split>` `train` or `t10k` (the test split), as MNIST, Fashion-MNIST and
KMNIST ship them (dashes or dots: `train-images.idx3-ubyte` too).

Fashion-MNIST (Zalando, MIT licence: 60,000 training and 10,000 test grey
28 x 28 images of 10 clothing classes) is found, in this order, in:

1. the folder of the `KERAS_SPVIT_FASHION_MNIST` environment variable;
2. `/usr/share/datasets/fashion-mnist` (Debian / Ubuntu:
   `apt-get install dataset-fashion-mnist`);
3. TensorFlow Datasets' `fashion_mnist`, when it is prepared (downloaded
   once with `tfds.load("fashion_mnist")`).
"""

import gzip
import os

import numpy as np

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist",)
FASHION_MNIST_ENV = "KERAS_SPVIT_FASHION_MNIST"
IDX_SPLITS = {"train": "train", "test": "t10k"}

_TYPES = {
    0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8"),
}


class IdxNotFoundError(FileNotFoundError):
    """No IDX files where they were looked for (the message says where)."""


def read_idx(path):
    """One IDX file (optionally gzipped) as a numpy array.

    Args:
        path: the file.

    Returns:
        The array, in native byte order (`uint8` for MNIST's images and
        labels).

    Example:

    >>> labels = read_idx("/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz")
    >>> labels.shape, labels.dtype
    ((10000,), dtype('uint8'))
    """
    opener = gzip.open if _is_gzip(path) else open
    with opener(path, "rb") as file:
        data = file.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _TYPES:
        raise ValueError(f"{path!r} is not an IDX file (bad magic number {data[:4]!r}).")
    dtype, ndim = _TYPES[data[2]], data[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    count = int(np.prod(shape, dtype=np.int64))
    if len(data) != header + count * dtype.itemsize:
        raise ValueError(
            f"{path!r} is truncated or padded: its header says {shape} values of "
            f"{dtype.itemsize} byte(s) ({header + count * dtype.itemsize} bytes in all); "
            f"the file has {len(data)} bytes."
        )
    array = np.frombuffer(data, dtype, count, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="))


def _is_gzip(path):
    with open(path, "rb") as file:
        return file.read(2) == b"\x1f\x8b"


def idx_files(folder, split):
    """`(images_path, labels_path)` of a split in an IDX folder, or raises.

    Args:
        folder: the folder.
        split: `"train"` or `"test"` (files named `t10k-...`).

    Returns:
        The two paths.

    Example:

    >>> idx_files("/usr/share/datasets/fashion-mnist", "test")[1]
    '/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz'
    """
    if split not in IDX_SPLITS:
        raise ValueError(f"Expected split 'train' or 'test'. Received: split={split!r}")
    prefix = IDX_SPLITS[split]
    found = []
    for kind, rank in (("images", 3), ("labels", 1)):
        names = [f"{prefix}-{kind}{sep}idx{rank}-ubyte{ext}"
                 for sep in ("-", ".") for ext in ("", ".gz")]
        paths = [os.path.join(folder, name) for name in names]
        existing = [p for p in paths if os.path.isfile(p)]
        if not existing:
            raise IdxNotFoundError(
                f"No {prefix}-{kind}-idx{rank}-ubyte[.gz] in {folder!r}."
            )
        found.append(existing[0])
    return tuple(found)


def load_idx_split(folder, split):
    """A split of an IDX folder: uint8 images `(n, h, w)` and int32 labels `(n,)`.

    Args:
        folder: a folder with the MNIST-format files (see the module docstring).
        split: `"train"` or `"test"`.

    Returns:
        `(images, labels)`.

    Example:

    >>> images, labels = load_idx_split("/usr/share/datasets/fashion-mnist", "test")
    >>> images.shape
    (10000, 28, 28)
    """
    images_path, labels_path = idx_files(folder, split)
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(
            f"Expected images (n, h, w) and labels (n,) in {folder!r} ({split}). "
            f"Received: {images.shape} and {labels.shape}"
        )
    return np.ascontiguousarray(images, dtype=np.uint8), labels.astype(np.int32)


def find_fashion_mnist():
    """The folder holding Fashion-MNIST's IDX files, or `None` (see the module docstring)."""
    candidates = [os.environ.get(FASHION_MNIST_ENV)] + list(FASHION_MNIST_DIRS)
    for folder in candidates:
        if folder and os.path.isdir(folder):
            try:
                idx_files(folder, "train")
                idx_files(folder, "test")
                return folder
            except IdxNotFoundError:
                continue
    return None


def _prepared_tfds_builder(data_dir=None):
    try:
        import tensorflow_datasets as tfds

        builder = tfds.builder("fashion_mnist", data_dir=data_dir)
        return builder if builder.is_prepared() else None
    except Exception:  # no tfds, or a broken install: not a place to look then
        return None


def fashion_mnist_available(data_dir=None):
    """Whether `load_fashion_mnist` finds the data (without reading it)."""
    return find_fashion_mnist() is not None or _prepared_tfds_builder(data_dir) is not None


def fashion_mnist_not_found_message():
    return (
        "Fashion-MNIST not found. Expected one of: the IDX files in the folder of "
        f"${FASHION_MNIST_ENV}; the Debian/Ubuntu package (apt-get install "
        f"dataset-fashion-mnist, files under {FASHION_MNIST_DIRS[0]}); or TFDS "
        "'fashion_mnist' prepared (python -c \"import tensorflow_datasets as tfds; "
        "tfds.load('fashion_mnist')\"). Or give a folder: --data idx:PATH."
    )


def load_fashion_mnist(split="train", data_dir=None):
    """Fashion-MNIST's train or test split, offline (see the module docstring).

    Args:
        split: `"train"` (60,000 images) or `"test"` (10,000).
        data_dir: TFDS data directory, for the third place looked in.

    Returns:
        `(images, labels)`: uint8 `(n, 28, 28)` and int32 `(n,)`; class
        names are `FASHION_MNIST_CLASSES`.

    Example:

    >>> images, labels = load_fashion_mnist("test")
    >>> images.shape, FASHION_MNIST_CLASSES[labels[0]]
    ((10000, 28, 28), 'Ankle boot')
    """
    if split not in IDX_SPLITS:
        raise ValueError(f"Expected split 'train' or 'test'. Received: split={split!r}")
    folder = find_fashion_mnist()
    if folder is not None:
        return load_idx_split(folder, split)
    builder = _prepared_tfds_builder(data_dir)
    if builder is None:
        raise IdxNotFoundError(fashion_mnist_not_found_message())
    import tensorflow_datasets as tfds

    arrays = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))
    return arrays["image"][..., 0].astype(np.uint8), arrays["label"].astype(np.int32)
