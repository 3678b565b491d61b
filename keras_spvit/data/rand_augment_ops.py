"""One RandAugment operation (`apply_op`) and the fast dispatch tables of the batched path.

See `keras_spvit.data.rand_augment`.
"""

import tensorflow as tf

from keras_spvit.data import xla_kernels
from keras_spvit.data.rand_augment_colour import (
    _auto_contrast,
    _brightness,
    _color,
    _contrast,
    _equalize,
    _posterize,
    _sharpness,
    _solarize,
    _solarize_add,
)
from keras_spvit.data.rand_augment_fast_geometry import _warp_label_map_fast
from keras_spvit.data.rand_augment_geometry import (
    _affine_matrix,
    _rescale_matrix,
    _warp_image,
    _warp_label_map,
)
from keras_spvit.data.rand_augment_policy import (
    DEFAULT_FILL,
    GEOMETRIC_OPS,
    RAND_TRANSFORMS,
    _check_exact,
    _check_fill,
    _check_interpolation,
    _check_name,
)

# === One operation ===


def _apply(name, image, arg, fill, interpolation, label_map, exact):
    if name not in GEOMETRIC_OPS:
        if name == "AutoContrast":
            image = _auto_contrast(image) if exact else xla_kernels.auto_contrast(image)
        elif name == "Equalize":
            image = _equalize(image)
        elif name == "Invert":
            image = 255.0 - image
        elif name.startswith("Posterize"):
            image = _posterize(image, arg)
        elif name.startswith("SolarizeAdd"):
            image = _solarize_add(image, arg)
        elif name.startswith("Solarize"):
            image = _solarize(image, arg)
        else:
            enhance = {
                "Color": _color,
                "Contrast": _contrast,
                "Brightness": _brightness,
                "Sharpness": _sharpness,
            }
            image = enhance[name.replace("Increasing", "")](image, arg)
        return image, label_map
    shape = tf.shape(image)
    height, width = tf.cast(shape[0], tf.float64), tf.cast(shape[1], tf.float64)
    matrix = _affine_matrix(name, arg, width, height)
    if exact:
        axis = None if name == "Rotate" else (1 if name in ("ShearX", "TranslateXRel") else 0)
        image = _warp_image(image, matrix, interpolation, fill, axis)
    else:
        image = xla_kernels.geometric(image, _fast_kind(name), interpolation, fill, matrix)
    if label_map is not None:
        map_shape = tf.shape(label_map)
        scale_x = tf.cast(map_shape[1], tf.float64) / width
        scale_y = tf.cast(map_shape[0], tf.float64) / height
        map_matrix = _rescale_matrix(matrix, scale_x, scale_y)
        if exact:
            label_map = _warp_label_map(label_map, map_matrix)
        else:
            label_map = _warp_label_map_fast(label_map, map_matrix)
    return image, label_map


def _as_pixels(image):
    image = tf.convert_to_tensor(image)
    if image.shape.rank != 3:
        raise ValueError(
            f"Expected one image (height, width, 3). Received: image.shape={image.shape}"
        )
    return tf.cast(image, tf.float32)


def _as_label_map(label_map):
    label_map = tf.convert_to_tensor(label_map)
    if label_map.shape.rank not in (2, 3):
        raise ValueError(
            "Expected a label map (height, width) or (height, width, channels). "
            f"Received: label_map.shape={label_map.shape}"
        )
    return label_map


