"""RandAugment's geometric operations: PIL's affine matrices and its exact resampling.

See `keras_spvit.data.rand_augment` ("exact mode", label maps).
"""

import math

import tensorflow as tf

from keras_spvit.data.rand_augment_colour import _truncate
from keras_spvit.data.rand_augment_policy import _float64

# === Geometric operations ===


def _affine_matrix(name, arg, width, height):
    """PIL's inverse affine data `(a, b, c, d, e, f)` of a geometric op, float64.

    Output point (x, y) samples the input at (a x + b y + c, d x + e y + f),
    in pixel units with pixel centres at half-integers (timm's `shear_x`,
    `translate_x_rel`, ..., and `Image.rotate` about `(width / 2, height / 2)`).
    """
    arg = _float64(arg)
    one, zero = tf.ones((), tf.float64), tf.zeros((), tf.float64)
    if name == "ShearX":
        return (one, arg, zero, zero, one, zero)
    if name == "ShearY":
        return (one, zero, zero, arg, one, zero)
    if name == "TranslateXRel":
        return (one, zero, arg * width, zero, one, zero)
    if name == "TranslateYRel":
        return (one, zero, zero, zero, one, arg * height)
    # Image.rotate(degrees): angle = -math.radians(degrees % 360), cos and sin
    # rounded to 15 decimals (k / 1e15 is the double nearest that decimal,
    # as Python's round), about the centre.
    angle = -(tf.math.floormod(arg, 360.0) * (math.pi / 180.0))
    cos = tf.round(tf.cos(angle) * 1e15) / 1e15
    sin = tf.round(tf.sin(angle) * 1e15) / 1e15
    cx, cy = width / 2.0, height / 2.0
    return (cos, sin, cos * -cx + sin * -cy + cx, -sin, cos, -sin * -cx + cos * -cy + cy)


def _rescale_matrix(matrix, scale_x, scale_y):
    """`S A S^-1` with `S = diag(scale_x, scale_y)`: the same map on another grid."""
    a, b, c, d, e, f = matrix
    return (a, b * scale_x / scale_y, c * scale_x, d * scale_y / scale_x, e, f * scale_y)


def _coefficients(taps, interpolation):
    """PIL's interpolation polynomial of each window of taps along axis 0.

    Same expressions and order as `BILINEAR` / `BICUBIC` in PIL's Geometry.c:
    `a + (b - a) d` and `p1 + d (p2 + d (p3 + d p4))`. A flat window gives
    `(v, 0, ...)`, so flat regions keep their value exactly.
    """
    if interpolation == "bilinear":
        v1, v2 = tf.unstack(taps)
        return tf.stack([v1, v2 - v1])
    v1, v2, v3, v4 = tf.unstack(taps)
    p2 = -v1 + v3
    p3 = 2.0 * (v1 - v2) + v3 - v4
    p4 = -v1 + v2 - v3 + v4
    return tf.stack([v2, p2, p3, p4])


def _horner(coefficients, frac, axis=0):
    terms = tf.unstack(coefficients, axis=axis)
    value = terms[-1]
    for term in reversed(terms[:-1]):
        value = term + frac * value
    return value


# Rows: polynomial coefficients; columns: taps (PIL's BILINEAR / BICUBIC macros).
_TAPS_TO_COEFFICIENTS = {
    "bilinear": ((1.0, 0.0), (-1.0, 1.0)),
    "bicubic": (
        (0.0, 1.0, 0.0, 0.0),
        (-1.0, 0.0, 1.0, 0.0),
        (2.0, -2.0, 1.0, -1.0),
        (-1.0, 1.0, -1.0, 1.0),
    ),
}


