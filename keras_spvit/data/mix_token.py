"""LV-ViT's MixToken and the memory-light token targets it mixes.

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

Randomness is stateless: `seed` is as `keras_spvit.data.seeds` describes.
"""

import tensorflow as tf

from keras_spvit.data.seeds import split_seed
from keras_spvit.utils.validation import check_size


def _beta(alpha, seed):
    first, second = split_seed(seed, 2)
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
        seed: seed (see `keras_spvit.data.seeds`).

    Returns:
        `(top, left, bottom, right)` int32 token indices (bottom, right
        exclusive) and `lam`, the float32 share of tokens outside the box.

    Example:

    >>> (top, left, bottom, right), lam = sample_token_box(14, 14, seed=0)
    """
    if not isinstance(alpha, (int, float)) or alpha <= 0:
        raise ValueError(f"Expected `alpha` > 0. Received: alpha={alpha!r}")
    beta_seed, centre_seed = split_seed(seed, 2)
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
        seed: seed (see `keras_spvit.data.seeds`); one box per batch.
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
    patch_h, patch_w = check_size(patch_size, "patch_size")
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
    grid_h, grid_w = check_size(grid_shape, "grid_shape")
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
