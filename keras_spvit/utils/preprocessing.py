"""Evaluation preprocessing shared by the data pipelines and the image converters.

The ImageNet statistics every model of this package expects (on pixels in
[0, 1], timm's defaults) and timm's evaluation resize: the shorter side to
`floor(size / crop_pct)`, then a center crop of `size`. One copy of the
arithmetic serves `keras_spvit.data.eval_transform` (inside `tf.data`) and
`keras_spvit.models.CenterCropImageConverter` (eager and `tf.data`), so the
two cut the same window.

This module imports nothing from the package.
"""

import math

import tensorflow as tf

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def eval_resize_size(image_size, crop_pct):
    """timm's resize target before the center crop of `image_size`.

    A square `image_size` gives one int, the shorter side's length
    (torchvision's `Resize(int)` keeps the aspect ratio); a non-square one
    gives `(height, width)`, each side scaled by `1 / crop_pct` (timm's
    `transforms_factory`).

    Args:
        image_size: `(height, width)` of the crop, positive ints.
        crop_pct: float in (0, 1]. Share of the resized image kept.

    Returns:
        An int (square `image_size`) or an `(height, width)` tuple.

    Example:

    >>> eval_resize_size((224, 224), 0.875)
    256
    >>> eval_resize_size((224, 320), 0.875)
    (256, 365)
    """
    height, width = image_size
    if height == width:
        return math.floor(height / crop_pct)
    return math.floor(height / crop_pct), math.floor(width / crop_pct)


def eval_resized_shape(height, width, image_size, crop_pct):
    """The `(height, width)` an image of a known size is resized to, as ints.

    For a square `image_size` the shorter side becomes
    `eval_resize_size(...)` and the longer one
    `int(short * long / short_before)`, in torchvision's float order.

    Args:
        height: int. Height of the input image.
        width: int. Width of the input image.
        image_size: `(height, width)` of the crop.
        crop_pct: float in (0, 1].

    Returns:
        `(resized_height, resized_width)`.

    Example:

    >>> eval_resized_shape(375, 500, (224, 224), 0.875)
    (256, 341)
    """
    size = eval_resize_size(image_size, crop_pct)
    if isinstance(size, tuple):
        return size
    if height <= width:
        return size, int(size * width / height)
    return int(size * height / width), size


def eval_resized_shape_tf(height, width, image_size, crop_pct):
    """`eval_resized_shape` for sizes known only inside a TensorFlow graph.

    Args:
        height: scalar int or float tensor. Height of the input image.
        width: scalar int or float tensor. Width of the input image.
        image_size: `(height, width)` of the crop, Python ints.
        crop_pct: float in (0, 1].

    Returns:
        float64 tensor `[resized_height, resized_width]` (whole numbers),
        the same values as `eval_resized_shape`.

    Example:

    >>> eval_resized_shape_tf(tf.constant(375), tf.constant(500), (224, 224), 0.875)
    <tf.Tensor: shape=(2,), dtype=float64, numpy=array([256., 341.])>
    """
    size = eval_resize_size(image_size, crop_pct)
    if isinstance(size, tuple):
        return tf.constant(size, tf.float64)
    height = tf.cast(height, tf.float64)
    width = tf.cast(width, tf.float64)
    short = tf.constant(size, tf.float64)
    # torchvision's int(short * long / short_before), float64 in the same order.
    return tf.where(
        height <= width,
        tf.stack([short, tf.floor(short * width / height)]),
        tf.stack([tf.floor(short * height / width), short]),
    )


def center_crop_offset(resized, size):
    """Offset of a centered window of `size` in `resized`: `round((resized - size) / 2)`.

    Python's `round` and `tf.round` both round half to even, as torchvision's
    `CenterCrop`; this works on ints and on float tensors alike.

    Args:
        resized: int or float tensor. Length of the resized side.
        size: int. Length of the crop.

    Returns:
        The offset (an int, or a float tensor for a tensor `resized`).

    Example:

    >>> center_crop_offset(341, 224)
    58
    """
    if isinstance(resized, (int, float)):
        return round((resized - size) / 2.0)
    return tf.round((resized - size) / 2.0)
