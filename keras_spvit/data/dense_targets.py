"""Dense token-labeling targets from a teacher's top-k label map and a crop box.

What the released SP-ViT / LV-ViT training does per batch (`tlt/data/mixup.py`:
`get_featuremaps`, `get_label`, `get_labelmaps_with_coords`), in `tf.data`:

1. the teacher's top-k logits per location are scattered into a dense map
   `(h, w, classes)` (0 elsewhere);
2. `roi_align` over the random-resized-crop box, with torchvision's semantics
   (`aligned=False`, `sampling_ratio=-1`, `spatial_scale=1`), gives one vector
   per token of the model's `grid`; a 1x1 align over the same box gives the
   class-token vector;
3. softmax over the classes, then label smoothing as `target * on + off`
   (`off = s / classes`, `on = 1 - s + off`), exactly as the release, which
   does not renormalise: a smoothed row sums to `on + classes * off =
   1 + s / classes`.

The box. The augmentation records the crop as `(top, left, height, width)`
normalised by the image's height and width (`TrainAugment.with_label_map`).
The release multiplies `(top, left, top + height, left + width)` by the map
WIDTH and subtracts 0.5, then hands it to torchvision, whose box format is
`(x1, y1, x2, y2)`: the crop's vertical range is read as the horizontal one,
i.e. the label map is cropped transposed (`box_order="release"`). On square
crops of a square map the two differ only by that transposition.
`box_order="consistent"` uses `(left, top, left + width, top + height)`
scaled by the map's width and height: the region the image crop shows. The
papers' numbers (SP-ViT-S 83.9, LV-ViT-S 83.3) were trained with the
release's order; the package's recipes use `"release"` by default so that a
run reproduces them (see `keras_spvit.data.pipelines.classification_pipeline`,
`box_order`).

Memory. Dense per-token targets are `(S, S, classes)` floats: 784 KB per
image at 14 x 14 tokens and 1,000 classes. After roi_align each token's logit
vector is non-zero on at most `M = (n + 1)^2 * k` classes (the `n x n`
samples of its bin read 2 x 2 locations each, all within `n + 1`
consecutive rows and columns, of k classes; `n` the largest samples-per-bin
count, `ceil(map_side / S)`): 45 at 14 x 14 tokens on the release's
18 x 18 top-5 maps, so `14 * 14 * 46 * 2` float32 = 72 KB per
image instead of 784 KB. With `p = softmax(z)`
over all classes, `Z = sum_c exp(z_c)`, the target `on * p_c + off` is a
background value `b = on / Z + off` on every class plus `on * (p_c - 1 / Z)`
on the support. `target_format="compact"` carries exactly that as
`(S, S, M + 1, 2)` float32 in the packed top-k layout of
`keras_spvit.training.losses` (value, class id), entry 0 with class id -1
meaning "every class", which `TokenLabelCrossEntropy` reads as
`value * sum_c log q_c`. The loss equals the dense target's loss.
"""

import math

import tensorflow as tf

from keras_spvit.utils.validation import check_size

BOX_ORDERS = ("release", "consistent")
TARGET_FORMATS = ("compact", "dense")


# === roi_align ===


def _axis_samples(start, end, length, bins, max_samples):
    """torchvision's sample rows (or columns) of every bin along one axis.

    Args:
        start, end: float64 `(batch,)` box coordinates on this axis.
        length: int. The map's size on this axis.
        bins: int. Output size on this axis.
        max_samples: int or scalar int tensor. Samples per bin to evaluate
            (>= every box's `ceil(roi / bins)`); the rest are masked.

    Returns:
        `(index, weight)`: int32 and float64 `(batch, bins, max_samples, 2)`:
        the two neighbouring rows of each sample and their bilinear weights,
        divided by the box's sample count (0 for masked and out-of-range
        samples), so that `sum(weight * map[index])` over samples and rows is
        the bin mean along this axis.
    """
    roi = tf.maximum(end - start, 1.0)
    bin_size = roi / bins
    count = tf.math.ceil(roi / bins)  # sampling_ratio=-1: adaptive, >= 1
    sample = tf.range(max_samples, dtype=tf.float64)
    pos = (
        start[:, None, None]
        + tf.range(bins, dtype=tf.float64)[None, :, None] * bin_size[:, None, None]
        + (sample[None, None, :] + 0.5) * (bin_size / count)[:, None, None]
    )
    used = sample[None, None, :] < count[:, None, None]
    inside = (pos >= -1.0) & (pos <= float(length))
    pos = tf.maximum(pos, 0.0)
    low = tf.floor(pos)
    last = low >= length - 1
    low = tf.where(last, tf.constant(length - 1, tf.float64), low)
    frac = tf.where(last, tf.zeros_like(pos), pos - low)
    high = tf.where(last, low, low + 1.0)
    keep = tf.cast(used & inside, tf.float64) / count[:, None, None]
    index = tf.cast(tf.stack([low, high], axis=-1), tf.int32)
    weight = tf.stack([(1.0 - frac) * keep, frac * keep], axis=-1)
    return index, weight


