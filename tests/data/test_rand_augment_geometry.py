"""The exact geometric operations (keras_spvit/data/rand_augment_geometry.py) against PIL's
affine resampling."""

import keras
import numpy as np
import pytest

# Pure TensorFlow (runs inside tf.data whatever the Keras backend): tested on TensorFlow;
# tests/data/test_train_augment.py runs RandAugment through the pipeline on every backend.
pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="pure TensorFlow, backend-independent: tested on TensorFlow",
)

PIL = pytest.importorskip("PIL")
from PIL import Image  # noqa: E402

from tests.data.test_rand_augment_ops import FILL, _as_array, _image, _ours, _pil  # noqa: E402


def _pil_affine(image, matrix, interpolation):
    resample = Image.BICUBIC if interpolation == "bicubic" else Image.BILINEAR
    return _as_array(
        _pil(image).transform(
            (image.shape[1], image.shape[0]),
            Image.AFFINE,
            matrix,
            resample=resample,
            fillcolor=FILL,
        )
    )


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
@pytest.mark.parametrize("shape", [(29, 37), (40, 24)])
def test_geometric_ops_match_pil(interpolation, shape):
    # Exact: float64 coordinates and PIL's interpolation polynomials in PIL's
    # evaluation order, truncated as PIL stores uint8. Includes translations
    # whose fractional offset is "round" (0.4 px), where any other evaluation
    # order lands on the other side of an integer for many pixels.
    image = _image(*shape)
    height, width = shape
    resample = Image.BICUBIC if interpolation == "bicubic" else Image.BILINEAR
    kwargs = dict(fill=FILL, interpolation=interpolation)
    for degrees in (-27.3, 0.0, 13.0, 30.0):
        expected = _as_array(_pil(image).rotate(degrees, resample=resample, fillcolor=FILL))
        np.testing.assert_array_equal(_ours("Rotate", image, degrees, **kwargs), expected)
    for factor in (-0.3, 0.17):
        np.testing.assert_array_equal(
            _ours("ShearX", image, factor, **kwargs),
            _pil_affine(image, (1, factor, 0, 0, 1, 0), interpolation),
        )
        np.testing.assert_array_equal(
            _ours("ShearY", image, factor, **kwargs),
            _pil_affine(image, (1, 0, 0, factor, 1, 0), interpolation),
        )
    for pct in (-0.45, 0.2, 0.1234):
        np.testing.assert_array_equal(
            _ours("TranslateXRel", image, pct, **kwargs),
            _pil_affine(image, (1, 0, pct * width, 0, 1, 0), interpolation),
        )
        np.testing.assert_array_equal(
            _ours("TranslateYRel", image, pct, **kwargs),
            _pil_affine(image, (1, 0, 0, 0, 1, pct * height), interpolation),
        )
