"""The batched colour kernels (keras_spvit/data/rand_augment_colour.py): a shared kernel with
neutral parameters is each single operation."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_spvit.data import rand_augment_colour as colour
from tests.data.test_rand_augment_batch import _images

# Pure TensorFlow (runs inside tf.data whatever the Keras backend): tested on TensorFlow;
# tests/data/test_train_augment.py runs RandAugment through the pipeline on every backend.
pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="pure TensorFlow, backend-independent: tested on TensorFlow",
)


def test_point_and_grey_blend_families_are_the_single_operations():
    # The shared kernels with neutral parameters (8 bits: unit 1) are each
    # operation exactly.
    images = tf.constant(_images(4), tf.float32)
    ones = tf.ones((4,), tf.float64)
    cases = [
        ((4 * ones, 256 * ones, 0 * ones), lambda x: colour._posterize_batch(x, 4 * ones)),
        ((8 * ones, 0 * ones, 0 * ones), lambda x: 255.0 - x),
        ((8 * ones, 100 * ones, 0 * ones), lambda x: colour._solarize_batch(x, 100 * ones)),
        ((8 * ones, 256 * ones, 70 * ones),
         lambda x: colour._solarize_add_batch(x, 70 * ones)),
    ]
    for (bits, threshold, addition), op in cases:
        unit = 2.0 ** tf.maximum(8.0 - bits, 0.0)
        ours = colour._point_batch(images, unit, threshold, addition)
        np.testing.assert_array_equal(ours.numpy(), op(images).numpy())
    factor = 1.7 * ones
    for weights, op in (
        ((1.0, 0.0), colour._color_batch),
        ((0.0, 1.0), colour._contrast_batch),
        ((0.0, 0.0), colour._brightness_batch),
    ):
        grey, mean = (tf.fill((4,), w) for w in weights)
        ours = colour._grey_blend_batch(images, factor, grey, mean)
        np.testing.assert_array_equal(ours.numpy(), op(images, factor).numpy())


def _numpy_auto_contrast(image):
    # PIL's autocontrast(cutoff=0) per pixel in float64, the straightforward form.
    out = image.astype(np.float64).copy()
    for c in range(image.shape[-1]):
        lo, hi = image[..., c].min(), image[..., c].max()
        if hi > lo:
            scale = 255.0 / (hi - lo)
            out[..., c] = np.floor(np.clip(image[..., c] * scale + -lo * scale, 0, 255))
    return out


def _numpy_equalize(image):
    # PIL's ImageOps.equalize table per channel, applied by indexing.
    out = image.copy()
    for c in range(image.shape[-1]):
        values = image[..., c].astype(np.int64)
        histogram = np.bincount(values.ravel(), minlength=256)
        present = np.nonzero(histogram)[0]
        step = (histogram.sum() - histogram[present[-1]]) // 256
        if step:
            below = np.concatenate([[0], np.cumsum(histogram)[:-1]])
            out[..., c] = np.minimum((step // 2 + below) // step, 255)[values]
    return out


@pytest.mark.parametrize("static", [True, False])
def test_table_kernels_equal_the_per_pixel_definitions(static):
    # AutoContrast and Equalize build a 256-entry table per image and channel
    # and apply it with one lookup (constant channel offsets when the shape is
    # static, a broadcast otherwise): the values of the direct definitions.
    rng = np.random.default_rng(3)
    images = rng.integers(20, 200, (3, 17, 23, 3)).astype(np.float32)
    images[1, ..., 2] = 90.0  # a flat channel: both are the identity there
    images[2] = np.minimum(images[2], 40.0)  # a narrow range: large contrast stretch
    signature = [tf.TensorSpec((3, 17, 23, 3) if static else (None, None, None, 3), tf.float32)]
    for kernel, reference in (
        (colour._auto_contrast_batch, _numpy_auto_contrast),
        (colour._equalize_batch, _numpy_equalize),
    ):
        ours = tf.function(kernel, input_signature=signature)(tf.constant(images)).numpy()
        expected = np.stack([reference(image) for image in images])
        np.testing.assert_array_equal(ours, expected)


def test_grey_is_pils_luminance_on_every_channel():
    # `_grey` (one matmul) is PIL's integer RGB -> L, `(r * 19595 + g * 38470 +
    # b * 7471 + 0x8000) >> 16`, repeated on the three channels; white stays 255.
    rng = np.random.default_rng(4)
    images = rng.integers(0, 256, (2, 9, 11, 3))
    images[0, 0, 0] = 255
    expected = (images @ np.array([19595, 38470, 7471]) + 0x8000) >> 16
    ours = colour._grey(tf.constant(images, tf.float32)).numpy()
    np.testing.assert_array_equal(ours, np.repeat(expected[..., None], 3, axis=-1))
    assert ours[0, 0, 0, 0] == 255