def _coefficient_table(image, interpolation):
    """`(height * (width + 1), channels, taps)` polynomial coefficients per row window.

    Entry `y * (width + 1) + u` interpolates row `y` at any source x in
    `[u - 1, u)` (pixel-index units): its window holds pixels
    `u - taps // 2 .. u + taps // 2 - 1`, clamped to the row (PIL's XCLIP).
    One depthwise convolution over the edge-padded rows computes them; the
    coefficients are small integer combinations of integers, exact in float32.
    """
    shape = tf.shape(image)
    width = shape[1]
    channels = image.shape[-1] or 3
    matrix = _TAPS_TO_COEFFICIENTS[interpolation]
    taps = len(matrix)
    columns = tf.clip_by_value(tf.range(-(taps // 2), width + taps // 2), 0, width - 1)
    padded = tf.gather(image, columns, axis=1)
    kernel = tf.constant(matrix, tf.float32)  # (coefficients, taps)
    kernel = tf.tile(tf.transpose(kernel)[None, :, None, :], [1, 1, channels, 1])
    table = tf.nn.depthwise_conv2d(padded[None], kernel, [1, 1, 1, 1], "VALID")[0]
    return tf.reshape(table, (-1, channels, taps))


def _source_grid(matrix, out_h, out_w):
    a, b, c, d, e, f = matrix
    xs = tf.range(tf.cast(out_w, tf.float64)) + 0.5
    ys = (tf.range(tf.cast(out_h, tf.float64)) + 0.5)[:, None]
    # PIL: xout = a0 * xin + a1 * yin + a2 (Geometry.c `affine_transform`).
    return a * xs + b * ys + c, d * xs + e * ys + f


def _warp_image(image, matrix, interpolation, fill, axis=None):
    """PIL's `Image.transform(AFFINE, matrix, resample, fillcolor=fill)` on uint8 values.

    Float64 coordinates and arithmetic in PIL's order, so the truncated
    values are PIL's. `axis` = 1 (x) or 0 (y) when the map moves pixels
    along that axis only (shear, translate): one row window per pixel
    instead of a 2-D one.
    """
    if axis == 0:
        a, b, c, d, e, f = matrix
        swapped = (e, d, f, b, a, c)
        image = tf.transpose(image, (1, 0, 2))
        out = _warp_image(image, swapped, interpolation, fill, axis=1)
        return tf.transpose(out, (1, 0, 2))
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    h64, w64 = tf.cast(height, tf.float64), tf.cast(width, tf.float64)
    sx, sy = _source_grid(matrix, height, width)
    inside = (sx >= 0.0) & (sx < w64)
    if axis is None:  # rows stay in range along x-only maps
        inside = inside & (sy >= 0.0) & (sy < h64)
    table = _coefficient_table(image, interpolation)
    fx = sx - 0.5
    x0 = tf.floor(fx)
    dx = (fx - x0)[..., None]
    # Source x in [x0, x0 + 1): window u = x0 + 1, kept in range for outside
    # points (masked below).
    start = tf.clip_by_value(tf.cast(x0, tf.int32) + 1, 0, width)
    if axis == 1:
        rows = tf.range(height)[:, None] * (width + 1)
        value = _horner(tf.cast(tf.gather(table, rows + start), tf.float64), dx, axis=-1)
    else:
        taps = 2 if interpolation == "bilinear" else 4
        fy = sy - 0.5
        y0 = tf.floor(fy)
        dy = (fy - y0)[..., None]
        # PIL clamps the rows too (YCLIP, then repeats the last valid row).
        first = tf.cast(y0, tf.int32) - (taps // 2 - 1)
        rows = tf.stack([tf.clip_by_value(first + j, 0, height - 1) for j in range(taps)])
        windows = tf.gather(table, rows * (width + 1) + start)  # (taps_y, h, w, c, taps_x)
        rows = _horner(tf.cast(windows, tf.float64), dx, axis=-1)  # (taps_y, h, w, c)
        value = _horner(_coefficients(rows, interpolation), dy)
    value = tf.cast(_truncate(value), tf.float32)
    return tf.where(inside[..., None], value, tf.constant(fill, tf.float32))


def _warp_label_map(label_map, matrix):
    """Nearest-neighbour affine warp of a `(h, w, C)` map, fill 0 (PIL NEAREST rule)."""
    shape = tf.shape(label_map)
    height, width = shape[0], shape[1]
    sx, sy = _source_grid(matrix, height, width)
    ix = tf.floor(sx)
    iy = tf.floor(sy)
    inside = (
        (ix >= 0.0)
        & (ix < tf.cast(width, tf.float64))
        & (iy >= 0.0)
        & (iy < tf.cast(height, tf.float64))
    )
    index = tf.where(inside, tf.cast(iy, tf.int32) * width + tf.cast(ix, tf.int32), 0)
    flat = tf.reshape(label_map, tf.concat([[-1], shape[2:]], 0))
    values = tf.gather(flat, index)
    mask = tf.reshape(inside, tf.concat([shape[:2], tf.ones_like(shape[2:])], 0))
    return tf.where(mask, values, tf.zeros_like(values))
