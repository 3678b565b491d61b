"""Per-image transforms that run inside `tf.data` on every Keras backend.

Crops and resizing (`sample_crop_box`, `random_resized_crop`, `eval_transform`),
colour (`color_jitter`, `normalize`) and the pixel conventions they share:
images are channels-last; functions accept `uint8` (0..255) or float images
in [0, 1] and return float32 in [0, 1] (`eval_transform` also normalises).
`seed` is as `keras_spvit.data.seeds` describes. `TrainAugment`
(`keras_spvit.data.train_augment`) assembles these with RandAugment
(`rand_augment`), random erasing (`random_erasing`) and MixUp / CutMix into the
training recipe; `mix_token` is LV-ViT's MixToken.
"""

import functools
import math
import threading

import numpy as np
import tensorflow as tf
from tensorflow.python.ops import control_flow_util_v2

from keras_spvit.data.seeds import split_seed
from keras_spvit.utils.preprocessing import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    center_crop_offset,
    eval_resized_shape_tf,
)
from keras_spvit.utils.validation import (
    check_crop_pct,
    check_increasing_pair,
    check_size,
)

INTERPOLATIONS = (
    "area",
    "bicubic",
    "bilinear",
    "gaussian",
    "lanczos3",
    "lanczos5",
    "mitchellcubic",
    "nearest",
)


_NO_LOWERING_LOCK = threading.RLock()


def taken_branch_only(fn):
    """Traces `fn` with its `tf.cond` / `tf.switch_case` / `tf.while_loop` kept as
    functional ops, so that a call runs only the branch it takes.

    TensorFlow otherwise lowers them to Switch / Merge nodes when a function
    is instantiated (as `tf.data` does with every `map` function), and the
    executor then visits every node of every branch, taken or not, per
    element: about 0.6 ms per 224 px image in RandAugment's fast path (15
    operations in one switch, most of them not taken) and 1.3 ms for the
    whole training augmentation on the 2-core CI machine. The ops and the
    values are the same; lowering only matters for non-strict evaluation,
    which these functions do not use. Eagerly it changes nothing.

    `fn` and what it calls also run as written, not converted by AutoGraph
    (`tf.data` converts every `map` function, recursively): their control flow
    on tensors is explicit `tf.cond` / `tf.switch_case` / `tf.while_loop`, so
    conversion changes no op, and converting the ~300 functions under a
    training pipeline took 15 of the 29 s `classification_pipeline` spent
    building one (AMD EPYC, 2 cores).

    Example:

    >>> dataset.map(taken_branch_only(lambda x, seed: augment(x, 224, seed)))
    """

    unconverted = tf.autograph.experimental.do_not_convert(fn)

    @functools.wraps(fn)
    def traced(*args, **kwargs):
        # TensorFlow's switch for graphs built without lowering (its XLA and
        # single-threaded-executor paths use it); restored on exit. The lock
        # keeps two threads tracing at once from restoring each other's
        # value (which could leave it on for good). A function traced in
        # another thread meanwhile, unwrapped, is not lowered either: same
        # values, only its speed changes.
        with _NO_LOWERING_LOCK:
            previous = control_flow_util_v2._DISABLE_LOWER_USING_SWITCH_MERGE
            control_flow_util_v2._DISABLE_LOWER_USING_SWITCH_MERGE = True
            try:
                return unconverted(*args, **kwargs)
            finally:
                control_flow_util_v2._DISABLE_LOWER_USING_SWITCH_MERGE = previous

    return tf.autograph.experimental.do_not_convert(traced)


def check_interpolation(interpolation):
    """Raises a `ValueError` unless `interpolation` is a `tf.image.resize` method name.

    Example:

    >>> check_interpolation("bicubic")
    """
    if interpolation not in INTERPOLATIONS:
        raise ValueError(
            f"Expected `interpolation` in {list(INTERPOLATIONS)}. "
            f"Received: interpolation={interpolation!r}"
        )


def to_float_image(image):
    """`uint8` 0..255 -> float32 0..1; float images are cast to float32 unchanged."""
    image = tf.convert_to_tensor(image)
    if image.dtype == tf.uint8:
        return tf.cast(image, tf.float32) / 255.0
    if not image.dtype.is_floating:
        raise ValueError(
            "Expected a uint8 image (0..255) or a float image (0..1). "
            f"Received: dtype={image.dtype}"
        )
    return tf.cast(image, tf.float32)

