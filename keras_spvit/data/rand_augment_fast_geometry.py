"""RandAugment's fast geometric kernels on TensorFlow ops: V3 warps, one-axis blends.

The training path runs XLA-compiled versions (`keras_spvit.data.xla_kernels`);
these stay for "nearest", label maps and as the references they are tested against.

See `keras_spvit.data.rand_augment` ("exact=False").
"""

import tensorflow as tf

from keras_spvit.data.pixels import channel_image


def _projective_transform(images, matrix, interpolation):
    """`ImageProjectiveTransformV3` of `(n, h, w, c)` float32 images with PIL's matrices.

    `matrix`: PIL's six entries, each a scalar (one matrix for every image)
    or `(n,)` (one per image). PIL maps output pixel centres `(x + 0.5,
    y + 0.5)` through the matrix to a source point in edge coordinates
    (pixel `i` covers `[i, i + 1)`); V3 maps the integer output index
    `(x, y)` to a source index (pixel `i`'s centre at `i`). So
    `source_index = A (x + 0.5, y + 0.5) - 0.5`: the same linear part,
    translation `c + (a + b) / 2 - 1 / 2` (and likewise for `f`). Outside
    points read 0.
    """
    return _v3(images, _v3_rows([tf.reshape(v, (-1,)) for v in matrix]), interpolation)


def _v3_rows(matrix):
    # PIL's matrix entries (any equal shapes) -> V3's transform rows `(..., 8)`, float64.
    a, b, c, d, e, f = matrix
    zero = tf.zeros_like(a)
    return tf.stack(
        [a, b, c + 0.5 * (a + b) - 0.5, d, e, f + 0.5 * (d + e) - 0.5, zero, zero], axis=-1
    )


def _v3(images, rows, interpolation):
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=tf.cast(rows, tf.float32),
        output_shape=tf.shape(images)[1:3],
        fill_value=0.0,
        interpolation=interpolation,
        fill_mode="CONSTANT",
    )


def _warp_images_fast(images, matrix, interpolation, fill):
    """One V3 warp of a batch: bilinear (or nearest) in float32, the fill colour exact outside.

    Warping `image - fill` with fill value 0 and adding `fill` back makes
    every outside point exactly `fill`. Border pixels whose bilinear
    neighbourhood straddles the edge blend with the fill colour (PIL clamps
    to the edge pixel instead). Truncated to the uint8 grid as PIL stores
    values; the small offset absorbs float32 rounding of exact integers.
    """
    # The fill as a whole image (`channel_image`): a per-channel constant
    # broadcast inside the subtraction costs several times a plain one.
    fill = channel_image(fill, images)
    kind = "NEAREST" if interpolation == "nearest" else "BILINEAR"
    if isinstance(matrix, tf.Tensor):  # V3 rows already (`_v3_rows`)
        out = _v3(images - fill, matrix, kind)
    else:
        out = _projective_transform(images - fill, matrix, kind)
    return tf.floor(out + (fill + 1e-3))


def _warp_image_fast(image, matrix, interpolation, fill):
    return _warp_images_fast(image[None], matrix, interpolation, fill)[0]


# Shear and translate move pixels along one axis: output pixel `along` of
# line `other` samples the source at `along + t`, `t = slope * (other + 0.5)
# + offset` in index units (V3's coordinates: `slope` is PIL's b (ShearX) or
# d (ShearY), `offset` its c or f; the `+ 0.5` is `_v3_rows`' half-pixel
# move). Under bilinear that is ONE blend of two neighbours on the line,
# `a + frac * (b - a)` with `k = floor(t)`, `frac = t - k`, `a` the pixel at
# `along + k`, `b` at `along + k + 1`, and the fill colour for a neighbour
# outside the image: V3's bilinear value with a constant fill (both blend
# the fill colour into the one-pixel border), computed with `t` in float64
# (V3 rounds the coordinate to float32) and PIL's form of the blend. It
# replaces a 2-D warp that interpolates along both axes for every channel:
# a translation is two shifted copies of the image, a shear one gather per
# neighbour. Both kernels below give the same values for the same `t`.


def _shift_blend(a, b, frac):
    # Truncated as PIL stores values; the offset absorbs the float32 rounding
    # of `frac` (at most 255 * 2**-24 below an integer result).
    return tf.floor(a + frac * (b - a) + 1e-4)


def _shift_params(matrix):
    """PIL's matrix of a shear / translate -> `(along_x, slope, offset)` (float64).

    `along_x` is 1.0 for ShearX / TranslateXRel (a matrix with `d = f = 0`),
    0.0 for ShearY / TranslateYRel; scalars or `(n,)` like the entries.
    """
    _, b, c, d, _, f = matrix
    along_y = tf.cast((d != 0.0) | (f != 0.0), tf.float64)
    return 1.0 - along_y, along_y * d + (1.0 - along_y) * b, along_y * f + (1.0 - along_y) * c


