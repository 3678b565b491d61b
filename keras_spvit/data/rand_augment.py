"""RandAugment with timm's semantics, on TensorFlow ops (runs in `tf.data`).

A re-implementation of timm's `rand_augment_transform` (huggingface/
pytorch-image-models, `timm/data/auto_augment.py`) that runs inside
`tf.data` on every Keras backend: plain TensorFlow ops, stateless random
draws, a `tf.switch_case` per drawn operation so only that operation runs.

What is timm's, and where it comes from (`auto_augment.py`):

- The operation lists `_RAND_TRANSFORMS` and, for `inc1`,
  `_RAND_INCREASING_TRANSFORMS` (`RAND_TRANSFORMS`,
  `RAND_INCREASING_TRANSFORMS` here).
- `RandAugment.__call__`: `num_ops` operations drawn uniformly WITH
  replacement; `AugmentOp.__call__`: each applied with probability `prob`
  (0.5), its magnitude drawn as `gauss(m, mstd)` (`mstd` = inf, or > 100 in
  the policy string: `uniform(0, m)`) and clipped to `[0, mmax]` (`mmax`
  default 10).
- The `_*_level_to_arg` functions (`level_to_arg` here), including the
  random sign (`_randomly_negate`: negative when `random() > 0.5`) of
  rotate, shear, translate and the increasing enhance factors, and the
  clamps of recent timm (`min(256, .)` for solarize, `min(128, .)` for
  solarize-add).
- The operations are PIL's (`ImageOps`, `ImageEnhance`, `Image.transform` /
  `Image.rotate` with `fillcolor=img_mean`, `resample=interpolation`). They
  are reproduced on uint8 values: every test in
  `tests/data/test_rand_augment.py` compares with PIL.

Pixel scale. `RandAugment` takes a float image in [0, 1] (the pipeline's
format after the crop), quantises it ONCE on entry to the uint8 grid,
`round(255 * x)` (half to even), works on integer values 0..255 held in
float32, and returns `value / 255`. Every operation lands on integers
exactly where PIL does: enhance blends truncate (`Image.blend`, float32
maths), the smoothing filter of `Sharpness` rounds, affine resampling
truncates and clips (`Geometry.c`), autocontrast truncates its float64 map,
equalize uses PIL's integer lookup table, posterize masks bits, solarize
compares with the integer threshold. So a chain of operations gives the
values PIL gives on the quantised image. One exception: posterize to 0 bits
(timm's level for m < 2.5) gives black, as PIL did until 9.x; Pillow 10+
raises there.

Two modes. `exact=False` (the default, for training pipelines) runs each
geometric operation as one cheap bilinear kernel with the same affine
matrix as PIL's, moved from PIL's pixel-centre convention to index
coordinates ("bicubic" also runs bilinear; "nearest" is available and
warps with V3 nearest): Rotate as ONE `tf.raw_ops.ImageProjectiveTransformV3`
call in float32 (the image minus the fill warped with fill 0, then the
fill added back); ShearX/Y and TranslateX/YRel, which move pixels along
one axis, as one blend `a + frac * (b - a)` of the two neighbours on that
axis (a translation: two shifted windows of the fill-padded image; a
shear: a gather per neighbour with a fractional shift per row or column,
computed in float64), 2-3x cheaper than the V3 warp at 224 px and equal to
it within one level. Both read the fill colour for neighbours outside the
image, so the fill colour is exact outside; truncated to the uint8 grid as
PIL truncates. Inside the image they agree with PIL's bilinear values within
one level (tests check this against the exact path and Pillow); the
one-pixel border blends with the fill colour where PIL repeats the edge
pixel. The colour operations are the same, PIL-
exact, code in both modes, elementwise (autocontrast as its per-channel
affine map in float64, PIL's table arithmetic at each pixel's level;
selections as arithmetic, several times cheaper than `tf.where` on an
image) except equalize (one `tf.math.bincount` for the histograms, one
`tf.gather` through the tables). `exact=True` is the PIL-exact path
described next. The draws (`RandAugment.sample`) do not depend on the mode.

In the exact mode, geometric operations follow PIL's affine resampling exactly: output pixel
centres `(x + 0.5, y + 0.5)` mapped by the inverse affine matrix; a source
point outside `[0, width) x [0, height)` takes the fill colour; inside,
bilinear or bicubic (PIL's affine bicubic is the `a = -1` cubic, not the
`a = -0.5` of resizing) with edge-clamped neighbours; float64 coordinates
and arithmetic in PIL's evaluation order. They run as gathers of
precomputed polynomial windows rather than `ImageProjectiveTransformV3`,
which has no bicubic mode, blends the fill colour into border pixels
unlike PIL and works in float32 (it is about 4x cheaper than this exact
path for one bilinear warp: the price of PIL's values). Shear and
translate move pixels along one axis only and take a one-dimensional
path; rotate takes the two-dimensional one.

Batches. `RandAugment.apply_batch` applies per-image draws (`sample`, one
seed per image, batched by `tf.data`) to a whole batch without per-image
control flow: per round, the images are partitioned by the family of the
operation they drew (`tf.dynamic_partition` over uint8 pixels), each
family's kernel runs once on its sub-batch with per-image arguments (one
`ImageProjectiveTransformV3` call with a transform row per image for
Rotate, one gather kernel with per-image axis, slope and offset for the
shears and translations; Posterize/Solarize/SolarizeAdd/Invert as one
point kernel; Color/Contrast/Brightness as one blend), and the results are
stitched back (`tf.dynamic_stitch`). The result equals `__call__` image by
image, bit for bit (tests check it for every operation, with label maps).
The kernels are batched in both paths (the per-image path runs them on a
batch of one), and work per pixel or per image and channel only.

Dense label maps (token labeling, see `shared/spec/TOKEN-LABELING.md`)
ride along: the geometric operations apply the same transform to a label
map on its own grid, nearest neighbour, fill 0. "The same transform" is the
image's affine map conjugated by the grid scaling (`map = S A S^-1` with
`S = diag(map_width / width, map_height / height)`): the map moves with the
image content, translations are relative to the map's size and rotation
is about the map's centre. The released token-labeling code
(`tlt/data/random_augment_label.py` of the SP-ViT and LV-ViT releases) uses
`scipy.ndimage.affine_transform` on index coordinates, which rotates about
`(w / 2, h / 2)` in index units, half a cell off the map's centre; the
other operations agree with it.

Randomness is stateless (see `keras_spvit.data.seeds`): the same seed
gives the same result, eagerly and in a parallel `tf.data.map`.
"""

