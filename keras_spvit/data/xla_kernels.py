"""XLA-compiled kernels of the fast augmentation, one image at a time, on the host CPU.

Inside a `tf.data` map, TensorFlow runs every op of a kernel as its own
CPU kernel call, one pass over the image each; a kernel compiled by XLA
(`tf.function(jit_compile=True)`) runs as one fused program. Compiled where
it pays (`benchmarks/augment_ops.py --pipeline`, 224 px, one thread, same
runs): Rotate (four-tap gather warp) 3.7 -> 1.0 ms, the shears' shift
1.5-1.7 -> 1.0, AutoContrast ~1.0 -> 0.7 (same-process A/B). Not compiled:
Equalize (XLA's scatter for the histogram is 2-3x slower than
TensorFlow's bincount), quantisation (no cheaper: one XLA call costs about
what three elementwise ops do), Sharpness (no faster).

Every kernel here takes ONE image `(height, width, 3)` (uint8 values held
in float32) and its arguments as tensors (magnitudes, fill colour), and has
no control flow, so XLA compiles it once per image size. Both RandAugment
paths call these same functions (the batched path once per image of a
sub-batch, `per_image`): the compiled program, and so every value, is the
same whichever path runs it.

XLA contracts multiply-adds (fused multiply-add), so a bilinear value can
differ from TensorFlow's `ImageProjectiveTransformV3` by one level where it
lands next to an integer (Rotate: 3-30 of 150,528 values at 224 px); the
autocontrast and shift kernels gave the TensorFlow ops' values bit for bit
on the images tested (tests check all of them against PIL and V3).

A kernel must not take a value it depends on for a size (as
`tf.math.bincount` does with the maximum of its input): XLA then treats
the image as a compile-time constant and compiles once per image.

Placement: `tf.data` runs its functions on the host CPU, and the kernels
are called under `tf.device("/CPU:0")`, so on a GPU host XLA compiles them
for the CPU too (no copy to the device inside the input pipeline).
"""

import functools

import tensorflow as tf

from keras_spvit.data.rand_augment_colour import _auto_contrast_batch
from keras_spvit.data.rand_augment_fast_geometry import (
    _shift_images_fast,
    _shift_params,
    _v3_rows,
    _warp_image_fast,
)

_CPU = "/device:CPU:0"


def _on_cpu(kernel):
    """`kernel` compiled by XLA, called on the host CPU."""
    compiled = tf.function(kernel, jit_compile=True, autograph=False, reduce_retracing=True)

    @functools.wraps(kernel)
    def run(*args):
        with tf.device(_CPU):
            return compiled(*args)

    run.compiled = compiled
    return run


def per_image(kernel, images, *args):
    """`kernel(image, *args)` for every image of a batch (arguments per image).

    The batched RandAugment path uses it so that every image runs the same
    compiled program as the per-image path. `images`: `(n, h, w, c)`
    float32 (n may be 0); `args`: `(n, ...)` tensors.

    Example:

    >>> out = per_image(equalize, images)
    """
    if not args:
        out = tf.map_fn(kernel, images, fn_output_signature=images.dtype)
    else:
        out = tf.map_fn(lambda a: kernel(*a), (images, *args), fn_output_signature=images.dtype)
    # An empty batch maps to shape (0,): give it the images' shape.
    return tf.reshape(out, tf.shape(images))


@_on_cpu
def auto_contrast(image):
    """PIL's `ImageOps.autocontrast` (see `rand_augment_colour._auto_contrast_batch`)."""
    return _auto_contrast_batch(image[None])[0]


@_on_cpu
def shift(image, along_x, slope, offset, fill):
    """Bilinear shear or translation along one axis (`_shift_images_fast` of one image).

    `along_x`, `slope`, `offset`: scalar float64; `fill`: `(3,)` float32.
    """
    return _shift_images_fast(image[None], along_x[None], slope[None], offset[None], fill)[0]


@_on_cpu
def warp(image, row, fill):
    """Bilinear affine warp with V3's coordinates, fill colour outside, truncated.

    `row`: V3's transform row `(8,)` (float64, `_v3_rows`): output index
    `(x, y)` reads the source index `(a0 x + a1 y + a2, b0 x + b1 y + b2)`,
    computed in float32 as V3 does; the four neighbours are whole-pixel
    gathers from the image minus the fill (0 outside the image), blended as
    V3 blends, the fill added back and the sum truncated
    (`_warp_images_fast`'s values up to fused multiply-adds).
    """
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    row = tf.cast(row, tf.float32)
    ys = tf.cast(tf.range(height), tf.float32)[:, None]
    xs = tf.cast(tf.range(width), tf.float32)[None, :]
    sx = row[0] * xs + row[1] * ys + row[2]
    sy = row[3] * xs + row[4] * ys + row[5]
    x0, y0 = tf.floor(sx), tf.floor(sy)
    fill_image = tf.broadcast_to(fill, tf.shape(image))
    table = tf.concat([tf.reshape(image - fill_image, (-1, 3)), tf.zeros((1, 3))], axis=0)
    # V3 reads neighbours at integer indices; far-away points clip first
    # (every neighbour of a point beyond the border is outside anyway).
    limit = tf.cast(tf.maximum(height, width), tf.float32) + 2.0
    ix0 = tf.cast(tf.clip_by_value(x0, -limit, limit), tf.int32)
    iy0 = tf.cast(tf.clip_by_value(y0, -limit, limit), tf.int32)

    def tap(dy, dx):
        yy, xx = iy0 + dy, ix0 + dx
        inside = (yy >= 0) & (yy < height) & (xx >= 0) & (xx < width)
        return tf.gather(table, tf.where(inside, yy * width + xx, height * width))

    fx1, fy1 = (sx - x0)[..., None], (sy - y0)[..., None]
    fx0, fy0 = (x0 + 1.0 - sx)[..., None], (y0 + 1.0 - sy)[..., None]
    top = fx0 * tap(0, 0) + fx1 * tap(0, 1)
    bottom = fx0 * tap(1, 0) + fx1 * tap(1, 1)
    value = fy0 * top + fy1 * bottom
    return tf.floor(value + (fill_image + 1e-3))


def fill_tensor(fill):
    """The fill colour as the `(3,)` float32 argument of `warp` and `shift`."""
    return tf.constant(fill, tf.float32)


def geometric(image, kind, interpolation, fill, matrix=None, shift_params=None):
    """The fast mode's geometric operation on one `(h, w, 3)` image.

    `kind` 0 Rotate (`warp`), 1 a shear or 2 a translation (`shift`);
    `"nearest"` warps with TensorFlow's V3 kernel. `matrix`: PIL's six
    entries (scalars); `shift_params`: `(along_x, slope, offset)` of the
    shift kernels when known (`matrix` may then be None).
    """
    if interpolation == "nearest":
        return _warp_image_fast(image, matrix, interpolation, fill)
    if kind == 0:
        return warp(image, _v3_rows(matrix), fill_tensor(fill))
    along_x, slope, offset = _shift_params(matrix) if shift_params is None else shift_params
    return shift(image, along_x, slope, offset, fill_tensor(fill))
