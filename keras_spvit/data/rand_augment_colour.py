"""RandAugment's colour operations on uint8 values held in float32, PIL-exact, batched.

See `keras_spvit.data.rand_augment` for the pixel scale and the batching.
"""

import tensorflow as tf

from keras_spvit.data.pixels import channel_offsets
from keras_spvit.data.rand_augment_policy import _L_WEIGHTS, _float64

# === Colour operations (uint8 values in float32) ===


# The kernels below work on a BATCH `(n, height, width, channels)` with one
# argument per image (`(n,)`, float64): the batched fast path
# (`RandAugment.apply_batch`) runs each once on the images that drew it
# (`n` may be 0), and the per-image paths call them on a batch of one, so
# both give the same values. Every value is computed per pixel or per image
# and channel exactly as for one image (no reduction across images).


def _per_image(values, dtype=tf.float32):
    # `(n,)` arguments -> `(n, 1, 1, 1)`, broadcasting against the batch.
    return tf.reshape(tf.cast(values, dtype), (-1, 1, 1, 1))


def _one(op):
    """The batched kernel `op(images, args)` as a per-image `op(image, arg)`."""

    def run(image, arg=0.0):
        return op(image[None], tf.reshape(_float64(arg), (1,)))[0]

    return run


def _table_indices(images):
    # Flat indices into `(n * channels, 256)` tables: value + channel offset.
    return tf.cast(images, tf.int32) + channel_offsets(images)


def _apply_tables(indices, tables):
    """`tables[i * channels + c, v]` at every value `v` of channel `c` of image `i`.

    `indices`: `_table_indices` of the images; `tables`: `(n * channels,
    256)` float32. One `gather_nd` (about half the cost of `gather` on this
    CPU) with the channel offsets added on equal shapes.
    """
    return tf.gather_nd(tf.reshape(tables, [-1]), indices[..., None])


def _channel_extremes(images):
    # Per image and channel min and max, `(n * channels,)` float64.
    # (uint8 reductions: several times cheaper than float32 ones here)
    small = tf.cast(images, tf.uint8)
    low = tf.reduce_min(small, axis=(1, 2))
    high = tf.reduce_max(small, axis=(1, 2))
    return (tf.cast(tf.reshape(v, [-1]), tf.float64) for v in (low, high))


def _auto_contrast_batch(images, args=None):
    # ImageOps.autocontrast(cutoff=0): PIL's table per channel, `lut[v] =
    # int(v * scale + offset)` with `scale = 255 / (hi - lo)`, `offset = -lo *
    # scale` in float64 (clipped to [0, 255]); identity when the channel is
    # flat (scale 1, offset 0). Built on the 256 levels, applied by one lookup.
    low, high = _channel_extremes(images)
    flat = high <= low
    scale = 255.0 / tf.where(flat, tf.ones_like(high), high - low)
    offset = tf.where(flat, tf.zeros_like(scale), -low * scale)
    scale = tf.where(flat, tf.ones_like(scale), scale)
    levels = tf.range(256, dtype=tf.float64)
    tables = _truncate(levels * scale[:, None] + offset[:, None])
    return _apply_tables(_table_indices(images), tf.cast(tables, tf.float32))


