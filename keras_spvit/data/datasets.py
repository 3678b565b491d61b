"""The datasets behind `classification_pipeline`: TFDS splits, image folders, arrays.

Each reads its source (a TFDS split, `root/<class>/<image>` files, NumPy
arrays), keyed for token labels, and hands it to
`keras_spvit.data.pipelines.classification_pipeline`, which documents the
batches, the randomness and the per-worker input shards they share.
"""

import os

import numpy as np
import tensorflow as tf

from keras_spvit.data.pipelines import _resolve_seed, classification_pipeline

IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")


def tfds_dataset(
    name,
    split,
    *,
    image_size,
    batch_size,
    training,
    data_dir=None,
    augment=None,
    num_classes=None,
    download=True,
    seed=None,
    input_context=None,
    **options,
):
    """A TensorFlow Datasets split through `classification_pipeline`.

    Loads `tfds.load(name, split=split, data_dir=data_dir)` as its supervised
    `(image, label)` pairs (the dataset needs supervised keys, e.g. `imagenet2012`,
    `cifar10`, `oxford_flowers102`). Images are read as encoded bytes and
    decoded after the shuffle, so the shuffle buffer holds compressed images.
    Files are shuffled when training (seeded). A dataset already prepared in
    `data_dir` loads offline; `download=False` fails instead of downloading.
    A record whose image does not decode is replaced in its batch and recorded
    in `dataset.decode_errors` by its `tfds_id`
    (`"<dataset>-<split>.tfrecord-<shard>__<index>"`); `strict_data=True`
    fails on it instead, naming it.

    Args:
        name: str. TFDS name, optionally with config and version
            (`"imagenet2012:5.1.0"`).
        split: str. A TFDS split, slices allowed (`"train[:90%]"`).
        image_size: int or `(height, width)`.
        batch_size: int. Global batch size.
        training: bool.
        data_dir: str. Where TFDS data lives (TFDS default if `None`).
        augment: optional `TrainAugment`.
        num_classes: int. Defaults to the label feature's class count.
        download: bool. Download and prepare if missing.
        seed: int. Seeds file shuffling, the shuffle and the augmentation.
        input_context: optional `tf.distribute.InputContext`; TFDS shards the
            files (the split needs at least one file per input pipeline).
        **options: other `classification_pipeline` arguments (`cache`,
            `crop_pct`, `interpolation`, `mean`, `std`, `one_hot`,
            `shuffle_buffer`, `strict_data`, `decode_errors`,
            `num_parallel_calls`).

    Returns:
        A `tf.data.Dataset` of `(images, labels)` batches with a `class_names`
        attribute (the label names, or `None`; lost by further transformations).
        The auto-shard policy is `DATA` for training (each worker reads every
        file and keeps its share of the batches; `input_context` reads only
        the worker's files) and, for evaluation, `FILE` when the split has
        several files (each worker needs at least one; pass
        `shard_policy="data"` otherwise).

    Example:

    >>> train = tfds_dataset("imagenette/320px-v2", "train", image_size=224,
    ...                      batch_size=128, training=True, num_classes=10,
    ...                      augment=TrainAugment.deit())
    """
    import tensorflow_datasets as tfds

    if not isinstance(split, str):
        raise TypeError(f"Expected `split` to be one split name. Received: split={split!r}")
    seed = _resolve_seed(seed)
    builder = tfds.builder(name, data_dir=data_dir)
    info = builder.info
    keys = info.supervised_keys
    if not keys or len(keys) != 2 or not all(isinstance(k, str) for k in keys):
        raise ValueError(
            f"Expected a dataset with (image, label) supervised keys. Received: name={name!r} "
            f"with supervised_keys={keys!r}"
        )
    image_key, label_key = keys
    image_feature, label_feature = info.features[image_key], info.features[label_key]
    decode, decode_name, decoders = None, None, None
    if isinstance(image_feature, tfds.features.Image):
        # Encoded bytes travel with the record's `tfds_id`, which names the
        # record if it fails to decode.
        decoders = {image_key: tfds.decode.SkipDecoding()}

        def decode(x):
            return image_feature.decode_example(x[0])

        def decode_name(x):
            return x[1]

        def example(features):
            return (features[image_key], features["tfds_id"]), features[label_key]

    else:

        def example(features):
            return features[image_key], features[label_key]

    keyed = training and options.get("token_labels") is not None
    if keyed:
        unkeyed = example

        def example(features):  # the record's `tfds_id` is its token-label key
            return (*unkeyed(features), features["tfds_id"])

    class_names = None
    if isinstance(label_feature, tfds.features.ClassLabel):
        class_names = list(label_feature.names)
        num_classes = label_feature.num_classes if num_classes is None else num_classes

    dataset = tfds.load(
        name,
        split=split,
        data_dir=data_dir,
        shuffle_files=training,
        download=download,
        decoders=decoders,
        read_config=tfds.ReadConfig(
            shuffle_seed=seed, input_context=input_context,
            add_tfds_id=decode is not None or keyed,
        ),
    ).map(example)
    try:
        num_files = info.splits[split].num_shards
    except (KeyError, ValueError, AttributeError):
        num_files = 1
    dataset = classification_pipeline(
        dataset,
        image_size=image_size,
        batch_size=batch_size,
        training=training,
        augment=augment,
        num_classes=num_classes,
        decode=decode,
        decode_name=decode_name,
        seed=seed,
        input_context=input_context,
        presharded=True,
        **{"shard_policy": "file" if num_files > 1 and not training else "data", **options},
    )
    dataset.class_names = class_names
    return dataset


