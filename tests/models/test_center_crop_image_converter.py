"""`CenterCropImageConverter`: timm's evaluation transform on every backend and in tf.data."""

import numpy as np
import pytest

import keras_spvit
from keras_spvit.utils.preprocessing import IMAGENET_MEAN, IMAGENET_STD
from tests.conftest import BACKEND, to_numpy


def converter(**kwargs):
    kwargs = {"image_size": (32, 32), "crop_pct": 0.875, "mean": IMAGENET_MEAN,
              "std": IMAGENET_STD, **kwargs}
    return keras_spvit.SPViTImageConverter(**kwargs)


def ramp(height, width, axis):
    """An image whose value is the pixel's column (axis=1) or row (axis=0) index."""
    values = np.arange(width if axis == 1 else height, dtype="float32")
    image = np.broadcast_to(values[None, :] if axis == 1 else values[:, None], (height, width))
    return np.repeat(image[None, :, :, None], 3, axis=-1)


@pytest.mark.parametrize("height, width, axis", [(40, 50, 1), (50, 40, 0), (37, 37, 1)])
def test_resize_shorter_side_then_center_crop(height, width, axis):
    """On a ramp, every output pixel shows the input coordinate it samples."""
    layer = converter(mean=None, std=None)
    out = to_numpy(layer(ramp(height, width, axis)))
    assert out.shape == (1, 32, 32, 3)
    short = int(32 / 0.875)  # 36: torchvision's Resize(36) sets the shorter side
    if height <= width:
        new_h, new_w = short, int(short * width / height)
    else:
        new_h, new_w = int(short * height / width), short
    size_in, size_out = (width, new_w) if axis == 1 else (height, new_h)
    offset = round((size_out - 32) / 2)
    centers = (np.arange(32) + offset + 0.5) * size_in / size_out - 0.5
    profile = out[0, 16, :, 0] if axis == 1 else out[0, :, 16, 0]
    # Interior samples of a linear ramp are exact for any normalised symmetric kernel.
    np.testing.assert_allclose(profile[2:-2], centers[2:-2], atol=0.05)


def test_normalisation():
    image = np.full((1, 48, 64, 3), 128, "uint8")
    out = to_numpy(converter()(image))
    expected = (128 / 255 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    np.testing.assert_allclose(out[0, 10, 10], expected, atol=1e-5)
    assert out.dtype == np.float32


def test_without_crop_pct_it_is_keras_hubs_converter():
    layer = converter(crop_pct=None, mean=None, std=None, scale=1 / 255)
    out = to_numpy(layer(np.full((2, 48, 64, 3), 255, "uint8")))
    assert out.shape == (2, 32, 32, 3)
    np.testing.assert_allclose(out, 1.0, atol=1e-5)


def test_tf_data_matches_eager():
    tf = pytest.importorskip("tensorflow")
    layer = converter()
    images = np.random.default_rng(0).integers(0, 256, (3, 45, 60, 3)).astype("uint8")
    eager = to_numpy(layer(images))
    dataset = tf.data.Dataset.from_tensor_slices(images).map(layer).batch(3)
    mapped = next(iter(dataset)).numpy()
    assert mapped.shape == eager.shape == (3, 32, 32, 3)
    # TensorFlow and JAX resize with Keys' cubic (a = -0.5), torch with a = -0.75.
    tolerance = 1e-4 if BACKEND in ("tensorflow", "jax") else 0.15
    np.testing.assert_allclose(mapped, eager, atol=tolerance)


def test_config_round_trip_and_preprocessor():
    layer = converter(crop_pct=0.9)
    clone = keras_spvit.SPViTImageConverter.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    assert (clone.crop_pct, clone.mean, clone.std) == (0.9, list(IMAGENET_MEAN), list(IMAGENET_STD))
    preprocessor = keras_spvit.SPViTImageClassifierPreprocessor(layer)
    clone = keras_spvit.SPViTImageClassifierPreprocessor.from_config(preprocessor.get_config())
    x, y = clone(np.zeros((2, 40, 40, 3), "uint8"), np.array([1, 2]))
    assert tuple(x.shape) == (2, 32, 32, 3) and list(to_numpy(y)) == [1, 2]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"crop_pct": 0.0}, r"float in \(0, 1\] for `crop_pct`. Received: crop_pct=0.0"),
        ({"crop_pct": 1.5}, r"crop_pct=1.5"),
        ({"image_size": None}, r"`crop_pct` needs an `image_size`"),
        ({"std": None}, r"Pass both `mean` and `std`"),
        ({"scale": 0.5}, r"either `mean` / `std` or `scale` / `offset`"),
        ({"std": (0.2, 0.0, 0.2)}, r"positive values for `std`"),
        ({"mean": "abc"}, r"list of numbers for `mean`"),
    ],
)
def test_arguments_are_checked(kwargs, message):
    with pytest.raises(ValueError, match=message):
        converter(**kwargs)