def resize_image(image, size, interpolation):
    """Resizes a float image in [0, 1] as PIL does: antialiased, clipped to [0, 1].

    Antialiasing makes downscaling match PIL (what timm / torchvision use on
    images); bicubic overshoots, so the result is clipped back to the pixel
    range like PIL.

    Args:
        image: float `(height, width, channels)` in [0, 1].
        size: `(height, width)` ints or an int32 tensor.
        interpolation: a `tf.image.resize` method name.

    Example:

    >>> resize_image(tf.zeros((40, 60, 3)), (32, 32), "bicubic")
    """
    image = tf.image.resize(image, size, method=interpolation, antialias=True)
    return tf.clip_by_value(image, 0.0, 1.0)


def normalize(image, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """`(image - mean) / std` per channel, for float images in [0, 1].

    The models of this package expect ImageNet statistics on 0..1 pixels
    (`IMAGENET_MEAN`, `IMAGENET_STD`, timm's defaults).

    Args:
        image: float tensor `(..., channels)` in [0, 1] (`uint8` is scaled first).
        mean: per-channel means, one per channel.
        std: per-channel standard deviations, positive.

    Example:

    >>> normalize(tf.fill((2, 2, 3), 0.485))[0, 0, 0]  # 0.0
    """
    if len(mean) != len(std) or min(std) <= 0:
        raise ValueError(
            "Expected `mean` and `std` of equal length with positive std. "
            f"Received: mean={mean!r}, std={std!r}"
        )
    image = to_float_image(image)
    # A per-channel constant broadcast inside a subtraction or division costs
    # several times the plain operation in TensorFlow's CPU kernels (about
    # 1.5 ms of the 2 `normalize` took per 224 px image in `tf.data`): the
    # innermost dimension, 3 values, is too short to vectorise. Seen as rows
    # of `width * channels` values, the statistics tiled to one row broadcast
    # as cheaply as a plain operation. The same values, bit for bit.
    shape = image.shape
    if shape.rank is None or shape.rank == 0 or shape[-1] != len(mean):
        return (image - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)
    if shape.rank >= 2 and shape[-2] is not None:
        width = shape[-2]
        mean_row = tf.constant(np.tile(np.float32(mean), width))
        std_row = tf.constant(np.tile(np.float32(std), width))
        whole = tf.shape(image)
        rows = tf.reshape(image, tf.concat([whole[:-2], [width * len(mean)]], axis=0))
        # The same IEEE division (std > 0), in an op Grappler leaves alone: in
        # a `tf.function` it rewrites `x / constant` as `x * (1 / constant)`.
        out = tf.math.divide_no_nan(rows - mean_row, std_row)
        return tf.ensure_shape(tf.reshape(out, whole), shape)
    whole = tf.shape(image)
    mean = tf.broadcast_to(tf.constant(mean, tf.float32), whole)
    return (image - mean) / tf.broadcast_to(tf.constant(std, tf.float32), whole)


def normalize_pixels(pixels, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """`normalize` of 0..255 pixels: `(pixels - 255 * mean) / (255 * std)`.

    Equal to `normalize(pixels / 255, mean, std)` within float32 rounding
    (a few 1e-7 in absolute terms), without the pass that divides by 255:
    for pipelines whose augmentation works on the uint8 grid
    (`TrainAugment.normalized`).

    Args:
        pixels: float tensor `(..., channels)` holding values in [0, 255].
        mean: per-channel means on 0..1 pixels, one per channel.
        std: per-channel standard deviations on 0..1 pixels, positive.

    Example:

    >>> normalize_pixels(tf.fill((2, 2, 3), 255.0))[0, 0, 0]  # (1 - 0.485) / 0.229
    """
    return normalize(pixels, _scaled_statistics(mean), _scaled_statistics(std))


def _scaled_statistics(values):
    """Per-channel statistics on 0..1 pixels as statistics on 0..255 pixels."""
    try:
        return tuple(255.0 * float(v) for v in values)
    except (TypeError, ValueError):
        raise ValueError(
            f"Expected per-channel statistics (numbers). Received: {values!r}"
        ) from None


# === Crops ===


def sample_crop_box(height, width, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), seed=None):
    """Samples an Inception-style crop box, as torchvision's `RandomResizedCrop`.

    Ten attempts draw an area fraction uniformly in `scale` and an aspect ratio
    (width / height) log-uniformly in `ratio`; side lengths are rounded, and
    the first attempt that fits is placed uniformly at random. If none fits,
    the fallback is a central crop of the whole image clamped to `ratio`.
    Every attempt is drawn at once from the stateless seed (no loop).

    Args:
        height: int or scalar int tensor. Image height.
        width: int or scalar int tensor. Image width.
        scale: increasing pair in [0, 1]. Range of the crop's area fraction.
        ratio: increasing positive pair. Range of the crop's width / height.
        seed: seed (see `keras_spvit.data.seeds`).

    Returns:
        `(top, left, crop_height, crop_width)`: int32 scalar tensors.

    Example:

    >>> top, left, h, w = sample_crop_box(224, 300, seed=0)
    """
    scale = check_increasing_pair(scale, "scale", 0.0, 1.0)
    ratio = check_increasing_pair(ratio, "ratio", 0.0)
    if ratio[0] <= 0:
        raise ValueError(f"Expected positive `ratio`. Received: ratio={ratio!r}")
    attempts = 10
    area_seed, ratio_seed, offset_seed = split_seed(seed, 3)
    # float64 so the rounding matches torchvision's Python floats.
    height = tf.cast(height, tf.float64)
    width = tf.cast(width, tf.float64)
    area = (
        height
        * width
        * tf.random.stateless_uniform((attempts,), area_seed, scale[0], scale[1], dtype=tf.float64)
    )
    aspect = tf.exp(
        tf.random.stateless_uniform(
            (attempts,), ratio_seed, math.log(ratio[0]), math.log(ratio[1]), dtype=tf.float64
        )
    )
    # tf.round rounds half to even, like Python's round().
    widths = tf.round(tf.sqrt(area * aspect))
    heights = tf.round(tf.sqrt(area / aspect))
    fits = (widths > 0) & (widths <= width) & (heights > 0) & (heights <= height)
    first = tf.reduce_min(tf.where(fits, tf.range(attempts), attempts))
    found = first < attempts
    first = tf.minimum(first, attempts - 1)

    in_ratio = width / height
    fallback_w = tf.where(in_ratio > ratio[1], tf.round(height * ratio[1]), width)
    fallback_h = tf.where(in_ratio < ratio[0], tf.round(width / ratio[0]), height)
    crop_h = tf.where(found, heights[first], fallback_h)
    crop_w = tf.where(found, widths[first], fallback_w)

    uniform = tf.random.stateless_uniform((2,), offset_seed, dtype=tf.float64)
    top = tf.where(
        found, tf.floor(uniform[0] * (height - crop_h + 1)), tf.floor((height - crop_h) / 2)
    )
    left = tf.where(
        found, tf.floor(uniform[1] * (width - crop_w + 1)), tf.floor((width - crop_w) / 2)
    )
    return tuple(tf.cast(v, tf.int32) for v in (top, left, crop_h, crop_w))


def random_resized_crop(
    image, size, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), interpolation="bicubic", seed=None
):
    """Inception-style random crop resized to `size` (torchvision `RandomResizedCrop`).

    The box comes from `sample_crop_box` (same algorithm as torchvision: ten
    attempts, then a central crop clamped to `ratio`); the crop is resized
    with antialiasing, as PIL does. Keras has no such layer.

    Args:
        image: `(height, width, channels)`, `uint8` or float in [0, 1].
        size: int or `(height, width)`. Output size.
        scale: increasing pair in [0, 1]. Range of the crop's area fraction.
        ratio: increasing positive pair. Range of the crop's width / height.
        interpolation: a `tf.image.resize` method name; `"bicubic"` as timm.
        seed: seed (see `keras_spvit.data.seeds`).

    Returns:
        float32 `(size_h, size_w, channels)` in [0, 1].

    Example:

    >>> crop = random_resized_crop(tf.zeros((40, 60, 3), "uint8"), 32, seed=0)
    """
    size = check_size(size, "size")
    check_interpolation(interpolation)
    image = tf.convert_to_tensor(image)
    shape = tf.shape(image)
    top, left, crop_h, crop_w = sample_crop_box(shape[0], shape[1], scale, ratio, seed)
    # Converted after the slice: the same values, only the crop's pixels.
    crop = to_float_image(tf.slice(image, [top, left, 0], [crop_h, crop_w, -1]))
    crop = resize_image(crop, size, interpolation)
    return tf.ensure_shape(crop, (*size, image.shape[-1]))


