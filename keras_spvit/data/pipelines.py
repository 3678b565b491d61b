"""`tf.data` pipelines for image classification: the one shared pipeline.

The three sources of `keras_spvit.data.datasets` (TFDS, image folders,
arrays) feed one shared pipeline, `classification_pipeline`:

- training: shuffle (seeded) -> per-example `TrainAugment` in a parallel map
  (crop, flip, RandAugment, normalise, random erasing) ->
  `batch(drop_remainder=True)` -> per-batch label smoothing and MixUp / CutMix
  -> `prefetch`; with `TrainAugment(batch_rand_augment=True)` the per-example
  map crops, flips and makes RandAugment's draws, and a parallel map after
  `batch` applies RandAugment, normalisation and erasing to the batch (the
  same batches, bit for bit);
- evaluation: `eval_transform` (resize, center crop, normalise) -> optional
  `cache` -> `batch` (the last, smaller batch is kept) -> `prefetch`.

Nothing repeats: Keras `fit` iterates a finite dataset once per epoch (call
`.repeat()` yourself for step-based loops). The pipelines are pure `tf.data`,
so they feed every Keras backend (TensorFlow, JAX, PyTorch) the same way.

Labels are sparse int32 `(batch,)` by default. With MixUp, CutMix or label
smoothing (`TrainAugment.needs_one_hot`) they become one-hot float32
`(batch, num_classes)` and `num_classes` is required (TFDS and image folders
know it). The evaluation pipeline built with the same `augment` gives one-hot
labels too (without smoothing), so the training loss also fits validation.

Images are float32 `(batch, height, width, 3)`, normalised with `mean`/`std`
on 0..1 pixels (ImageNet statistics by default, as the models expect).

Token labeling (`token_labels=`, training only): each source element carries
its key (`image_folder_key`, the array index, the `tfds_id`); the teacher's
label map is looked up, moved with the image (`TrainAugment.with_label_map`,
the release's order), and cropped through roi_align into the class target
and the per-token targets (`keras_spvit.data.dense_targets`); batches are
`(images, {"labels": (batch, classes), "token_labels": (batch, S_h, S_w,
M + 1, 2)})`, with the release's label smoothing already applied.

Randomness: each example and each batch gets its own stateless seed, drawn
in stream order from a per-iteration stream seeded by `seed`, so two
pipelines built with the same `seed` yield the same epochs, each epoch
differs from the last (RandAugment and random erasing included), and the
`n`-th iterator made yields the same batches whatever the others read
(a peeked batch does not shift training). Keras' `MixUp` and `CutMix` in
`TrainAugment` draw from their batch's seed too. Keras' own `RandAugment` /
`RandomErasing` layers, when a user passes them, draw from their generators,
whose state every iterator of the pipeline shares: such runs do not repeat
exactly (the package's `RandAugment` and `random_erasing=` do).

Distribution: given a plain dataset, Keras `fit` distributes it itself:
under a `tf.distribute` strategy it calls `experimental_distribute_dataset`,
which splits each global batch across replicas and, across workers, shards
by the `auto_shard_policy` set here (`DATA` for training: every worker then
reads and decodes every image and keeps its share of the batches; `FILE`
for evaluating TFDS splits stored in several files); under
`keras.distribution.DataParallel` (JAX) Keras rebatches and shards per
process the same way. That is what happens without `input_context`: give
the global batch size and do not shard.

To make each worker read and decode only its share, pass a
`tf.distribute.InputContext` (`keras_spvit.training.distribution.distribute_input`
does it for you: through `strategy.distribute_datasets_from_function` under
`MultiWorkerMirroredStrategy`, from `jax.process_index()` /
`jax.process_count()` under multi-process JAX). Image folders and arrays then
shuffle the whole (cheap) list of paths or indices with the same per-epoch
order and the same per-example seeds in every input pipeline, cut it into
the single-worker global batches, and give pipeline `w` of `n` the elements
`w, w + n, w + 2n, ...` of each; only then are images read, decoded and
augmented. Each pipeline batches `input_context.get_per_replica_batch_size(
batch_size)` and auto-sharding is off, so the union of the pipelines' batches
at step `k` is exactly the single-worker global batch `k`. (MixUp / CutMix mix
within each pipeline's batch, with its own seeds. With `cache`, every worker
caches the whole source, decoding each image once in its first epoch.) TFDS
splits are sharded by file instead (`tfds.ReadConfig(input_context=...)`),
each pipeline shuffling its own files. Evaluation pipelines shard the source
in order.
"""