import math
import re

import tensorflow as tf

from keras_spvit.data.seeds import as_seed, split_seed
from keras_spvit.data.transforms import to_float_image
from keras_spvit.utils.preprocessing import IMAGENET_MEAN

__all__ = [
    "DEFAULT_FILL",
    "GEOMETRIC_OPS",
    "RAND_INCREASING_TRANSFORMS",
    "RAND_TRANSFORMS",
    "RandAugment",
    "apply_op",
    "level_to_arg",
    "parse_policy",
    "quantize",
]

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


def _auto_contrast_batch(images, args=None):
    # ImageOps.autocontrast(cutoff=0): per channel `int(v * scale + offset)`
    # with `scale = 255 / (hi - lo)`, `offset = -lo * scale` in float64 (PIL's
    # table, computed at the pixel's own level: the same float64 operations);
    # unchanged when the channel is flat. Elementwise, no table lookup.
    # A flat channel maps through scale 1 and offset 0: `v * 1 + 0` is `v`.
    low = tf.reduce_min(images, axis=(1, 2), keepdims=True)
    high = tf.reduce_max(images, axis=(1, 2), keepdims=True)
    flat = high <= low
    scale = 255.0 / tf.cast(tf.where(flat, 1.0, high - low), tf.float64)
    offset = tf.where(flat, tf.zeros_like(scale), -tf.cast(low, tf.float64) * scale)
    scale = tf.where(flat, tf.ones_like(scale), scale)
    return tf.cast(_truncate(tf.cast(images, tf.float64) * scale + offset), tf.float32)


