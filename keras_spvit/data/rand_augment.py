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
warps with V3 nearest). The bilinear kernels are compiled by XLA, one
image per call, on the host CPU (`keras_spvit.data.xla_kernels`): Rotate
as a four-neighbour gather warp with V3's coordinates and blend, in
float32 (the image minus the fill, 0 outside, then the fill added back;
within one level of `ImageProjectiveTransformV3`, which it replaces at a
third of the cost); ShearX/Y and TranslateX/YRel, which move pixels along
one axis, as one blend `a + frac * (b - a)` of the two neighbours on that
axis (a gather per neighbour with a fractional shift per row or column,
computed in float64), equal to the V3 warp within one level. Both read
the fill colour for neighbours outside the image, so the fill colour is
exact outside; truncated to the uint8 grid as
PIL truncates. Inside the image they agree with PIL's bilinear values within
one level (tests check this against the exact path and Pillow); the
one-pixel border blends with the fill colour where PIL repeats the edge
pixel. The colour operations are the same, PIL-
exact, code in both modes, elementwise (selections as arithmetic, several
times cheaper than `tf.where` on an image) except autocontrast and equalize:
PIL's 256-entry table per channel (autocontrast's float64 map evaluated at the
256 levels; equalize's from one `tf.math.bincount` of every channel's
histogram), applied by one `tf.gather_nd` with the channel offsets as one image-shaped
tensor (TensorFlow's CPU kernels are several times slower on binary ops that
broadcast a per-channel value than on equal shapes, so per-channel values such
as the fill colour are image-shaped tensors built at run time:
`keras_spvit.data.pixels`). `exact=True` is the PIL-exact path
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
family's kernel runs once on its sub-batch with per-image arguments (the
XLA-compiled Rotate, shift and AutoContrast kernels once per image of their
sub-batch, `xla_kernels.per_image`, so both paths run the same compiled
programs; Posterize/Solarize/SolarizeAdd/Invert as one
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

import tensorflow as tf

