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
