"""Bicubic resizing of position embeddings, matching PyTorch bit-closely.

Checkpoints trained at one resolution are often fine-tuned or evaluated at
another, which changes the patch grid and therefore the number of learned
position embeddings. The official SP-ViT fine-tune loader resizes them with
``torch.nn.functional.interpolate(..., mode="bicubic", align_corners=False)``.
TensorFlow / JAX "bicubic" uses a different cubic coefficient (Keys,
``a=-0.5``), so calling them would silently change a converted model's
outputs. This module re-implements PyTorch's kernel in plain numpy so the
result is the same on every backend and platform.

Only numpy is imported here on purpose: the helpers are used while converting
weights, before (and independently of) any Keras backend being chosen.
"""

import numbers

import numpy as np


def _check_size_pair(value, name):
    """Returns `value` as a tuple of two positive Python ints or raises."""
    try:
        items = tuple(value)
    except TypeError:
        items = None
    if (
        items is None
        or len(items) != 2
        or not all(
            isinstance(v, numbers.Integral) and not isinstance(v, bool)
            for v in items
        )
        or not all(v > 0 for v in items)
    ):
        raise ValueError(
            f"`{name}` must be a pair of positive integers (height, width). "
            f"Received: {name}={value!r}"
        )
    return int(items[0]), int(items[1])


def _cubic_weight_matrix(in_size, out_size, a):
    """Builds the (out_size, in_size) 1-D bicubic interpolation matrix.

    Row `i` holds the weights that output sample `i` gives to each input
    sample, so resizing a signal `x` of length `in_size` is `W @ x`.

    Args:
        in_size: Number of input samples.
        out_size: Number of output samples.
        a: Cubic convolution coefficient.

    Returns:
        A float64 numpy array of shape `(out_size, in_size)`.
    """
    dst = np.arange(out_size, dtype=np.float64)
    # Half-pixel centres (align_corners=False). Unlike the linear modes,
    # PyTorch does not clamp a negative source coordinate to 0 for cubic:
    # near the border it needs the taps at index -1 with their true weights.
    src = (dst + 0.5) * (in_size / out_size) - 0.5
    floor = np.floor(src)
    t = src - floor

    def near(x):  # |x| <= 1
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0

    def far(x):  # 1 < |x| < 2
        return ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a

    # Taps at floor-1, floor, floor+1, floor+2, in PyTorch's formulation.
    tap_weights = np.stack(
        [far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)], axis=1
    )
    tap_index = floor.astype(np.int64)[:, None] + np.arange(-1, 3)[None, :]
    # Out-of-range taps repeat the border sample; several taps may then land
    # on the same input index, so their weights must be summed, not assigned.
    tap_index = np.clip(tap_index, 0, in_size - 1)

    weights = np.zeros((out_size, in_size), dtype=np.float64)
    rows = np.broadcast_to(np.arange(out_size)[:, None], tap_index.shape)
    np.add.at(weights, (rows, tap_index), tap_weights)
    return weights


def bicubic_resize(array, size, a=-0.75, dtype="float32"):
    """Resizes a channels-last image exactly like PyTorch's bicubic mode.

    Reproduces ``torch.nn.functional.interpolate(x, size, mode="bicubic",
    align_corners=False)`` (no antialiasing) applied to the channels-first
    equivalent of `array`: half-pixel sample centres, cubic convolution with
    coefficient `a`, and border samples repeated for taps that fall outside
    the input. The resize is separable, so it is done as two small matrix
    products (rows, then columns) with weights built in float64.

    Args:
        array: Array-like of shape `(H, W, C)` or `(H, W)`.
        size: Pair of positive ints `(new_h, new_w)`.
        a: Cubic convolution coefficient. `-0.75` is PyTorch's (and
            OpenCV's) value; `-0.5` is Keys / Catmull-Rom, used by
            TensorFlow and JAX.
        dtype: Floating dtype in which the products are computed and the
            result is returned. The default `"float32"` matches PyTorch's
            float32 result to within a few ULPs; pass `"float64"` for a more
            accurate result. The weights themselves are always built in
            float64 and then cast.

    Returns:
        A numpy array of shape `(new_h, new_w, C)` (or `(new_h, new_w)` for
        2-D input) and dtype `dtype`.

    Raises:
        ValueError: If `array` is not 2-D or 3-D, has an empty spatial
            dimension, if `size` is not a pair of positive ints, or if
            `dtype` is not a floating dtype.

    Example:

    >>> import numpy as np
    >>> image = np.arange(16, dtype="float32").reshape(4, 4, 1)
    >>> bicubic_resize(image, (6, 6)).shape
    (6, 6, 1)
    """
    array = np.asarray(array)
    if array.ndim not in (2, 3):
        raise ValueError(
            "`array` must have shape (H, W, C) or (H, W). "
            f"Received shape {array.shape}"
        )
    in_h, in_w = array.shape[:2]
    if in_h == 0 or in_w == 0:
        raise ValueError(
            "`array` must have non-empty spatial dimensions. "
            f"Received shape {array.shape}"
        )
    out_h, out_w = _check_size_pair(size, "size")
    dtype = np.dtype(dtype)
    if not np.issubdtype(dtype, np.floating):
        raise ValueError(
            f"`dtype` must be a floating dtype. Received: dtype={dtype}"
        )

    weights_h = _cubic_weight_matrix(in_h, out_h, a).astype(dtype)
    weights_w = _cubic_weight_matrix(in_w, out_w, a).astype(dtype)
    x = array.astype(dtype, copy=False)
    squeeze = x.ndim == 2
    if squeeze:
        x = x[:, :, None]
    rows = np.einsum("oh,hwc->owc", weights_h, x)
    out = np.einsum("pw,owc->opc", weights_w, rows)
    return out[:, :, 0] if squeeze else out


