"""Random erasing with timm's semantics, on TensorFlow ops (runs in `tf.data`).

timm's `RandomErasing` (Zhong et al., "Random Erasing Data Augmentation")
erases after normalisation: the erased pixels are N(0, 1) noise (or a
per-box N(0, 1) colour, or zeros) in normalised space. The augmentation of
this package returns float32 images in [0, 1] and the pipelines normalise
afterwards, so `random_erasing` writes `value * std + mean` on the [0, 1]
image: after `(x - mean) / std` the erased pixels are exactly timm's values.
The written values are not clipped to [0, 1] (neither are timm's).

Randomness is stateless (see `keras_spvit.data.seeds`): the same seed gives
the same result, in eager mode and in a parallel `tf.data.map`.
"""

import math

import tensorflow as tf

from keras_spvit.data.seeds import split_seed
from keras_spvit.data.transforms import taken_branch_only, to_float_image
from keras_spvit.utils.preprocessing import IMAGENET_MEAN, IMAGENET_STD
from keras_spvit.utils.validation import check_probability

ERASING_MODES = ("pixel", "rand", "const")

# timm tries this many (area, aspect) draws per box before giving that box up.
_ATTEMPTS = 10


def _check_erasing_args(min_area, max_area, min_aspect, max_aspect, min_count, max_count):
    """Validates timm's box arguments; returns `(max_aspect, max_count)` resolved."""
    if (
        not isinstance(min_area, (int, float))
        or not isinstance(max_area, (int, float))
        or not 0.0 < min_area <= max_area <= 1.0
    ):
        raise ValueError(
            "Expected 0 < min_area <= max_area <= 1. "
            f"Received: min_area={min_area!r}, max_area={max_area!r}"
        )
    if not isinstance(min_aspect, (int, float)) or min_aspect <= 0:
        raise ValueError(f"Expected `min_aspect` > 0. Received: min_aspect={min_aspect!r}")
    if max_aspect is None:
        max_aspect = 1.0 / min_aspect
    if not isinstance(max_aspect, (int, float)) or max_aspect < min_aspect:
        raise ValueError(
            "Expected `max_aspect` >= min_aspect (or None for 1 / min_aspect). "
            f"Received: min_aspect={min_aspect!r}, max_aspect={max_aspect!r}"
        )
    if not isinstance(min_count, int) or isinstance(min_count, bool) or min_count < 1:
        raise ValueError(f"Expected `min_count` to be an int >= 1. Received: min_count={min_count!r}")
    if max_count is None:
        max_count = min_count
    if not isinstance(max_count, int) or isinstance(max_count, bool) or max_count < min_count:
        raise ValueError(
            "Expected `max_count` to be an int >= min_count (or None for min_count). "
            f"Received: min_count={min_count!r}, max_count={max_count!r}"
        )
    return float(max_aspect), max_count