from keras_spvit.data import xla_kernels
from keras_spvit.data.rand_augment_colour import (
    _brightness,
    _color,
    _contrast,
    _equalize,
    _equalize_batch,
    _grey_blend_batch,
    _point_batch,
    _posterize,
    _sharpness,
    _sharpness_batch,
    _solarize,
    _solarize_add,
)
from keras_spvit.data.rand_augment_fast_geometry import (
    _v3_rows,
    _warp_images_fast,
    _warp_label_map_fast,
    _warp_label_maps_fast,
)
from keras_spvit.data.rand_augment_geometry import _rescale_matrix
from keras_spvit.data.rand_augment_levels import (
    _argument_row,
    _fast_argument,
    level_to_arg,
)
from keras_spvit.data.rand_augment_ops import (
    _FAMILIES,
    _FAMILY_OF_KIND,
    _FAST_KINDS,
    _apply,
    _as_label_map,
    _fast_kind,
    _fast_matrix,
    _fast_shift_params,
    apply_op,
)
from keras_spvit.data.rand_augment_policy import (
    _EXACT_INTERPOLATIONS,
    DEFAULT_FILL,
    GEOMETRIC_OPS,
    INTERPOLATIONS,
    RAND_INCREASING_TRANSFORMS,
    RAND_TRANSFORMS,
    _check_exact,
    _check_fill,
    _check_interpolation,
    parse_policy,
)
from keras_spvit.data.seeds import as_seed, split_seed
from keras_spvit.data.transforms import taken_branch_only, to_float_image

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
            bilinear kernel each (an XLA-compiled warp for Rotate, a one-axis blend
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
                        out = xla_kernels.geometric(
                            image, kind, interpolation, self.fill, shift_params=shift
                        )
                        return (out,)
                    matrix = _fast_matrix(row, arg, width, height)
                    out = xla_kernels.geometric(image, kind, interpolation, self.fill, matrix)
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
                    lambda x, a: xla_kernels.auto_contrast(x),
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

        # One switch per operation, unrolled: with the branches kept as
        # functions (`taken_branch_only`) only the taken one runs, and a
        # `tf.while_loop` would add a call of its condition and body
        # functions per round (about 0.5 ms per image with no operation
        # applied, more than the switches themselves).
        state = (tf.constant(0), pixels) + (() if label_map is None else (label_map,))
        for _ in range(self.num_ops):
            state = step(*state)
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

    @taken_branch_only
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

    @taken_branch_only
    @tf.autograph.experimental.do_not_convert
    def augment_pixels(self, pixels, seed=None):
        """The fast mode on quantised pixels, without the conversions of `__call__`.

        `__call__(image, seed)` is `augment_pixels(quantize(image), seed) / 255`
        (bit for bit): for pipelines that quantise and normalise the pixels
        themselves (`TrainAugment.normalized`: two passes over the image fewer).

        Args:
            pixels: `(height, width, 3)` float32 holding integers 0..255 (what
                `quantize` returns).
            seed: shape-`(2,)` int tensor or int (see `keras_spvit.data.seeds`).

        Returns:
            float32 pixels, integers 0..255, same shape.

        Example:

        >>> augment = RandAugment("rand-m9-mstd0.5-inc1")
        >>> pixels = augment.augment_pixels(quantize(image), seed=tf.constant([0, 1]))
        """
        if self.exact:
            raise ValueError(
                "Expected a fast-mode RandAugment for augment_pixels (the PIL-exact mode runs "
                "through __call__). Received: exact=True"
            )
        pixels = tf.convert_to_tensor(pixels)
        if pixels.dtype != tf.float32 or pixels.shape.rank != 3:
            raise ValueError(
                "Expected one float32 image of pixels (height, width, 3). "
                f"Received: dtype={pixels.dtype.name}, shape={pixels.shape}"
            )
        ops, applied, magnitudes, negate, _ = self.sample(seed)
        return self._fast_ops(pixels, None, ops, applied, magnitudes, negate)[0]

    @tf.autograph.experimental.do_not_convert
    def apply_batch(self, images, draws, label_maps=None, *, as_pixels=False):
        """Applies per-image draws to a batch at once: `__call__`'s results, batched.

        The draws of each image come from `sample(seed)` with that image's
        seed (stacked by `tf.data`'s `batch`), so a batch gives exactly what
        `__call__(image, seed)` gives image by image (fast mode only). No
        per-image control flow: for each of the `num_ops` rounds the batch
        is partitioned by the operation each image drew (`tf.dynamic_partition`),
        every operation runs once on its sub-batch with per-image arguments
        (the XLA-compiled geometric and AutoContrast kernels once per image
        of their sub-batch, the other families once per sub-batch), and the results are stitched back
        (`tf.dynamic_stitch`). Images that skip an operation pass through.

        Args:
            images: `(batch, height, width, 3)`: `uint8` (taken as the
                quantised pixels `round(255 * x)`, what `quantize` returns)
                or float in [0, 1] (quantised here, as `__call__` does).
            draws: the tuple `sample` returns, each entry stacked over the
                batch: `(batch, num_ops)` tensors.
            label_maps: optional `(batch, h, w)` or `(batch, h, w, C)` tensor
                of any dtype, warped by the geometric operations as in `__call__`.
            as_pixels: bool. Return the uint8 pixels (what `augment_pixels`
                gives image by image) instead of float32 images in [0, 1].

        Returns:
            float32 images in [0, 1] (uint8 pixels with `as_pixels`), same
            shape, or `(images, label_maps)`.

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
        if as_pixels:
            return pixels if label_maps is None else (pixels, label_maps)
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
        point, blend, rotate, shift = params[4], params[5], params[0], params[1]
        # The compiled kernels once per image (`xla_kernels.per_image`): the
        # programs the per-image path runs, so the same values.
        if interpolation == "nearest":
            rotated = _warp_images_fast(sub_batch(0), rotate[:, 6:14], interpolation, self.fill)
            shifted = _warp_images_fast(sub_batch(1), shift[:, 6:14], interpolation, self.fill)
        else:
            fill = tf.broadcast_to(xla_kernels.fill_tensor(self.fill), (tf.shape(rotate)[0], 3))
            rotated = xla_kernels.per_image(xla_kernels.warp, sub_batch(0), rotate[:, 6:14], fill)
            fill = tf.broadcast_to(xla_kernels.fill_tensor(self.fill), (tf.shape(shift)[0], 3))
            shifted = xla_kernels.per_image(
                xla_kernels.shift, sub_batch(1), shift[:, 14], shift[:, 15], shift[:, 16], fill
            )
        outputs = [
            rotated,
            shifted,
            xla_kernels.per_image(xla_kernels.auto_contrast, sub_batch(2)),
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