def eval_transform(
    image,
    size,
    crop_pct=0.875,
    interpolation="bicubic",
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
):
    """timm's evaluation transform: resize, center crop, normalise.

    The shorter side is resized to `int(size / crop_pct)` keeping the aspect
    ratio (the longer side becomes `int(short * long / short_before)`, as
    torchvision's `Resize(int)`), then the central `size` is cropped (offset
    `round((side - size) / 2)`, half to even as torchvision). For a
    non-square `(height, width)` size both sides are resized to
    `int(side / crop_pct)` first, as timm does.

    Args:
        image: `(height, width, channels)`, `uint8` or float in [0, 1].
        size: int or `(height, width)`. Output size.
        crop_pct: float in (0, 1]. Share of the resized image kept.
        interpolation: a `tf.image.resize` method name.
        mean: per-channel means for `normalize`, or `None` to skip it.
        std: per-channel standard deviations for `normalize`.

    Returns:
        float32 `(size_h, size_w, channels)`, normalised (in [0, 1] if
        `mean=None`).

    Example:

    >>> x = eval_transform(tf.zeros((375, 500, 3), "uint8"), 224)  # 256 x 341, crop 224
    """
    size = check_size(size, "size")
    check_interpolation(interpolation)
    crop_pct = check_crop_pct(crop_pct)
    image = to_float_image(image)
    shape = tf.shape(image)
    resized = eval_resized_shape_tf(shape[0], shape[1], size, crop_pct)
    image = resize_image(image, tf.cast(resized, tf.int32), interpolation)
    top = tf.cast(center_crop_offset(resized[0], size[0]), tf.int32)
    left = tf.cast(center_crop_offset(resized[1], size[1]), tf.int32)
    image = tf.slice(image, [top, left, 0], [size[0], size[1], -1])
    image = tf.ensure_shape(image, (*size, image.shape[-1]))
    if mean is None:
        return image
    return normalize(image, mean, std)