import os
import random

import numpy as np
import tensorflow as tf

from keras_spvit.data.decode_errors import DecodeErrors, safe_decode
from keras_spvit.data.dense_targets import (
    BOX_ORDERS,
    TARGET_FORMATS,
    compact_entries,
    image_label_targets,
    token_label_targets,
)
from keras_spvit.data.train_augment import TrainAugment
from keras_spvit.data.transforms import eval_transform, normalize, taken_branch_only
from keras_spvit.utils.preprocessing import IMAGENET_MEAN, IMAGENET_STD
from keras_spvit.utils.validation import check_size

_SHARD_POLICIES = {
    "auto": tf.data.experimental.AutoShardPolicy.AUTO,
    "data": tf.data.experimental.AutoShardPolicy.DATA,
    "file": tf.data.experimental.AutoShardPolicy.FILE,
    "off": tf.data.experimental.AutoShardPolicy.OFF,
}


# === Shared pipeline ===


def _to_rgb(image):
    channels = image.shape[-1]
    if channels == 3:
        return image
    if channels == 1:
        return tf.tile(image, [1, 1, 3])
    if channels == 4:
        return image[..., :3]
    if channels is None:
        image = tf.cond(
            tf.equal(tf.shape(image)[-1], 1),
            lambda: tf.tile(image, [1, 1, 3]),
            lambda: image[..., :3],
        )
        return tf.ensure_shape(image, (None, None, 3))
    raise ValueError(f"Expected 1, 3 or 4 image channels. Received: shape={image.shape}")


def _with_seeds(dataset, seed, pipeline_id, salt):
    """Appends a stateless seed to every element: element `i` of an iteration
    gets draw `i` of that iteration's seed stream.

    `Dataset.random(rerandomize_each_iteration=True)` starts a new stream for
    each iterator, in the order the iterators are made (as
    `shuffle(reshuffle_each_iteration=True)` reorders): deterministic given
    `seed`, new draws every epoch, and what one iterator reads (a peeked batch,
    its prefetch buffer) never moves another's seeds. (A `tf.random.Generator`
    in a map shares one state between all iterators: Keras `fit` makes two per
    run, and the first one's prefetch drew a timing-dependent count of seeds.)
    A second source in a `zip`: `FILE` auto-sharding cannot walk through it,
    so training pipelines shard by `DATA` (or per worker, with `input_context`).
    """
    key = np.random.SeedSequence([seed, pipeline_id, salt]).generate_state(1, np.uint64)[0]
    seeds = tf.data.Dataset.random(seed=int(key >> np.uint64(1)),
                                   rerandomize_each_iteration=True)
    seeds = seeds.batch(2, drop_remainder=True)
    return tf.data.Dataset.zip(dataset, seeds).map(lambda element, pair: (*element, pair))


_ENDLESS = 2**62  # epochs / batches of a position stream: never reached


def _check_start(start, training, presharded):
    if not training:
        raise ValueError("`start` positions a training stream. Received: training=False")
    if presharded:
        raise ValueError(
            "`start` needs the whole source (each worker shuffles it identically); "
            "TFDS splits sharded by file cannot be positioned. Received: presharded=True"
        )
    if (
        not isinstance(start, (tuple, list))
        or len(start) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in start)
    ):
        raise ValueError(
            f"Expected `start` to be (epoch, batch), two ints >= 0. Received: start={start!r}"
        )
    return tuple(start)


def _seed_key(seed, *salt):
    # One 63-bit key per (seed, purpose) as the int64 pair a stateless op takes.
    key = np.random.SeedSequence([seed, *salt]).generate_state(2, np.uint32)
    return tf.constant([int(key[0]), int(key[1])], tf.int64)


def _position_seed(key, a, b):
    # A stateless seed for position (a, b): Philox keyed by the purpose,
    # folded with the position.
    folded = tf.random.experimental.stateless_fold_in(key, tf.cast(a, tf.int64))
    return tf.random.experimental.stateless_fold_in(folded, tf.cast(b, tf.int64))


