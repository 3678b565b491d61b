"""Data sources named by one string, as the command line takes them.

- `digits`: the bundled UCI digits (offline; a fixed seeded 80/20 split).
- `tfds:NAME` (`tfds:cifar10`, `tfds:imagenet2012:5.1.0`): a TensorFlow
  Datasets name; the split is chosen separately.
- `folder:PATH` (or a bare existing directory): `PATH/<class>/<image>`.
- `npz:PATH`: a NumPy archive with `images` and `labels` arrays.
- `fashion_mnist`: Fashion-MNIST, offline (splits `train`, `test`; found as
  `keras_spvit.data.idx` says: `$KERAS_SPVIT_FASHION_MNIST`, the Debian
  package `dataset-fashion-mnist`, or TFDS when prepared).
- `idx:PATH`: a folder of MNIST-format files (`train-images-idx3-ubyte[.gz]`,
  `t10k-...` for `test`): MNIST, Fashion-MNIST, KMNIST.

Small grey sources (`digits`, `fashion_mnist`, `idx:`) are evaluated without
a crop and normalised with mean = std = 0.5; the others with the pipelines'
defaults (crop 0.875, ImageNet mean and std).
"""

import inspect
import os
import re

import numpy as np

from keras_spvit.data import datasets, idx, pipelines
from keras_spvit.data.datasets import image_folder_key, list_image_folder
from keras_spvit.data.digits import digits_split

DIGITS_MEAN = DIGITS_STD = (0.5, 0.5, 0.5)
# Sources of small grey images: no crop, mean = std = 0.5.
GREY_KINDS = ("digits", "fashion_mnist", "idx")
# Sources that hold their own splits (`--split`), and the split held out.
SPLIT_KINDS = {"digits": "test", "tfds": "validation", "fashion_mnist": "test", "idx": "test"}


_SLICE = re.compile(r"^(\w+)(?:\[(-?\d*):(-?\d*)\])?$")


def parse_split(split, splits, source, flag="--split"):
    """`(name, slice)` of an array source's split: `train`, `train[:5000]`, `test[100:]`.

    Slices count examples of the named split in its stored order, as TFDS'
    split slicing does.
    """
    match = _SLICE.match(split or "")
    if not match or match.group(1) not in splits:
        raise SourceError(
            f"{flag} {split!r} of {source!r}: expected one of {list(splits)}, optionally "
            "sliced as NAME[start:stop] (e.g. train[:5000])."
        )
    start, stop = (int(v) if v else None for v in match.group(2, 3))
    return match.group(1), slice(start, stop)


def parse_source(source):
    """`(kind, value)` of a source string; raises on an unknown form."""
    if source in ("digits", "fashion_mnist"):
        return source, None
    for kind in ("tfds", "folder", "npz", "idx"):
        if source.startswith(kind + ":"):
            return kind, source[len(kind) + 1 :]
    if os.path.isdir(source):
        return "folder", source
    if source.endswith(".npz"):
        return "npz", source
    raise ValueError(
        f"Unknown data source {source!r}. Expected 'digits', 'fashion_mnist', 'tfds:NAME', "
        "'folder:PATH' (root/<class>/<image>), 'npz:PATH' or 'idx:PATH' (MNIST-format files)."
    )


DIGITS_SPLITS = ("train", "test", "all")


class SourceError(ValueError):
    """A data source string names nothing usable (see `check_source`)."""