def _equalize_batch(images, args=None):
    # ImageOps.equalize: per channel `step = (total - count of the highest
    # value present) // 256`, `lut[i] = (step // 2 + count below i) // step`
    # (PIL clips the table to 255); identity when `step` is 0. One bincount
    # for the histograms of every image and channel, one lookup for the tables.
    channels = images.shape[-1] or 3
    tables = tf.shape(images)[0] * channels
    # The same indices count the histograms and look up the tables.
    values = _table_indices(images)
    # The raw op with the size from the shape: `tf.math.bincount` also takes
    # the maximum of the values for its size (a pass over the image), which
    # under XLA makes the image a compile-time constant (a compile per image).
    counts = tf.reshape(
        tf.raw_ops.DenseBincount(
            input=tf.reshape(values, [-1]), size=256 * tables, weights=tf.zeros((0,), tf.int32)
        ),
        (tables, 256),
    )
    total = tf.reduce_sum(counts, axis=1)
    levels = tf.range(256)
    highest = tf.reduce_max(tf.where(counts > 0, levels, -1), axis=1)
    last = tf.gather(counts, tf.maximum(highest, 0), axis=1, batch_dims=1)
    step = (total - last) // 256
    below = tf.cumsum(counts, axis=1, exclusive=True)
    safe_step = tf.maximum(step, 1)[:, None]
    lut = tf.minimum((safe_step // 2 + below) // safe_step, 255)
    lut = tf.where((step > 0)[:, None], lut, levels[None, :])
    return _apply_tables(values, tf.cast(lut, tf.float32))


def _invert_batch(images, args=None):
    return 255.0 - images


def _posterize_batch(images, bits):
    # ImageOps.posterize: `v & ~(2 ** (8 - bits) - 1)`; timm keeps the image at 8+ bits.
    unit = _per_image(2.0 ** tf.maximum(8.0 - bits, 0.0))
    return tf.floor(images / unit) * unit


def _select(condition, if_true, if_false):
    # `tf.where` on integer-valued float32 images as arithmetic: the same
    # values (`f + 1 * (t - f)` is `t` exactly for integers below 2**24),
    # several times faster than SelectV2 on a whole image.
    return if_false + tf.cast(condition, tf.float32) * (if_true - if_false)


def _solarize_batch(images, threshold):
    return _select(images < _per_image(threshold), images, 255.0 - images)


def _solarize_add_batch(images, addition, threshold=128.0):
    added = tf.minimum(255.0, images + _per_image(addition))
    return _select(images < threshold, added, images)


def _truncate(values):
    # PIL stores a float result into uint8 by clipping to [0, 255] and
    # truncating (`Image.blend`, affine resampling): floor on the clipped value.
    return tf.floor(tf.clip_by_value(values, 0.0, 255.0))


def _blend(degenerate, images, factor):
    # `Image.blend(degenerate, image, factor)`: `in1 + alpha * (in2 - in1)` in
    # float32 (PIL's alpha is a C float), then truncated.
    return _truncate(degenerate + _per_image(factor) * (images - degenerate))


def _grey(images):
    """PIL's RGB -> L of `(n, h, w, 3)` images, repeated on every channel.

    One matmul by a 3x3 matrix of the L weights: an image-shaped result
    (the blends then combine equal shapes, not a broadcast `grey[..., None]`,
    several times slower here). Products and sums are integers below 2**24,
    so exact in float32 in any order.
    """
    weights = tf.constant([[w] * 3 for w in _L_WEIGHTS], tf.float32)
    total = tf.matmul(tf.reshape(images, (-1, 3)), weights)
    return tf.reshape(tf.floor((total + 32768.0) / 65536.0), tf.shape(images))


def _luminance(images):
    # PIL's RGB -> L as one channel `(n, h, w)` (what the mean needs; three
    # strided channels and a weighted sum, cheaper here than `_grey`'s matmul).
    r, g, b = tf.unstack(images, axis=-1)
    total = r * _L_WEIGHTS[0] + g * _L_WEIGHTS[1] + b * _L_WEIGHTS[2] + 32768.0
    return tf.floor(total / 65536.0)


def _grey_mean(images):
    # `int(mean + 0.5)` of the L image per image: an integer sum, a float64 mean.
    luminance = tf.cast(_luminance(images), tf.int32)
    shape = tf.shape(luminance)
    return tf.floor(tf.reduce_sum(luminance, axis=(1, 2)) / (shape[1] * shape[2]) + 0.5)


def _color_batch(images, factor):
    return _blend(_grey(images), images, factor)


def _contrast_batch(images, factor):
    # ImageEnhance.Contrast: the degenerate is the mean grey level.
    return _blend(_per_image(_grey_mean(images)), images, factor)


def _brightness_batch(images, factor):
    return _blend(tf.zeros((), tf.float32), images, factor)


def _sharpness_batch(images, factor):
    # ImageEnhance.Sharpness: the degenerate is ImageFilter.SMOOTH (3x3
    # kernel [1 1 1; 1 5 1; 1 1 1] / 13, rounded; border pixels copied): a
    # separable 3x3 box sum plus 4 x the centre. Integer sums are exact in
    # float32 (in any order) and (s + 6) / 13 never ties.
    rows = images[:, :, :-2] + images[:, :, 1:-1] + images[:, :, 2:]
    centre = images[:, 1:-1, 1:-1]
    sums = rows[:, :-2] + rows[:, 1:-1] + rows[:, 2:] + 4.0 * centre
    smooth = tf.floor((sums + 6.0) / 13.0)
    smooth = images + tf.pad(smooth - centre, [[0, 0], [1, 1], [1, 1], [0, 0]])
    return _blend(smooth, images, factor)


_auto_contrast = _one(_auto_contrast_batch)
_equalize = _one(_equalize_batch)
_posterize = _one(_posterize_batch)
_solarize = _one(_solarize_batch)
_solarize_add = _one(_solarize_add_batch)
_color = _one(_color_batch)
_contrast = _one(_contrast_batch)
_brightness = _one(_brightness_batch)
_sharpness = _one(_sharpness_batch)


def _point_batch(images, unit, threshold, addition):
    """Posterize, then Solarize, then SolarizeAdd, with per-image `(n,)` parameters.

    Each point operation is this chain with the other two steps neutral,
    and a neutral step returns its input exactly: `unit` 1 (`floor(x / 1) *
    1 = x`), `threshold` 256, `addition` 0. Invert is Solarize at 0.
    """
    values = tf.floor(images / _per_image(unit)) * _per_image(unit)
    values = _select(values < _per_image(threshold), values, 255.0 - values)
    added = tf.minimum(255.0, values + _per_image(addition))
    return _select(values < 128.0, added, values)


def _grey_blend_batch(images, factor, grey_weight, mean_weight):
    """Color, Contrast or Brightness per image: a blend with `grey_weight * L
    + mean_weight * mean(L)`, weights 0 or 1 (`1 * v + 0 * w` is `v` exactly)."""
    degenerate = _per_image(grey_weight) * _grey(images) + _per_image(
        tf.cast(mean_weight, tf.float64) * _grey_mean(images)
    )
    return _blend(degenerate, images, factor)
