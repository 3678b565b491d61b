"""Image augmentation that runs inside `tf.data` on every Keras backend.

Conventions shared by everything here:

- Images are channels-last. Functions accept `uint8` (0..255) or float images
  in [0, 1] and return float32 in [0, 1] (`eval_transform` also normalises).
- `seed` is a shape-`(2,)` integer tensor for TensorFlow's stateless random
  ops (what `tf.random.experimental.stateless_split` / `stateless_fold_in`
  produce), or a Python int (read as `[seed, 0]`). The same seed gives the same
  result. `None` draws a fresh, unreproducible seed on every call. The
  pipelines in `keras_spvit.data.pipelines` hand each example its own seed.
- `TrainAugment` (`keras_spvit.data.train_augment`) assembles these with
  RandAugment (`rand_augment`), random erasing (`random_erasing`) and
  MixUp / CutMix into the training recipe.

Dense token labels (LV-ViT's token labeling; the format of
`keras_spvit.training.losses.TokenLabelCrossEntropy`) are per patch token, on
the model's patch grid, row-major:

- `(batch, grid_h, grid_w, num_classes)` float: a class distribution per token;
- `(batch, grid_h, grid_w)` int: one class id per token;
- top-k: a `(values, indices)` pair of `(batch, grid_h, grid_w, k)` tensors, or
  the same packed as one `(batch, grid_h, grid_w, k, 2)` float32 tensor
  (`keras_spvit.training.losses.pack_top_k`).

Ids and top-k are the memory-light forms (`token_targets` makes them from
image labels): per 1,024-image batch at 224 px and 1,000 classes, 0.8 MB
(int32 ids) or 3.2 MB (packed top-2) instead of 803 MB dense.

`grid_h = image_height // patch_size`, `grid_w = image_width // patch_size`.
"""

import math

import tensorflow as tf

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

INTERPOLATIONS = (
    "area",
    "bicubic",
    "bilinear",
    "gaussian",
    "lanczos3",
    "lanczos5",
    "mitchellcubic",
    "nearest",
)


# === Helpers ===


def _pair(value, name):
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    if (
        not isinstance(value, (tuple, list))
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    ):
        raise ValueError(
            f"Expected `{name}` to be a positive int or a pair of positive ints. "
            f"Received: {name}={value!r}"
        )
    return tuple(value)


def _range(value, name, low=0.0, high=math.inf):
    if (
        not isinstance(value, (tuple, list))
        or len(value) != 2
        or not low <= value[0] <= value[1] <= high
    ):
        raise ValueError(
            f"Expected `{name}` to be an increasing pair in [{low}, {high}]. "
            f"Received: {name}={value!r}"
        )
    return (float(value[0]), float(value[1]))


def _probability(value, name):
    if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"Expected `{name}` in [0, 1]. Received: {name}={value!r}")
    return float(value)


def _check_interpolation(interpolation):
    if interpolation not in INTERPOLATIONS:
        raise ValueError(
            f"Expected `interpolation` in {list(INTERPOLATIONS)}. "
            f"Received: interpolation={interpolation!r}"
        )


def as_seed(seed):
    """A shape-`(2,)` int64 seed for stateless ops from an int, a seed tensor or `None`."""
    if seed is None:
        return tf.random.uniform((2,), maxval=tf.int64.max, dtype=tf.int64)
    if isinstance(seed, int) and not isinstance(seed, bool):
        return tf.constant([seed, 0], tf.int64)
    seed = tf.convert_to_tensor(seed)
    if not seed.dtype.is_integer or seed.shape.rank != 1 or seed.shape[0] not in (None, 2):
        raise ValueError(
            "Expected `seed` to be an int or an integer tensor of shape (2,). "
            f"Received: seed={seed!r}"
        )
    return tf.cast(seed, tf.int64)


def _split(seed, num):
    return tf.unstack(tf.random.experimental.stateless_split(as_seed(seed), num))