# Plain Python control flow on static values only: autograph conversion would
# just make tracing inside `tf.data.map` several times slower.
@tf.autograph.experimental.do_not_convert
def apply_op(
    name,
    image,
    arg=0.0,
    *,
    fill=DEFAULT_FILL,
    interpolation="bicubic",
    label_map=None,
    exact=False,
):
    """Applies one RandAugment operation with an explicit argument, as PIL does.

    `image` is on the uint8 scale: a `uint8` tensor, or floats holding
    integers 0..255 (quantise [0, 1] images with `round(255 * x)` first).
    The argument is the PIL-level one (`level_to_arg` gives it from a
    magnitude): degrees for Rotate (counter-clockwise), the shear factor,
    the translation as a fraction of the width / height (positive moves
    the content left / up, as timm), bits kept for Posterize, the threshold
    for Solarize, the value added for SolarizeAdd, the enhance factor
    (1 = unchanged) for Color, Contrast, Brightness and Sharpness; unused by
    AutoContrast, Equalize and Invert.

    Args:
        name: an operation of `RAND_TRANSFORMS` or `RAND_INCREASING_TRANSFORMS`.
        image: `(height, width, 3)` uint8 or float tensor, values 0..255.
        arg: float or scalar tensor. The operation's argument.
        fill: 3 numbers in [0, 255]. Colour of pixels the geometric
            operations bring in from outside the image.
        interpolation: `"bilinear"` or `"bicubic"` (PIL's affine kernels);
            with `exact=False` also `"nearest"`, and `"bicubic"` runs
            bilinear (see `RandAugment`).
        label_map: optional `(h, w)` or `(h, w, C)` tensor of any dtype on
            its own grid. The geometric operations warp it the same way
            (nearest neighbour, fill 0); the others return it unchanged.
        exact: bool. `True` reproduces PIL's geometric resampling bit for
            bit; `False` (default) runs one bilinear kernel per operation
            (an XLA-compiled warp for Rotate, a one-axis blend for the shears and
            translations; see the module docstring). Colour operations are PIL-exact in
            both modes.

    Returns:
        float32 `(height, width, 3)` holding integers 0..255, or
        `(image, label_map)` when `label_map` is given.

    Example:

    >>> image = tf.constant([[[0, 100, 200]]], tf.uint8)
    >>> apply_op("Solarize", image, 128).numpy().tolist()
    [[[0.0, 100.0, 55.0]]]
    """
    _check_name(name)
    fill = _check_fill(fill)
    exact = _check_exact(exact)
    allowed = ("bilinear", "bicubic") if exact else ("bilinear", "bicubic", "nearest")
    _check_interpolation(interpolation, allowed)
    image = _as_pixels(image)
    if label_map is None:
        return _apply(name, image, arg, fill, interpolation, None, exact)[0]
    return _apply(name, image, arg, fill, interpolation, _as_label_map(label_map), exact)


# Fast-mode branches: rotate (`xla_kernels.warp`), the shears and the translations
# (one-axis kernels, see `_shift_images_fast`), then each colour operation in
# timm's order (an `*Increasing` one runs its base operation's branch).
_FAST_KINDS = ("Rotate", "Shear", "Translate") + tuple(
    name for name in RAND_TRANSFORMS if name not in GEOMETRIC_OPS
)


def _fast_kind(name):
    if name in GEOMETRIC_OPS:
        return 0 if name == "Rotate" else (1 if name.startswith("Shear") else 2)
    return _FAST_KINDS.index(name.replace("Increasing", ""))


def _fast_shift_params(row, arg, width, height):
    # `_shift_params(_fast_matrix(row, arg, width, height))` of a shear or a
    # translation, the same float64 values, without the rotation matrix.
    _, b, c, d, f = tf.unstack(row[..., 7:], axis=-1)
    along_y = d + f  # pattern entries are 0 or 1
    return 1.0 - along_y, arg * (b + d), arg * (c * width + f * height)


def _fast_matrix(row, arg, width, height):
    # PIL's six matrix entries, scalars (one row) or `(n,)` (rows `(n, 12)`).
    is_rotate, b, c, d, f = tf.unstack(row[..., 7:], axis=-1)
    rotation = tf.stack(_affine_matrix("Rotate", arg, width, height))
    one = tf.ones_like(arg)
    linear = tf.stack([one, arg * b, arg * c * width, arg * d, one, arg * f * height])
    return tf.unstack(tf.where(is_rotate > 0.0, rotation, linear))


# The batched path groups the fast kinds into families that share one kernel
# (fewer graph nodes per batch: each node costs time per batch in `tf.data`,
# whether its sub-batch is empty or not). Per image, a family kernel computes
# exactly what the operation's own kernel computes (see `_point_batch`,
# `_grey_blend_batch`); the last family is "not applied".
_FAMILIES = ("Rotate", "Shift", "AutoContrast", "Equalize", "Point", "GreyBlend", "Sharpness")
_FAMILY_OF_KIND = tuple(
    {
        "Shear": 1,
        "Translate": 1,
        "Invert": 4,
        "Posterize": 4,
        "Solarize": 4,
        "SolarizeAdd": 4,
        "Color": 5,
        "Contrast": 5,
        "Brightness": 5,
    }.get(kind, _FAMILIES.index(kind) if kind in _FAMILIES else -1)
    for kind in _FAST_KINDS
)