def _position_stream(dataset, seed, start, global_batch, num_workers, worker):
    """`(x, label, seed)` from `start`: epoch `e` is a permutation of `dataset`
    drawn from `(seed, e)`, cut to whole global batches, each example seeded by
    `(e, index)`; with several workers, this worker's share of each global batch.
    Returns the stream and the steps per epoch."""
    count = int(dataset.cardinality())
    if count < 0:
        raise ValueError(
            "`start` needs a source of known length (it counts batches per epoch); this "
            "source's length is unknown."
        )
    steps = count // global_batch
    if steps == 0:
        raise ValueError(
            f"The training set ({count} examples) is smaller than one batch. "
            f"Received: batch_size={global_batch}"
        )
    # The whole source in memory (paths, encoded bytes or small arrays: what
    # the sources give before decoding), so that each epoch is a full
    # permutation drawn from `(seed, epoch)` (`Dataset.shuffle` takes no
    # tensor seed under every global seed).
    try:
        source = tf.data.Dataset.get_single_element(dataset.batch(count))
    except (tf.errors.InvalidArgumentError, ValueError) as error:
        raise ValueError(
            "`start` needs a source whose elements batch together (paths, encoded images "
            f"or same-sized arrays); this one does not ({error})."
        ) from None
    shuffle_key = _seed_key(seed, 2)
    example_key = _seed_key(seed, 0, 0)

    def one_epoch(epoch):
        noise = tf.random.stateless_uniform([count], _position_seed(shuffle_key, epoch, 0))
        order = tf.argsort(noise)[: steps * global_batch]
        elements = tf.nest.map_structure(lambda t: tf.gather(t, order), source)
        examples = tf.data.Dataset.from_tensor_slices(elements).enumerate().map(
            lambda i, element: (*element, _position_seed(example_key, epoch, i))
        )
        if num_workers > 1:
            examples = _worker_share(examples, global_batch, num_workers, worker)
        return examples

    epochs = tf.data.Dataset.range(start[0], _ENDLESS).flat_map(one_epoch)
    return epochs.skip(start[1] * (global_batch // num_workers)), steps


def _cache(dataset, cache):
    if cache is True:
        return dataset.cache()
    if isinstance(cache, (str, os.PathLike)):
        return dataset.cache(os.fspath(cache))
    return dataset


def _resolve_seed(seed):
    if seed is None:
        return random.randrange(2**31)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"Expected `seed` to be an int or None. Received: seed={seed!r}")
    return seed


# Every `map` traces its function here: control flow stays functional (see
# `taken_branch_only`).
@taken_branch_only
def classification_pipeline(
    dataset,
    *,
    image_size,
    batch_size,
    training,
    augment=None,
    num_classes=None,
    one_hot=None,
    decode=None,
    decode_name=None,
    shuffle_buffer=None,
    seed=None,
    cache=False,
    crop_pct=0.875,
    interpolation="bicubic",
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    shard_policy="data",
    input_context=None,
    presharded=False,
    start=None,
    strict_data=False,
    decode_errors=None,
    num_parallel_calls=tf.data.AUTOTUNE,
    token_labels=None,
    token_grid=None,
    token_label_smoothing=None,
    box_order="release",
    token_target_format="compact",
    allow_missing_labels=False,
    missing_token_labels=None,
):
    """The pipeline shared by every source: augment or evaluate, batch, prefetch.

    Args:
        dataset: a `tf.data.Dataset` of `(x, label)` pairs: `x` an image
            `(height, width, 1|3|4)` (`uint8`, or float in [0, 1]) or, with
            `decode`, whatever `decode` turns into one (a path, encoded bytes).
            With `input_context`, give the whole source (it is sharded
            here, see `presharded`).
        image_size: int or `(height, width)`. Output size.
        batch_size: int. The global batch size (see `input_context`).
        training: bool. Random augmentation, shuffling and
            `drop_remainder=True`; otherwise the deterministic eval transform.
        augment: a `TrainAugment`. Defaults to `TrainAugment()` (random resized
            crop and flip) when training; it also decides the label format.
        num_classes: int. Needed for one-hot labels.
        one_hot: bool. Defaults to `augment.needs_one_hot` (False without
            `augment`).
        decode: optional function `x -> image`, applied after the shuffle (so
            the shuffle buffer holds paths or encoded bytes, not pixels).
        decode_name: optional function `x -> scalar` naming an element in
            decode errors and `strict_data` messages (a key carried in `x`
            when it holds encoded bytes, as TFDS' `tfds_id`). Default: `x`
            itself (a path).
        shuffle_buffer: int. Training shuffle buffer; defaults to 10,000.
        seed: int. Seeds the shuffle and the per-example random draws; `None`
            picks one at random.
        cache: `False`, `True` (memory) or a file path. Caches decoded images
            before any random op when training, and the finished examples
            (after the deterministic eval transform) otherwise.
        crop_pct: float in (0, 1]. Evaluation center-crop share (timm: 0.875).
        interpolation: resize method of the eval transform.
        mean: per-channel normalisation mean on 0..1 pixels.
        std: per-channel normalisation std on 0..1 pixels.
        shard_policy: `"data"`, `"file"`, `"auto"` or `"off"`: the
            `tf.data.Options().experimental_distribute.auto_shard_policy` used
            when a strategy distributes the dataset over several workers
            (`"file"` for evaluation only: a training pipeline's seed stream
            is a second source, which file sharding cannot walk through).
        input_context: optional `tf.distribute.InputContext` (from
            `distribute_datasets_from_function`, or built for a JAX process):
            this pipeline batches the per-replica batch size, keeps only its
            share of the source (see the module docstring) and turns
            auto-sharding off.
        presharded: bool. With `input_context`: `dataset` is already this
            pipeline's shard (TFDS shards by file), shuffled and seeded per
            pipeline. Default `False`: `dataset` is the whole source, shuffled
            identically in every pipeline and sharded after the shuffle, before
            decoding.
        start: optional `(epoch, batch)` (training only): an endless stream of
            epochs from batch `batch` of epoch `epoch` (0-based), each epoch
            shuffled by `(seed, epoch)` and every example and batch seeded by
            its position, so the stream from any position is exactly the rest
            of the stream from `(0, 0)`: what `keras_spvit.training.fit`
            resumes on (give it `steps_per_epoch`; the source's length must
            be known). Default `None`: one epoch per pass, reshuffled on every
            pass. The stream holds the source (paths, encoded images or arrays)
            in memory, permutes it fully every epoch (`shuffle_buffer` unused)
            and decodes after the permutation (`cache` unused for training).
        strict_data: bool. With `decode`: fail on the first file that does
            not decode, naming it. Default `False`: such a file is recorded
            (`dataset.decode_errors`) and replaced in its batch by another
            example of the batch (in evaluation too: the run's warning and
            `summary.json` name it).
        decode_errors: optional `DecodeErrors` to record bad files in (the
            pipelines of one run can share one); default a new one. The
            returned dataset carries it as `.decode_errors`.
        num_parallel_calls: parallelism of the per-example map.
        token_labels: optional teacher labels for token labeling (training
            only; evaluation ignores them): an object with `grid`, `k`,
            `num_classes` and `lookup(key) -> (scores, ids, found)`, such as
            `keras_spvit.data.token_labels.TokenLabels`. The source's
            elements are then `(x, label, key)` (the sources of this module
            add the keys: an image's relative path without extension, an
            array index, a `tfds_id`). Each example is augmented with its
            label map as the release does (`TrainAugment.with_label_map`:
            flip, RandAugment moving the map, crop box recorded; always per
            image, `batch_rand_augment` is not used) and batches are
            `(images, {"labels": (batch, classes) float32 class target,
            "token_labels": per-token target})`, built by
            `dense_targets.token_label_targets`. MixUp / CutMix are not
            supported with them (the recipes mix tokens with MixToken).
        token_grid: int or `(S_h, S_w)`: the model's token grid (needed with
            `token_labels`; 14 at 224 px with 16 px patches).
        token_label_smoothing: float in [0, 1): the targets' label smoothing
            (`target * on + off` as the release). Default: the augmentation's
            `label_smoothing`. Compile the losses without smoothing then.
        box_order: `"release"` (default: the released code's transposed box,
            what the papers' numbers were trained with) or `"consistent"`
            (see `keras_spvit.data.dense_targets`).
        token_target_format: `"compact"` (default, `(batch, S_h, S_w, M + 1,
            2)` exact packed form, independent of the class count) or
            `"dense"` (`(batch, S_h, S_w, classes)`).
        allow_missing_labels: bool. An example whose key has no teacher label
            trains on its image label (smoothed one-hot, in both targets) and
            is recorded in `missing_token_labels`. Default `False`: the
            pipeline fails with an error naming the key.
        missing_token_labels: optional `MissingTokenLabels` registry (default
            a new one), available as the dataset's `missing_token_labels`.

    Returns:
        A `tf.data.Dataset` of `(images, labels)` batches.

    Example:

    >>> source = tf.data.Dataset.from_tensor_slices((np.zeros((8, 40, 40, 3), "uint8"),
    ...                                              np.arange(8) % 2))
    >>> train = classification_pipeline(source, image_size=32, batch_size=4, training=True)
    """
    image_size = check_size(image_size, "image_size")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(
            f"Expected `batch_size` to be a positive int. Received: batch_size={batch_size!r}"
        )
    if augment is not None and not isinstance(augment, TrainAugment):
        raise ValueError(
            f"Expected `augment` to be a TrainAugment or None. Received: augment={augment!r}"
        )
    if training and augment is None:
        augment = TrainAugment()
    if training and token_labels is not None and num_classes is None:
        num_classes = getattr(token_labels, "num_classes", None)
    if one_hot is None:
        one_hot = augment is not None and augment.needs_one_hot
    elif training and not one_hot and augment.needs_one_hot:
        raise ValueError(
            "MixUp, CutMix and label smoothing make one-hot labels. "
            f"Received: one_hot=False with augment={augment!r}"
        )
    if one_hot and (not isinstance(num_classes, int) or num_classes < 1):
        raise ValueError(
            "One-hot labels (MixUp, CutMix or label smoothing) need `num_classes`. "
            f"Received: num_classes={num_classes!r}"
        )
    if decode_name is not None and (decode is None or not callable(decode_name)):
        raise ValueError(
            "Expected `decode_name` to be a function of `x`, given with `decode`. "
            f"Received: decode_name={decode_name!r} with decode={decode!r}"
        )
    if shard_policy not in _SHARD_POLICIES:
        raise ValueError(
            f"Expected `shard_policy` in {sorted(_SHARD_POLICIES)}. "
            f"Received: shard_policy={shard_policy!r}"
        )
    if training and shard_policy == "file" and input_context is None:
        raise ValueError(
            "A training pipeline cannot be sharded by file (its per-iteration seed stream is a "
            "second source): use 'data', or an `input_context` to read only this worker's "
            "files. Received: shard_policy='file'"
        )
    shuffle_buffer = 10_000 if shuffle_buffer is None else shuffle_buffer
    if not isinstance(shuffle_buffer, int) or shuffle_buffer < 1:
        raise ValueError(
            "Expected `shuffle_buffer` to be a positive int. "
            f"Received: shuffle_buffer={shuffle_buffer!r}"
        )
    if start is not None:
        start = _check_start(start, training, presharded)
    token_mode = training and token_labels is not None
    missing = missing_token_labels if missing_token_labels is not None else MissingTokenLabels()
    if token_mode:
        num_classes, token_grid, token_label_smoothing, entries = _check_token_labels(
            token_labels, num_classes, token_grid, token_label_smoothing, box_order,
            token_target_format, allow_missing_labels, augment,
        )
    seed = _resolve_seed(seed)
    pipeline_id, num_pipelines, global_batch = 0, 1, batch_size
    if input_context is not None:
        batch_size = input_context.get_per_replica_batch_size(batch_size)
        pipeline_id = input_context.input_pipeline_id
        num_pipelines = input_context.num_input_pipelines
        shard_policy = "off"
    share = num_pipelines > 1 and not presharded

    # Decoding never fails a run: `safe_decode` gives a bad file a placeholder
    # and `ok = False` (and records its path); its batch then takes another
    # example of the batch in its place (`_replace_bad`), so batch count and
    # order never change.
    errors = decode_errors if decode_errors is not None else DecodeErrors()
    checked = decode is not None

    def safely_decoded(dataset):
        count = int(dataset.cardinality()) if tf.executing_eagerly() else -1
        name = None if decode_name is None else lambda x, *rest: decode_name(x)
        dataset = safe_decode(dataset, decode, name=name, errors=errors, strict=strict_data,
                              num_parallel_calls=num_parallel_calls)
        if count >= 0:  # one element out per element in (Keras counts steps with it)
            dataset = dataset.apply(tf.data.experimental.assert_cardinality(count))
        return dataset

    def prepare(x, label, *ok):
        image = x if checked or decode is None else decode(x)
        return (_to_rgb(tf.convert_to_tensor(image)), tf.cast(label, tf.int32), *ok)

    def prepare_keyed(x, label, key, *ok):
        return (*prepare(x, label), key, *ok)

    if training:
        # Without a cache, decoding waits until after the shuffle, in the parallel map.
        # A positioned stream permutes the source itself: decoded images are
        # not cached before it.
        decoded = bool(cache) and start is None
        if decoded:
            if checked:
                dataset = safely_decoded(dataset)
            dataset = _cache(
                dataset.map(prepare_keyed if token_mode else prepare,
                            num_parallel_calls=num_parallel_calls),
                cache,
            )

        def reorder(x, label, *rest):
            if token_mode:  # `(x, label, key, [ok,] seed)` -> `(x, label, key, seed, [ok])`
                return (x, label, rest[0], rest[-1], *rest[1:-1])
            # `(x, label, [ok,] seed)` -> `(x, label, seed, [ok])`
            return (x, label, rest[-1], *rest[:-1])

        def train_example(x, label, example_seed, *ok):
            if not decoded:
                x, label = prepare(x, label)
            image = augment.normalized(x, image_size, example_seed, mean, std)
            # Random erasing works on normalised pixels, as timm's.
            return (augment.erase(image, example_seed), label, *ok)

        def crop_example(x, label, example_seed, *ok):
            # RandAugment per batch: the example map crops, flips and draws.
            if not decoded:
                x, label = prepare(x, label)
            pixels, draws = augment.example(x, image_size, example_seed)
            return (pixels, draws, example_seed, label, *ok)

        def finish_batch(pixels, draws, seeds, labels):
            return augment.finish_batch(pixels, draws, seeds, mean, std), labels

        def token_example(x, label, key, example_seed, *ok):
            if not decoded:
                x, label = prepare(x, label)
            image, targets = _token_label_example(
                x, label, key, example_seed, token_labels, augment, image_size, mean, std,
                num_classes=num_classes, grid=token_grid, smoothing=token_label_smoothing,
                box_order=box_order, target_format=token_target_format, entries=entries,
                allow_missing=allow_missing_labels, missing=missing,
            )
            return (image, targets, *ok)

        if start is not None:
            dataset, steps_per_epoch = _position_stream(
                dataset, seed, start, global_batch, num_pipelines if share else 1, pipeline_id,
            )
        else:
            dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
            # Shared: every pipeline draws the single-worker seeds, then keeps its share.
            dataset = _with_seeds(dataset, seed, 0 if share else pipeline_id, salt=0)
            if share:
                dataset = _worker_share(dataset, global_batch, num_pipelines, pipeline_id)
        if checked and not decoded:
            # After the shuffle and the worker's share: each file decoded once.
            dataset = safely_decoded(dataset)  # (image, label, seed, ok)
        elif checked:
            dataset = dataset.map(reorder)  # decoded before the seeds were added
        if token_mode:
            dataset = dataset.map(token_example, num_parallel_calls=num_parallel_calls)
        elif augment.batches_rand_augment:
            dataset = dataset.map(crop_example, num_parallel_calls=num_parallel_calls)
        else:
            dataset = dataset.map(train_example, num_parallel_calls=num_parallel_calls)
    else:

        def eval_example(x, label, *ok):
            image, label = prepare(x, label)
            image = eval_transform(image, image_size, crop_pct, interpolation, mean, std)
            return (image, label, *ok)

        if share:
            dataset = dataset.shard(num_pipelines, pipeline_id)
        if checked:
            dataset = safely_decoded(dataset)
        dataset = _cache(dataset.map(eval_example, num_parallel_calls=num_parallel_calls), cache)

    dataset = dataset.batch(batch_size, drop_remainder=training)
    if checked:
        # The length stays known (Keras counts steps with it; a filter would
        # make every validation warn that the data ran out).
        dataset = dataset.map(_replace_bad, num_parallel_calls=num_parallel_calls)
    if training and augment.batches_rand_augment and not token_mode:
        dataset = dataset.map(finish_batch, num_parallel_calls=num_parallel_calls)
    if training and start is None and tf.executing_eagerly() and int(dataset.cardinality()) == 0:
        raise ValueError(
            f"The training set is smaller than one batch, and the last partial batch is "
            f"dropped. Received: batch_size={batch_size}"
        )

    if token_mode:
        pass  # the targets are made per example
    elif training and augment.needs_one_hot:

        def mix(images, labels, batch_seed):
            return augment.mix_batch(images, labels, num_classes, batch_seed)

        if start is not None:
            # Batch k of the stream is batch `first + k` of the run: seeded by it.
            per_step = global_batch // (num_pipelines * batch_size)
            first = (start[0] * steps_per_epoch + start[1]) * per_step
            key = _seed_key(seed, pipeline_id, 1)
            positions = tf.data.Dataset.range(first, _ENDLESS).map(
                lambda k: _position_seed(key, k, 0)
            )
            dataset = tf.data.Dataset.zip(dataset, positions).map(
                lambda batch, batch_seed: mix(*batch, batch_seed),
                num_parallel_calls=num_parallel_calls,
            )
        else:
            dataset = _with_seeds(dataset, seed, pipeline_id, salt=1).map(mix)
    elif one_hot:
        dataset = dataset.map(
            lambda images, labels: (images, tf.one_hot(labels, num_classes, dtype=tf.float32)),
            num_parallel_calls=num_parallel_calls,
        )

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = _SHARD_POLICIES[shard_policy]
    dataset = dataset.with_options(options).prefetch(tf.data.AUTOTUNE)
    dataset.decode_errors = errors
    if token_mode:
        dataset.missing_token_labels = missing
    return dataset


# === Token labels ===


class MissingTokenLabels(DecodeErrors):
    """The keys a token-labeled pipeline found no teacher label for.

    Filled when `allow_missing_labels=True` (those examples train on their
    image label); `paths` lists the distinct keys, `count` every miss
    (repeats over epochs included).

    Example:

    >>> train = array_dataset(x, y, image_size=32, batch_size=8, training=True,
    ...                       token_labels=labels, token_grid=8, allow_missing_labels=True)
    >>> for _ in train: pass
    >>> train.missing_token_labels.paths, train.missing_token_labels.count
    """

    def summary(self):
        """JSON-ready `{"missing_token_labels": [...], "missing_token_label_count": n, ...}`."""
        keys = self.paths
        return {
            "missing_token_labels": keys,
            "missing_token_label_count": len(keys),
            "missing_token_label_lookups": self.count,
        }

    def __repr__(self):
        return f"MissingTokenLabels(keys={self.paths!r}, count={self.count})"


def _check_token_labels(token_labels, num_classes, token_grid, smoothing, box_order,
                        target_format, allow_missing, augment):
    for name in ("grid", "k", "num_classes", "lookup"):
        if not hasattr(token_labels, name):
            raise ValueError(
                "Expected `token_labels` with grid, k, num_classes and lookup (e.g. "
                f"TokenLabels.open(path)). Received: token_labels={token_labels!r} without `{name}`"
            )
    if num_classes is None:
        num_classes = int(token_labels.num_classes)
    if num_classes != token_labels.num_classes:
        raise ValueError(
            f"The token labels have {token_labels.num_classes} classes; the model "
            f"{num_classes}. Received: num_classes={num_classes!r}"
        )
    if token_grid is None:
        raise ValueError(
            "Token labels need the model's token grid. Received: token_grid=None "
            "(e.g. token_grid=14 at 224 px with 16 px patches)"
        )
    token_grid = check_size(token_grid, "token_grid")
    if smoothing is None:
        smoothing = augment.label_smoothing
    if isinstance(smoothing, bool) or not isinstance(smoothing, (int, float)) or not 0.0 <= smoothing < 1.0:
        raise ValueError(
            f"Expected `token_label_smoothing` in [0, 1). Received: token_label_smoothing={smoothing!r}"
        )
    if box_order not in BOX_ORDERS:
        raise ValueError(f"Expected `box_order` in {list(BOX_ORDERS)}. Received: box_order={box_order!r}")
    if target_format not in TARGET_FORMATS:
        raise ValueError(
            f"Expected `token_target_format` in {list(TARGET_FORMATS)}. "
            f"Received: token_target_format={target_format!r}"
        )
    if not isinstance(allow_missing, bool):
        raise ValueError(
            f"Expected `allow_missing_labels` to be True or False. Received: {allow_missing!r}"
        )
    if augment.mixes:
        raise ValueError(
            "MixUp / CutMix do not mix token-label targets here (the recipes use MixToken). "
            f"Received: augment={augment!r}"
        )
    if augment._keras_randaugment is not None:
        raise ValueError(
            "Keras' RandAugment layer cannot move the label map; use a policy string. "
            f"Received: randaugment={augment.randaugment!r}"
        )
    entries = compact_entries(tuple(token_labels.grid), int(token_labels.k), token_grid)
    return num_classes, token_grid, float(smoothing), entries


def _token_label_example(x, label, key, seed, token_labels, augment, image_size, mean, std, *,
                         num_classes, grid, smoothing, box_order, target_format, entries,
                         allow_missing, missing):
    """One example's image and `{"labels", "token_labels"}` targets."""
    k = int(token_labels.k)
    map_shape = tuple(token_labels.grid) + (k,)
    scores, ids, found = token_labels.lookup(key)
    scores = tf.ensure_shape(tf.cast(scores, tf.float32), map_shape)
    ids = tf.ensure_shape(tf.cast(ids, tf.int32), map_shape)
    # Scores and class ids move as one map (ids are exact in float32).
    label_map = tf.concat([scores, tf.cast(ids, tf.float32)], axis=-1)
    image, label_map, box = augment.with_label_map(x, label_map, image_size, seed)
    image = augment.erase(normalize(image, mean, std), seed)
    class_target, token_target = token_label_targets(
        label_map[..., :k], tf.cast(label_map[..., k:], tf.int32), box,
        num_classes=num_classes, grid=grid, smoothing=smoothing, box_order=box_order,
        target_format=target_format,
    )
    found = tf.reshape(found, ())
    if allow_missing:

        def record(name):
            missing.add(name.numpy(), "no token label")
            return False

        checked = tf.cond(
            found,
            lambda: tf.constant(True),
            lambda: tf.py_function(record, [key], tf.bool),
        )
        if target_format == "compact":
            fallback = image_label_targets(
                label, num_classes=num_classes, grid=grid, entries=entries, smoothing=smoothing
            )
        else:
            one_hot = image_label_targets(
                label, num_classes=num_classes, grid=1, entries=2, smoothing=smoothing
            )[0]
            fallback = (one_hot, tf.broadcast_to(one_hot, (*grid, num_classes)))
        with tf.control_dependencies([checked]):
            class_target = tf.where(found, class_target, fallback[0])
            token_target = tf.where(found, token_target, fallback[1])
    else:
        check = tf.debugging.Assert(
            found,
            ["No token label for key", key,
             "(pass allow_missing_labels=True to train such examples on their image label)"],
        )
        with tf.control_dependencies([check]):
            class_target = tf.identity(class_target)
    return image, {"labels": class_target, "token_labels": token_target}


def _replace_bad(*batch):
    """Drops the batch's `ok` flags, each bad example replaced by the batch's
    first good one (a batch with none keeps its placeholders)."""
    *elements, ok = batch
    first_good = tf.argmax(tf.cast(ok, tf.int32), output_type=tf.int32)
    index = tf.where(ok, tf.range(tf.shape(ok)[0]), first_good)
    return tuple(tf.nest.map_structure(lambda t: tf.gather(t, index), elements))


def _worker_share(dataset, global_batch, num_workers, worker):
    """Worker `worker`'s elements `worker, worker + num_workers, ...` of each
    full global batch of `dataset` (the partial last batch is dropped, as one
    worker's `drop_remainder=True` does), in order."""
    batches = dataset.batch(global_batch, drop_remainder=True)
    share = batches.map(lambda *batch: tuple(t[worker::num_workers] for t in batch)).unbatch()
    if tf.executing_eagerly():
        count = int(batches.cardinality())
        if count >= 0:  # `unbatch` forgets the length; Keras `fit` counts steps with it.
            share = share.apply(
                tf.data.experimental.assert_cardinality(count * (global_batch // num_workers))
            )
    return share