def sample_erasing_boxes(
    height,
    width,
    min_area=0.02,
    max_area=1 / 3,
    min_aspect=0.3,
    max_aspect=None,
    min_count=1,
    max_count=None,
    seed=None,
):
    """Samples the boxes timm's `RandomErasing` erases in one image (if it erases).

    As timm: a box count is drawn uniformly in `[min_count, max_count]`; for
    each box, up to ten attempts draw a target area `uniform(min_area,
    max_area) * height * width / count` and an aspect ratio (height / width)
    log-uniformly in `[min_aspect, max_aspect]`, with sides
    `h = round(sqrt(area * aspect))`, `w = round(sqrt(area / aspect))`
    (half to even, as Python's `round`); the first attempt with `w < width`
    and `h < height` is placed at `top = randint(0, height - h)`, `left =
    randint(0, width - w)` (inclusive); a box whose ten attempts all fail is
    skipped. All draws are made at once (no loop), `max_count` slots of ten.

    Args:
        height: int or scalar int tensor. Image height.
        width: int or scalar int tensor. Image width.
        min_area: float in (0, 1]. Smallest erased share of the image (before
            dividing by the count).
        max_area: float in [min_area, 1]. Largest erased share.
        min_aspect: positive float. Smallest box height / width.
        max_aspect: float >= min_aspect; `None` means `1 / min_aspect`.
        min_count: int >= 1. Fewest boxes.
        max_count: int >= min_count; `None` means `min_count`.
        seed: seed (see `keras_spvit.data.seeds`).

    Returns:
        `(top, left, box_height, box_width)`: int32 tensors of shape
        `(max_count,)`; slots beyond the drawn count and boxes that found no
        fit have height and width 0.

    Example:

    >>> top, left, h, w = sample_erasing_boxes(224, 224, max_count=3, seed=0)
    """
    max_aspect, max_count = _check_erasing_args(
        min_area, max_area, min_aspect, max_aspect, min_count, max_count
    )
    count_seed, area_seed, aspect_seed, offset_seed = split_seed(seed, 4)
    # float64 so the rounding matches timm's Python floats.
    height = tf.cast(height, tf.float64)
    width = tf.cast(width, tf.float64)
    if min_count == max_count:
        count = tf.constant(min_count, tf.int32)
    else:
        count = tf.random.stateless_uniform(
            (), count_seed, min_count, max_count + 1, dtype=tf.int32
        )
    shape = (max_count, _ATTEMPTS)
    area_share = tf.random.stateless_uniform(shape, area_seed, min_area, max_area, tf.float64)
    area = area_share * height * width / tf.cast(count, tf.float64)
    aspect = tf.exp(
        tf.random.stateless_uniform(
            shape, aspect_seed, math.log(min_aspect), math.log(max_aspect), tf.float64
        )
    )
    # tf.round rounds half to even, like Python's round().
    heights = tf.round(tf.sqrt(area * aspect))
    widths = tf.round(tf.sqrt(area / aspect))
    fits = (widths < width) & (heights < height)
    first = tf.reduce_min(tf.where(fits, tf.range(_ATTEMPTS)[None, :], _ATTEMPTS), axis=1)
    active = (first < _ATTEMPTS) & (tf.range(max_count) < count)
    first = tf.minimum(first, _ATTEMPTS - 1)
    box_h = tf.where(active, tf.gather(heights, first, batch_dims=1), 0.0)
    box_w = tf.where(active, tf.gather(widths, first, batch_dims=1), 0.0)
    uniform = tf.random.stateless_uniform((max_count, 2), offset_seed, dtype=tf.float64)
    top = tf.floor(uniform[:, 0] * (height - box_h + 1.0))
    left = tf.floor(uniform[:, 1] * (width - box_w + 1.0))
    return tuple(tf.cast(v, tf.int32) for v in (top, left, box_h, box_w))


def _write_box(image, value, top, left):
    """`image` with `value` `(h, w, c)` written at `(top, left)`: a new tensor.

    The rows above and below and the columns beside the box are sliced and
    concatenated around it: copies at memory speed (TensorFlow's
    `TensorStridedSliceUpdate` writes the box through a strided evaluator,
    about ten times slower per 224 px image on this CPU). An empty box
    (`h` or `w` 0, `top`/`left` up to the image size) returns the image.
    """
    h, w = tf.shape(value)[0], tf.shape(value)[1]
    band = image[top:top + h]
    band = tf.concat([band[:, :left], value, band[:, left + w:]], axis=1)
    return tf.concat([image[:top], band, image[top + h:]], axis=0)


