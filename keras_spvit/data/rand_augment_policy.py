"""RandAugment's operation tables, argument checks and policy strings (timm's names).

See `keras_spvit.data.rand_augment` for the semantics and where each part comes from.
"""

import math
import re

import tensorflow as tf

from keras_spvit.utils.preprocessing import IMAGENET_MEAN

# timm's `_RAND_TRANSFORMS` and `_RAND_INCREASING_TRANSFORMS`, in timm's order.
RAND_TRANSFORMS = (
    "AutoContrast",
    "Equalize",
    "Invert",
    "Rotate",
    "Posterize",
    "Solarize",
    "SolarizeAdd",
    "Color",
    "Contrast",
    "Brightness",
    "Sharpness",
    "ShearX",
    "ShearY",
    "TranslateXRel",
    "TranslateYRel",
)
RAND_INCREASING_TRANSFORMS = (
    "AutoContrast",
    "Equalize",
    "Invert",
    "Rotate",
    "PosterizeIncreasing",
    "SolarizeIncreasing",
    "SolarizeAdd",
    "ColorIncreasing",
    "ContrastIncreasing",
    "BrightnessIncreasing",
    "SharpnessIncreasing",
    "ShearX",
    "ShearY",
    "TranslateXRel",
    "TranslateYRel",
)
GEOMETRIC_OPS = ("Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel")

# timm's `img_mean` hparam as timm's transforms factory builds it:
# `tuple(min(255, round(255 * x)) for x in mean)`, (124, 116, 104) for ImageNet.
DEFAULT_FILL = tuple(min(255, round(255 * m)) for m in IMAGENET_MEAN)

INTERPOLATIONS = ("bilinear", "bicubic", "random", "nearest")
_EXACT_INTERPOLATIONS = ("bilinear", "bicubic", "random")

_LEVEL_DENOM = 10.0  # timm's `_LEVEL_DENOM`: magnitudes are out of 10.
_ALL_OPS = tuple(dict.fromkeys(RAND_TRANSFORMS + RAND_INCREASING_TRANSFORMS))

# PIL's `L` conversion: (19595 R + 38470 G + 7471 B + 0x8000) >> 16.
_L_WEIGHTS = (19595.0, 38470.0, 7471.0)


# === Argument checks ===


def _float64(value):
    # `tf.cast(0.2, tf.float64)` would go through float32 first.
    if isinstance(value, (tf.Tensor, tf.Variable)):
        return tf.cast(value, tf.float64)
    return tf.constant(value, tf.float64)


def _check_name(name):
    if name not in _ALL_OPS:
        raise ValueError(f"Expected an operation in {list(_ALL_OPS)}. Received: name={name!r}")


def _check_interpolation(interpolation, allowed=INTERPOLATIONS):
    if interpolation not in allowed:
        raise ValueError(
            f"Expected `interpolation` in {list(allowed)}. "
            f"Received: interpolation={interpolation!r}"
        )


def _check_exact(exact):
    if not isinstance(exact, bool):
        raise ValueError(f"Expected `exact` to be True or False. Received: exact={exact!r}")
    return exact


def _check_fill(fill):
    if isinstance(fill, (int, float)) and not isinstance(fill, bool):
        fill = (fill, fill, fill)
    if (
        not isinstance(fill, (tuple, list))
        or len(fill) != 3
        or not all(isinstance(v, (int, float)) and 0 <= v <= 255 for v in fill)
    ):
        raise ValueError(
            "Expected `fill` to be a number or 3 numbers in [0, 255] (uint8 scale). "
            f"Received: fill={fill!r}"
        )
    return tuple(fill)


# === Policy strings ===


def parse_policy(policy):
    """Parses a timm RandAugment policy string such as `"rand-m9-mstd0.5-inc1"`.

    Sections after `rand`, separated by `-`, in any order (timm's
    `rand_augment_transform`): `m` magnitude (int, default 10), `n` number
    of operations (int, default 2), `mstd` magnitude noise std (float,
    default 0; above 100 means uniform sampling, returned as `math.inf`),
    `mmax` magnitude upper bound (int, default 10; 0 also means 10, as
    timm's `magnitude_max or 10`), `p` probability of each operation (float,
    default 0.5), `inc` 1 for the increasing operation list.

    Differences from timm, all on strings timm accepts silently or by
    accident: a section without digits (e.g. `mstdinf`) is an error here
    (timm skips it); `inc0` means off (timm's `bool("0")` turns it on);
    timm's transform-set (`t...`) and weight (`w...`) sections are not
    supported and raise.

    Args:
        policy: str, `"rand"` followed by `-`-separated sections.

    Returns:
        dict with `num_ops`, `magnitude`, `magnitude_std`, `magnitude_max`,
        `prob`, `increasing`.

    Example:

    >>> config = parse_policy("rand-m9-mstd0.5-inc1")
    >>> config["magnitude"], config["magnitude_std"], config["increasing"]
    (9, 0.5, True)
    """
    if not isinstance(policy, str) or policy.split("-")[0] != "rand":
        raise ValueError(
            f"Expected a RandAugment policy string starting with 'rand', like "
            f"'rand-m9-mstd0.5'. Received: policy={policy!r}"
        )
    config = dict(
        num_ops=2,
        magnitude=10,
        magnitude_std=0.0,
        magnitude_max=_LEVEL_DENOM,
        prob=0.5,
        increasing=False,
    )
    parsers = {
        "m": ("magnitude", int),
        "n": ("num_ops", int),
        "mstd": ("magnitude_std", float),
        "mmax": ("magnitude_max", int),
        "p": ("prob", float),
        "inc": ("increasing", int),
    }
    for section in policy.split("-")[1:]:
        match = re.fullmatch(r"([a-z]+)(\d.*)", section)
        if match is None or match.group(1) not in parsers:
            raise ValueError(
                f"Expected sections m<int>, n<int>, mstd<float>, mmax<int>, p<float> or "
                f"inc<0|1> in the policy. Received: section {section!r} of policy={policy!r}"
            )
        key, (name, kind) = match.group(1), parsers[match.group(1)]
        try:
            value = kind(match.group(2))
        except ValueError:
            raise ValueError(
                f"Expected a number after {key!r} in the policy. "
                f"Received: section {section!r} of policy={policy!r}"
            ) from None
        config[name] = value
    if config["magnitude_std"] > 100:
        config["magnitude_std"] = math.inf
    config["magnitude_max"] = float(config["magnitude_max"] or _LEVEL_DENOM)
    config["increasing"] = bool(config["increasing"])
    if config["num_ops"] < 0 or not 0.0 <= config["prob"] <= 1.0:
        raise ValueError(
            f"Expected n >= 0 and p in [0, 1] in the policy. Received: policy={policy!r}"
        )
    return config