def to_float_image(image):
    """`uint8` 0..255 -> float32 0..1; float images are cast to float32 unchanged."""
    image = tf.convert_to_tensor(image)
    if image.dtype == tf.uint8:
        return tf.cast(image, tf.float32) / 255.0
    if not image.dtype.is_floating:
        raise ValueError(
            "Expected a uint8 image (0..255) or a float image (0..1). "
            f"Received: dtype={image.dtype}"
        )
    return tf.cast(image, tf.float32)


def _resize(image, size, interpolation):
    # Antialiasing makes downscaling match PIL (what timm/torchvision use on
    # images); bicubic overshoots, so clip back to the pixel range like PIL.
    image = tf.image.resize(image, size, method=interpolation, antialias=True)
    return tf.clip_by_value(image, 0.0, 1.0)


def normalize(image, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """`(image - mean) / std` per channel, for float images in [0, 1].

    The models of this package expect ImageNet statistics on 0..1 pixels
    (`IMAGENET_MEAN`, `IMAGENET_STD`, timm's defaults).

    Args:
        image: float tensor `(..., channels)` in [0, 1] (`uint8` is scaled first).
        mean: per-channel means, one per channel.
        std: per-channel standard deviations, positive.

    Example:

    >>> normalize(tf.fill((2, 2, 3), 0.485))[0, 0, 0]  # 0.0
    """
    if len(mean) != len(std) or min(std) <= 0:
        raise ValueError(
            "Expected `mean` and `std` of equal length with positive std. "
            f"Received: mean={mean!r}, std={std!r}"
        )
    image = to_float_image(image)
    return (image - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)


# === Crops ===


def sample_crop_box(height, width, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), seed=None):
    """Samples an Inception-style crop box, as torchvision's `RandomResizedCrop`.

    Ten attempts draw an area fraction uniformly in `scale` and an aspect ratio
    (width / height) log-uniformly in `ratio`; side lengths are rounded, and
    the first attempt that fits is placed uniformly at random. If none fits,
    the fallback is a central crop of the whole image clamped to `ratio`.
    Every attempt is drawn at once from the stateless seed (no loop).

    Args:
        height: int or scalar int tensor. Image height.
        width: int or scalar int tensor. Image width.
        scale: increasing pair in [0, 1]. Range of the crop's area fraction.
        ratio: increasing positive pair. Range of the crop's width / height.
        seed: seed (see the module docstring).

    Returns:
        `(top, left, crop_height, crop_width)`: int32 scalar tensors.

    Example:

    >>> top, left, h, w = sample_crop_box(224, 300, seed=0)
    """
    scale = _range(scale, "scale", 0.0, 1.0)
    ratio = _range(ratio, "ratio", 0.0)
    if ratio[0] <= 0:
        raise ValueError(f"Expected positive `ratio`. Received: ratio={ratio!r}")
    attempts = 10
    area_seed, ratio_seed, offset_seed = _split(seed, 3)
    # float64 so the rounding matches torchvision's Python floats.
    height = tf.cast(height, tf.float64)
    width = tf.cast(width, tf.float64)
    area = (
        height
        * width
        * tf.random.stateless_uniform((attempts,), area_seed, scale[0], scale[1], dtype=tf.float64)
    )
    aspect = tf.exp(
        tf.random.stateless_uniform(
            (attempts,), ratio_seed, math.log(ratio[0]), math.log(ratio[1]), dtype=tf.float64
        )
    )
    # tf.round rounds half to even, like Python's round().
    widths = tf.round(tf.sqrt(area * aspect))
    heights = tf.round(tf.sqrt(area / aspect))
    fits = (widths > 0) & (widths <= width) & (heights > 0) & (heights <= height)
    first = tf.reduce_min(tf.where(fits, tf.range(attempts), attempts))
    found = first < attempts
    first = tf.minimum(first, attempts - 1)

    in_ratio = width / height
    fallback_w = tf.where(in_ratio > ratio[1], tf.round(height * ratio[1]), width)
    fallback_h = tf.where(in_ratio < ratio[0], tf.round(width / ratio[0]), height)
    crop_h = tf.where(found, heights[first], fallback_h)
    crop_w = tf.where(found, widths[first], fallback_w)

    uniform = tf.random.stateless_uniform((2,), offset_seed, dtype=tf.float64)
    top = tf.where(
        found, tf.floor(uniform[0] * (height - crop_h + 1)), tf.floor((height - crop_h) / 2)
    )
    left = tf.where(
        found, tf.floor(uniform[1] * (width - crop_w + 1)), tf.floor((width - crop_w) / 2)
    )
    return tuple(tf.cast(v, tf.int32) for v in (top, left, crop_h, crop_w))