@taken_branch_only
def random_erasing(
    image,
    probability=0.25,
    *,
    mode="pixel",
    min_area=0.02,
    max_area=1 / 3,
    min_aspect=0.3,
    max_aspect=None,
    min_count=1,
    max_count=None,
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    seed=None,
):
    """timm's random erasing on one [0, 1] image, before normalisation.

    With probability `probability` the image gets `count` boxes (drawn as in
    `sample_erasing_boxes`, timm's algorithm) filled, per `mode`, with:

    - `"pixel"`: per-pixel noise `n * std + mean`, `n ~ N(0, 1)` per value;
    - `"rand"`: one colour per box, `n * std + mean` with `n ~ N(0, 1)` per
      channel;
    - `"const"`: `mean`.

    So after `normalize(image, mean, std)` the erased pixels are exactly what
    timm writes after its normalisation (N(0, 1) noise, an N(0, 1) colour,
    zeros). Pass the `mean`/`std` the pipeline normalises with; for an image
    that is already normalised, pass zeros and ones. Later boxes overwrite
    earlier ones where they overlap, as in timm. Values are not clipped.

    Cost: nothing beyond one uniform draw when the image is not erased
    (`tf.cond`); otherwise noise only for the box, written into a copy of the
    image by slicing and concatenation (no full-image mask or noise), once per
    box slot (`max_count` slots, unrolled).

    Args:
        image: `(height, width, channels)`, `uint8` (0..255) or float (0..1).
        probability: float in [0, 1]. Chance that the image is erased at all.
        mode: `"pixel"`, `"rand"` or `"const"` (see above). The defaults
            (`probability=0.25`, `"pixel"`, one box) are DeiT's training
            settings (`--reprob 0.25 --remode pixel --recount 1`), which the
            spvit and refiner recipes follow; timm's class itself defaults to
            0.5 and `"const"`.
        min_area: float in (0, 1]. Smallest erased share of the image.
        max_area: float in [min_area, 1]. Largest erased share.
        min_aspect: positive float. Smallest box height / width.
        max_aspect: float >= min_aspect; `None` means `1 / min_aspect`.
        min_count: int >= 1. Fewest boxes (the area is divided by the count).
        max_count: int >= min_count; `None` means `min_count`.
        mean: per-channel means the pipeline normalises with, one per channel.
        std: per-channel standard deviations, positive, one per channel.
        seed: seed (see `keras_spvit.data.seeds`): an int or a shape-`(2,)`
            int tensor; `None` draws a fresh one.

    Returns:
        float32 `(height, width, channels)`: the image in [0, 1] with erased
        boxes holding `value * std + mean`.

    Example:

    >>> image = tf.random.uniform((224, 224, 3))
    >>> erased = random_erasing(image, 0.25, mode="pixel", seed=tf.constant([1, 2]))
    >>> x = normalize(erased)  # erased pixels ~ N(0, 1), as timm's
    """
    probability = check_probability(probability, "probability")
    if mode not in ERASING_MODES:
        raise ValueError(f"Expected `mode` in {list(ERASING_MODES)}. Received: mode={mode!r}")
    max_aspect, max_count = _check_erasing_args(
        min_area, max_area, min_aspect, max_aspect, min_count, max_count
    )
    try:
        mean_values = tuple(float(v) for v in mean)
        std_values = tuple(float(v) for v in std)
    except (TypeError, ValueError):
        mean_values, std_values = (), ()
    if not mean_values or len(mean_values) != len(std_values) or min(std_values) <= 0:
        raise ValueError(
            "Expected `mean` and `std` of equal length with positive std. "
            f"Received: mean={mean!r}, std={std!r}"
        )
    image = to_float_image(image)
    if image.shape.rank != 3 or image.shape[-1] != len(mean_values):
        raise ValueError(
            f"Expected one (height, width, {len(mean_values)}) image, a channel per mean. "
            f"Received: image.shape={image.shape}, mean={mean!r}"
        )
    if probability == 0.0:
        return image
    channels = len(mean_values)
    # Already normalised (`TrainAugment.erase`): the values are the noise itself.
    standard = all(m == 0.0 for m in mean_values) and all(v == 1.0 for v in std_values)
    mean_t = tf.constant(mean_values, tf.float32)
    std_t = tf.constant(std_values, tf.float32)
    gate_seed, box_seed, value_seed = split_seed(seed, 3)

    def erase():
        shape = tf.shape(image)
        tops, lefts, heights, widths = sample_erasing_boxes(
            shape[0], shape[1], min_area, max_area, min_aspect, max_aspect,
            min_count, max_count, box_seed,
        )
        out = image
        for slot, slot_seed in enumerate(split_seed(value_seed, max_count)):
            top, left, h, w = tops[slot], lefts[slot], heights[slot], widths[slot]
            if mode == "pixel":
                noise = tf.random.stateless_normal((h, w, channels), slot_seed)
            elif mode == "rand":
                noise = tf.random.stateless_normal((1, 1, channels), slot_seed)
            else:
                noise = tf.zeros((1, 1, channels))
            if not standard:  # (a broadcasting op per box costs more than the noise)
                noise = noise * std_t + mean_t
            out = _write_box(out, tf.broadcast_to(noise, (h, w, channels)), top, left)
        return out

    if probability >= 1.0:
        return tf.ensure_shape(erase(), image.shape)
    # timm skips when random() > p; `<` keeps p = 0 at exactly never.
    erased = tf.random.stateless_uniform((), gate_seed) < probability
    return tf.ensure_shape(tf.cond(erased, erase, lambda: image), image.shape)
