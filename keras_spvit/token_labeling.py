"""Making dense token labels with any Keras teacher (`keras-spvit label`).

`make_token_labels(teacher, data, out)` runs a trained classifier over
every training image, un-augmented (the evaluation transform at the
teacher's resolution, crop_pct 1.0 by default as the release), applies its
classifier at every location of its last feature map (`dense_teacher`),
keeps the top-k logits per location and writes them to a sharded labels
directory (`keras_spvit.data.token_labels`). Batched; resumable.

Keys (what the training pipeline looks labels up by): an image folder's
relative path without extension, POSIX separators; an array source's index
in its split as a decimal string; a TFDS record's `tfds_id`.
"""

import os
import time

import numpy as np

from keras_spvit.data.token_labels import TokenLabelWriter
from keras_spvit.models.dense_teacher import dense_teacher


def _triple(value):
    values = np.broadcast_to(np.asarray(value, np.float64).reshape(-1), (3,))
    return tuple(float(v) for v in values)


def _fixed_size(model):
    shape = model.inputs[0].shape
    if shape[1] is None or shape[2] is None:
        return None
    return int(shape[1]), int(shape[2])


def teacher_preprocessing(model, data=None, *, image_size=None, crop_pct=None, mean=None,
                          std=None, interpolation=None, recorded=None):
    """The evaluation preprocessing the teacher's labels are made with.

    Normalisation and interpolation come from (first found) `recorded`
    (a run's `train_config.json` preprocessing), the model's keras-hub image
    converter (keras_spvit's mean/std, or keras-hub's `scale`/`offset` on
    0..255 pixels turned into a mean/std of [0, 1] pixels), else the data
    source's defaults. The size is `image_size`, else the model's fixed
    input size, else its converter's. `crop_pct` defaults to 1.0 (the whole
    image, as the release labels it). Arguments given override.

    Args:
        model: the teacher classifier.
        data: optional data source string (its defaults are the last resort).
        image_size: optional int or `(h, w)`.
        crop_pct: optional float in (0, 1].
        mean, std: optional per-channel values for [0, 1] pixels.
        interpolation: optional resize method.
        recorded: optional dict with `mean`, `std`, `interpolation`, `image_size`.

    Returns:
        dict with `image_size` `(h, w)`, `crop_pct`, `mean`, `std`, `interpolation`.

    Example:

    >>> teacher_preprocessing(model, "digits", image_size=32)["crop_pct"]
    1.0
    """
    from keras_spvit.data.sources import source_preprocessing

    fixed = _fixed_size(model)
    converter = getattr(getattr(model, "preprocessor", None), "image_converter", None)
    base, size = None, None
    if recorded:
        base = {k: recorded[k] for k in ("mean", "std", "interpolation") if k in recorded}
        size = recorded.get("image_size")
    elif converter is not None and getattr(converter, "mean", None) is not None:
        base = {"mean": converter.mean, "std": converter.std,
                "interpolation": converter.interpolation}
        size = getattr(converter, "image_size", None)
    elif converter is not None and hasattr(converter, "scale"):
        scale = 1.0 if converter.scale is None else converter.scale
        offset = 0.0 if converter.offset is None else converter.offset
        std = 1.0 / (255.0 * np.asarray(_triple(scale)))
        base = {"mean": tuple(-np.asarray(_triple(offset)) * std),
                "std": tuple(std), "interpolation": converter.interpolation}
        size = getattr(converter, "image_size", None)
    defaults = source_preprocessing(data)
    base = {**defaults, **(base or {})}
    if image_size is not None:
        size = image_size
    elif fixed is not None:
        size = fixed
    if isinstance(size, int):
        size = (size, size)
    if size is None or None in tuple(size):
        raise ValueError(
            f"The teacher {model.name!r} takes images of any size and records none. Expected "
            "image_size (--image-size), e.g. the resolution it was trained at."
        )
    size = (int(size[0]), int(size[1]))
    if fixed is not None and size != fixed:
        raise ValueError(
            f"image_size {size[0]}x{size[1]}: the teacher {model.name!r} takes "
            f"{fixed[0]}x{fixed[1]} images. Expected that size, or a teacher built at "
            f"{size[0]}x{size[1]}."
        )
    crop_pct = 1.0 if crop_pct is None else float(crop_pct)
    if not 0.0 < crop_pct <= 1.0:
        raise ValueError(f"Expected crop_pct in (0, 1]. Received: crop_pct={crop_pct!r}")
    return {
        "image_size": size,
        "crop_pct": crop_pct,
        "mean": _triple(base["mean"] if mean is None else mean),
        "std": _triple(base["std"] if std is None else std),
        "interpolation": interpolation or base.get("interpolation") or "bicubic",
    }