def resample_position_embedding(
    pos_embed, source_grid, target_grid, num_prefix_tokens=0
):
    """Resizes a ViT position embedding to a new patch grid.

    The first `num_prefix_tokens` entries (e.g. the class-token slot) are
    kept unchanged. The remaining `gh * gw` entries are read row-major as a
    `(gh, gw, C)` image, resized with `bicubic_resize` (PyTorch's bicubic,
    `a=-0.75`, `align_corners=False`), and flattened back row-major. This is
    what the official SP-ViT fine-tune loader does.

    The computation is done in float32 unless `pos_embed` is float64; the
    result has the dtype of `pos_embed` (non-float input gives float32).

    Args:
        pos_embed: Array-like of shape `(1, P + gh * gw, C)`, where
            `P = num_prefix_tokens`.
        source_grid: Pair of positive ints `(gh, gw)`, the grid `pos_embed`
            was trained for.
        target_grid: Pair of positive ints `(th, tw)`, the new grid.
        num_prefix_tokens: Non-negative int, number of leading entries that
            do not belong to the grid.

    Returns:
        A numpy array of shape `(1, P + th * tw, C)`. If `source_grid ==
        target_grid`, an unchanged copy of `pos_embed`.

    Raises:
        ValueError: If `pos_embed` is not 3-D with leading dimension 1, if its
            length is not `P + gh * gw`, if a grid is not a pair of positive
            ints, or if `num_prefix_tokens` is not a non-negative int.

    Example:

    >>> import numpy as np
    >>> pos_embed = np.zeros((1, 1 + 14 * 14, 384), dtype="float32")
    >>> resample_position_embedding(
    ...     pos_embed, (14, 14), (24, 24), num_prefix_tokens=1
    ... ).shape
    (1, 577, 384)
    """
    pos_embed = np.asarray(pos_embed)
    source_grid = _check_size_pair(source_grid, "source_grid")
    target_grid = _check_size_pair(target_grid, "target_grid")
    if (
        not isinstance(num_prefix_tokens, numbers.Integral)
        or isinstance(num_prefix_tokens, bool)
        or num_prefix_tokens < 0
    ):
        raise ValueError(
            "`num_prefix_tokens` must be a non-negative integer. "
            f"Received: num_prefix_tokens={num_prefix_tokens!r}"
        )
    num_prefix_tokens = int(num_prefix_tokens)
    if pos_embed.ndim != 3 or pos_embed.shape[0] != 1:
        raise ValueError(
            "Expected pos_embed of shape (1, num_prefix_tokens + gh*gw, C). "
            f"Received shape {pos_embed.shape}"
        )
    gh, gw = source_grid
    expected = num_prefix_tokens + gh * gw
    if pos_embed.shape[1] != expected:
        raise ValueError(
            f"Expected pos_embed of length {num_prefix_tokens} + {gh}*{gw} = "
            f"{expected} for source_grid={source_grid} and "
            f"num_prefix_tokens={num_prefix_tokens}. "
            f"Received shape {pos_embed.shape}"
        )

    if source_grid == target_grid:
        return pos_embed.copy()

    out_dtype = (
        pos_embed.dtype
        if np.issubdtype(pos_embed.dtype, np.floating)
        else np.dtype("float32")
    )
    # float16/bfloat16-like inputs are resized in float32, as PyTorch's CPU
    # kernel would accumulate them, and only rounded at the end.
    compute_dtype = np.float64 if out_dtype == np.float64 else np.float32

    channels = pos_embed.shape[2]
    prefix = pos_embed[:, :num_prefix_tokens]
    grid = pos_embed[0, num_prefix_tokens:].reshape(gh, gw, channels)
    resized = bicubic_resize(grid, target_grid, dtype=compute_dtype)
    th, tw = target_grid
    resized = resized.reshape(1, th * tw, channels)
    return np.concatenate(
        [prefix.astype(out_dtype), resized.astype(out_dtype)], axis=1
    )