def list_image_folder(root, class_names=None):
    """Indexes `root/<class>/<image>`: `(paths, labels, class_names)`.

    Classes are the sub-folders of `root` sorted by name (as torchvision's
    `ImageFolder` and `keras.utils.image_dataset_from_directory`), hidden
    folders (`.name`) skipped; images are the files with an extension in
    `IMAGE_EXTENSIONS` (any case) anywhere below a class folder, sorted.

    Args:
        root: path-like. The dataset root.
        class_names: optional list of class folder names; fixes the label
            order and selects a subset of the folders.

    Returns:
        `(paths, labels, class_names)`: lists of str, int and str.
    """
    root_str = os.fspath(root)
    if not os.path.exists(root_str):
        raise FileNotFoundError(f"Image folder not found. Received: root={root_str!r}")
    if not os.path.isdir(root_str):
        raise NotADirectoryError(f"Expected a folder of class folders. Received: root={root_str!r}")
    found = sorted(
        entry.name
        for entry in os.scandir(root_str)
        if entry.is_dir() and not entry.name.startswith(".")
    )
    if class_names is None:
        if not found:
            raise ValueError(
                f"No class folders in the image folder. Expected root/<class>/<image>. "
                f"Received: root={root_str!r}"
            )
        class_names = found
    else:
        class_names = list(class_names)
        if not class_names or len(set(class_names)) != len(class_names):
            raise ValueError(
                f"Expected distinct class names. Received: class_names={class_names!r}"
            )
        missing = [name for name in class_names if name not in found]
        if missing:
            raise ValueError(
                f"Class folders not found under root={root_str!r}: {missing}. Found: {found}"
            )
    paths, labels = [], []
    for label, name in enumerate(class_names):
        folder = os.path.join(root_str, name)
        files = []
        for directory, subdirs, names in os.walk(folder, followlinks=True):
            subdirs.sort()
            files.extend(
                os.path.join(directory, n)
                for n in names
                if os.path.splitext(n)[1].lower() in IMAGE_EXTENSIONS
            )
        if not files:
            raise ValueError(
                f"Class folder {folder!r} has no images (extensions {list(IMAGE_EXTENSIONS)})."
            )
        files.sort()
        paths.extend(files)
        labels.extend([label] * len(files))
    return paths, labels, class_names


def image_folder_key(path, root):
    """An image's token-label key: its path under `root`, POSIX separators, no extension.

    The key of the released labels' layout `<root>/<class>/<stem>.pt`.

    Args:
        path: path-like. The image file.
        root: path-like. The image folder's root.

    Example:

    >>> image_folder_key("/data/train/n01440764/n01440764_10026.JPEG", "/data/train")
    'n01440764/n01440764_10026'
    """
    relative = os.path.relpath(os.fspath(path), os.fspath(root))
    return os.path.splitext(relative)[0].replace(os.sep, "/")


def _read_image(path):
    # channels=3 turns grey into RGB and drops alpha; GIFs give their first frame.
    return tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)


def image_folder_dataset(
    root,
    *,
    image_size,
    batch_size,
    training,
    class_names=None,
    augment=None,
    num_classes=None,
    seed=None,
    input_context=None,
    shuffle_buffer=None,
    **options,
):
    """Images in `root/<class>/<image>` through `classification_pipeline`.

    Classes are sorted alphabetically and labelled 0, 1, ... (see
    `list_image_folder`); jpg, png, bmp and gif are decoded with
    `tf.io.decode_image(channels=3, expand_animations=False)` (grey becomes
    RGB). The shuffle runs over file paths, then images are read and decoded
    in the parallel map.

    Without `input_context` the auto-shard policy is `DATA`: reading with
    `tf.io.read_file` is not a file-dataset source that `FILE` sharding can
    split, so a strategy distributing this dataset over several workers has
    each of them read every image and keep its share of the batches. With
    `input_context` (see
    `keras_spvit.training.distribution.distribute_input`) the shuffled
    path list is sharded before reading: each worker reads and decodes only
    its share, and the workers' batches at each step make up the
    single-worker global batch.

    Args:
        root: path-like. The dataset root.
        image_size: int or `(height, width)`.
        batch_size: int. Global batch size.
        training: bool.
        class_names: optional list of class folder names (order = labels).
        augment: optional `TrainAugment`.
        num_classes: int. Defaults to the number of classes.
        seed: int. Seeds the shuffle and the augmentation.
        input_context: optional `tf.distribute.InputContext`: read only this
            input pipeline's share, batched per replica.
        shuffle_buffer: int. Defaults to the number of images (paths are cheap).
        **options: other `classification_pipeline` arguments.

    Returns:
        A `tf.data.Dataset` of `(images, labels)` batches with a `class_names`
        attribute (as `keras.utils.image_dataset_from_directory`; lost by
        further transformations).

    Example:

    >>> val = image_folder_dataset("imagenet/val", image_size=224, batch_size=256,
    ...                            training=False)
    >>> val.class_names[:2]
    """
    paths, labels, class_names = list_image_folder(root, class_names)
    if training and options.get("token_labels") is not None:
        dataset = tf.data.Dataset.from_tensor_slices(
            (paths, labels, [image_folder_key(p, root) for p in paths])
        )
    else:
        dataset = tf.data.Dataset.from_tensor_slices((paths, labels))
    dataset = classification_pipeline(
        dataset,
        image_size=image_size,
        batch_size=batch_size,
        training=training,
        augment=augment,
        num_classes=len(class_names) if num_classes is None else num_classes,
        decode=_read_image,
        shuffle_buffer=len(paths) if shuffle_buffer is None else shuffle_buffer,
        seed=seed,
        input_context=input_context,
        **{"shard_policy": "data", **options},
    )
    dataset.class_names = list(class_names)
    return dataset


