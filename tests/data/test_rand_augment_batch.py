"""RandAugment.apply_batch: the batched fast path equals the per-image call, bit for bit."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_spvit.data import IMAGENET_MEAN, IMAGENET_STD, rand_augment
from keras_spvit.data.rand_augment import RandAugment, quantize
from keras_spvit.data.train_augment import TrainAugment

# Pure TensorFlow (runs inside tf.data whatever the Keras backend): tested on TensorFlow.
pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="pure TensorFlow, backend-independent: tested on TensorFlow",
)


def _images(count, height=24, width=32, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (count, height, width, 3)).astype(np.uint8)
    images[::3, :5, :7] = 77  # flat patches; a flat channel for autocontrast / equalize
    images[1::4, ..., 2] = 140
    return images


def _draws(augment, seeds):
    return [tf.stack(d) for d in zip(*(augment.sample(s) for s in seeds))]


def _per_image(augment, images, seeds, label_maps=None):
    outputs = [
        augment(image, seed) if label_maps is None else augment(image, seed, label_map=m)
        for image, seed, m in zip(images, seeds, label_maps if label_maps is not None
                                  else [None] * len(images))
    ]
    if label_maps is None:
        return np.stack([o.numpy() for o in outputs]), None
    return np.stack([o[0].numpy() for o in outputs]), np.stack([o[1].numpy() for o in outputs])


@pytest.mark.parametrize(
    "policy, map_shape, interpolation",
    [
        ("rand-n3-m9-mstd0.5-p1.0-inc1", (6, 8), "bicubic"),  # every op, applied every time
        ("rand-n3-m9-mstd0.5", (12, 16, 2), "bilinear"),  # p = 0.5: some images untouched
        ("rand-m7-mstd101-p0.8", (6, 8), "nearest"),
    ],
)
def test_apply_batch_equals_per_image_call(policy, map_shape, interpolation):
    augment = RandAugment(policy, fill=(7, 200, 33), interpolation=interpolation)
    count = 24
    images = _images(count)
    float_images = tf.constant(images / 255.0, tf.float32)
    label_maps = tf.constant(
        np.random.default_rng(1).integers(1, 9, (count, *map_shape)), tf.int32
    )
    seeds = [tf.constant([5, i], tf.int64) for i in range(count)]
    draws = _draws(augment, seeds)
    ops, applied = draws[0].numpy(), draws[1].numpy()
    ran = {augment.transforms[o] for o in ops[applied]}
    if "p1.0" in policy:
        assert ran == set(augment.transforms)  # every operation forced at least once
    else:
        assert (~applied).all(axis=1).any() and len(ran) >= 10
    batch_images, batch_maps = augment.apply_batch(float_images, draws, label_maps=label_maps)
    expected_images, expected_maps = _per_image(augment, float_images, seeds, label_maps)
    np.testing.assert_array_equal(batch_images.numpy(), expected_images)
    np.testing.assert_array_equal(batch_maps.numpy(), expected_maps)
    assert batch_maps.dtype == tf.int32 and batch_images.dtype == tf.float32
    # uint8 input is the quantised image: the same result, without maps too.
    np.testing.assert_array_equal(augment.apply_batch(images, draws).numpy(), expected_images)
    # The maps moved exactly where a geometric operation ran.
    geometric = np.isin(ops, [augment.transforms.index(n) for n in rand_augment.GEOMETRIC_OPS])
    moved = (geometric & applied).any(axis=1)
    axes = tuple(range(1, len(map_shape) + 1))
    unchanged = np.all(expected_maps == label_maps.numpy(), axis=axes)
    assert unchanged[~moved].all() and not unchanged[moved].all()


def test_apply_batch_in_a_tf_data_batch_map_equals_the_per_example_map():
    augment = RandAugment("rand-m9-mstd0.5-inc1")
    images = _images(12, 20, 20, seed=3)
    seeds = tf.stack([tf.fill((12,), tf.constant(9, tf.int64)), tf.range(12, dtype=tf.int64)], 1)
    source = tf.data.Dataset.from_tensor_slices((images, seeds))
    per_example = source.map(lambda x, s: augment(x, s), num_parallel_calls=4).batch(4)
    batched = source.map(
        lambda x, s: (tf.cast(quantize(x), tf.uint8), augment.sample(s)), num_parallel_calls=4
    ).batch(4, drop_remainder=True)
    batched = batched.map(augment.apply_batch, num_parallel_calls=2)
    for a, b in zip(per_example, batched):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_an_empty_batch_and_a_batch_without_operations_pass_through():
    augment = RandAugment("rand-m9-mstd0.5-p0")
    images = _images(3)
    draws = _draws(augment, [[0, i] for i in range(3)])
    np.testing.assert_array_equal(augment.apply_batch(images, draws).numpy() * 255.0, images)
    empty = augment.apply_batch(images[:0], [d[:0] for d in draws])
    assert empty.shape == (0, 24, 32, 3)


def test_quantize_is_round_half_to_even_of_255x():
    values = tf.constant([0.0, 0.5, 1.0, 1.5, -0.2, 0.3 / 255.0, 2.5 / 255.0])
    np.testing.assert_array_equal(quantize(values).numpy(), [0, 128, 255, 255, 0, 0, 2])
    np.testing.assert_array_equal(quantize(tf.constant([3, 250], tf.uint8)).numpy(), [3, 250])


def test_apply_batch_bad_arguments_raise():
    augment = RandAugment()
    draws = _draws(augment, [[0, 1]])
    with pytest.raises(ValueError, match="exact=True"):
        RandAugment(exact=True).apply_batch(_images(1), draws)
    with pytest.raises(ValueError, match=r"images.shape=\(24, 32, 3\)"):
        augment.apply_batch(_images(1)[0], draws)
    with pytest.raises(ValueError, match="5 draws"):
        augment.apply_batch(_images(1), draws[:2])
    with pytest.raises(ValueError, match=r"label_maps.shape=\(6,\)"):
        augment.apply_batch(_images(1), draws, label_maps=tf.zeros((6,)))


# === TrainAugment: per example + per batch equals the per-image steps ===


def test_train_augment_example_then_finish_batch_equals_normalized_then_erase():
    augment = TrainAugment(randaugment="rand-m9-mstd0.5-inc1", random_erasing=0.5,
                           erasing_count=2, batch_rand_augment=True)
    assert augment.batches_rand_augment
    images = _images(8, 40, 52, seed=4)
    seeds = [tf.constant([2, i], tf.int64) for i in range(8)]
    examples = [augment.example(image, 24, seed) for image, seed in zip(images, seeds)]
    pixels = tf.stack([p for p, _ in examples])
    draws = [tf.stack(d) for d in zip(*(d for _, d in examples))]
    batch = augment.finish_batch(pixels, draws, tf.stack(seeds), IMAGENET_MEAN, IMAGENET_STD)
    expected = [
        augment.erase(augment.normalized(image, 24, seed), seed).numpy()
        for image, seed in zip(images, seeds)
    ]
    np.testing.assert_array_equal(batch.numpy(), np.stack(expected))
    assert pixels.dtype == tf.uint8 and batch.shape == (8, 24, 24, 3)
    erased = [not np.array_equal(e, augment.normalized(x, 24, s).numpy())
              for e, x, s in zip(expected, images, seeds)]
    assert 0 < sum(erased) < 8  # some images erased, some not


def test_only_the_fast_rand_augment_runs_per_batch_and_only_when_asked():
    assert not TrainAugment(randaugment="rand-m9-mstd0.5").batches_rand_augment
    assert not TrainAugment(batch_rand_augment=True).batches_rand_augment
    exact = RandAugment(exact=True)
    assert not TrainAugment(randaugment=exact, batch_rand_augment=True).batches_rand_augment
    layer = keras.layers.RandAugment(value_range=(0, 1), seed=0)
    assert not TrainAugment(randaugment=layer, batch_rand_augment=True).batches_rand_augment
    with pytest.raises(ValueError, match="randaugment=None"):
        TrainAugment().example(_images(1)[0], 16, [0, 1])
    with pytest.raises(ValueError, match="batch_rand_augment='yes'"):
        TrainAugment(batch_rand_augment="yes")
    config = TrainAugment(randaugment="rand-m9", batch_rand_augment=True).get_config()
    assert TrainAugment.from_config(config).batches_rand_augment
