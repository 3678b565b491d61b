"""Magnitude -> argument (keras_spvit/data/levels.py) against timm's level maps."""

import keras
import pytest
import tensorflow as tf

from keras_spvit.data import rand_augment_levels as levels
from keras_spvit.data import rand_augment_policy as policy
from keras_spvit.data.rand_augment import level_to_arg

# Pure TensorFlow (runs inside tf.data whatever the Keras backend): tested on TensorFlow;
# tests/data/test_train_augment.py runs RandAugment through the pipeline on every backend.
pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="pure TensorFlow, backend-independent: tested on TensorFlow",
)


LEVELS = [
    ("Rotate", 9.0, False, 27.0),
    ("Rotate", 9.0, True, -27.0),
    ("Rotate", 10.0, False, 30.0),
    ("ShearX", 9.0, False, 0.27),
    ("ShearY", 5.0, True, -0.15),
    ("TranslateXRel", 9.0, False, 0.405),
    ("TranslateYRel", 10.0, True, -0.45),
    ("Posterize", 9.0, False, 3),
    ("Posterize", 10.0, False, 4),
    ("Posterize", 2.4, False, 0),
    ("PosterizeIncreasing", 9.0, False, 1),
    ("Solarize", 9.0, False, 230),
    ("Solarize", 10.0, False, 256),
    ("Solarize", 20.0, False, 256),
    ("SolarizeIncreasing", 9.0, False, 26),
    ("SolarizeAdd", 9.0, False, 99),
    ("SolarizeAdd", 10.0, False, 110),
    ("SolarizeAdd", 20.0, False, 128),
    ("Color", 9.0, True, 1.72),
    ("Contrast", 0.0, False, 0.1),
    ("Brightness", 10.0, False, 1.9),
    ("Sharpness", 5.0, False, 1.0),
    ("ColorIncreasing", 9.0, False, 1.81),
    ("ContrastIncreasing", 9.0, True, 0.19),
    ("BrightnessIncreasing", 12.0, True, 0.1),
    ("SharpnessIncreasing", 0.0, True, 1.0),
    ("AutoContrast", 9.0, False, 0.0),
]


@pytest.mark.parametrize("name, magnitude, negate, expected", LEVELS)
def test_level_to_arg_matches_timm(name, magnitude, negate, expected):
    value = float(level_to_arg(name, magnitude, negate))
    if isinstance(expected, int):
        assert value == expected
    else:
        assert value == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_level_to_arg_translate_pct():
    assert float(level_to_arg("TranslateXRel", 10.0, translate_pct=0.3)) == pytest.approx(0.3)


@pytest.mark.parametrize("translate_pct", [0.45, 0.3])
def test_fast_argument_table_equals_level_to_arg(translate_pct):
    # The fast mode computes arguments from a table row per operation: the
    # same numbers as `level_to_arg` (itself checked against timm above).
    for name in policy._ALL_OPS:
        row = tf.constant(levels._argument_row(name, translate_pct), tf.float64)
        for magnitude in (0.0, 2.4, 5.0, 9.0, 9.37, 10.0, 20.0):
            for negate in (False, True):
                fast = levels._fast_argument(row, tf.constant(magnitude, tf.float64), negate)
                expected = level_to_arg(name, magnitude, negate, translate_pct)
                assert float(fast) == float(expected), (name, magnitude, negate)