def array_dataset(
    images,
    labels,
    *,
    image_size,
    batch_size,
    training,
    augment=None,
    num_classes=None,
    seed=None,
    input_context=None,
    shuffle_buffer=None,
    first_index=0,
    **options,
):
    """In-memory numpy images through `classification_pipeline`.

    Images are `uint8` in 0..255 or floats in [0, 1] (checked), shaped
    `(n, height, width)`, `(n, height, width, 1)` or `(n, height, width, 3)`;
    grey is repeated to 3 channels. The arrays become graph constants
    (`from_tensor_slices`), fine up to a few hundred MB.

    Args:
        images: numpy array, see above.
        labels: int array `(n,)` of class ids >= 0.
        image_size: int or `(height, width)`.
        batch_size: int. Global batch size.
        training: bool.
        augment: optional `TrainAugment`.
        num_classes: int. Needed for one-hot labels; checked against `labels`.
        seed: int. Seeds the shuffle and the augmentation.
        input_context: optional `tf.distribute.InputContext`: augment only
            this input pipeline's share of the shuffled examples, batched per
            replica.
        shuffle_buffer: int. Defaults to the number of examples.
        first_index: int. The index of `images[0]` in its split, when the
            arrays are a slice of it: token-label keys are the split's
            indices (`"first_index + i"`).
        **options: other `classification_pipeline` arguments.

    Returns:
        A `tf.data.Dataset` of `(images, labels)` batches; auto-shard policy
        `DATA` (`OFF` with `input_context`).

    Example:

    >>> (x, y), _ = keras.datasets.cifar10.load_data()
    >>> train = array_dataset(x, y[:, 0], image_size=32, batch_size=128, training=True,
    ...                       augment=TrainAugment(scale=(0.35, 1.0)), crop_pct=1.0)
    """
    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3) or len(images) == 0:
        raise ValueError(
            "Expected images (n, height, width[, 1 or 3]) with n > 0. "
            f"Received: images.shape={images.shape}"
        )
    if images.dtype == np.uint8:
        pass
    elif np.issubdtype(images.dtype, np.floating):
        low, high = float(np.min(images)), float(np.max(images))
        if not (0.0 <= low and high <= 1.0):
            raise ValueError(
                "Expected float images in [0, 1] (or uint8 in 0..255). "
                f"Received: images with min={low}, max={high}"
            )
        images = images.astype(np.float32, copy=False)
    else:
        raise ValueError(
            "Expected uint8 images in 0..255 or float images in [0, 1]. "
            f"Received: images.dtype={images.dtype}"
        )
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.shape != (len(images),) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"Expected integer labels of shape ({len(images)},). "
            f"Received: labels.shape={labels.shape}, dtype={labels.dtype}"
        )
    if labels.min() < 0 or (num_classes is not None and labels.max() >= num_classes):
        raise ValueError(
            f"Expected labels in [0, num_classes). Received: labels in "
            f"[{labels.min()}, {labels.max()}], num_classes={num_classes}"
        )
    if training and options.get("token_labels") is not None:
        # Token-label keys: the example's index in its split (`"0"`, `"1437"`).
        keys = np.array([str(first_index + i) for i in range(len(images))])
        dataset = tf.data.Dataset.from_tensor_slices((images, labels.astype(np.int32), keys))
    else:
        dataset = tf.data.Dataset.from_tensor_slices((images, labels.astype(np.int32)))
    return classification_pipeline(
        dataset,
        image_size=image_size,
        batch_size=batch_size,
        training=training,
        augment=augment,
        num_classes=num_classes,
        shuffle_buffer=len(images) if shuffle_buffer is None else shuffle_buffer,
        seed=seed,
        input_context=input_context,
        **{"shard_policy": "data", **options},
    )