def _axis_matrix(index, weight, length):
    """`(batch, bins, length)` float64: the bin-mean weights of each row."""
    return tf.reduce_sum(
        tf.one_hot(index, length, dtype=tf.float64) * weight[..., None], axis=[2, 3]
    )


def _check_boxes(boxes):
    boxes = tf.convert_to_tensor(boxes)
    if boxes.shape.rank != 2 or boxes.shape[-1] != 4:
        raise ValueError(
            f"Expected boxes of shape (batch, 4) as (x1, y1, x2, y2). Received: boxes.shape={boxes.shape}"
        )
    return tf.cast(boxes, tf.float64)


def roi_align(maps, boxes, output_size):
    """torchvision's `roi_align(aligned=False, sampling_ratio=-1, spatial_scale=1)`, channels-last.

    One box per map. Each output bin is the mean of `ceil(roi_h / out_h) x
    ceil(roi_w / out_w)` bilinear samples (`roi = max(x2 - x1, 1)`), a sample
    at `y < -1` or `y > height` (`x` likewise) counting 0, coordinates below
    0 clamped to 0 and those at or past the last row / column reading it.
    Bilinear sampling and the bin mean are separable, so the result is
    `A_y @ map @ A_x^T` with per-box weight matrices (exact for any box: the
    number of samples is the largest the batch needs).

    Args:
        maps: float `(batch, height, width, channels)`.
        boxes: `(batch, 4)` `(x1, y1, x2, y2)` in map pixel coordinates
            (pixel `i`'s centre at `i`), torchvision's format and scale.
        output_size: int or `(out_h, out_w)`.

    Returns:
        float32 `(batch, out_h, out_w, channels)`.

    Example:

    >>> maps = tf.reshape(tf.range(16.0), (1, 4, 4, 1))
    >>> roi_align(maps, [[0.0, 0.0, 3.0, 3.0]], 1)[0, 0, 0, 0]  # mean of 3 x 3 samples: 7.5
    """
    out_h, out_w = check_size(output_size, "output_size")
    maps = tf.convert_to_tensor(maps)
    if maps.shape.rank != 4:
        raise ValueError(
            f"Expected maps of shape (batch, height, width, channels). Received: maps.shape={maps.shape}"
        )
    height, width = maps.shape[1], maps.shape[2]
    if height is None or width is None:
        raise ValueError(f"Expected maps with a static height and width. Received: maps.shape={maps.shape}")
    boxes = _check_boxes(boxes)
    x1, y1, x2, y2 = tf.unstack(boxes, axis=-1)
    samples_y = tf.cast(tf.reduce_max(tf.math.ceil(tf.maximum(y2 - y1, 1.0) / out_h)), tf.int32)
    samples_x = tf.cast(tf.reduce_max(tf.math.ceil(tf.maximum(x2 - x1, 1.0) / out_w)), tf.int32)
    rows = _axis_matrix(*_axis_samples(y1, y2, height, out_h, samples_y), height)
    cols = _axis_matrix(*_axis_samples(x1, x2, width, out_w, samples_x), width)
    return tf.einsum(
        "bph,bqw,bhwc->bpqc",
        tf.cast(rows, tf.float32),
        tf.cast(cols, tf.float32),
        tf.cast(maps, tf.float32),
    )


# === Targets ===


