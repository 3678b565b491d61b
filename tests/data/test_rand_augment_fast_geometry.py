"""keras_spvit/data/rand_augment_fast_geometry.py: the fast mode's one-axis kernels (shear,
translate) against the V3 warp they replace, PIL and each other."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_spvit.data import rand_augment_fast_geometry, rand_augment_geometry
from keras_spvit.data.rand_augment import apply_op

# Pure TensorFlow (runs inside tf.data whatever the Keras backend): tested on TensorFlow.
pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="pure TensorFlow, backend-independent: tested on TensorFlow",
)

PIL = pytest.importorskip("PIL")
from PIL import Image  # noqa: E402

FILL = (7, 200, 33)
SHIFT_CASES = [
    ("ShearX", -0.3),
    ("ShearX", 0.17),
    ("ShearX", 0.29),
    ("ShearY", -0.21),
    ("ShearY", 0.3),
    ("TranslateXRel", -0.405),
    ("TranslateXRel", 0.1234),
    ("TranslateXRel", 0.45),
    ("TranslateYRel", 0.45),
    ("TranslateYRel", -0.2),
    ("TranslateYRel", -0.0371),
]


def _image(height, width, seed=0):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (height, width, 3)).astype(np.uint8)
    image[:5, :9] = 77  # a flat patch stays exact under any blend
    return image


def _matrix(name, arg, height, width):
    return rand_augment_geometry._affine_matrix(name, arg, float(width), float(height))


def _v3(name, image, arg):
    # The fast mode before the one-axis kernels: one V3 bilinear warp.
    height, width = image.shape[:2]
    matrix = _matrix(name, arg, height, width)
    pixels = tf.constant(image, tf.float32)
    return rand_augment_fast_geometry._warp_image_fast(pixels, matrix, "bilinear", FILL).numpy()


@pytest.mark.parametrize("shape", [(29, 37), (40, 24)])
@pytest.mark.parametrize("name, arg", SHIFT_CASES)
def test_shift_kernels_equal_the_v3_warp_up_to_its_float32_rounding(name, arg, shape):
    # Same geometry, same fill semantics (the fill colour blended into the
    # one-pixel border): everywhere, border included, the old V3 value
    # within one level, and nearly always the same value.
    image = _image(*shape)
    ours = apply_op(name, image, arg, fill=FILL, interpolation="bilinear").numpy()
    old = _v3(name, image, arg)
    assert np.abs(ours - old).max() <= 1, np.abs(ours - old).max()
    assert (ours == old).mean() > 0.99


def _pil_bilinear(name, arg, image):
    height, width = image.shape[:2]
    matrix = {
        "ShearX": (1, arg, 0, 0, 1, 0),
        "ShearY": (1, 0, 0, arg, 1, 0),
        "TranslateXRel": (1, 0, arg * width, 0, 1, 0),
        "TranslateYRel": (1, 0, 0, 0, 1, arg * height),
    }[name]
    out = Image.fromarray(image).transform(
        (width, height), Image.AFFINE, matrix, Image.BILINEAR, fillcolor=FILL
    )
    return np.asarray(out).astype(np.int64)


def _source_index(name, arg, height, width):
    y, x = np.mgrid[:height, :width] + 0.5
    a, b, c, d, e, f = (float(v) for v in _matrix(name, arg, height, width))
    return a * x + b * y + c - 0.5, d * x + e * y + f - 0.5


def test_shift_kernels_match_pillow_inside_and_fill_outside():
    # Pillow itself, with the fast mode's documented tolerance: where both
    # neighbours are inside, PIL's bilinear value within one level (a float32
    # blend against PIL's double: fractions like 0.2 round either way), and
    # PIL's value exactly for most pixels; where none is, the fill colour.
    height, width = 29, 37
    image = _image(height, width, seed=1)
    identical = total = 0
    for name, arg in SHIFT_CASES:
        ours = apply_op(name, image, arg, fill=FILL, interpolation="bilinear").numpy()
        expected = _pil_bilinear(name, arg, image)
        sx, sy = _source_index(name, arg, height, width)
        inside = (sx >= 0) & (sx <= width - 1) & (sy >= 0) & (sy <= height - 1)
        assert inside.mean() > 0.3, (name, arg)
        diff = np.abs(ours - expected)[inside]
        assert diff.max() <= 1, (name, arg)
        identical += (diff == 0).sum()
        total += diff.size
        outside = (sx <= -1) | (sx >= width) | (sy <= -1) | (sy >= height)
        assert outside.sum() > 10, (name, arg)
        assert (ours[outside] == FILL).all(), (name, arg)
    assert identical / total > 0.95


def test_whole_pixel_translations_copy_pixels_and_bring_in_the_fill():
    # A translation by whole pixels is a plain shift: no blend at all.
    image = _image(20, 30)
    left = apply_op("TranslateXRel", image, 4 / 30, fill=FILL).numpy()
    np.testing.assert_array_equal(left[:, :26], image[:, 4:])
    assert (left[:, 26:] == FILL).all()
    down = apply_op("TranslateYRel", image, -3 / 20, fill=FILL).numpy()
    np.testing.assert_array_equal(down[3:], image[:17])
    assert (down[:3] == FILL).all()
    # Beyond the image: everything is fill (the shift is clipped, not wrapped).
    gone = apply_op("TranslateXRel", image, 1.7, fill=FILL).numpy()
    assert (gone == FILL).all()
    gone = apply_op("TranslateYRel", image, -2.5, fill=FILL).numpy()
    assert (gone == FILL).all()


def test_shear_rows_are_fractional_one_dimensional_translations():
    # Independent reference in numpy: row y of ShearX(s) is row y translated
    # by s * (y + 0.5) pixels, `a + frac * (b - a)` truncated, fill outside.
    height, width, shear = 12, 16, 0.23
    image = _image(height, width, seed=2).astype(np.float32)
    ours = apply_op("ShearX", image, shear, fill=FILL).numpy()
    padded = np.concatenate([np.broadcast_to(np.float32(FILL), (height, 1, 3)), image,
                             np.broadcast_to(np.float32(FILL), (height, 8, 3))], axis=1)
    for y in range(height):
        t = shear * (y + 0.5)
        k = math.floor(t)
        frac = np.float32(t - k)
        a = padded[y, 1 + k : 1 + k + width]
        b = padded[y, 2 + k : 2 + k + width]
        np.testing.assert_array_equal(ours[y], np.floor(a + frac * (b - a) + 1e-4), err_msg=y)


def test_batched_shift_kernel_equals_the_translate_kernel_bit_for_bit():
    # `apply_batch` runs translations through the gather kernel, the
    # per-image path through padded windows: the same values.
    image = tf.constant(_image(23, 31, seed=3), tf.float32)
    for along_x, offset in ((1.0, 5.37), (1.0, -12.5), (0.0, 3.999), (0.0, -0.25), (1.0, 40.0)):
        along_x, offset = tf.constant(along_x, tf.float64), tf.constant(offset, tf.float64)
        padded = rand_augment_fast_geometry._translate_image_fast(image, along_x, offset, FILL)
        gathered = rand_augment_fast_geometry._shift_images_fast(
            image[None], along_x[None], tf.zeros((1,), tf.float64), offset[None], FILL
        )[0]
        np.testing.assert_array_equal(padded, gathered)


def test_label_maps_still_move_with_shears_and_translations():
    # The maps keep their nearest-neighbour V3 warp: cells move as PIL's NEAREST.
    label_map = np.random.default_rng(4).integers(1, 9, (8, 8)).astype(np.int32)
    image = _image(56, 56)
    for name, arg in (("TranslateXRel", 0.25), ("TranslateYRel", -0.375)):
        _, out = apply_op(name, image, arg, label_map=label_map)
        matrix = (1, 0, arg * 8, 0, 1, 0) if name == "TranslateXRel" else (1, 0, 0, 0, 1, arg * 8)
        expected = Image.fromarray(label_map).transform(
            (8, 8), Image.AFFINE, matrix, Image.NEAREST, fillcolor=0
        )
        np.testing.assert_array_equal(out, np.asarray(expected))


def test_kernels_give_the_same_values_with_static_and_unknown_shapes():
    # The fill colour (and the colour tables' offsets) are graph constants
    # when the shape is static and broadcasts otherwise: the same values.
    image = tf.constant(_image(23, 31, seed=5), tf.float32)
    for name, arg in (("TranslateXRel", -0.3), ("TranslateYRel", 0.21), ("ShearX", 0.17),
                      ("Rotate", 23.0), ("Equalize", 0.0), ("AutoContrast", 0.0),
                      ("Color", 1.6)):
        def run(x, name=name, arg=arg):
            return apply_op(name, x, arg, fill=FILL)

        unknown = tf.function(run, input_signature=[tf.TensorSpec((None, None, 3), tf.float32)])
        static = tf.function(run, input_signature=[tf.TensorSpec((23, 31, 3), tf.float32)])
        np.testing.assert_array_equal(unknown(image), static(image), err_msg=name)
        np.testing.assert_array_equal(unknown(image), run(image), err_msg=name)
        if name.startswith("Translate"):
            assert (run(image).numpy() == FILL).all(axis=-1).sum() > 50, name