def random_resized_crop(
    image, size, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), interpolation="bicubic", seed=None
):
    """Inception-style random crop resized to `size` (torchvision `RandomResizedCrop`).

    The box comes from `sample_crop_box` (same algorithm as torchvision: ten
    attempts, then a central crop clamped to `ratio`); the crop is resized
    with antialiasing, as PIL does. Keras has no such layer.

    Args:
        image: `(height, width, channels)`, `uint8` or float in [0, 1].
        size: int or `(height, width)`. Output size.
        scale: increasing pair in [0, 1]. Range of the crop's area fraction.
        ratio: increasing positive pair. Range of the crop's width / height.
        interpolation: a `tf.image.resize` method name; `"bicubic"` as timm.
        seed: seed (see the module docstring).

    Returns:
        float32 `(size_h, size_w, channels)` in [0, 1].

    Example:

    >>> crop = random_resized_crop(tf.zeros((40, 60, 3), "uint8"), 32, seed=0)
    """
    size = _pair(size, "size")
    _check_interpolation(interpolation)
    image = to_float_image(image)
    shape = tf.shape(image)
    top, left, crop_h, crop_w = sample_crop_box(shape[0], shape[1], scale, ratio, seed)
    crop = tf.slice(image, [top, left, 0], [crop_h, crop_w, -1])
    crop = _resize(crop, size, interpolation)
    return tf.ensure_shape(crop, (*size, image.shape[-1]))


def eval_transform(
    image,
    size,
    crop_pct=0.875,
    interpolation="bicubic",
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
):
    """timm's evaluation transform: resize, center crop, normalise.

    The shorter side is resized to `int(size / crop_pct)` keeping the aspect
    ratio (the longer side becomes `int(short * long / short_before)`, as
    torchvision's `Resize(int)`), then the central `size` is cropped (offset
    `round((side - size) / 2)`, half to even as torchvision). For a
    non-square `(height, width)` size both sides are resized to
    `int(side / crop_pct)` first, as timm does.

    Args:
        image: `(height, width, channels)`, `uint8` or float in [0, 1].
        size: int or `(height, width)`. Output size.
        crop_pct: float in (0, 1]. Share of the resized image kept.
        interpolation: a `tf.image.resize` method name.
        mean: per-channel means for `normalize`, or `None` to skip it.
        std: per-channel standard deviations for `normalize`.

    Returns:
        float32 `(size_h, size_w, channels)`, normalised (in [0, 1] if
        `mean=None`).

    Example:

    >>> x = eval_transform(tf.zeros((375, 500, 3), "uint8"), 224)  # 256 x 341, crop 224
    """
    size = _pair(size, "size")
    _check_interpolation(interpolation)
    if not isinstance(crop_pct, (int, float)) or not 0.0 < crop_pct <= 1.0:
        raise ValueError(f"Expected `crop_pct` in (0, 1]. Received: crop_pct={crop_pct!r}")
    image = to_float_image(image)
    shape = tf.shape(image)
    height, width = tf.cast(shape[0], tf.float64), tf.cast(shape[1], tf.float64)
    if size[0] == size[1]:
        short = tf.constant(math.floor(size[0] / crop_pct), tf.float64)
        # torchvision's int(short * long / short_before), float64 in the same order.
        resized = tf.where(
            height <= width,
            tf.stack([short, tf.floor(short * width / height)]),
            tf.stack([tf.floor(short * height / width), short]),
        )
    else:
        resized = tf.constant([math.floor(s / crop_pct) for s in size], tf.float64)
    image = _resize(image, tf.cast(resized, tf.int32), interpolation)
    top = tf.cast(tf.round((resized[0] - size[0]) / 2.0), tf.int32)
    left = tf.cast(tf.round((resized[1] - size[1]) / 2.0), tf.int32)
    image = tf.slice(image, [top, left, 0], [size[0], size[1], -1])
    image = tf.ensure_shape(image, (*size, image.shape[-1]))
    if mean is None:
        return image
    return normalize(image, mean, std)