def label_box(box, map_shape, box_order="release"):
    """The torchvision `(x1, y1, x2, y2)` roi of a normalised crop box on a label map.

    Args:
        box: `(top, left, height, width)` of the crop, normalised by the
            image's height and width (`(4,)` or `(batch, 4)`).
        map_shape: `(h, w)` of the label map.
        box_order: `"release"`: the release's literal box,
            `(top, left, top + height, left + width) * w - 0.5` read as
            `(x1, y1, x2, y2)` (the crop transposed); `"consistent"`:
            `(left * w, top * h, (left + width) * w, (top + height) * h) - 0.5`.

    Returns:
        float64 tensor of `box`'s leading shape and 4.

    Example:

    >>> label_box([0.0, 0.5, 1.0, 0.5], (18, 18), "consistent")  # [8.5, -0.5, 17.5, 17.5]
    """
    if box_order not in BOX_ORDERS:
        raise ValueError(f"Expected `box_order` in {list(BOX_ORDERS)}. Received: box_order={box_order!r}")
    map_h, map_w = map_shape
    top, left, height, width = tf.unstack(tf.cast(box, tf.float64), axis=-1)
    if box_order == "release":
        corners = tf.stack([top, left, top + height, left + width], axis=-1) * float(map_w)
    else:
        corners = tf.stack(
            [left * map_w, top * map_h, (left + width) * map_w, (top + height) * map_h], axis=-1
        )
    return corners - 0.5


def max_samples_per_bin(map_shape, grid):
    """`n`: the most samples per bin and axis of any crop box on this map.

    A crop inside the image gives a roi of at most the map's larger side
    (the release scales both axes by the map width), so
    `n = ceil(max(h, w) / min(grid))`.

    Args:
        map_shape: `(h, w)` of the label map.
        grid: int or `(S_h, S_w)`: the model's token grid.

    Example:

    >>> max_samples_per_bin((18, 18), 14)  # 2
    """
    grid_h, grid_w = check_size(grid, "grid")
    map_h, map_w = check_size(tuple(map_shape), "map_shape")
    return max(1, math.ceil(max(map_h, map_w) / min(grid_h, grid_w)))


def compact_entries(map_shape, k, grid):
    """`M + 1`: the entries per token of the compact target (`M = (n + 1)^2 k`, plus the background).

    A bin's `n` samples per axis lie within `bin * (1 - 1 / n) <= n - 1`
    of each other, so their bilinear reads touch at most `n + 1`
    consecutive rows (and columns): `(n + 1)^2` locations of `k` classes
    each (tighter than the `4 n^2 k` reads).

    Example:

    >>> compact_entries((18, 18), 5, 14)  # (2 + 1) ** 2 * 5 + 1 = 46
    """
    n = max_samples_per_bin(map_shape, grid)
    return (n + 1) ** 2 * k + 1


def _smoothing_values(smoothing, num_classes):
    off = smoothing / num_classes
    return 1.0 - smoothing + off, off