def source_preprocessing(source=None, **overrides):
    """The evaluation preprocessing `source_dataset` applies to a source.

    `digits`, `fashion_mnist`, `idx:` (small grey images upsampled): no
    crop, mean and std 0.5. Every other source: the pipelines' defaults
    (crop 0.875, ImageNet mean and std).

    Args:
        source: a source string, or `None` for the pipelines' defaults.
        **overrides: `crop_pct`, `mean`, `std`, `interpolation` to set.

    Returns:
        `{"crop_pct", "mean", "std", "interpolation"}`.

    Example:

    >>> source_preprocessing("digits")["crop_pct"]
    1.0
    """
    defaults = inspect.signature(pipelines.classification_pipeline).parameters
    values = {key: defaults[key].default for key in ("crop_pct", "mean", "std", "interpolation")}
    if source is not None and parse_source(source)[0] in GREY_KINDS:
        values.update(crop_pct=1.0, mean=DIGITS_MEAN, std=DIGITS_STD)
    values.update({k: v for k, v in overrides.items() if v is not None})
    values["mean"], values["std"] = tuple(values["mean"]), tuple(values["std"])
    return values


def check_source(source, split=None, data_dir=None, flag="--data", split_flag="--split"):
    """Checks a source string and its split without reading the images.

    The folder is listed (every class folder must hold images), an `.npz`
    file opened, a TFDS name looked up; `SourceError` (a `ValueError`) says
    what is wrong, naming the value.

    Args:
        source: see this module's docstring.
        split: optional split to check (`digits`: train, test or all; TFDS:
            a split of the prepared dataset).
        data_dir: TFDS data directory.
        flag: the command-line flag of the source, in messages.
        split_flag: the flag of the split, in messages.

    Returns:
        `source_info(source)`: `{"num_classes", "class_names"}`.

    Example:

    >>> check_source("folder:/nope")
    Traceback (most recent call last):
    SourceError: --data 'folder:/nope': no such folder. Expected ...
    """
    try:
        kind, value = parse_source(source)
    except ValueError as error:
        raise SourceError(f"{flag}: {error}") from None
    if kind == "digits":
        if split is not None and split not in DIGITS_SPLITS:
            raise SourceError(
                f"{split_flag} {split!r} of {source!r}: expected one of {list(DIGITS_SPLITS)}."
            )
        return source_info(source)
    if kind in ("fashion_mnist", "idx"):
        if split is not None:
            parse_split(split, idx.IDX_SPLITS, source, split_flag)
        if kind == "fashion_mnist":
            if not idx.fashion_mnist_available(data_dir):
                raise SourceError(f"{flag} {source!r}: {idx.fashion_mnist_not_found_message()}")
            return source_info(source)
        if not value or not os.path.isdir(value):
            raise SourceError(f"{flag} {source!r}: expected idx:PATH, a folder of MNIST-format "
                              "files (train-images-idx3-ubyte[.gz], ...).")
        try:
            idx.idx_files(value, parse_split(split or "train", idx.IDX_SPLITS, source)[0])
        except (OSError, ValueError) as error:
            raise SourceError(f"{flag} {source!r}: {error}") from None
        return source_info(source)
    if not value:
        raise SourceError(f"{flag} {source!r}: expected {kind}:{'NAME' if kind == 'tfds' else 'PATH'}.")
    if kind == "folder":
        if not os.path.isdir(value):
            what = "is a file" if os.path.exists(value) else "no such folder"
            raise SourceError(
                f"{flag} {source!r}: {what}. Expected a folder of class folders "
                "(root/<class>/<image>)."
            )
    elif kind == "npz":
        if not os.path.isfile(value):
            raise SourceError(f"{flag} {source!r}: no such file. Expected an .npz file with "
                              "'images' and 'labels' arrays.")
        try:
            images, labels = _npz_arrays(value)
        except (OSError, ValueError) as error:
            raise SourceError(f"{flag} {source!r}: {error}") from None
        if images.ndim not in (3, 4) or len(images) != len(labels) or labels.ndim != 1:
            raise SourceError(
                f"{flag} {source!r}: expected 'images' (n, h, w[, c]) and 'labels' (n,); "
                f"received {images.shape} and {labels.shape}."
            )
        if len(labels) == 0 or labels.min() < 0:
            raise SourceError(f"{flag} {source!r}: expected at least one image and labels >= 0.")
    else:
        _check_tfds(source, value, split, data_dir, flag, split_flag)
    try:
        return source_info(source, data_dir)
    except (OSError, ValueError) as error:
        raise SourceError(f"{flag} {source!r}: {error}") from None