def keyed_source(data, split="train", data_dir=None, skip=()):
    """Un-batched `(image, key)` elements of a data source, without augmentation.

    Images are uint8 (or float in [0, 1]) `(h, w, 3)`; keys follow the
    label-key convention (module docstring). Keys in `skip` are left out
    before any image is decoded.

    Args:
        data: a data source string (`keras_spvit.data.sources`).
        split: the split (`digits`, `fashion_mnist`, `idx:`, `tfds:`);
            `folder:` / `npz:` have one.
        data_dir: TFDS data directory.
        skip: keys to leave out (already labelled).

    Returns:
        `(dataset, info)`, `info = {"num_classes", "class_names", "count"}`
        (`count`: elements the dataset yields, or `None` if unknown).

    Example:

    >>> dataset, info = keyed_source("digits", "train")
    >>> image, key = next(iter(dataset))   # (8, 8, 3) uint8, b"0"
    """
    import tensorflow as tf

    from keras_spvit.data import sources
    from keras_spvit.data.datasets import image_folder_key, list_image_folder
    from keras_spvit.data.pipelines import _to_rgb
    from keras_spvit.data.transforms import taken_branch_only

    kind, value = sources.parse_source(data)
    skip = set(skip)
    if kind in sources.ARRAY_KINDS:
        images, labels, first = sources.source_arrays(data, split, data_dir)
        info = sources.source_info(data, data_dir)
        images = np.asarray(images)
        if images.ndim == 3:
            images = images[..., None]
        if images.dtype != np.uint8:
            images = images.astype(np.float32)
        rows = np.array([i for i in range(len(images)) if str(first + i) not in skip], np.int64)
        keys = tf.constant([str(first + i) for i in rows], tf.string)
        dataset = tf.data.Dataset.from_tensor_slices((images[rows], keys))
        dataset = dataset.map(taken_branch_only(lambda image, key: (_to_rgb(image), key)))
        return dataset, {**info, "count": len(rows)}
    if kind == "folder":
        paths, _, names = list_image_folder(value)
        keys = [image_folder_key(p, value) for p in paths]
        chosen = [(p, k) for p, k in zip(paths, keys) if k not in skip]
        dataset = tf.data.Dataset.from_tensor_slices(
            ([p for p, _ in chosen], [k for _, k in chosen]) if chosen else
            (tf.zeros((0,), tf.string), tf.zeros((0,), tf.string)))

        @taken_branch_only
        def read(path, key):
            image = tf.io.decode_image(tf.io.read_file(path), channels=3,
                                       expand_animations=False)
            return image, key

        dataset = dataset.map(read, num_parallel_calls=tf.data.AUTOTUNE)
        return dataset, {"num_classes": len(names), "class_names": list(names),
                         "count": len(chosen)}
    if kind == "tfds":
        import tensorflow_datasets as tfds

        builder = tfds.builder(value, data_dir=data_dir)
        dataset = builder.as_dataset(split=split, shuffle_files=False,
                                     read_config=tfds.ReadConfig(add_tfds_id=True))
        label = builder.info.features["label"]
        if skip:
            table = tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(sorted(skip), [1] * len(skip)), 0)
            dataset = dataset.filter(lambda e: table.lookup(e["tfds_id"]) == 0)
        dataset = dataset.map(taken_branch_only(lambda e: (_to_rgb(e["image"]), e["tfds_id"])))
        total = builder.info.splits[split].num_examples
        return dataset, {"num_classes": label.num_classes, "class_names": list(label.names),
                         "count": max(total - len(skip), 0)}
    raise ValueError(
        f"--data {data!r}: labelling supports digits, folder:, npz: and tfds: sources; "
        f"received a {kind!r} source.")


