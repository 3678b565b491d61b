"""The training augmentation of the recipes, per image and per batch, for `tf.data`.

`TrainAugment` assembles the per-image steps of timm's / DeiT's training
transform (random resized crop, flip, colour jitter, RandAugment, random
erasing) and the per-batch MixUp / CutMix with label smoothing. By default
every step is the package's own TensorFlow implementation with timm's
semantics (`rand_augment.RandAugment`, `random_erasing.random_erasing`):
stateless, reproducible under a parallel map, and fast enough that the
augmentation costs a small share of JPEG decoding. Keras' own
`keras.layers.RandAugment` / `RandomErasing` layers remain available: pass
an instance (they draw from their own generators, so a run with them does
not repeat exactly). Everything runs on TensorFlow tensors inside `tf.data`, under
any Keras backend.
"""

import keras
import tensorflow as tf

from keras_spvit.data.rand_augment import RandAugment, quantize
from keras_spvit.data.random_erasing import ERASING_MODES, random_erasing
from keras_spvit.data.seeds import as_seed, split_seed
from keras_spvit.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    check_interpolation,
    color_jitter,
    normalize,
    normalize_pixels,
    random_resized_crop,
    resize_image,
    sample_crop_box,
    taken_branch_only,
    to_float_image,
)
from keras_spvit.utils.validation import (
    check_increasing_pair,
    check_probability,
    check_size,
)


class TFDataEqualization(keras.layers.Equalization):
    """Keras `Equalization` with TensorFlow's `bincount` inside `tf.data`.

    Keras 3.15 chooses its histogram by the global backend: under JAX it unrolls
    a 256-step loop, per channel, even when the layer runs on TensorFlow tensors
    in `tf.data`, which makes `RandAugment` take seconds per small batch.
    The result is the same histogram.
    """

    def _custom_histogram_fixed_width(self, values, value_range, nbins):
        if self.backend.name != "tensorflow":
            return super()._custom_histogram_fixed_width(values, value_range, nbins)
        low, high = value_range
        scaled = (tf.cast(values, tf.float32) - low) * (nbins - 1) / (high - low)
        indices = tf.clip_by_value(tf.cast(scaled, tf.int32), 0, nbins - 1)
        return tf.math.bincount(
            tf.reshape(indices, [-1]), minlength=nbins, maxlength=nbins, dtype=tf.int32
        )


class _FoldedSeeds(keras.random.SeedGenerator):
    """A `SeedGenerator` without state: its n-th draw is `fold_in(seed, n)`.

    Keras' image layers draw from a generator; given this one they draw a
    stateless function of the batch's seed (the same batch, the same mix, in
    any order, in a parallel map, after a resume).
    """

    def __init__(self, seed):  # no variable: nothing to advance
        self._base = as_seed(seed)
        self._draws = 0

    def next(self, ordered=True):
        self._draws += 1  # counts draw sites while tracing: a constant per site
        return tf.random.experimental.stateless_fold_in(self._base, self._draws)


def _call_with_seed(layer, data, seed):
    # What the layer's `__call__` does inside `tf.data` (TensorFlow ops
    # whatever the Keras backend), with the random draws taken from `seed`.
    layer.backend.set_backend("tensorflow")
    try:
        transformation = layer.get_random_transformation(
            data, training=True, seed=_FoldedSeeds(seed)
        )
        return {
            "images": layer.transform_images(data["images"], transformation, training=True),
            "labels": layer.transform_labels(data["labels"], transformation, training=True),
        }
    finally:
        layer.backend.reset()


def _fold(seed, salt):
    return tf.random.experimental.stateless_fold_in(as_seed(seed), salt)