def _check_tfds(source, name, split, data_dir, flag, split_flag):
    import tensorflow_datasets as tfds

    if data_dir is not None and not os.path.isdir(data_dir):
        raise SourceError(f"--data-dir {data_dir!r}: no such folder.")
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as error:  # tfds raises its own DatasetNotFoundError and others
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise SourceError(f"{flag} {source!r}: not a TensorFlow Datasets name ({first}).") from None
    if split is None or not builder.is_prepared():
        return
    known = list(builder.info.splits)
    for part in split.split("+"):
        base = part.split("[")[0].strip()
        if base not in known:
            raise SourceError(f"{split_flag} {split!r} of {source!r}: expected one of {known}.")


def digits_uint8(split, test_fraction=0.2, seed=0):
    """A digits split as ordinary grey uint8 images: `(n, 8, 8)` in 0..255, int32 labels."""
    images, labels = digits_split(split, test_fraction=test_fraction, seed=seed, channels=1)
    return images[..., 0], labels


def _npz_arrays(path):
    if not os.path.exists(path):
        raise FileNotFoundError(f"No such data file: {path!r}")
    with np.load(path) as data:
        missing = [k for k in ("images", "labels") if k not in data]
        if missing:
            raise ValueError(
                f"{path!r} lacks arrays {missing}; it has {sorted(data.files)}. Expected "
                "'images' (n, h, w[, c]) and 'labels' (n,)."
            )
        return data["images"], data["labels"].astype("int32")


ARRAY_KINDS = ("digits", "npz", "fashion_mnist", "idx")


def source_arrays(source, split, data_dir=None):
    """The in-memory sources' images and labels for a split, and where they start.

    Args:
        source: `digits`, `fashion_mnist`, `npz:PATH` or `idx:PATH`.
        split: see `source_dataset` (`npz:` has one split and ignores it).
        data_dir: TFDS data directory (Fashion-MNIST's third place).

    Returns:
        `(images, labels, first_index)`: uint8 images `(n, h, w[, c])`, int32
        labels and the index of `images[0]` in its split (non-zero for a
        sliced split such as `train[100:]`): token-label keys count from it.

    Example:

    >>> images, labels, first = source_arrays("fashion_mnist", "test[100:200]")
    >>> first
    100
    """
    kind, value = parse_source(source)
    if kind == "digits":
        images, labels = digits_uint8(split)
        return images, labels, 0
    if kind == "npz":
        images, labels = _npz_arrays(value)
        return images, labels, 0
    if kind not in ("fashion_mnist", "idx"):
        raise ValueError(f"{source!r} is not an in-memory source. Expected one of {ARRAY_KINDS}.")
    name, part = parse_split(split, idx.IDX_SPLITS, source)
    if kind == "fashion_mnist":
        images, labels = idx.load_fashion_mnist(name, data_dir)
    else:
        images, labels = idx.load_idx_split(value, name)
    first = part.indices(len(labels))[0]
    images, labels = images[part], labels[part]
    if not len(labels):
        raise SourceError(f"--split {split!r} of {source!r} selects no example.")
    return images, labels, first


def source_keys(source, split):
    """The token-label keys of a source's split (`keras_spvit.data.pipelines`), or
    `None` for TFDS (its record ids are known only by reading it)."""
    kind, value = parse_source(source)
    if kind in ARRAY_KINDS:
        _, labels, first = source_arrays(source, split)
        return [str(first + i) for i in range(len(labels))]
    if kind == "folder":
        return [image_folder_key(path, value) for path in list_image_folder(value)[0]]
    return None