def make_token_labels(teacher, data, out, *, split="train", image_size=None, crop_pct=None,
                      mean=None, std=None, interpolation=None, top_k=5, batch_size=64,
                      data_dir=None, teacher_name=None, recorded=None, shard_size=4096,
                      verbose=1):
    """Labels every image of a data source with a teacher's per-location top-k logits.

    The teacher's classifier is applied at every location of its last
    feature map (`keras_spvit.models.dense_teacher.dense_teacher`); the top
    `top_k` logits (scores, not probabilities) and class ids per location
    are stored in `out` (`keras_spvit.data.token_labels`: float16 / int16
    shards and `index.json`). Images are read un-augmented through the
    evaluation transform (`teacher_preprocessing`: crop_pct 1.0 unless
    given). Rerunning into the same `out` continues where a killed run
    stopped; other settings in an existing `out` raise a `ValueError`.

    Args:
        teacher: a trained classifier (`keras.Model`, see `dense_teacher`).
        data: a data source string (`digits`, `folder:PATH`, `npz:PATH`, `tfds:NAME`).
        out: the labels directory.
        split: the source's split (default `"train"`).
        image_size, crop_pct, mean, std, interpolation: preprocessing
            overrides (see `teacher_preprocessing`).
        top_k: int. Scores kept per location.
        batch_size: int.
        data_dir: TFDS data directory.
        teacher_name: str recorded in the index and compared on resume
            (default: the model's name).
        recorded: optional preprocessing dict of the teacher's training run.
        shard_size: records per shard.
        verbose: 0 silent, 1 a progress bar with images/s.

    Returns:
        dict: `written` (this call), `total` (stored), `grid`, `resumed`,
        `images_per_second`, `preprocessing`.

    Example:

    >>> teacher = keras_spvit.SPViTImageClassifier.from_preset("spvit_tiny_digits")
    >>> make_token_labels(teacher, "digits", "labels/digits")["grid"]
    (8, 8)
    """
    import keras
    import tensorflow as tf

    from keras_spvit.data.transforms import eval_transform, taken_branch_only

    for name, value in (("top_k", top_k), ("batch_size", batch_size)):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"Expected a positive integer {name}. Received: {name}={value!r}")
    prep = teacher_preprocessing(teacher, data, image_size=image_size, crop_pct=crop_pct,
                                 mean=mean, std=std, interpolation=interpolation,
                                 recorded=recorded)
    dense = dense_teacher(teacher)
    grid = tuple(int(v) for v in dense.output.shape[1:3])
    if None in grid:
        probe = dense(np.zeros((1,) + prep["image_size"] + (3,), "float32"))
        grid = tuple(int(v) for v in probe.shape[1:3])
    classes = int(dense.output.shape[-1])
    if top_k > classes:
        raise ValueError(f"top_k={top_k}: the teacher predicts {classes} classes. "
                         f"Expected top_k <= {classes}.")
    images = keras.Input(shape=prep["image_size"] + (3,))
    scores, ids = keras.ops.top_k(dense(images), top_k)
    labeller = keras.Model(images, [scores, ids])

    _, info = keyed_source(data, split, data_dir)  # checks the source first
    writer = TokenLabelWriter(
        out, grid=grid, k=top_k, num_classes=classes,
        teacher=teacher_name or teacher.name, image_size=prep["image_size"],
        crop_pct=prep["crop_pct"], class_names=info.get("class_names"), shard_size=shard_size,
        extra={"data": data, "split": split, "mean": list(prep["mean"]),
               "std": list(prep["std"]), "interpolation": prep["interpolation"]},
    )
    done = writer.done_keys()
    dataset, info = keyed_source(data, split, data_dir, skip=done)
    if verbose and done:
        print(f"Continuing {os.fspath(out)!r}: {len(done)} images already labelled, "
              f"labelling the rest.")

    @taken_branch_only  # (not AutoGraph-converted: 0.8 s less before the first image)
    def transform(image, key):
        return eval_transform(image, prep["image_size"], crop_pct=prep["crop_pct"],
                              interpolation=prep["interpolation"], mean=prep["mean"],
                              std=prep["std"]), key

    dataset = dataset.map(transform, num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)
    bar = None
    if verbose:
        bar = keras.utils.Progbar(info["count"], unit_name="image",
                                  stateful_metrics=["images/s"])
    written, seen, seconds, start = 0, 0, 0.0, None
    with writer:
        for x, keys in dataset:
            x, count = x.numpy(), len(keys)
            if count < batch_size:  # the same shape for the last batch: no new trace
                x = np.concatenate([x, np.zeros((batch_size - count,) + x.shape[1:], x.dtype)])
            top_scores, top_ids = labeller.predict_on_batch(x)
            top_scores = keras.ops.convert_to_numpy(top_scores)[:count]
            top_ids = keras.ops.convert_to_numpy(top_ids)[:count]
            written += writer.add([k.decode() for k in keys.numpy()], top_scores, top_ids)
            # End to end (reading, transform, teacher, writing), after the first
            # batch, which traces.
            if start is None:
                start = time.perf_counter()
            else:
                seen += len(top_scores)
                seconds = time.perf_counter() - start
            if bar is not None:
                rate = seen / seconds if seconds else 0.0
                bar.add(len(top_scores), values=[("images/s", rate)])
    return {"written": written, "total": len(writer), "grid": grid, "resumed": bool(done),
            "images_per_second": seen / seconds if seconds else None, "preprocessing": prep}
