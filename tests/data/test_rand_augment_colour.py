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