# === Colour ===


def color_jitter(image, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.0, seed=None):
    """torchvision-style colour jitter, stateless.

    Brightness scales by a factor in `[1 - b, 1 + b]`; contrast blends with the
    mean grey level and saturation with the grey image, factors in
    `[1 - x, 1 + x]`; hue shifts by up to `hue` turns (at most 0.5). Applied
    in this fixed order (torchvision permutes the order at random).

    Args:
        image: `(height, width, 3)`, `uint8` or float in [0, 1].
        brightness, contrast, saturation: non-negative floats; 0 disables.
        hue: float in [0, 0.5]; 0 disables.
        seed: seed (see the module docstring).

    Returns:
        float32 image in [0, 1].

    Example:

    >>> y = color_jitter(tf.random.uniform((8, 8, 3)), 0.4, 0.4, 0.4, seed=1)
    """
    for name, value in (
        ("brightness", brightness),
        ("contrast", contrast),
        ("saturation", saturation),
    ):
        if not isinstance(value, (int, float)) or value < 0:
            raise ValueError(f"Expected non-negative `{name}`. Received: {name}={value!r}")
    if not isinstance(hue, (int, float)) or not 0.0 <= hue <= 0.5:
        raise ValueError(f"Expected `hue` in [0, 0.5]. Received: hue={hue!r}")
    image = to_float_image(image)
    seeds = _split(seed, 4)

    def factor(amount, s):
        return tf.random.stateless_uniform((), s, max(0.0, 1.0 - amount), 1.0 + amount)

    if brightness:
        image = tf.clip_by_value(image * factor(brightness, seeds[0]), 0.0, 1.0)
    if contrast:
        mean = tf.reduce_mean(tf.image.rgb_to_grayscale(image))
        f = factor(contrast, seeds[1])
        image = tf.clip_by_value(f * image + (1.0 - f) * mean, 0.0, 1.0)
    if saturation:
        grey = tf.image.rgb_to_grayscale(image)
        f = factor(saturation, seeds[2])
        image = tf.clip_by_value(f * image + (1.0 - f) * grey, 0.0, 1.0)
    if hue:
        delta = tf.random.stateless_uniform((), seeds[3], -hue, hue)
        image = tf.clip_by_value(tf.image.adjust_hue(image, delta), 0.0, 1.0)
    return image


# === MixToken ===


def _beta(alpha, seed):
    first, second = _split(seed, 2)
    x = tf.random.stateless_gamma((), first, alpha, dtype=tf.float64)
    y = tf.random.stateless_gamma((), second, alpha, dtype=tf.float64)
    return x / (x + y)