def _equalize_batch(images, args=None):
    # ImageOps.equalize: per channel `step = (total - count of the highest
    # value present) // 256`, `lut[i] = (step // 2 + count below i) // step`
    # (PIL clips the table to 255); identity when `step` is 0. One bincount
    # for the histograms of every image and channel, one gather for the tables.
    channels = images.shape[-1] or 3
    shape = tf.shape(images)
    tables = shape[0] * channels
    offsets = tf.reshape(tf.range(tables) * 256, (-1, 1, 1, channels))
    values = tf.cast(images, tf.int32) + offsets
    counts = tf.reshape(
        tf.math.bincount(tf.reshape(values, [-1]), minlength=256 * tables, maxlength=256 * tables),
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
    return tf.cast(tf.gather(tf.reshape(lut, [-1]), values), tf.float32)


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
    # PIL's RGB -> L; integers below 2**24, so exact in float32.
    r, g, b = tf.unstack(images, axis=-1)
    total = r * _L_WEIGHTS[0] + g * _L_WEIGHTS[1] + b * _L_WEIGHTS[2] + 32768.0
    return tf.floor(total / 65536.0)


def _color_batch(images, factor):
    return _blend(_grey(images)[..., None], images, factor)


def _contrast_batch(images, factor):
    # ImageEnhance.Contrast: the degenerate is the mean grey level,
    # `int(mean + 0.5)`, of the `L` image (an integer sum, float64 mean).
    grey = tf.cast(_grey(images), tf.int32)
    shape = tf.shape(grey)
    mean = tf.reduce_sum(grey, axis=(1, 2)) / (shape[1] * shape[2])  # float64
    return _blend(_per_image(tf.floor(mean + 0.5)), images, factor)


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
    # The fill as a whole image: a per-channel constant broadcast over
    # (batch, height, width) costs several times a plain subtraction.
    fill = tf.broadcast_to(tf.constant(fill, tf.float32), tf.shape(images)[1:])
    kind = "NEAREST" if interpolation == "nearest" else "BILINEAR"
    if isinstance(matrix, tf.Tensor):  # V3 rows already (`_v3_rows`)
        out = _v3(images - fill, matrix, kind)
    else:
        out = _projective_transform(images - fill, matrix, kind)
    return tf.floor(out + (fill + 1e-3))


def _warp_image_fast(image, matrix, interpolation, fill):
    return _warp_images_fast(image[None], matrix, interpolation, fill)[0]


def _geometric_fast(image, matrix, kind, interpolation, fill, shift=None):
    """The fast mode's warp of one image: `kind` 0 Rotate (one V3 warp), 1 a
    shear (`_shift_images_fast`), 2 a translation (`_translate_image_fast`);
    "nearest" always warps with V3. `shift`: `_shift_params` of the matrix
    when known (or `matrix` may then be None)."""
    if kind == 0 or interpolation == "nearest":
        return _warp_image_fast(image, matrix, interpolation, fill)
    along_x, slope, offset = _shift_params(matrix) if shift is None else shift
    if kind == 2:
        return _translate_image_fast(image, along_x, offset, fill)
    return _shift_images_fast(
        image[None], along_x[None], slope[None], offset[None], fill
    )[0]


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
    fill = tf.constant(fill, tf.float32)
    padded = tf.pad(
        image - fill,
        [[before_y, tf.maximum(ky + dy, 0)], [before_x, tf.maximum(kx + dx, 0)], [0, 0]],
    ) + fill
    top, left = ky + before_y, kx + before_x
    a = padded[top : top + height, left : left + width]
    b = padded[top + dy : top + dy + height, left + dx : left + dx + width]
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

    table = tf.concat(
        [tf.reshape(images, (-1, channels)), tf.constant([fill], tf.float32)], axis=0
    )
    a = tf.gather(table, index(first))
    b = tf.gather(table, index(first + 1))
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


# === One operation ===


def _apply(name, image, arg, fill, interpolation, label_map, exact):
    if name not in GEOMETRIC_OPS:
        if name == "AutoContrast":
            image = _auto_contrast(image)
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
        image = _geometric_fast(image, matrix, _fast_kind(name), interpolation, fill)
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
            (a V3 warp for Rotate, a one-axis blend for the shears and
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


# === Fast dispatch ===

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


# Fast-mode branches: rotate (a V3 warp), the shears and the translations
# (one-axis kernels, see `_shift_images_fast`).
_FAST_KINDS = (
    "Rotate",
    "Shear",
    "Translate",
    "AutoContrast",
    "Equalize",
    "Invert",
    "Posterize",
    "Solarize",
    "SolarizeAdd",
    "Color",
    "Contrast",
    "Brightness",
    "Sharpness",
)


def _fast_kind(name):
    if name in GEOMETRIC_OPS:
        return 0 if name == "Rotate" else (1 if name.startswith("Shear") else 2)
    return _FAST_KINDS.index(name.replace("Increasing", ""))


def _fast_argument(row, magnitude, negate):
    # `row`: one `(12,)` row, or `(n, 12)` rows with `(n,)` magnitudes and signs.
    multiplier, floor, cap, signed, offset, slope, lower = tf.unstack(row[..., :7], axis=-1)
    value = magnitude / _LEVEL_DENOM * multiplier
    value = tf.minimum(tf.where(floor > 0.0, tf.floor(value), value), cap)
    value = tf.where(negate & (signed > 0.0), -value, value)
    return tf.maximum(offset + slope * value, lower)


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
    grey = _grey(images)
    shape = tf.shape(grey)
    mean = tf.reduce_sum(tf.cast(grey, tf.int32), axis=(1, 2)) / (shape[1] * shape[2])
    degenerate = _per_image(grey_weight) * grey[..., None] + _per_image(
        tf.cast(mean_weight, tf.float64) * tf.floor(mean + 0.5)
    )
    return _blend(degenerate, images, factor)


# === RandAugment ===


class RandAugment:
    """timm's RandAugment (`rand-m9-mstd0.5`, ...) for one image in `tf.data`.

    Each call draws `num_ops` operations uniformly with replacement from
    timm's list (`RAND_TRANSFORMS`, or `RAND_INCREASING_TRANSFORMS` with
    `inc1`), applies each with probability `prob`, with magnitude
    `gauss(magnitude, magnitude_std)` (or `uniform(0, magnitude)` when the
    std is infinite) clipped to `[0, magnitude_max]`, mapped to the
    operation's argument by `level_to_arg` with a random sign where timm has
    one. Operations act as PIL's on the uint8 grid (see the module
    docstring). A plain Python object, not a Keras layer: it runs on
    TensorFlow tensors inside `tf.data` whatever the Keras backend.

    Args:
        policy: str. timm's policy string, see `parse_policy`.
        interpolation: `"bicubic"` (timm with DeiT / SP-ViT's pipeline
            interpolation), `"bilinear"`, or `"random"` (timm's default when
            no interpolation is given: bilinear or bicubic per operation).
        fill: 3 numbers in [0, 255]. Fill colour of the geometric operations,
            timm's `img_mean` hparam: `round(255 * mean)`; `DEFAULT_FILL` is
            the ImageNet mean (124, 116, 104).
        translate_pct: float in [0, 1]. timm's `translate_pct` hparam: the
            largest translation, as a fraction of the image side.

        exact: bool. `False` (default): geometric operations as one
            bilinear kernel each (a V3 warp for Rotate, a one-axis blend
            for the shears and translations; fill exact
            outside; see the module docstring); `True`: PIL's resampling bit
            for bit, several times slower. Colour operations and the random
            draws are the same in both modes.

    With `exact=False`, `"bicubic"` and `"random"` run bilinear (V3 has no
    bicubic kernel) and `"nearest"` is also accepted.

    Call arguments:
        image: `(height, width, 3)` float in [0, 1] (or uint8).
        seed: shape-`(2,)` int tensor or int (see `keras_spvit.data.seeds`).
        label_map: optional `(h, w)` or `(h, w, C)` tensor of any dtype.

    Returns `image` (float32 in [0, 1], same shape), or `(image, label_map)`
    when `label_map` is given.

    Example:

    >>> augment = RandAugment("rand-m9-mstd0.5")
    >>> image = augment(tf.random.uniform((224, 224, 3)), seed=tf.constant([0, 1]))
    >>> pil_bits = RandAugment("rand-m9-mstd0.5", exact=True)

    In a pipeline, with a per-example seed:

    >>> ds = ds.map(lambda x, seed: augment(x, seed), num_parallel_calls=tf.data.AUTOTUNE)
    """

    def __init__(
        self,
        policy="rand-m9-mstd0.5",
        *,
        exact=False,
        interpolation="bicubic",
        fill=DEFAULT_FILL,
        translate_pct=0.45,
    ):
        config = parse_policy(policy)
        exact = _check_exact(exact)
        _check_interpolation(interpolation, _EXACT_INTERPOLATIONS if exact else INTERPOLATIONS)
        if not isinstance(translate_pct, (int, float)) or not 0.0 <= translate_pct <= 1.0:
            raise ValueError(
                f"Expected `translate_pct` in [0, 1]. Received: translate_pct={translate_pct!r}"
            )
        # === Config ===
        self.policy = policy
        self.exact = exact
        self.interpolation = interpolation
        self.fill = _check_fill(fill)
        self.translate_pct = float(translate_pct)
        self.num_ops = config["num_ops"]
        self.magnitude = config["magnitude"]
        self.magnitude_std = config["magnitude_std"]
        self.magnitude_max = config["magnitude_max"]
        self.prob = config["prob"]
        self.increasing = config["increasing"]
        self.transforms = RAND_INCREASING_TRANSFORMS if self.increasing else RAND_TRANSFORMS

    def get_config(self):
        return {
            "policy": self.policy,
            "exact": self.exact,
            "interpolation": self.interpolation,
            "fill": self.fill,
            "translate_pct": self.translate_pct,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"RandAugment({args})"

    @tf.autograph.experimental.do_not_convert
    def sample(self, seed):
        """The random draws of one call (which ops, applied or not, magnitudes, signs).

        Args:
            seed: shape-`(2,)` int tensor or int.

        Returns:
            A tuple of `num_ops`-long tensors `(ops, applied, magnitudes,
            negate, bicubic)`: int32 indices into `self.transforms`, bools,
            float64 clipped magnitudes, bools, bools.

        Example:

        >>> ops, applied, magnitudes, negate, bicubic = RandAugment().sample(0)
        """
        n = self.num_ops
        choice_seed, uniform_seed, normal_seed = split_seed(as_seed(seed), 3)
        ops = tf.random.stateless_uniform(
            (n,), choice_seed, 0, len(self.transforms), dtype=tf.int32
        )
        uniform = tf.random.stateless_uniform((n, 4), uniform_seed, dtype=tf.float64)
        applied = uniform[:, 0] < self.prob
        magnitude = tf.fill((n,), tf.constant(float(self.magnitude), tf.float64))
        if self.magnitude_std == math.inf:
            magnitude = magnitude * uniform[:, 3]
        elif self.magnitude_std > 0:
            noise = tf.random.stateless_normal((n,), normal_seed, dtype=tf.float64)
            magnitude = magnitude + self.magnitude_std * noise
        magnitude = tf.clip_by_value(magnitude, 0.0, self.magnitude_max)
        negate = uniform[:, 1] > 0.5
        if self.interpolation == "random":
            bicubic = uniform[:, 2] < 0.5
        else:
            bicubic = tf.fill((n,), self.interpolation == "bicubic")
        return ops, applied, magnitude, negate, bicubic

    def _fast_rows(self):
        # `_argument_row` of each operation of the list, `(len(transforms), 12)`.
        return tf.constant(
            [_argument_row(name, self.translate_pct) for name in self.transforms], tf.float64
        )

    def _fast_ops(self, pixels, label_map, ops, applied, magnitudes, negate):
        # One small switch per drawn operation over `_FAST_KINDS`; the
        # argument (and the geometric matrix) computed once, outside it.
        rows = self._fast_rows()
        kinds = tf.constant([_fast_kind(name) for name in self.transforms], tf.int32)
        interpolation = "nearest" if self.interpolation == "nearest" else "bilinear"
        static_shape = pixels.shape
        map_shape = None if label_map is None else label_map.shape

        def step(i, pixels, label_map=None):
            row = rows[ops[i]]
            arg = _fast_argument(row, magnitudes[i], negate[i])
            image = pixels

            def geometric(kind):
                def run():
                    shape = tf.shape(image)
                    height = tf.cast(shape[0], tf.float64)
                    width = tf.cast(shape[1], tf.float64)
                    if kind > 0 and interpolation != "nearest" and label_map is None:
                        shift = _fast_shift_params(row, arg, width, height)
                        out = _geometric_fast(image, None, kind, interpolation, self.fill, shift)
                        return (out,)
                    matrix = _fast_matrix(row, arg, width, height)
                    out = _geometric_fast(image, matrix, kind, interpolation, self.fill)
                    if label_map is None:
                        return (out,)
                    map_size = tf.cast(tf.shape(label_map)[:2], tf.float64)
                    map_matrix = _rescale_matrix(
                        matrix, map_size[1] / width, map_size[0] / height
                    )
                    return out, _warp_label_map_fast(label_map, map_matrix)

                return run

            def colour(op):
                def run():
                    out = op(image, arg)
                    return (out,) if label_map is None else (out, label_map)

                return run

            branches = [geometric(0), geometric(1), geometric(2)] + [
                colour(op)
                for op in (
                    lambda x, a: _auto_contrast(x),
                    lambda x, a: _equalize(x),
                    lambda x, a: 255.0 - x,
                    _posterize,
                    _solarize,
                    _solarize_add,
                    _color,
                    _contrast,
                    _brightness,
                    _sharpness,
                )
            ]
            unchanged = (pixels,) if label_map is None else (pixels, label_map)
            branches.append(lambda: unchanged)
            index = tf.where(applied[i], kinds[ops[i]], len(_FAST_KINDS))
            outputs = tf.switch_case(index, branches)
            pixels = tf.ensure_shape(outputs[0], static_shape)
            if label_map is None:
                return i + 1, pixels
            return i + 1, pixels, tf.ensure_shape(outputs[1], map_shape)

        # A loop, not one switch per operation: the branches exist once in
        # the graph (their size costs time per image even when not taken).
        state = (tf.constant(0), pixels) + (() if label_map is None else (label_map,))
        state = tf.while_loop(lambda i, *_: i < self.num_ops, step, state)
        return state[1], (None if label_map is None else state[2])

    def _branch(self, name, image, label_map, magnitude, negate, bicubic):
        # Branch outputs are `(image,)` or `(image, label_map)`: no None in them.
        def apply(interpolation):
            arg = level_to_arg(name, magnitude, negate, self.translate_pct)
            out = _apply(name, image, arg, self.fill, interpolation, label_map, self.exact)
            return out[:1] if label_map is None else out

        def run():
            if not self.exact:  # one kernel whatever was asked: no cond
                return apply("nearest" if self.interpolation == "nearest" else "bilinear")
            if name not in GEOMETRIC_OPS or self.interpolation != "random":
                return apply("bilinear" if self.interpolation == "bilinear" else "bicubic")
            return tf.cond(bicubic, lambda: apply("bicubic"), lambda: apply("bilinear"))

        return run

    @tf.autograph.experimental.do_not_convert
    def __call__(self, image, seed=None, label_map=None):
        image = to_float_image(image)
        if image.shape.rank != 3:
            raise ValueError(
                f"Expected one image (height, width, 3). Received: image.shape={image.shape}"
            )
        static_shape = image.shape
        if label_map is not None:
            label_map = _as_label_map(label_map)
            map_shape = label_map.shape
        pixels = tf.round(tf.clip_by_value(image, 0.0, 1.0) * 255.0)
        ops, applied, magnitudes, negate, bicubic = self.sample(seed)
        if not self.exact:
            pixels, label_map = self._fast_ops(pixels, label_map, ops, applied, magnitudes, negate)
            image = pixels / 255.0
            return image if label_map is None else (image, label_map)
        for i in range(self.num_ops):
            branches = [
                self._branch(name, pixels, label_map, magnitudes[i], negate[i], bicubic[i])
                for name in self.transforms
            ]
            unchanged = (pixels,) if label_map is None else (pixels, label_map)
            branches.append(lambda unchanged=unchanged: unchanged)
            index = tf.where(applied[i], ops[i], len(self.transforms))
            outputs = tf.switch_case(index, branches)
            pixels = tf.ensure_shape(outputs[0], static_shape)
            if label_map is not None:
                label_map = tf.ensure_shape(outputs[1], map_shape)
        image = pixels / 255.0
        return image if label_map is None else (image, label_map)

    @tf.autograph.experimental.do_not_convert
    def apply_batch(self, images, draws, label_maps=None):
        """Applies per-image draws to a batch at once: `__call__`'s results, batched.

        The draws of each image come from `sample(seed)` with that image's
        seed (stacked by `tf.data`'s `batch`), so a batch gives exactly what
        `__call__(image, seed)` gives image by image (fast mode only). No
        per-image control flow: for each of the `num_ops` rounds the batch
        is partitioned by the operation each image drew (`tf.dynamic_partition`),
        every operation runs once on its sub-batch with per-image arguments
        (Rotate as one `ImageProjectiveTransformV3` call with a transform row
        per image, the shears and translations as one gather kernel), and the results are stitched back
        (`tf.dynamic_stitch`). Images that skip an operation pass through.

        Args:
            images: `(batch, height, width, 3)`: `uint8` (taken as the
                quantised pixels `round(255 * x)`, what `quantize` returns)
                or float in [0, 1] (quantised here, as `__call__` does).
            draws: the tuple `sample` returns, each entry stacked over the
                batch: `(batch, num_ops)` tensors.
            label_maps: optional `(batch, h, w)` or `(batch, h, w, C)` tensor
                of any dtype, warped by the geometric operations as in `__call__`.

        Returns:
            float32 images in [0, 1], same shape, or `(images, label_maps)`.

        Example:

        >>> augment = RandAugment("rand-m9-mstd0.5-inc1")
        >>> seeds = tf.constant([[0, 1], [0, 2]])
        >>> images = tf.random.uniform((2, 32, 32, 3))
        >>> draws = [tf.stack(d) for d in zip(*(augment.sample(s) for s in seeds))]
        >>> batch = augment.apply_batch(images, draws)  # == [augment(x, s) for ...]
        """
        if self.exact:
            raise ValueError(
                "Expected a fast-mode RandAugment for apply_batch (the PIL-exact warps run "
                "per image). Received: exact=True"
            )
        images = tf.convert_to_tensor(images)
        if images.shape.rank != 4:
            raise ValueError(
                f"Expected a batch (batch, height, width, 3). Received: images.shape={images.shape}"
            )
        draws = tuple(tf.convert_to_tensor(d) for d in draws)
        if len(draws) != 5 or any(d.shape.rank != 2 for d in draws):
            raise ValueError(
                "Expected the 5 draws of `sample`, each stacked to (batch, num_ops). "
                f"Received: shapes {[d.shape for d in draws]}"
            )
        pixels = tf.cast(quantize(images), tf.uint8)
        static_shape = pixels.shape
        if label_maps is not None:
            label_maps = tf.convert_to_tensor(label_maps)
            if label_maps.shape.rank not in (3, 4):
                raise ValueError(
                    "Expected label maps (batch, height, width) or (batch, height, width, "
                    f"channels). Received: label_maps.shape={label_maps.shape}"
                )
        ops, applied, magnitudes, negate, _ = draws
        params = self._batch_params(pixels, label_maps, ops, applied, magnitudes, negate)
        family = tf.gather(tf.constant(_FAMILY_OF_KIND + (len(_FAMILIES),)), params[0])
        for i in range(self.num_ops):
            pixels, label_maps = self._batch_round(
                pixels, label_maps, family[:, i], params[1][:, i]
            )
            pixels = tf.ensure_shape(pixels, static_shape)
        images = tf.cast(pixels, tf.float32) / 255.0
        return images if label_maps is None else (images, label_maps)

    def _batch_params(self, pixels, label_maps, ops, applied, magnitudes, negate):
        """`(kind, params)` of every image and round: `(batch, num_ops)` fast kinds
        and `(batch, num_ops, 17 or 25)` float64 numbers the family kernels take:
        argument, point parameters (unit, threshold, addition), grey-blend
        weights (grey, mean), V3 row of the image, shift parameters
        (`_shift_params`), V3 row of the label map."""
        rows = tf.gather(self._fast_rows(), ops)
        arg = _fast_argument(rows, tf.cast(magnitudes, tf.float64), tf.cast(negate, tf.bool))
        kind = tf.gather(tf.constant([_fast_kind(n) for n in self.transforms], tf.int32), ops)
        kind = tf.where(tf.cast(applied, tf.bool), kind, len(_FAST_KINDS))

        def kind_is(name):
            return kind == _FAST_KINDS.index(name)

        one = tf.ones_like(arg)
        unit = tf.where(kind_is("Posterize"), 2.0 ** tf.maximum(8.0 - arg, 0.0), one)
        threshold = tf.where(
            kind_is("Solarize"), arg, tf.where(kind_is("Invert"), 0.0 * one, 256.0 * one)
        )
        addition = tf.where(kind_is("SolarizeAdd"), arg, 0.0 * one)
        grey_weight = tf.cast(kind_is("Color"), tf.float64)
        mean_weight = tf.cast(kind_is("Contrast"), tf.float64)
        shape = tf.shape(pixels)
        height, width = tf.cast(shape[1], tf.float64), tf.cast(shape[2], tf.float64)
        matrix = _fast_matrix(rows, arg, width, height)
        columns = [arg, unit, threshold, addition, grey_weight, mean_weight]
        shift = tf.stack(_fast_shift_params(rows, arg, width, height), axis=-1)
        params = [tf.stack(columns, axis=-1), _v3_rows(matrix), shift]
        if label_maps is not None:
            map_size = tf.cast(tf.shape(label_maps)[1:3], tf.float64)
            map_matrix = _rescale_matrix(matrix, map_size[1] / width, map_size[0] / height)
            params.append(_v3_rows(map_matrix))
        return kind, tf.concat(params, axis=-1)

    def _batch_round(self, pixels, label_maps, family, params):
        # `pixels`: the batch as uint8 (a quarter of float32's memory traffic
        # for the partition and the stitch, which copy every image once).
        count = len(_FAMILIES) + 1
        positions = tf.dynamic_partition(tf.range(tf.shape(pixels)[0]), family, count)
        parts = tf.dynamic_partition(pixels, family, count)
        map_params = params[:, 17:]
        params = tf.dynamic_partition(params, family, count)

        def sub_batch(k):
            return tf.cast(parts[k], tf.float32)

        interpolation = "nearest" if self.interpolation == "nearest" else "bilinear"
        point, blend, shift = params[4], params[5], params[1]
        if interpolation == "nearest":
            shifted = _warp_images_fast(sub_batch(1), shift[:, 6:14], interpolation, self.fill)
        else:
            shifted = _shift_images_fast(
                sub_batch(1), shift[:, 14], shift[:, 15], shift[:, 16], self.fill
            )
        outputs = [
            _warp_images_fast(sub_batch(0), params[0][:, 6:14], interpolation, self.fill),
            shifted,
            _auto_contrast_batch(sub_batch(2)),
            _equalize_batch(sub_batch(3)),
            _point_batch(sub_batch(4), point[:, 1], point[:, 2], point[:, 3]),
            _grey_blend_batch(sub_batch(5), blend[:, 0], blend[:, 4], blend[:, 5]),
            _sharpness_batch(sub_batch(6), params[6][:, 0]),
        ]
        # Every output holds integers 0..255: uint8 is exact.
        outputs = [tf.cast(out, tf.uint8) for out in outputs] + [parts[-1]]
        pixels = tf.dynamic_stitch(positions, outputs)
        if label_maps is not None:
            # Only the geometric operations move the maps.
            moved = tf.cast(family > 1, tf.int32)
            maps = tf.dynamic_partition(label_maps, moved, 2)
            map_rows = tf.dynamic_partition(map_params, moved, 2)[0]
            warped = _warp_label_maps_fast(maps[0], map_rows)
            map_positions = tf.dynamic_partition(tf.range(tf.shape(family)[0]), moved, 2)
            label_maps = tf.ensure_shape(
                tf.dynamic_stitch(map_positions, [warped, maps[1]]), label_maps.shape
            )
        return pixels, label_maps


def quantize(images):
    """[0, 1] float images -> the uint8 grid RandAugment works on, `round(255 * x)`.

    What `RandAugment` does on entry (half to even); `uint8` input is taken
    as already quantised. Returns float32 holding integers 0..255 (cast to
    `uint8` to store or batch them at a quarter of the size).

    Args:
        images: float tensor in [0, 1] (clipped) or `uint8`, any shape.

    Example:

    >>> quantize(tf.constant([0.0, 0.5, 1.0])).numpy().tolist()
    [0.0, 128.0, 255.0]
    """
    images = tf.convert_to_tensor(images)
    if images.dtype == tf.uint8:
        return tf.cast(images, tf.float32)
    return tf.round(tf.clip_by_value(to_float_image(images), 0.0, 1.0) * 255.0)