def _translate_image_fast(image, along_x, offset, fill):
    """Bilinear translation of one `(h, w, c)` image by `offset` pixels along x or y.

    The image padded with the fill colour, two shifted windows of it
    (`k` and `k + 1` pixels), one blend. `along_x`: scalar float64 1.0 / 0.0.
    """
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    # Beyond one image size every neighbour is outside: clip (all fill).
    limit = tf.cast(tf.maximum(height, width), tf.float64) + 1.0
    shift = tf.clip_by_value(tf.floor(offset), -limit, limit)
    frac = tf.cast(offset - shift, tf.float32)
    shift = tf.cast(shift, tf.int32)
    x_axis = along_x > 0.0
    kx = tf.where(x_axis, shift, 0)
    ky = tf.where(x_axis, 0, shift)
    dx = tf.cast(x_axis, tf.int32)
    dy = 1 - dx
    # Pad so that both windows lie inside: `before` covers a negative shift,
    # `after` the second neighbour.
    before_y, before_x = tf.maximum(-ky, 0), tf.maximum(-kx, 0)
    # Padding `image - fill` with zeros and adding the fill back to each
    # window (exact: integers) brings in the fill colour; the fill is a
    # whole image (`channel_image`), no per-channel broadcast.
    fill = channel_image(fill, image)
    padded = tf.pad(
        image - fill,
        [[before_y, tf.maximum(ky + dy, 0)], [before_x, tf.maximum(kx + dx, 0)], [0, 0]],
    )
    top, left = ky + before_y, kx + before_x
    a = padded[top : top + height, left : left + width] + fill
    b = padded[top + dy : top + dy + height, left + dx : left + dx + width] + fill
    return _shift_blend(a, b, frac)


def _shift_images_fast(images, along_x, slope, offset, fill):
    """Bilinear shear or translation of `(n, h, w, c)` images, per-image parameters.

    `along_x`, `slope`, `offset`: `(n,)` float64 (see `_shift_params`). Two
    gathers of whole pixels from the flattened batch (a fill pixel appended
    for the neighbours outside), one blend.
    """
    shape = tf.shape(images)
    n, height, width = shape[0], shape[1], shape[2]
    channels = images.shape[-1] or 3
    x_axis = tf.reshape(along_x > 0.0, (-1, 1, 1))
    length = tf.where(x_axis, width, height)  # (n, 1, 1)
    # The shift of every line (row for x, column for y), in float64.
    lines = tf.cast(tf.range(tf.maximum(height, width)), tf.float64) + 0.5
    t = slope[:, None] * lines[None, :] + offset[:, None]
    limit = tf.cast(tf.maximum(height, width), tf.float64) + 1.0
    shift = tf.clip_by_value(tf.floor(t), -limit, limit)
    frac = tf.cast(t - shift, tf.float32)
    shift = tf.cast(shift, tf.int32)
    rows = tf.range(height)[None, :, None]
    columns = tf.range(width)[None, None, :]
    line = tf.where(x_axis, rows, columns)  # (n, h, w)
    first = tf.where(x_axis, columns, rows) + tf.gather(shift, line, batch_dims=1)
    frac = tf.gather(frac, line, batch_dims=1)[..., None]
    start = tf.reshape(tf.range(n) * (height * width), (-1, 1, 1))
    step = tf.where(x_axis, 1, width)  # flat distance of one pixel along the axis
    base = start + tf.where(x_axis, rows * width, columns)
    outside = n * height * width  # the appended fill pixel

    def index(position):
        inside = (position >= 0) & (position < length)
        return tf.where(inside, base + position * step, outside)

    fill = tf.reshape(tf.cast(fill, tf.float32), (1, channels))  # numbers or a tensor
    table = tf.concat([tf.reshape(images, (-1, channels)), fill], axis=0)
    # `gather_nd` of whole pixels: a third cheaper than `gather` here.
    a = tf.gather_nd(table, index(first)[..., None])
    b = tf.gather_nd(table, index(first + 1)[..., None])
    return _shift_blend(a, b, frac)


def _warp_label_maps_fast(label_maps, matrix):
    """Nearest-neighbour V3 warp of `(n, h, w)` / `(n, h, w, C)` maps, fill 0.

    Through float32: integer class ids are exact up to 2**24. V3 rounds
    the source index, which picks the pixel PIL's NEAREST picks (the pixel
    containing the source point) except at float32 ties.
    """
    values = tf.cast(label_maps, tf.float32)
    if label_maps.shape.rank == 3:
        values = values[..., None]
    if isinstance(matrix, tf.Tensor):  # V3 rows already (`_v3_rows`)
        out = _v3(values, matrix, "NEAREST")
    else:
        out = _projective_transform(values, matrix, "NEAREST")
    if label_maps.shape.rank == 3:
        out = out[..., 0]
    return tf.cast(out, label_maps.dtype)


def _warp_label_map_fast(label_map, matrix):
    return _warp_label_maps_fast(label_map[None], matrix)[0]