def sample_token_box(grid_h, grid_w, alpha=1.0, seed=None):
    """Samples LV-ViT's MixToken box on a token grid.

    As the official `rand_bbox`: `lam ~ Beta(alpha, alpha)`, sides
    `int(grid * sqrt(1 - lam))`, a centre drawn uniformly among the tokens, the
    box `centre -/+ side // 2` clipped to the grid, and `lam` recomputed from
    the clipped box: `1 - box_tokens / grid_tokens`.

    Args:
        grid_h: int. Token rows.
        grid_w: int. Token columns.
        alpha: positive float. Beta parameter.
        seed: seed (see the module docstring).

    Returns:
        `(top, left, bottom, right)` int32 token indices (bottom, right
        exclusive) and `lam`, the float32 share of tokens outside the box.

    Example:

    >>> (top, left, bottom, right), lam = sample_token_box(14, 14, seed=0)
    """
    if not isinstance(alpha, (int, float)) or alpha <= 0:
        raise ValueError(f"Expected `alpha` > 0. Received: alpha={alpha!r}")
    beta_seed, centre_seed = _split(seed, 2)
    lam = _beta(float(alpha), beta_seed)
    cut = tf.sqrt(1.0 - lam)
    cut_h = tf.cast(tf.floor(grid_h * cut), tf.int32)
    cut_w = tf.cast(tf.floor(grid_w * cut), tf.int32)
    uniform = tf.random.stateless_uniform((2,), centre_seed, dtype=tf.float64)
    cy = tf.cast(tf.floor(uniform[0] * grid_h), tf.int32)
    cx = tf.cast(tf.floor(uniform[1] * grid_w), tf.int32)
    top = tf.clip_by_value(cy - cut_h // 2, 0, grid_h)
    bottom = tf.clip_by_value(cy + cut_h // 2, 0, grid_h)
    left = tf.clip_by_value(cx - cut_w // 2, 0, grid_w)
    right = tf.clip_by_value(cx + cut_w // 2, 0, grid_w)
    lam = 1.0 - tf.cast((bottom - top) * (right - left), tf.float32) / (grid_h * grid_w)
    return (top, left, bottom, right), lam


def mix_token(images, labels, dense_labels=None, *, patch_size, alpha=1.0, seed, num_classes=None):
    """LV-ViT's MixToken on input pixels: a CutMix box aligned to the patch grid.

    A box of tokens is sampled as official LV-ViT (`sample_token_box`); its
    pixels are pasted from the batch in reverse order (`x.flip(0)`); class
    labels are mixed by the exact share `lam` of tokens left outside the box;
    dense token labels inside the box take the reversed sample's labels.

    Official LV-ViT mixes after the convolutional stem (feature level) inside
    the model. This mixes pixels aligned to the patch grid so that it runs in
    `tf.data`: with a non-overlapping patch stem the two agree token for token;
    with an overlapping convolutional stem (LV-ViT's 4-layer stem) the tokens on
    the box border see pixels of both images, whose features differ from a
    feature-level paste.

    Args:
        images: `(batch, height, width, channels)`, height and width multiples
            of the patch size.
        labels: float `(batch, num_classes)` (one-hot or soft) or int
            `(batch,)` with `num_classes`.
        dense_labels: optional token labels in any format of the module
            docstring: `(batch, grid_h, grid_w, num_classes)` float,
            `(batch, grid_h, grid_w)` int ids, a top-k `(values, indices)`
            pair or its packed `(batch, grid_h, grid_w, k, 2)` form.
        patch_size: int or `(height, width)`. Pixels per token.
        alpha: positive float. Beta parameter (LV-ViT: 1.0).
        seed: seed (see the module docstring); one box per batch.
        num_classes: int. Needed for sparse `labels`.

    Returns:
        `(images, labels)`, or `(images, labels, dense_labels)` when
        `dense_labels` is given; labels become float32 `(batch, num_classes)`.

    Example:

    >>> images = tf.random.uniform((4, 32, 32, 3))
    >>> mixed, soft = mix_token(images, tf.range(4), patch_size=8, seed=0, num_classes=4)

    On batches of a pipeline, with a seed per batch drawn in order:

    >>> generator = tf.random.Generator.from_seed(0)
    >>> train = train.map(lambda x, y: mix_token(
    ...     x, y, patch_size=16, seed=generator.make_seeds(1)[:, 0], num_classes=1000))
    """
    patch_h, patch_w = _pair(patch_size, "patch_size")
    images = tf.convert_to_tensor(images)
    height, width = images.shape[1], images.shape[2]
    if height is None or width is None:
        raise ValueError(
            "Expected images with a static height and width (batch them with a fixed "
            f"image size). Received: images.shape={images.shape}"
        )
    if height % patch_h or width % patch_w:
        raise ValueError(
            f"Expected image sides divisible by the patch size. Received: images.shape="
            f"{images.shape}, patch_size={patch_size!r}"
        )
    grid_h, grid_w = height // patch_h, width // patch_w
    labels = tf.convert_to_tensor(labels)
    if labels.dtype.is_integer:
        if num_classes is None:
            raise ValueError(
                "Sparse `labels` need `num_classes` to be mixed. Received: num_classes=None"
            )
        labels = tf.one_hot(tf.cast(labels, tf.int32), num_classes, dtype=tf.float32)
    labels = tf.cast(labels, tf.float32)

    (top, left, bottom, right), lam = sample_token_box(grid_h, grid_w, alpha, seed)
    rows = tf.range(grid_h)[:, None]
    cols = tf.range(grid_w)[None, :]
    token_mask = (rows >= top) & (rows < bottom) & (cols >= left) & (cols < right)
    pixel_mask = tf.repeat(tf.repeat(token_mask, patch_h, axis=0), patch_w, axis=1)
    mixed = tf.where(pixel_mask[None, :, :, None], tf.reverse(images, [0]), images)
    labels = lam * labels + (1.0 - lam) * tf.reverse(labels, [0])
    if dense_labels is None:
        return mixed, labels

    if isinstance(dense_labels, (tuple, list)):
        values, indices = (
            _paste_token_labels(t, token_mask, grid_h, grid_w, ranks=(4,)) for t in dense_labels
        )
        return mixed, labels, (values, indices)
    dense_labels = _paste_token_labels(dense_labels, token_mask, grid_h, grid_w, ranks=(3, 4, 5))
    return mixed, labels, dense_labels


def _paste_token_labels(dense_labels, token_mask, grid_h, grid_w, ranks):
    """Token labels inside the box taken from the reversed batch."""
    dense_labels = tf.convert_to_tensor(dense_labels)
    rank = dense_labels.shape.rank
    if rank not in ranks or tuple(dense_labels.shape[1:3]) != (grid_h, grid_w):
        raise ValueError(
            f"Expected dense labels (batch, {grid_h}, {grid_w}[, classes | , k[, 2]]) on "
            f"the {grid_h}x{grid_w} patch grid. Received: dense_labels.shape={dense_labels.shape}"
        )
    mask = tf.reshape(token_mask, (1, grid_h, grid_w) + (1,) * (rank - 3))
    return tf.where(mask, tf.reverse(dense_labels, [0]), dense_labels)


def token_targets(labels, grid_shape, k=2):
    """Image labels as memory-light token targets, every token the image's label.

    Int class ids become int32 token ids `(batch, grid_h, grid_w)`; soft
    labels `(batch, classes)` (MixUp, CutMix) become their `k` largest
    probabilities and classes, packed `(batch, grid_h, grid_w, k, 2)` float32
    (`keras_spvit.training.losses.pack_top_k`'s format). Both are what
    `mix_token` and `TokenLabelCrossEntropy` take; neither grows with the
    number of classes.

    Args:
        labels: `(batch,)` int or `(batch, classes)` float.
        grid_shape: `(grid_h, grid_w)` patch grid.
        k: positive int, classes kept per token for soft labels (2 covers
            a MixUp or CutMix pair exactly).

    Returns:
        The token targets.

    Example:

    >>> ids = token_targets(tf.constant([3, 1]), (14, 14))  # (2, 14, 14) int32
    >>> packed = token_targets(tf.one_hot([3, 1], 10), (14, 14))  # (2, 14, 14, 2, 2)
    """
    grid_h, grid_w = _pair(grid_shape, "grid_shape")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"Expected `k` to be a positive int. Received: k={k!r}")
    labels = tf.convert_to_tensor(labels)
    batch = tf.shape(labels)[0]
    if labels.dtype.is_integer:
        if labels.shape.rank != 1:
            raise ValueError(
                f"Expected int labels of shape (batch,). Received: labels.shape={labels.shape}"
            )
        return tf.broadcast_to(tf.cast(labels, tf.int32)[:, None, None], (batch, grid_h, grid_w))
    if labels.shape.rank != 2:
        raise ValueError(
            f"Expected float labels of shape (batch, classes). Received: labels.shape={labels.shape}"
        )
    values, indices = tf.math.top_k(tf.cast(labels, tf.float32), k=min(k, labels.shape[-1]))
    packed = tf.stack([values, tf.cast(indices, tf.float32)], axis=-1)
    return tf.broadcast_to(packed[:, None, None], (batch, grid_h, grid_w) + tuple(packed.shape[1:]))