class TrainAugment:
    """DeiT / timm training augmentation for `tf.data`: per example and per batch.

    Per example, on one image (`__call__`): random resized crop,
    horizontal flip, optional colour jitter, RandAugment; returns float32 in
    [0, 1]. The pipelines run `normalized` (the same steps, normalised; with
    the fast RandAugment the uint8-grid pixels are normalised directly) and
    then `erase` (random erasing works on normalised pixels, as timm's).
    Per batch (`mix_batch`):
    one-hot labels with label smoothing, then with probability `mix_prob`
    either Keras `CutMix` (probability `switch_prob`, timm's
    `mixup_switch_prob`) or Keras `MixUp`.

    With a teacher's label map (token labeling), `with_label_map` runs the
    released SP-ViT / LV-ViT order instead: flip and RandAugment move the
    map with the image, the random resized crop only records its box.

    Labels: with `mixup_alpha`, `cutmix_alpha` or `label_smoothing` set
    (`needs_one_hot`), batches carry one-hot float32 labels `(batch,
    num_classes)`; otherwise sparse int32.

    RandAugment and random erasing follow timm (`rand_augment`,
    `random_erasing`: the op list, magnitudes and their noise, the
    erasing boxes and N(0, 1) noise). timm turns colour jitter off when
    RandAugment is on; so do the recipes (`color_jitter=None`). Differences
    from timm worth knowing: Keras `MixUp`/`CutMix` draw a weight (and a box)
    per sample and pair samples by a random permutation (timm: one weight
    and box per batch, partner = the reversed batch).

    Args:
        scale: crop area range for `random_resized_crop`.
        ratio: crop aspect range for `random_resized_crop`.
        interpolation: resize method of the crop; RandAugment's geometric
            operations use it too when it is `"bilinear"` or `"bicubic"`.
        hflip: float in [0, 1]. Probability of a horizontal flip.
        color_jitter: `None`, a float (brightness = contrast = saturation) or
            a `(brightness, contrast, saturation, hue)` tuple.
        randaugment: `None`, a timm policy string (`"rand-m9-mstd0.5-inc1"`,
            see `rand_augment.parse_policy`), a `rand_augment.RandAugment`,
            or a `keras.layers.RandAugment` instance (Keras' semantics, run
            per image; about 10x slower inside `tf.data`).
        random_erasing: a probability in [0, 1] (timm's random erasing after
            normalisation; 0 disables it) or a `keras.layers.RandomErasing`
            instance (run on [0, 1] pixels inside `__call__`).
        erasing_mode: `"pixel"`, `"rand"` or `"const"` (timm's `--remode`).
        erasing_count: int >= 1. Up to this many boxes (timm's `--recount`).
        mixup_alpha: float >= 0. Beta parameter of MixUp; 0 disables it.
        cutmix_alpha: float in [0, 1]. Beta parameter of CutMix (Keras bounds
            it by 1); 0 disables it.
        mix_prob: float in [0, 1]. Probability that a batch is mixed at all.
        switch_prob: float in [0, 1]. Probability of CutMix rather than MixUp
            when both are enabled.
        label_smoothing: float in [0, 1).
        batch_rand_augment: bool. Pipelines apply the fast RandAugment per
            batch (`example` in the per-example map, `finish_batch` after
            `batch`: `RandAugment.apply_batch`, no per-image control flow)
            instead of per image. The batches are identical either way. Off
            by default: on the 2-core CI machine it took the same CPU time
            per image as the per-image path and less throughput (see
            `benchmarks/input_pipeline.py`, row `train_batched`).
        seed: int or `None`. Seeds the Keras layers' generators. The
            stateless parts use the seed the pipeline gives each call.

    Example:

    >>> augment = TrainAugment.deit(seed=0)
    >>> image = augment(tf.zeros((40, 60, 3), "uint8"), 32, seed=tf.constant([0, 1]))
    >>> image = augment.erase(normalize(image), seed=tf.constant([0, 1]))
    """

    def __init__(
        self,
        *,
        scale=(0.08, 1.0),
        ratio=(3 / 4, 4 / 3),
        interpolation="bicubic",
        hflip=0.5,
        color_jitter=None,
        randaugment=None,
        random_erasing=0.0,
        erasing_mode="pixel",
        erasing_count=1,
        mixup_alpha=0.0,
        cutmix_alpha=0.0,
        mix_prob=1.0,
        switch_prob=0.5,
        label_smoothing=0.0,
        batch_rand_augment=False,
        seed=None,
    ):
        # === Config ===
        self.scale = check_increasing_pair(scale, "scale", 0.0, 1.0)
        self.ratio = check_increasing_pair(ratio, "ratio", 0.0)
        check_interpolation(interpolation)
        self.interpolation = interpolation
        self.hflip = check_probability(hflip, "hflip")
        if isinstance(color_jitter, (int, float)) and not isinstance(color_jitter, bool):
            color_jitter = (color_jitter, color_jitter, color_jitter, 0.0)
        if color_jitter is not None and (
            not isinstance(color_jitter, (tuple, list)) or len(color_jitter) != 4
        ):
            raise ValueError(
                "Expected `color_jitter` to be None, a float or a (brightness, contrast, "
                f"saturation, hue) tuple. Received: color_jitter={color_jitter!r}"
            )
        self.color_jitter = None if color_jitter is None else tuple(color_jitter)
        self.randaugment = randaugment or None
        self.random_erasing = random_erasing
        if erasing_mode not in ERASING_MODES:
            raise ValueError(
                f"Expected `erasing_mode` in {list(ERASING_MODES)}. "
                f"Received: erasing_mode={erasing_mode!r}"
            )
        self.erasing_mode = erasing_mode
        if not isinstance(erasing_count, int) or isinstance(erasing_count, bool) or erasing_count < 1:
            raise ValueError(
                f"Expected `erasing_count` to be an int >= 1. Received: erasing_count={erasing_count!r}"
            )
        self.erasing_count = erasing_count
        if not isinstance(mixup_alpha, (int, float)) or mixup_alpha < 0:
            raise ValueError(f"Expected `mixup_alpha` >= 0. Received: mixup_alpha={mixup_alpha!r}")
        self.mixup_alpha = float(mixup_alpha)
        self.cutmix_alpha = check_probability(cutmix_alpha, "cutmix_alpha")
        self.mix_prob = check_probability(mix_prob, "mix_prob")
        self.switch_prob = check_probability(switch_prob, "switch_prob")
        if not isinstance(label_smoothing, (int, float)) or not 0.0 <= label_smoothing < 1.0:
            raise ValueError(
                "Expected `label_smoothing` in [0, 1). "
                f"Received: label_smoothing={label_smoothing!r}"
            )
        self.label_smoothing = float(label_smoothing)
        if not isinstance(batch_rand_augment, bool):
            raise ValueError(
                "Expected `batch_rand_augment` to be True or False. "
                f"Received: batch_rand_augment={batch_rand_augment!r}"
            )
        self.batch_rand_augment = batch_rand_augment
        self.seed = seed

        # === Per-image steps === (created here, never inside a mapped function)
        self._rand_augment = None
        self._keras_randaugment = None
        if isinstance(randaugment, str):
            self._rand_augment = RandAugment(
                randaugment,
                interpolation=interpolation if interpolation in ("bilinear", "bicubic") else "bicubic",
            )
        elif isinstance(randaugment, RandAugment):
            self._rand_augment = randaugment
        elif isinstance(randaugment, keras.layers.RandAugment):
            self._keras_randaugment = randaugment
            if hasattr(randaugment, "equalization"):
                randaugment.equalization = TFDataEqualization(value_range=randaugment.value_range)
        elif randaugment:
            raise ValueError(
                "Expected `randaugment` to be None, a policy string such as "
                "'rand-m9-mstd0.5-inc1', a keras_spvit RandAugment or a keras.layers.RandAugment. "
                f"Received: randaugment={randaugment!r}"
            )
        self._keras_erasing = None
        self._erasing_probability = 0.0
        if isinstance(random_erasing, keras.layers.RandomErasing):
            self._keras_erasing = random_erasing
        elif isinstance(random_erasing, bool) or not isinstance(random_erasing, (int, float)):
            raise ValueError(
                "Expected `random_erasing` to be a probability in [0, 1] or a "
                f"keras.layers.RandomErasing. Received: random_erasing={random_erasing!r}"
            )
        else:
            self._erasing_probability = check_probability(random_erasing, "random_erasing")
            self.random_erasing = self._erasing_probability
        self._mixup = keras.layers.MixUp(alpha=self.mixup_alpha, seed=seed) if mixup_alpha else None
        self._cutmix = (
            keras.layers.CutMix(factor=(self.cutmix_alpha, self.cutmix_alpha), seed=seed)
            if cutmix_alpha
            else None
        )

    @classmethod
    def deit(cls, seed=None, **overrides):
        """DeiT's ImageNet augmentation (timm's settings in DeiT's `main.py`).

        Random resized crop (bicubic), flip, timm's RandAugment
        `rand-m9-mstd0.5-inc1`, random erasing 0.25 (pixel mode, one box),
        MixUp 0.8 / CutMix 1.0 switched at 0.5, label smoothing 0.1.
        `overrides` replace any of these.
        """
        config = {
            "randaugment": "rand-m9-mstd0.5-inc1",
            "random_erasing": 0.25,
            "mixup_alpha": 0.8,
            "cutmix_alpha": 1.0,
            "label_smoothing": 0.1,
            "seed": seed,
        }
        config.update(overrides)
        return cls(**config)

    @classmethod
    def from_recipe(cls, recipe, seed=None):
        """The augmentation a training recipe asks for (label smoothing stays in the loss).

        Args:
            recipe: a `keras_spvit.training.Recipe` (any object with its
                `crop_scale`, `crop_ratio`, `horizontal_flip`, `randaugment`,
                `random_erasing`, `erasing_mode`, `erasing_count`,
                `mixup_alpha` and `cutmix_alpha` fields).
            seed: optional int.

        Example:

        >>> TrainAugment.from_recipe(keras_spvit.training.get_recipe("digits"), seed=0)
        """
        return cls(
            scale=recipe.crop_scale,
            ratio=recipe.crop_ratio,
            hflip=0.5 if recipe.horizontal_flip else 0.0,
            randaugment=recipe.randaugment,
            random_erasing=recipe.random_erasing,
            erasing_mode=recipe.erasing_mode,
            erasing_count=recipe.erasing_count,
            mixup_alpha=recipe.mixup_alpha,
            cutmix_alpha=recipe.cutmix_alpha,
            label_smoothing=0.0,
            seed=seed,
        )

    @property
    def mixes(self):
        """Whether `mix_batch` mixes images (MixUp or CutMix is enabled)."""
        return bool(self.mixup_alpha or self.cutmix_alpha) and self.mix_prob > 0

    @property
    def needs_one_hot(self):
        """Whether batches carry one-hot float labels (mixing or label smoothing)."""
        return self.mixes or self.label_smoothing > 0

    @property
    def batches_rand_augment(self):
        """Whether pipelines apply RandAugment per batch (`example` + `finish_batch`).

        True with `batch_rand_augment=True` and the package's fast
        RandAugment (a policy string, or a `RandAugment` with `exact=False`);
        the PIL-exact mode and Keras' layer always run per image in `__call__`.
        """
        return (
            self.batch_rand_augment
            and self._rand_augment is not None
            and not self._rand_augment.exact
        )

    @property
    def erases(self):
        """Whether `erase` does anything (timm's random erasing is on)."""
        return self._erasing_probability > 0

    def get_config(self):
        return {
            "scale": self.scale,
            "ratio": self.ratio,
            "interpolation": self.interpolation,
            "hflip": self.hflip,
            "color_jitter": self.color_jitter,
            "randaugment": self.randaugment,
            "random_erasing": self.random_erasing,
            "erasing_mode": self.erasing_mode,
            "erasing_count": self.erasing_count,
            "mixup_alpha": self.mixup_alpha,
            "cutmix_alpha": self.cutmix_alpha,
            "mix_prob": self.mix_prob,
            "switch_prob": self.switch_prob,
            "label_smoothing": self.label_smoothing,
            "batch_rand_augment": self.batch_rand_augment,
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"TrainAugment({args})"

    def _crop_flip_jitter(self, image, size, seed):
        crop_seed, flip_seed, jitter_seed = split_seed(seed, 3)
        image = random_resized_crop(
            image, size, self.scale, self.ratio, self.interpolation, crop_seed
        )
        if self.hflip:
            flip = tf.random.stateless_uniform((), flip_seed) < self.hflip
            image = tf.cond(flip, lambda: tf.reverse(image, axis=[1]), lambda: image)
        if self.color_jitter is not None:
            image = color_jitter(image, *self.color_jitter, seed=jitter_seed)
        return image

    @taken_branch_only
    def __call__(self, image, size, seed=None):
        """Augments one `(height, width, 3)` image to float32 `size` in [0, 1].

        Random erasing is not applied here (unless it is a Keras layer): it
        works on normalised pixels, see `erase`.
        """
        size = check_size(size, "size")
        image = self._crop_flip_jitter(image, size, seed)
        if self._rand_augment is not None:
            image = self._rand_augment(image, _fold(seed, 1))
        # The Keras layers run on a batch of one so every image draws its own
        # operations (a batched call picks RandAugment's ops once per batch).
        if self._keras_randaugment is not None:
            image = self._keras_randaugment(image[None], training=True)[0]
            image = tf.clip_by_value(image, 0.0, 1.0)
        if self._keras_erasing is not None:
            image = self._keras_erasing(image[None], training=True)[0]
        return tf.ensure_shape(image, (*size, image.shape[-1]))

    @taken_branch_only
    def normalized(self, image, size, seed=None, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        """`normalize(self(image, size, seed), mean, std)`: the pipelines' per-image step.

        With the package's fast RandAugment (and no Keras layer) the crop,
        already in [0, 1], is quantised as `round(255 * x)`, augmented on the
        uint8 grid (`RandAugment.augment_pixels`) and normalised as pixels
        (`normalize_pixels`): two passes over the image fewer than quantising,
        dividing by 255 and normalising, the same values within float32
        rounding (a few 1e-7 in absolute terms). Otherwise it is exactly
        `normalize(self(image, size, seed), mean, std)`. Random erasing
        follows (`erase`).

        Args:
            image: `(height, width, 3)` uint8 or float image in [0, 1].
            size: int or `(height, width)`. Output size.
            seed: the example's seed.
            mean: per-channel normalisation mean on 0..1 pixels.
            std: per-channel normalisation std on 0..1 pixels.

        Returns:
            float32 `(*size, 3)`, normalised.

        Example:

        >>> augment = TrainAugment(randaugment="rand-m9-mstd0.5-inc1", random_erasing=0.25)
        >>> x = augment.erase(augment.normalized(image, 224, seed), seed)
        """
        fast = self._rand_augment is not None and not self._rand_augment.exact
        if not fast or self._keras_erasing is not None:
            return normalize(self(image, size, seed), mean, std)
        size = check_size(size, "size")
        # In [0, 1] already (the crop's resize and the colour jitter clip):
        # `quantize` without its clip.
        pixels = tf.round(self._crop_flip_jitter(image, size, seed) * 255.0)
        pixels = self._rand_augment.augment_pixels(pixels, _fold(seed, 1))
        return tf.ensure_shape(normalize_pixels(pixels, mean, std), (*size, pixels.shape[-1]))

    @taken_branch_only
    def with_label_map(self, image, label_map, size, seed=None):
        """Augments one image and its teacher label map together, in the release's order.

        Token labeling's per-image steps (the released SP-ViT / LV-ViT
        `label_transforms_factory`): horizontal flip of the image and the
        map; colour jitter (image only, if set); RandAugment on the whole
        image, its geometric operations (Rotate, shears, relative
        translations) moving the map with the same parameters,
        nearest-neighbour on the map's own grid, fill 0; then the random
        resized crop of the image, whose box is only recorded, normalised by
        the image's height and width (`dense_targets.token_label_targets`
        crops the map with it through roi_align). Random erasing stays with
        `erase`, after normalisation. The draws come from the same streams
        of `seed` as `__call__` (crop, flip, jitter, RandAugment), so the
        same seed gives the same crop box and flip, though the image differs
        (`__call__` runs RandAugment after the crop).

        Args:
            image: `(height, width, 3)` uint8 or float image in [0, 1].
            label_map: `(h, w)` or `(h, w, channels)` map of any dtype on its
                own grid, e.g. the teacher's top-k scores and class ids
                stacked on the channel axis (class ids ride exactly through
                float32 up to 2**24).
            size: int or `(height, width)`. Output image size.
            seed: the example's seed.

        Returns:
            `(image, label_map, box)`: float32 `(*size, 3)` in [0, 1], the
            moved map (same shape and dtype), and float32 `(4,)`
            `(top, left, height, width)` of the crop over the image's height
            and width.

        Example:

        >>> augment = TrainAugment(randaugment="rand-m9-mstd0.5-inc1")
        >>> image, label_map, box = augment.with_label_map(
        ...     tf.zeros((40, 60, 3), "uint8"), tf.zeros((6, 6, 10)), 32, seed=[0, 1])
        """
        if self._keras_randaugment is not None:
            raise ValueError(
                "Keras' RandAugment layer cannot move a label map; use a policy string or a "
                f"keras_spvit RandAugment. Received: randaugment={self.randaugment!r}"
            )
        size = check_size(size, "size")
        crop_seed, flip_seed, jitter_seed = split_seed(seed, 3)
        image = to_float_image(image)
        label_map = tf.convert_to_tensor(label_map)
        if label_map.shape.rank not in (2, 3):
            raise ValueError(
                "Expected a label map (h, w) or (h, w, channels). "
                f"Received: label_map.shape={label_map.shape}"
            )
        map_shape = label_map.shape
        if self.hflip:
            flip = tf.random.stateless_uniform((), flip_seed) < self.hflip
            image, label_map = tf.cond(
                flip,
                lambda: (tf.reverse(image, axis=[1]), tf.reverse(label_map, axis=[1])),
                lambda: (image, label_map),
            )
        if self.color_jitter is not None:
            image = color_jitter(image, *self.color_jitter, seed=jitter_seed)
        if self._rand_augment is not None:
            image, label_map = self._rand_augment(image, _fold(seed, 1), label_map=label_map)
        shape = tf.shape(image)
        top, left, crop_h, crop_w = sample_crop_box(
            shape[0], shape[1], self.scale, self.ratio, crop_seed
        )
        crop = tf.slice(image, [top, left, 0], [crop_h, crop_w, -1])
        crop = resize_image(crop, size, self.interpolation)
        if self._keras_erasing is not None:
            crop = self._keras_erasing(crop[None], training=True)[0]
        box = tf.cast(tf.stack([top, left, crop_h, crop_w]), tf.float32) / tf.cast(
            tf.stack([shape[0], shape[1], shape[0], shape[1]]), tf.float32
        )
        return (
            tf.ensure_shape(crop, (*size, image.shape[-1])),
            tf.ensure_shape(label_map, map_shape),
            box,
        )

    @taken_branch_only
    def example(self, image, size, seed=None):
        """The per-example half of `__call__` when RandAugment runs per batch.

        Crop, flip and colour jitter as `__call__`, then the image is
        quantised to RandAugment's uint8 grid and RandAugment's draws are made
        with the seed `__call__` gives it; `finish_batch` applies them to the
        batch. So `finish_batch` on a batch of `example` outputs gives what
        `erase(normalized(image, size, seed), seed)` gives per image.

        Args:
            image: `(height, width, 3)` uint8 or float image.
            size: int or `(height, width)`.
            seed: the example's seed.

        Returns:
            `(pixels, draws)`: uint8 `(*size, 3)` and the tuple of
            `RandAugment.sample`.

        Example:

        >>> augment = TrainAugment(randaugment="rand-m9-mstd0.5-inc1", batch_rand_augment=True)
        >>> pixels, draws = augment.example(tf.zeros((40, 60, 3), "uint8"), 32, seed=[0, 1])
        """
        if not self.batches_rand_augment:
            raise ValueError(
                "Expected a TrainAugment whose RandAugment runs per batch (batch_rand_augment=True "
                "with a policy string or a fast RandAugment). Received: "
                f"batch_rand_augment={self.batch_rand_augment!r}, randaugment={self.randaugment!r}"
            )
        size = check_size(size, "size")
        image = self._crop_flip_jitter(image, size, seed)
        pixels = tf.ensure_shape(tf.cast(quantize(image), tf.uint8), (*size, 3))
        return pixels, self._rand_augment.sample(_fold(seed, 1))

    @taken_branch_only
    def finish_batch(self, pixels, draws, seeds, mean, std):
        """The per-batch half: RandAugment, normalisation, random erasing.

        Args:
            pixels: uint8 `(batch, height, width, 3)` from `example`.
            draws: `example`'s draws, stacked over the batch.
            seeds: `(batch, 2)` the examples' seeds (for erasing).
            mean: per-channel normalisation mean on [0, 1] pixels.
            std: per-channel normalisation std.

        Returns:
            float32 `(batch, height, width, 3)` normalised images, equal to
            `erase(normalized(image, size, seed, mean, std), seed)` image by
            image.

        Example:

        >>> images = augment.finish_batch(pixels[None], [d[None] for d in draws],
        ...                               tf.constant([[0, 1]]), IMAGENET_MEAN, IMAGENET_STD)
        """
        pixels = self._rand_augment.apply_batch(pixels, draws, as_pixels=True)
        images = normalize_pixels(tf.cast(pixels, tf.float32), mean, std)
        if not self.erases:
            return images
        # Erasing draws per image (a box, or nothing three times in four):
        # one loop over the batch, as cheap as the per-example map was.
        return tf.map_fn(
            lambda args: self.erase(*args),
            (images, seeds),
            fn_output_signature=tf.TensorSpec(images.shape[1:], tf.float32),
        )

    def erase(self, image, seed=None):
        """timm's random erasing on one NORMALISED image (identity when off).

        Erased boxes hold N(0, 1) noise (`"pixel"`), an N(0, 1) colour per box
        (`"rand"`) or zeros (`"const"`), as timm writes after normalising.

        Args:
            image: float `(height, width, channels)`, normalised.
            seed: the same per-example seed given to `__call__` (a different
                stream is derived from it).

        Returns:
            float32 image.
        """
        if not self.erases:
            return image
        channels = image.shape[-1]
        return random_erasing(
            image,
            self._erasing_probability,
            mode=self.erasing_mode,
            max_count=self.erasing_count,
            mean=(0.0,) * channels,
            std=(1.0,) * channels,
            seed=_fold(seed, 2),
        )

    def one_hot(self, labels, num_classes, smoothing=True):
        """Sparse labels -> float32 one-hot, smoothed as timm (`off = s / classes`)."""
        labels = tf.one_hot(tf.cast(labels, tf.int32), num_classes, dtype=tf.float32)
        if smoothing and self.label_smoothing:
            labels = labels * (1.0 - self.label_smoothing) + self.label_smoothing / num_classes
        return labels

    @taken_branch_only
    def mix_batch(self, images, labels, num_classes, seed=None):
        """Label smoothing, then MixUp or CutMix on one batch.

        Args:
            images: float32 `(batch, height, width, channels)`.
            labels: int `(batch,)` class ids.
            num_classes: int.
            seed: seed of the per-batch choices (mix or not, which mixer).

        Returns:
            `(images, labels)` with one-hot float32 labels `(batch, num_classes)`
            whose rows sum to 1.
        """
        labels = self.one_hot(labels, num_classes)
        if not self.mixes:
            return images, labels
        images = tf.cast(images, tf.float32)
        draws = tf.random.stateless_uniform((2,), as_seed(seed))

        def run(layer):
            out = _call_with_seed(layer, {"images": images, "labels": labels}, seed)
            return tf.cast(out["images"], tf.float32), tf.cast(out["labels"], tf.float32)

        if self._mixup is not None and self._cutmix is not None:

            def mix():
                return tf.cond(
                    draws[1] < self.switch_prob,
                    lambda: run(self._cutmix),
                    lambda: run(self._mixup),
                )
        else:

            def mix():
                return run(self._mixup if self._mixup is not None else self._cutmix)

        if self.mix_prob >= 1.0:
            return mix()
        return tf.cond(draws[0] < self.mix_prob, mix, lambda: (images, labels))


# === MixToken ===