def source_info(source, data_dir=None):
    """`{"num_classes", "class_names"}` of a source, without reading its images."""
    kind, value = parse_source(source)
    if kind == "digits":
        return {"num_classes": 10, "class_names": [str(i) for i in range(10)]}
    if kind == "fashion_mnist":
        return {"num_classes": 10, "class_names": list(idx.FASHION_MNIST_CLASSES)}
    if kind == "idx":
        labels = idx.read_idx(idx.idx_files(value, "train")[1])
        return {"num_classes": int(labels.max()) + 1, "class_names": None}
    if kind == "npz":
        return {"num_classes": int(_npz_arrays(value)[1].max()) + 1, "class_names": None}
    if kind == "folder":
        names = list(list_image_folder(value)[2])
        return {"num_classes": len(names), "class_names": names}
    import tensorflow_datasets as tfds

    label = tfds.builder(value, data_dir=data_dir).info.features["label"]
    return {"num_classes": label.num_classes, "class_names": list(label.names)}


def source_dataset(source, split, *, image_size, batch_size, training, augment=None,
                   num_classes=None, seed=None, data_dir=None, **options):
    """A batched dataset from a source string, and what it knows about its classes.

    Args:
        source: see this module's docstring.
        split: `"train"` / `"test"` for digits, `"train"` / `"test"`
            optionally sliced (`"train[:5000]"`) for fashion_mnist and
            `idx:`, a TFDS split for `tfds:`;
            ignored by `folder:` and `npz:` (give a separate source per split).
        image_size: int. Output side.
        batch_size: int. Global batch size.
        training: bool. Augment and shuffle.
        augment: optional `TrainAugment`.
        num_classes: optional int (needed for one-hot labels when the source
            cannot tell).
        seed: optional int.
        data_dir: TFDS data directory.
        **options: passed on to the pipeline (`cache`, `crop_pct`, `mean`, ...).

    Returns:
        `(dataset, info)` with `info = {"num_classes": int|None,
        "class_names": list|None}`.

    Example:

    >>> train, info = source_dataset("digits", "train", image_size=32, batch_size=64,
    ...                              training=True)
    """
    kind, value = parse_source(source)
    common = {"image_size": image_size, "batch_size": batch_size, "training": training,
              "augment": augment, "seed": seed}
    if kind == "digits":
        images, labels = digits_uint8(split)
        for key, value in source_preprocessing("digits").items():
            options.setdefault(key, value)
        options.setdefault("cache", True)
        dataset = datasets.array_dataset(images, labels, num_classes=num_classes or 10,
                                          **common, **options)
        return dataset, {"num_classes": 10, "class_names": [str(i) for i in range(10)]}
    if kind in ("fashion_mnist", "idx"):
        for key, option in source_preprocessing(source).items():
            options.setdefault(key, option)
        options.setdefault("cache", True)
        images, labels, first = source_arrays(source, split, data_dir)
        info = source_info(source)
        classes = num_classes or info["num_classes"]
        dataset = datasets.array_dataset(images, labels, num_classes=classes, first_index=first,
                                          **common, **options)
        return dataset, {"num_classes": classes, "class_names": info["class_names"]}
    if kind == "npz":
        images, labels = _npz_arrays(value)
        classes = num_classes or int(labels.max()) + 1
        dataset = datasets.array_dataset(images, labels, num_classes=classes, **common,
                                          **options)
        return dataset, {"num_classes": classes, "class_names": None}
    if kind == "folder":
        dataset = datasets.image_folder_dataset(value, num_classes=num_classes, **common,
                                                 **options)
        names = list(dataset.class_names)
        return dataset, {"num_classes": num_classes or len(names), "class_names": names}
    import tensorflow_datasets as tfds

    classes = num_classes
    if classes is None:
        builder = tfds.builder(value, data_dir=data_dir)
        label = builder.info.features["label"]
        classes = label.num_classes
    dataset = datasets.tfds_dataset(value, split, data_dir=data_dir, num_classes=classes,
                                     **common, **options)
    return dataset, {"num_classes": classes, "class_names": None}