def token_label_targets(
    scores,
    ids,
    box,
    *,
    num_classes,
    grid,
    smoothing=0.0,
    box_order="release",
    target_format="compact",
):
    """The release's class target and per-token targets of one example.

    Args:
        scores: float `(h, w, k)`: the teacher's top-k logits per location
            (after the joint augmentation moved them).
        ids: int `(h, w, k)` class ids of `scores` (distinct per location;
            duplicated ids would be summed, where the release keeps one).
        box: `(4,)` crop box `(top, left, height, width)` normalised by the
            image's height and width (`TrainAugment.with_label_map`).
        num_classes: int. Classes of the teacher's labels.
        grid: int or `(S_h, S_w)`: the model's token grid.
        smoothing: float in [0, 1). Label smoothing: `target * on + off`,
            `off = smoothing / num_classes`, `on = 1 - smoothing + off` (as
            the release: rows sum to `1 + smoothing / num_classes`).
        box_order: `"release"` (the papers' training, see the module
            docstring) or `"consistent"`.
        target_format: `"compact"` (default): per-token
            `(S_h, S_w, M + 1, 2)` float32 (value, class id; entry 0 has
            class id -1, "every class"; unused entries are `(0, 0)`), exact
            and independent of `num_classes`; or `"dense"`:
            `(S_h, S_w, num_classes)` float32.

    Returns:
        `(class_target, token_target)`: float32 `(num_classes,)` (the 1x1
        align over the whole box, softmax, smoothing) and the per-token target.

    Example:

    >>> scores = tf.random.normal((18, 18, 5)) * 5
    >>> ids = tf.random.uniform((18, 18, 5), 0, 1000, tf.int32)  # distinct in practice
    >>> cls, tokens = token_label_targets(scores, ids, [0.1, 0.2, 0.5, 0.6],
    ...                                   num_classes=1000, grid=14, smoothing=0.1)
    >>> tokens.shape  # (14, 14, 46, 2)
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"Expected `num_classes` to be a positive int. Received: num_classes={num_classes!r}")
    grid_h, grid_w = check_size(grid, "grid")
    if isinstance(smoothing, bool) or not isinstance(smoothing, (int, float)) or not 0.0 <= smoothing < 1.0:
        raise ValueError(f"Expected `smoothing` in [0, 1). Received: smoothing={smoothing!r}")
    if target_format not in TARGET_FORMATS:
        raise ValueError(
            f"Expected `target_format` in {list(TARGET_FORMATS)}. Received: target_format={target_format!r}"
        )
    scores = tf.cast(tf.convert_to_tensor(scores), tf.float32)
    ids = tf.cast(tf.convert_to_tensor(ids), tf.int32)
    if scores.shape.rank != 3 or not scores.shape.is_fully_defined() or scores.shape != ids.shape:
        raise ValueError(
            "Expected scores and ids of one static shape (h, w, k). "
            f"Received: scores.shape={scores.shape}, ids.shape={ids.shape}"
        )
    map_h, map_w, k = scores.shape
    on, off = _smoothing_values(float(smoothing), num_classes)
    roi = label_box(box, (map_h, map_w), box_order)
    x1, y1, x2, y2 = tf.unstack(roi[None], axis=-1)
    flat_scores = tf.reshape(scores, (-1, k))
    flat_ids = tf.reshape(ids, (-1, k))

    # Class target: the 1x1 align as weights per location.
    row_w = _axis_matrix(*_axis_samples(y1, y2, map_h, 1, math.ceil(max(map_h, map_w) + 1)), map_h)
    col_w = _axis_matrix(*_axis_samples(x1, x2, map_w, 1, math.ceil(max(map_h, map_w) + 1)), map_w)
    location_w = tf.reshape(tf.cast(row_w[0, 0][:, None] * col_w[0, 0][None, :], tf.float32), (-1, 1))
    logits = tf.math.unsorted_segment_sum(location_w * flat_scores, flat_ids, num_classes)
    class_target = tf.nn.softmax(logits) * on + off

    n = max_samples_per_bin((map_h, map_w), (grid_h, grid_w))
    # The box lies within the map's extent (a crop of the image), so `n` samples suffice.
    rows_i, rows_w = _axis_samples(y1, y2, map_h, grid_h, n)
    cols_i, cols_w = _axis_samples(x1, x2, map_w, grid_w, n)
    if target_format == "dense":
        dense = tf.math.unsorted_segment_sum(
            tf.reshape(flat_scores, (-1,)),
            tf.reshape(tf.range(map_h * map_w)[:, None] * num_classes + flat_ids, (-1,)),
            map_h * map_w * num_classes,
        )
        dense = tf.reshape(dense, (map_h, map_w, num_classes))
        aligned = tf.einsum(
            "ph,qw,hwc->pqc",
            tf.cast(_axis_matrix(rows_i, rows_w, map_h)[0], tf.float32),
            tf.cast(_axis_matrix(cols_i, cols_w, map_w)[0], tf.float32),
            dense,
        )
        return class_target, tf.nn.softmax(aligned) * on + off
    rows_i, rows_w = _window(_axis_matrix(rows_i, rows_w, map_h)[0], n + 1)
    cols_i, cols_w = _window(_axis_matrix(cols_i, cols_w, map_w)[0], n + 1)
    token_target = _compact_targets(
        flat_scores, flat_ids, map_w, rows_i, rows_w, cols_i, cols_w, num_classes, on, off
    )
    return class_target, token_target


def _window(matrix, size):
    """Each bin's `size` consecutive rows from its first non-zero weight: `(index, weight)`.

    Every non-zero weight of a bin lies in that window (`compact_entries`);
    rows past the map's end get weight 0.
    """
    length = matrix.shape[1]
    first = tf.argmax(tf.cast(matrix > 0, tf.int32), axis=1, output_type=tf.int32)
    index = first[:, None] + tf.range(size)[None, :]
    inside = index < length
    index = tf.minimum(index, length - 1)
    weight = tf.where(inside, tf.gather(matrix, index, batch_dims=1), tf.zeros((), matrix.dtype))
    return index, weight


def _compact_targets(flat_scores, flat_ids, map_w, rows_i, rows_w, cols_i, cols_w, num_classes, on, off):
    """`(S_h, S_w, M + 1, 2)`: background `(b, -1)`, then the merged support.

    `rows_i`, `rows_w`: `(S_h, R)` each bin's rows and weights (`cols_*` likewise).
    """
    grid_h, grid_w, k = rows_i.shape[0], cols_i.shape[0], flat_scores.shape[-1]
    reads = rows_i.shape[1]
    location = rows_i[:, None, :, None] * map_w + cols_i[None, :, None, :]  # (S_h, S_w, 2n, 2n)
    weight = tf.cast(rows_w[:, None, :, None] * cols_w[None, :, None, :], tf.float32)
    tokens, entries = grid_h * grid_w, reads * reads * k
    values = tf.reshape(weight[..., None] * tf.gather(flat_scores, location), (tokens, entries))
    ids = tf.reshape(tf.gather(flat_ids, location), (tokens, entries))

    # Merge duplicated classes: sort each token's ids, sum the runs.
    order = tf.argsort(ids, axis=-1, stable=True)
    ids = tf.gather(ids, order, batch_dims=1)
    values = tf.gather(values, order, batch_dims=1)
    first = tf.concat([tf.ones((tokens, 1), tf.bool), ids[:, 1:] != ids[:, :-1]], axis=1)
    slot = tf.cumsum(tf.cast(first, tf.int32), axis=1) - 1
    used_count = slot[:, -1:] + 1
    segment = slot + tf.range(tokens)[:, None] * entries
    logits = tf.reshape(tf.math.unsorted_segment_sum(values, segment, tokens * entries), (tokens, entries))
    merged_ids = tf.reshape(tf.math.unsorted_segment_max(ids, segment, tokens * entries), (tokens, entries))
    used = tf.range(entries)[None, :] < used_count

    # Softmax over all classes: the off-support classes have logit 0.
    shift = tf.maximum(tf.reduce_max(tf.where(used, logits, 0.0), axis=1, keepdims=True), 0.0)
    exp = tf.where(used, tf.exp(logits - shift), 0.0)
    background = tf.exp(-shift)
    total = tf.cast(num_classes - used_count, tf.float32) * background + tf.reduce_sum(exp, 1, keepdims=True)
    p_background = background / total
    support = tf.where(used, on * (exp / total - p_background), 0.0)
    values = tf.concat([on * p_background + off, support], axis=1)
    ids = tf.concat([-tf.ones((tokens, 1), tf.int32), tf.where(used, merged_ids, 0)], axis=1)
    packed = tf.stack([values, tf.cast(ids, tf.float32)], axis=-1)
    return tf.reshape(packed, (grid_h, grid_w, entries + 1, 2))


def image_label_targets(label, *, num_classes, grid, entries, smoothing=0.0):
    """Targets from the image label alone, in the layout of `token_label_targets` (compact).

    For an example without a teacher label (`allow_missing_labels`): the
    smoothed one-hot class target, and every token the same as
    `(off, -1)`, `(on - off, label)`, then zeros.

    Args:
        label: int scalar class id.
        num_classes: int.
        grid: int or `(S_h, S_w)`.
        entries: int. `M + 1` of the compact targets it stands beside.
        smoothing: float in [0, 1).

    Returns:
        `(class_target (num_classes,), token_target (S_h, S_w, entries, 2))`.

    Example:

    >>> cls, tokens = image_label_targets(3, num_classes=10, grid=8, entries=46, smoothing=0.1)
    """
    grid_h, grid_w = check_size(grid, "grid")
    on, off = _smoothing_values(float(smoothing), num_classes)
    label = tf.cast(label, tf.int32)
    class_target = tf.one_hot(label, num_classes, on, off, dtype=tf.float32)
    values = tf.concat([[off, on - off], tf.zeros((entries - 2,), tf.float32)], 0)
    ids = tf.concat([[-1.0], tf.cast(label, tf.float32)[None], tf.zeros((entries - 2,), tf.float32)], 0)
    packed = tf.stack([values, ids], axis=-1)
    return class_target, tf.broadcast_to(packed, (grid_h, grid_w, entries, 2))