# === Colour ===


def color_jitter(image, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.0, seed=None):
    """torchvision-style colour jitter, stateless.

    Brightness scales by a factor in `[1 - b, 1 + b]`; contrast blends with the
    mean grey level and saturation with the grey image, factors in
    `[1 - x, 1 + x]`; hue shifts by up to `hue` turns (at most 0.5). Applied
    in this fixed order (torchvision permutes the order at random).

    Args:
        image: `(height, width, 3)`, `uint8` or float in [0, 1].
        brightness, contrast, saturation: non-negative floats; 0 disables.
        hue: float in [0, 0.5]; 0 disables.
        seed: seed (see `keras_spvit.data.seeds`).

    Returns:
        float32 image in [0, 1].

    Example:

    >>> y = color_jitter(tf.random.uniform((8, 8, 3)), 0.4, 0.4, 0.4, seed=1)
    """
    for name, value in (
        ("brightness", brightness),
        ("contrast", contrast),
        ("saturation", saturation),
    ):
        if not isinstance(value, (int, float)) or value < 0:
            raise ValueError(f"Expected non-negative `{name}`. Received: {name}={value!r}")
    if not isinstance(hue, (int, float)) or not 0.0 <= hue <= 0.5:
        raise ValueError(f"Expected `hue` in [0, 0.5]. Received: hue={hue!r}")
    image = to_float_image(image)
    seeds = split_seed(seed, 4)

    def factor(amount, s):
        return tf.random.stateless_uniform((), s, max(0.0, 1.0 - amount), 1.0 + amount)

    if brightness:
        image = tf.clip_by_value(image * factor(brightness, seeds[0]), 0.0, 1.0)
    if contrast:
        mean = tf.reduce_mean(tf.image.rgb_to_grayscale(image))
        f = factor(contrast, seeds[1])
        image = tf.clip_by_value(f * image + (1.0 - f) * mean, 0.0, 1.0)
    if saturation:
        grey = tf.image.rgb_to_grayscale(image)
        f = factor(saturation, seeds[2])
        image = tf.clip_by_value(f * image + (1.0 - f) * grey, 0.0, 1.0)
    if hue:
        delta = tf.random.stateless_uniform((), seeds[3], -hue, hue)
        image = tf.clip_by_value(tf.image.adjust_hue(image, delta), 0.0, 1.0)
    return image
