"""`start=(epoch, batch)`: a training stream addressed by position (what exact
resumption trains on)."""

import numpy as np
import pytest
import tensorflow as tf

from keras_spvit.data.datasets import array_dataset, image_folder_dataset
from keras_spvit.data.train_augment import TrainAugment

IMAGES = np.random.default_rng(0).integers(0, 255, (37, 20, 20, 3)).astype("uint8")
LABELS = np.arange(37) % 5
STEPS = 37 // 8


def _stream(start, augment=None, **kwargs):
    augment = augment or TrainAugment(
        scale=(0.5, 1.0), randaugment="rand-m9-mstd0.5", random_erasing=0.25,
        mixup_alpha=0.8, cutmix_alpha=1.0, seed=3,
    )
    return array_dataset(IMAGES, LABELS, image_size=16, batch_size=8, training=True,
                         augment=augment, num_classes=5, seed=1, start=start, **kwargs)


def _batches(dataset, count):
    return list(dataset.take(count).as_numpy_iterator())


def _equal(a, b):
    return len(a) == len(b) and all(
        all(np.array_equal(x, y) for x, y in zip(p, q)) for p, q in zip(a, b)
    )


def test_the_stream_from_any_position_is_the_rest_of_the_stream():
    whole = _batches(_stream((0, 0)), 4 * STEPS)
    assert _equal(whole, _batches(_stream((0, 0)), 4 * STEPS))  # reproducible
    for epoch, batch in ((0, 1), (1, 0), (1, 3), (2, 2)):
        rest = _batches(_stream((epoch, batch)), 3)
        at = epoch * STEPS + batch
        assert _equal(rest, whole[at:at + 3]), (epoch, batch)
    # Each epoch is a new permutation with new draws; every example once per epoch.
    assert not np.array_equal(whole[0][0], whole[STEPS][0])


def test_every_example_once_per_epoch_in_whole_batches():
    plain = TrainAugment(scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=0.0)
    source = np.arange(37, dtype="uint8")[:, None, None, None] * np.ones((1, 4, 4, 3), "uint8")
    stream = array_dataset(source, LABELS, image_size=4, batch_size=8, training=True,
                           augment=plain, seed=5, start=(0, 0), mean=(0, 0, 0), std=(1, 1, 1))
    batches = _batches(stream, 2 * STEPS)
    for epoch in range(2):
        ids = np.concatenate([np.round(b[0][:, 0, 0, 0] * 255) for b in
                              batches[epoch * STEPS:(epoch + 1) * STEPS]]).astype(int)
        assert len(ids) == STEPS * 8 and len(set(ids)) == len(ids)  # no repeat
    first, second = (
        [np.round(b[0][:, 0, 0, 0] * 255) for b in batches[e * STEPS:(e + 1) * STEPS]]
        for e in range(2)
    )
    assert not all(np.array_equal(a, b) for a, b in zip(first, second))


def test_two_workers_share_each_global_batch_of_the_stream():
    context = lambda worker: tf.distribute.InputContext(  # noqa: E731
        num_input_pipelines=2, input_pipeline_id=worker, num_replicas_in_sync=2)
    plain = TrainAugment(scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=0.0)
    source = np.arange(37, dtype="uint8")[:, None, None, None] * np.ones((1, 4, 4, 3), "uint8")

    def ids(start, worker=None):
        stream = array_dataset(
            source, LABELS, image_size=4, batch_size=8, training=True, augment=plain, seed=5,
            start=start, mean=(0, 0, 0), std=(1, 1, 1),
            input_context=None if worker is None else context(worker))
        return [np.round(b[0][:, 0, 0, 0] * 255).astype(int)
                for b in _batches(stream, 3)]

    single = ids((1, 1))
    workers = [ids((1, 1), w) for w in (0, 1)]
    for step in range(3):
        assert sorted(np.concatenate([w[step] for w in workers])) == sorted(single[step])


@pytest.mark.parametrize("start,match", [
    ((1,), "start"), ((-1, 0), "start"), ((0, 1.5), "start"), ("0,0", "start"),
])
def test_bad_positions_say_what_is_expected(start, match):
    with pytest.raises(ValueError, match=match):
        _stream(start)


def test_a_position_needs_training():
    with pytest.raises(ValueError, match="training=False"):
        array_dataset(IMAGES, LABELS, image_size=16, batch_size=8, training=False, start=(0, 0))


def test_image_folder_stream(tmp_path):
    from PIL import Image

    for c in range(2):
        (tmp_path / f"c{c}").mkdir()
        for i in range(6):
            Image.fromarray(IMAGES[c * 6 + i]).save(tmp_path / f"c{c}" / f"{i}.png")
    make = lambda start: image_folder_dataset(  # noqa: E731
        str(tmp_path), image_size=16, batch_size=4, training=True, seed=2, start=start)
    whole = _batches(make((0, 0)), 6)
    assert _equal(_batches(make((1, 1)), 2), whole[4:6])
