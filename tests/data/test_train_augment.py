"""TrainAugment wiring: timm's RandAugment and erasing, seeds, recipes, Keras layers."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_spvit.cli.train import train_augment
from keras_spvit.data import RandAugment, array_dataset, normalize, random_resized_crop
from keras_spvit.data.train_augment import TrainAugment
from keras_spvit.training import get_recipe

SEED = tf.constant([7, 11], tf.int64)


def _image(seed=0, shape=(40, 52, 3)):
    return np.random.default_rng(seed).integers(0, 256, shape).astype("uint8")


def test_crop_then_randaugment_with_their_own_seeds():
    # The composition, spelled out: crop (first split of the seed), no flip,
    # then RandAugment on a seed folded from the example's.
    augment = TrainAugment(hflip=0.0, randaugment="rand-m9-mstd0.5-inc1")
    image = _image()
    crop_seed = tf.random.experimental.stateless_split(SEED, 3)[0]
    expected = random_resized_crop(image, 24, seed=crop_seed)
    expected = RandAugment("rand-m9-mstd0.5-inc1")(
        expected, tf.random.experimental.stateless_fold_in(SEED, 1)
    )
    np.testing.assert_array_equal(augment(image, 24, SEED).numpy(), expected.numpy())
    plain = TrainAugment(hflip=0.0)(image, 24, SEED).numpy()
    assert not np.array_equal(plain, expected.numpy())  # the policy did something here


def test_normalized_is_normalize_of_call_within_a_float_rounding():
    # The pipelines' per-image step: with the fast RandAugment the pixels are
    # normalised directly (`normalize_pixels`), so `normalize(augment(...))`
    # within float32 rounding, and still on the uint8 grid.
    from keras_spvit.data import IMAGENET_MEAN, IMAGENET_STD

    augment = TrainAugment(randaugment="rand-m9-mstd0.5-inc1")
    mean, std = np.float32(IMAGENET_MEAN), np.float32(IMAGENET_STD)
    changed = 0
    for k in range(16):
        seed = tf.constant([k, 3], tf.int64)
        image = _image(k)
        out = augment.normalized(image, 24, seed).numpy()
        reference = normalize(augment(image, 24, seed)).numpy()
        np.testing.assert_allclose(out, reference, rtol=0, atol=4e-7 * np.abs(reference).max())
        pixels = (out * std + mean) * 255.0
        np.testing.assert_allclose(pixels, np.round(pixels), atol=1e-3)
        plain = normalize(TrainAugment()(image, 24, seed)).numpy()
        changed += not np.allclose(out, plain, atol=1e-3)
    assert changed >= 8  # RandAugment ran: not the crop alone


@pytest.mark.parametrize("config", [
    lambda: {},
    lambda: {"randaugment": "rand-m9-mstd0.5",
             "random_erasing": keras.layers.RandomErasing(factor=1.0, seed=3)},
    lambda: {"randaugment": RandAugment("rand-m9-mstd0.5", exact=True)},
])
def test_normalized_without_the_fast_path_is_exactly_normalize_of_call(config):
    # Two augmentations built alike (a Keras layer draws from its own seeded state).
    first, second = TrainAugment(**config()), TrainAugment(**config())
    np.testing.assert_array_equal(first.normalized(_image(), 24, SEED).numpy(),
                                  normalize(second(_image(), 24, SEED)).numpy())


def test_augment_pixels_is_call_without_its_conversions():
    from keras_spvit.data.rand_augment import quantize

    augment = RandAugment("rand-m9-mstd0.5-inc1")
    image = tf.constant(_image(5, (32, 32, 3)).astype("float32") / 255.0)
    for k in range(12):
        seed = tf.constant([k, 1], tf.int64)
        np.testing.assert_array_equal(
            (augment.augment_pixels(quantize(image), seed) / 255.0).numpy(),
            augment(image, seed).numpy(),
        )
    with pytest.raises(ValueError, match="exact=True"):
        RandAugment(exact=True).augment_pixels(quantize(image), SEED)
    with pytest.raises(ValueError, match="dtype=uint8"):
        augment.augment_pixels(tf.zeros((8, 8, 3), "uint8"), SEED)


def test_erasing_happens_after_normalisation_in_the_pipeline():
    # const mode writes timm's zeros in normalised space: a rectangle of exact
    # zeros can only appear if erasing runs after `normalize`.
    images = np.full((8, 32, 32, 3), 200, "uint8")
    augment = TrainAugment(scale=(1.0, 1.0), hflip=0.0, random_erasing=1.0,
                           erasing_mode="const")
    batch, _ = next(iter(array_dataset(images, np.zeros(8, "int32"), image_size=32,
                                       batch_size=8, training=True, augment=augment,
                                       seed=0)))
    batch = keras.ops.convert_to_numpy(batch)
    background = normalize(np.full((1, 1, 3), 200 / 255, "float32")).numpy()[0, 0]
    for image in batch:
        zero = np.all(image == 0.0, axis=-1)
        assert zero.any()
        rows, cols = np.nonzero(zero)
        box = zero[rows.min(): rows.max() + 1, cols.min(): cols.max() + 1]
        assert box.all()  # one rectangle
        np.testing.assert_allclose(image[~zero], np.broadcast_to(background, image[~zero].shape),
                                   atol=1e-5)
        assert 0.02 * 32 * 32 - 1 <= box.size <= 32 * 32 / 3 + 32


def test_pixel_erasing_is_standard_normal_noise():
    augment = TrainAugment(random_erasing=1.0)
    image = tf.fill((64, 64, 3), 5.0)  # far from any N(0, 1) draw
    out = augment.erase(image, SEED).numpy()
    noise = out[out != 5.0]
    assert noise.size > 0.02 * out.size
    assert abs(noise.mean()) < 0.1 and abs(noise.std() - 1.0) < 0.1
    np.testing.assert_array_equal(TrainAugment().erase(image, SEED), image)


def test_same_seed_same_epoch_under_a_parallel_map():
    images = np.stack([_image(i, (36, 36, 3)) for i in range(12)])
    labels = np.arange(12) % 3

    def epoch():
        augment = TrainAugment(randaugment="rand-m9-mstd0.5-inc1", random_erasing=0.5)
        data = array_dataset(images, labels, image_size=24, batch_size=4, training=True,
                             augment=augment, seed=3)
        return np.concatenate([keras.ops.convert_to_numpy(x) for x, _ in data])

    first, second = epoch(), epoch()
    np.testing.assert_array_equal(first, second)


def test_keras_layers_still_available():
    layer = keras.layers.RandAugment(value_range=(0, 1), num_ops=2, factor=0.9, seed=0)
    augment = TrainAugment(hflip=0.0, randaugment=layer,
                           random_erasing=keras.layers.RandomErasing(factor=(1.0, 1.0), seed=0))
    out = augment(_image(), 24, SEED).numpy()
    plain = TrainAugment(hflip=0.0)(_image(), 24, SEED).numpy()
    assert out.shape == (24, 24, 3) and not np.array_equal(out, plain)
    assert not augment.erases  # the Keras layer erases inside __call__, not in `erase`


@pytest.mark.parametrize(
    "kwargs, message",
    [({"randaugment": 5}, "randaugment=5"), ({"randaugment": "rand-x9"}, "rand-x9"),
     ({"random_erasing": "often"}, "random_erasing='often'"),
     ({"random_erasing": 1.5}, "random_erasing=1.5"),
     ({"erasing_mode": "noise"}, "erasing_mode='noise'"),
     ({"erasing_count": 0}, "erasing_count=0")],
)
def test_bad_arguments_name_the_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TrainAugment(**kwargs)


@pytest.mark.parametrize(
    "recipe, policy, erasing",
    [("spvit", "rand-m9-mstd0.5-inc1", 0.25), ("spvit_l", "rand-n3-m9-mstd0.5-inc1", 0.25),
     ("refiner", "rand-m9-mstd0.5-inc1", 0.25), ("digits", None, 0.0)],
)
def test_recipes_map_to_the_fast_timm_augmentation(recipe, policy, erasing):
    augment = train_augment(get_recipe(recipe), seed=0)
    assert augment.randaugment == policy
    assert (augment._rand_augment is None) == (policy is None)
    assert augment._keras_randaugment is None and augment._keras_erasing is None
    assert augment.random_erasing == erasing and augment.erasing_mode == "pixel"
    assert augment.color_jitter is None  # timm turns colour jitter off under RandAugment
    if policy:
        assert augment._rand_augment.num_ops == (3 if "n3" in policy else 2)
