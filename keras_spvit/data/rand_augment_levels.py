"""RandAugment magnitudes: timm's level-to-argument maps, as functions and as number rows.

`level_to_arg` is timm's `_*_level_to_arg`; `_argument_row` / `_fast_argument`
compute the same float64 values from one row of numbers per operation (the fast
dispatch of `keras_spvit.data.rand_augment`).
"""

import math

import tensorflow as tf

from keras_spvit.data.rand_augment_policy import _LEVEL_DENOM, _check_name, _float64

# === Level -> argument (timm's `_*_level_to_arg`) ===


@tf.autograph.experimental.do_not_convert
def level_to_arg(name, magnitude, negate=False, translate_pct=0.45):
    """timm's magnitude-to-argument map of one operation.

    `magnitude` is the level after noise and clipping (0..10 by default);
    `negate` is timm's random sign (`_randomly_negate`), used by Rotate,
    ShearX/Y, TranslateX/YRel and the `*Increasing` enhance operations and
    ignored by the others. Computed in float64 in timm's operation order,
    so the integer arguments (`int(...)`, a floor here as magnitudes are
    >= 0) fall where timm's do.

    | operation | argument |
    |---|---|
    | Rotate | `m / 10 * 30` degrees, signed |
    | ShearX, ShearY | `m / 10 * 0.3`, signed |
    | TranslateXRel, TranslateYRel | `m / 10 * translate_pct` (0.45), signed |
    | Posterize | bits kept `int(m / 10 * 4)`; Increasing: `4 - that` |
    | Solarize | threshold `min(256, int(m / 10 * 256))`; Increasing: `256 - that` |
    | SolarizeAdd | `min(128, int(m / 10 * 110))` added below 128 |
    | Color, Contrast, Brightness, Sharpness | factor `m / 10 * 1.8 + 0.1` |
    | their Increasing variants | `max(0.1, 1 +/- m / 10 * 0.9)` |
    | AutoContrast, Equalize, Invert | none (0 is returned) |

    Args:
        name: an operation of `RAND_TRANSFORMS` or `RAND_INCREASING_TRANSFORMS`.
        magnitude: float or scalar tensor >= 0.
        negate: bool or scalar bool tensor. timm's random sign.
        translate_pct: float. timm's `translate_pct` hparam.

    Returns:
        float64 scalar tensor (integer-valued for Posterize and Solarize*).

    Example:

    >>> float(level_to_arg("Rotate", 9.0, negate=True))
    -27.0
    """
    _check_name(name)
    level = _float64(magnitude) / _LEVEL_DENOM
    negate = tf.cast(negate, tf.bool)

    def signed(value):
        return tf.where(negate, -value, value)

    if name == "Rotate":
        return signed(level * 30.0)
    if name in ("ShearX", "ShearY"):
        return signed(level * 0.3)
    if name in ("TranslateXRel", "TranslateYRel"):
        return signed(level * float(translate_pct))
    if name.startswith("Posterize"):
        bits = tf.floor(level * 4.0)
        return 4.0 - bits if name.endswith("Increasing") else bits
    if name.startswith("SolarizeAdd"):
        return tf.minimum(tf.floor(level * 110.0), 128.0)
    if name.startswith("Solarize"):
        threshold = tf.minimum(tf.floor(level * 256.0), 256.0)
        return 256.0 - threshold if name.endswith("Increasing") else threshold
    if name.endswith("Increasing"):  # Color, Contrast, Brightness, Sharpness
        return tf.maximum(1.0 + signed(level * 0.9), 0.1)
    if name in ("Color", "Contrast", "Brightness", "Sharpness"):
        return level * 1.8 + 0.1
    return tf.zeros((), tf.float64)


# `level_to_arg` as one row of numbers per operation, so the fast mode computes
# the argument of the drawn operation with a handful of ops instead of one
# copy per operation (every node of every branch costs time per image in a
# `tf.data` map, taken or not). Columns: multiplier, floor (0/1), cap,
# signed (0/1), offset, slope, lower bound; the geometric ones add the
# matrix pattern: rotate (0/1), b, c / width, d, f / height.
# arg = max(offset + slope * sign(cap(floor?(level * multiplier))), lower):
# the same float64 operations, in the same order, as `level_to_arg`.
_INF = math.inf


def _argument_row(name, translate_pct):
    base = name.replace("Increasing", "")
    increasing = name.endswith("Increasing")
    geometry = {
        "Rotate": (1, 0, 0, 0, 0),
        "ShearX": (0, 1, 0, 0, 0),
        "ShearY": (0, 0, 0, 1, 0),
        "TranslateXRel": (0, 0, 1, 0, 0),
        "TranslateYRel": (0, 0, 0, 0, 1),
    }.get(name, (0, 0, 0, 0, 0))
    unsigned, uncapped, no_floor = 0, _INF, -_INF
    if name == "Rotate":
        row = (30.0, 0, uncapped, 1, 0.0, 1.0, no_floor)
    elif name in ("ShearX", "ShearY"):
        row = (0.3, 0, uncapped, 1, 0.0, 1.0, no_floor)
    elif name in ("TranslateXRel", "TranslateYRel"):
        row = (translate_pct, 0, uncapped, 1, 0.0, 1.0, no_floor)
    elif base == "Posterize":
        offset, slope = (4.0, -1.0) if increasing else (0.0, 1.0)
        row = (4.0, 1, uncapped, unsigned, offset, slope, no_floor)
    elif base == "SolarizeAdd":
        row = (110.0, 1, 128.0, unsigned, 0.0, 1.0, no_floor)
    elif base == "Solarize":
        offset, slope = (256.0, -1.0) if increasing else (0.0, 1.0)
        row = (256.0, 1, 256.0, unsigned, offset, slope, no_floor)
    elif base in ("Color", "Contrast", "Brightness", "Sharpness"):
        if increasing:
            row = (0.9, 0, uncapped, 1, 1.0, 1.0, 0.1)
        else:
            row = (1.8, 0, uncapped, unsigned, 0.1, 1.0, no_floor)
    else:
        row = (0.0, 0, uncapped, unsigned, 0.0, 1.0, no_floor)
    return tuple(float(v) for v in row + geometry)


def _fast_argument(row, magnitude, negate):
    # `row`: one `(12,)` row, or `(n, 12)` rows with `(n,)` magnitudes and signs.
    multiplier, floor, cap, signed, offset, slope, lower = tf.unstack(row[..., :7], axis=-1)
    value = magnitude / _LEVEL_DENOM * multiplier
    value = tf.minimum(tf.where(floor > 0.0, tf.floor(value), value), cap)
    value = tf.where(negate & (signed > 0.0), -value, value)
    return tf.maximum(offset + slope * value, lower)
