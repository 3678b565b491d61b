"""`apply_op` (keras_spvit/data/rand_augment_ops.py): each operation against PIL."""

import keras
import numpy as np
import pytest

from keras_spvit.data.rand_augment import DEFAULT_FILL, apply_op

# Pure TensorFlow (runs inside tf.data whatever the Keras backend): tested on TensorFlow;
# tests/data/test_train_augment.py runs RandAugment through the pipeline on every backend.
pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="pure TensorFlow, backend-independent: tested on TensorFlow",
)

PIL = pytest.importorskip("PIL")
from PIL import Image, ImageEnhance, ImageOps  # noqa: E402

FILL = (124, 116, 104)


def _image(height=29, width=37, seed=0):
    # Random pixels with flat patches (flat windows must stay exact) and a
    # narrow-range corner (autocontrast / equalize see uneven histograms).
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (height, width, 3)).astype(np.uint8)
    image[:6, :10] = 77
    image[-5:, -7:] = (250, 3, 128)
    image[8:14, 3:9] = rng.integers(40, 60, (6, 6, 3))
    return image


def _ours(name, image, arg=0.0, exact=True, **kwargs):
    out = apply_op(name, image, arg, exact=exact, **kwargs).numpy()
    assert out.dtype == np.float32 and out.shape == image.shape
    return out.astype(np.int64)


def _pil(image):
    return Image.fromarray(image)


def _as_array(pil_image):
    return np.asarray(pil_image).astype(np.int64)


# === Operations against PIL (exact: the same uint8 maths) ===


@pytest.mark.parametrize(
    "name, reference",
    [
        ("AutoContrast", ImageOps.autocontrast),
        ("Equalize", ImageOps.equalize),
        ("Invert", ImageOps.invert),
    ],
)
@pytest.mark.parametrize("exact", [True, False])
def test_argumentless_ops_match_pil(name, reference, exact):
    image = _image()
    expected = _as_array(reference(_pil(image)))
    np.testing.assert_array_equal(_ours(name, image, exact=exact), expected)


def test_autocontrast_and_equalize_leave_flat_channels_alone():
    image = np.full((5, 6, 3), 90, np.uint8)
    image[..., 2] = np.arange(30).reshape(5, 6)
    for name, reference in (
        ("AutoContrast", ImageOps.autocontrast),
        ("Equalize", ImageOps.equalize),
    ):
        ours = _ours(name, image)
        np.testing.assert_array_equal(ours, _as_array(reference(_pil(image))))
        assert (ours[..., :2] == 90).all()


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 8])
def test_posterize_matches_pil(bits):
    image = _image()
    expected = _as_array(ImageOps.posterize(_pil(image), bits))
    np.testing.assert_array_equal(_ours("Posterize", image, bits), expected)
    np.testing.assert_array_equal(_ours("Posterize", image, bits, exact=False), expected)


def test_posterize_zero_bits_is_black():
    # timm's level 0 (m < 2.5); PIL up to 9.x gave black (mask 0), Pillow 10+ raises.
    assert (_ours("Posterize", _image(), 0) == 0).all()


@pytest.mark.parametrize("threshold", [0, 77, 128, 230, 256])
def test_solarize_matches_pil(threshold):
    image = _image()
    expected = _as_array(ImageOps.solarize(_pil(image), threshold))
    np.testing.assert_array_equal(_ours("Solarize", image, threshold), expected)
    np.testing.assert_array_equal(_ours("Solarize", image, threshold, exact=False), expected)


@pytest.mark.parametrize("addition", [0, 33, 110])
def test_solarize_add_matches_timm_lut(addition):
    # timm's `solarize_add`: a PIL point table, +add below 128, capped at 255.
    image = _image()
    table = [min(255, i + addition) if i < 128 else i for i in range(256)] * 3
    expected = _as_array(_pil(image).point(table))
    np.testing.assert_array_equal(_ours("SolarizeAdd", image, addition), expected)
    np.testing.assert_array_equal(_ours("SolarizeAdd", image, addition, exact=False), expected)


@pytest.mark.parametrize("factor", [0.1, 0.46, 1.0, 1.54, 1.9])
@pytest.mark.parametrize(
    "name, enhancer",
    [
        ("Color", ImageEnhance.Color),
        ("Contrast", ImageEnhance.Contrast),
        ("Brightness", ImageEnhance.Brightness),
        ("Sharpness", ImageEnhance.Sharpness),
    ],
)
def test_enhance_ops_match_pil(name, enhancer, factor):
    image = _image()
    expected = _as_array(enhancer(_pil(image)).enhance(factor))
    np.testing.assert_array_equal(_ours(name, image, factor), expected)
    # The Increasing variants run the same operation; the fast mode too.
    np.testing.assert_array_equal(_ours(name + "Increasing", image, factor), expected)
    np.testing.assert_array_equal(_ours(name, image, factor, exact=False), expected)



def test_default_fill_is_timm_img_mean_of_imagenet():
    # timm's transforms factory: img_mean = tuple(min(255, round(255 * x)) for x in mean).
    assert DEFAULT_FILL == (124, 116, 104)
    out = _ours("TranslateXRel", _image(), 0.45)
    assert (out[:, -10:] == DEFAULT_FILL).all()
