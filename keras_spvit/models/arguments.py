"""Up-front checks of each family's architecture arguments.

A backbone calls its family's check before building anything, so a bad
combination is reported by the argument at fault: first every argument
given is checked on its own (type, range), then the combinations among
those given (divisibility, image size against patch size, block indices
against depth), and only then are missing required arguments named. So
`SPViT(embed_dim=65, num_heads=2)` reports the divisibility, not the
missing `depth`.
"""

import numbers

from keras_spvit.layers.conv_stem import STEM_WIDTHS
from keras_spvit.layers.token_pooling import POOLING_MODES, POOLING_OPS
from keras_spvit.utils.validation import (
    check_non_negative_int,
    check_one_of,
    check_positive_float,
    check_positive_int,
    check_rate,
)


def _given(check, value, name):
    if value is not None:
        check(value, name)


def _required(values):
    for name, (value, what) in values.items():
        if value is None:
            raise ValueError(f"`{name}` is required: {what}. Received: {name}=None")


def _indices(values, name):
    """A list of block indices (ints) or a `ValueError` naming `name`."""
    try:
        indices = list(values)
    except TypeError:
        raise ValueError(
            f"Expected `{name}` to be a list of block indices. Received: {name}={values!r}"
        ) from None
    for i in indices:
        if isinstance(i, bool) or not isinstance(i, numbers.Integral):
            raise ValueError(
                f"Expected `{name}` to hold integer block indices. Received: {name}={values!r}"
            )
    return sorted({int(i) for i in indices})


def check_image_shape(image_shape, patch_size):
    """`image_shape` as `(height, width, channels)` ints, or a one-line error
    naming it (and the nearest valid shape when the sides are not multiples
    of the stem's stride `patch_size`; `None` skips that check).

    Example:

    >>> check_image_shape((224, 224, 3), 16)
    (224, 224, 3)
    """
    try:
        height, width, channels = (int(v) for v in image_shape)
    except (TypeError, ValueError):
        raise ValueError(
            "Expected `image_shape` to be (height, width, channels) of positive "
            f"integers. Received: image_shape={image_shape!r}"
        ) from None
    if min(height, width, channels) <= 0:
        raise ValueError(
            "Expected `image_shape` to be (height, width, channels) of positive "
            f"integers. Received: image_shape={image_shape!r}"
        )
    if patch_size is not None and (height % patch_size or width % patch_size):
        raise ValueError(
            f"`image_shape` height and width must be multiples of the stem stride "
            f"(patch_size={patch_size}). Received: image_shape={tuple(image_shape)}; the "
            f"nearest valid shape is ({max(patch_size, round(height / patch_size) * patch_size)}, "
            f"{max(patch_size, round(width / patch_size) * patch_size)}, {channels})."
        )
    return height, width, channels


def _check_stem(stem, patch_size):
    check_one_of(stem, STEM_WIDTHS, "stem")
    check_positive_int(patch_size, "patch_size")
    if stem != "patch" and patch_size != 16:
        raise ValueError(
            f"The convolutional stem {stem!r} has a fixed stride of 16. Received: "
            f"patch_size={patch_size}. Use stem='patch' for another patch size."
        )


def _check_refiner(expansion_ratio, kernel_size):
    check_positive_int(expansion_ratio, "refiner_expansion_ratio")
    check_positive_int(kernel_size, "refiner_kernel_size")
    if kernel_size % 2 == 0:
        raise ValueError(
            f"Expected an odd `refiner_kernel_size`. Received: refiner_kernel_size={kernel_size}"
        )


def _check_dims(embed_dim, depth, num_heads):
    _given(check_positive_int, embed_dim, "embed_dim")
    _given(check_positive_int, depth, "depth")
    _given(check_positive_int, num_heads, "num_heads")
    if embed_dim is not None and num_heads is not None and embed_dim % num_heads:
        raise ValueError(
            "`embed_dim` must be divisible by `num_heads`. Received: "
            f"embed_dim={embed_dim}, num_heads={num_heads}"
        )


def _check_common(mlp_ratio, stem, patch_size, drop_path_rate, dropout, attention_dropout,
                  layer_norm_epsilon, image_shape):
    check_positive_float(mlp_ratio, "mlp_ratio")
    check_rate(drop_path_rate, "drop_path_rate")
    check_rate(dropout, "dropout")
    check_rate(attention_dropout, "attention_dropout")
    check_positive_float(layer_norm_epsilon, "layer_norm_epsilon")
    _check_stem(stem, patch_size)
    return check_image_shape(image_shape, patch_size)


def check_spvit_arguments(
    embed_dim, depth, num_heads, mlp_ratio, spatial_prior_blocks, class_token_block, stem,
    patch_size, skip_lam, drop_path_rate, dropout, attention_dropout, refiner_blocks,
    refiner_expansion_ratio, refiner_kernel_size, layer_norm_epsilon, image_shape,
):
    """Checks `SPViTBackbone`'s arguments (see the module docstring for the order).

    Example:

    >>> check_spvit_arguments(65, None, 2, ...)  # doctest: +SKIP
    ValueError: `embed_dim` must be divisible by `num_heads`. Received: embed_dim=65, num_heads=2
    """
    _check_dims(embed_dim, depth, num_heads)
    check_non_negative_int(spatial_prior_blocks, "spatial_prior_blocks")
    _given(check_non_negative_int, class_token_block, "class_token_block")
    check_positive_float(skip_lam, "skip_lam")
    _check_common(mlp_ratio, stem, patch_size, drop_path_rate, dropout, attention_dropout,
                  layer_norm_epsilon, image_shape)
    _check_refiner(refiner_expansion_ratio, refiner_kernel_size)
    refiner_blocks = _indices(refiner_blocks, "refiner_blocks")
    if depth is not None:
        if spatial_prior_blocks >= depth:
            raise ValueError(
                "`spatial_prior_blocks` must be smaller than `depth`: at least one vanilla "
                "block has to see the class token. Received: "
                f"spatial_prior_blocks={spatial_prior_blocks}, depth={depth}"
            )
        entry = spatial_prior_blocks if class_token_block is None else class_token_block
        if not spatial_prior_blocks <= entry < depth:
            raise ValueError(
                "`class_token_block` must lie in [spatial_prior_blocks, depth): spatial-prior "
                "blocks act on patch tokens only, and the class token must reach at least "
                f"one block. Received: class_token_block={class_token_block}, "
                f"spatial_prior_blocks={spatial_prior_blocks}, depth={depth}"
            )
        if any(not 0 <= i < depth for i in refiner_blocks):
            raise ValueError(
                "`refiner_blocks` must be block indices in [0, depth). Received: "
                f"refiner_blocks={refiner_blocks}, depth={depth}"
            )
    _required({
        "embed_dim": (embed_dim, "the token width, an int divisible by `num_heads`"),
        "depth": (depth, "the number of blocks, an int > 0"),
        "num_heads": (num_heads, "the attention heads, an int > 0"),
    })


def check_refined_vit_arguments(
    embed_dim, depth, num_heads, mlp_ratio, refiner_blocks, refiner_expansion_ratio,
    refiner_kernel_size, stem, patch_size, adjust_ratio, mlp_scale_init, drop_path_rate,
    dropout, attention_dropout, layer_norm_epsilon, image_shape,
):
    """Checks `RefinedViTBackbone`'s arguments (see the module docstring for the order).

    Example:

    >>> check_refined_vit_arguments(64, 4, 3, ...)  # doctest: +SKIP
    ValueError: `embed_dim` must be divisible by `num_heads`. Received: embed_dim=64, num_heads=3
    """
    _check_dims(embed_dim, depth, num_heads)
    check_positive_float(adjust_ratio, "adjust_ratio")
    if mlp_scale_init is not None:
        check_positive_float(mlp_scale_init, "mlp_scale_init")
    _check_common(mlp_ratio, stem, patch_size, drop_path_rate, dropout, attention_dropout,
                  layer_norm_epsilon, image_shape)
    _check_refiner(refiner_expansion_ratio, refiner_kernel_size)
    if refiner_blocks is not None:
        refiner_blocks = _indices(refiner_blocks, "refiner_blocks")
        if depth is not None and any(not 0 < i < depth for i in refiner_blocks):
            raise ValueError(
                "`refiner_blocks` must be block indices in [1, depth): block 0 has no "
                f"previous attention map to refine. Received: refiner_blocks={refiner_blocks}, "
                f"depth={depth}"
            )
    _required({
        "embed_dim": (embed_dim, "the token width, an int divisible by `num_heads`"),
        "depth": (depth, "the number of blocks, an int > 0"),
        "num_heads": (num_heads, "the attention heads, an int > 0"),
    })


def _per_stage(values, stages, name):
    try:
        values = tuple(values)
    except TypeError:
        raise ValueError(
            f"Expected `{name}` to be a list with one int per stage. Received: {name}={values!r}"
        ) from None
    if stages is not None and len(values) != stages:
        raise ValueError(
            f"`{name}` needs one value per stage ({stages} stages, from `stage_depths`). "
            f"Received: {name}={values}"
        )
    for i, v in enumerate(values):
        check_positive_int(v, f"{name}[{i}]")
    return values


def check_psvit_arguments(
    stage_depths, stage_dims, stage_heads, pooling_mode, pooling, shared_layers,
    spatial_prior_layers, class_token_block, mlp_ratio, stem, patch_size, drop_path_rate,
    layer_norm_epsilon, image_shape,
):
    """Checks `PSViTBackbone`'s arguments (see the module docstring for the order).

    Example:

    >>> check_psvit_arguments((2, 2), (32, 64), (2, 3), ...)  # doctest: +SKIP
    ValueError: Each stage's width must be divisible by its heads. ...
    """
    depths = None if stage_depths is None else _per_stage(stage_depths, None, "stage_depths")
    stages = None if depths is None else len(depths)
    if depths is not None and not depths:
        raise ValueError(f"`stage_depths` needs at least one stage. Received: stage_depths={stage_depths!r}")
    dims = None if stage_dims is None else _per_stage(stage_dims, stages, "stage_dims")
    heads = None if stage_heads is None else _per_stage(stage_heads, stages, "stage_heads")
    if dims is not None and heads is not None:
        if len(dims) != len(heads):
            raise ValueError(
                "`stage_dims` and `stage_heads` need one value per stage each. Received: "
                f"stage_dims={dims}, stage_heads={heads}"
            )
        if any(d % h for d, h in zip(dims, heads)):
            raise ValueError(
                "Each stage's width must be divisible by its heads. Received: "
                f"stage_dims={dims}, stage_heads={heads}"
            )
    check_one_of(pooling_mode, POOLING_MODES, "pooling_mode")
    check_one_of(pooling, POOLING_OPS, "pooling")
    check_non_negative_int(class_token_block, "class_token_block")
    shared_layers = _indices(shared_layers, "shared_layers")
    spatial_prior_layers = _indices(spatial_prior_layers, "spatial_prior_layers")
    height, width, _ = _check_common(mlp_ratio, stem, patch_size, drop_path_rate, 0.0, 0.0,
                                     layer_norm_epsilon, image_shape)
    if depths is not None:
        depth = sum(depths)
        if class_token_block >= depth:
            raise ValueError(
                f"`class_token_block` must be < the number of layers ({depth}, from "
                f"`stage_depths`). Received: class_token_block={class_token_block}"
            )
        rows, cols = height // patch_size, width // patch_size
        for stage in range(1, stages):
            pooled = (rows, cols) if pooling_mode == "2d" else (1, rows * cols)
            if (pooling_mode == "2d" and min(pooled) < 2) or max(pooled) < 2:
                raise ValueError(
                    f"`image_shape` {tuple(image_shape)} with patch_size={patch_size} leaves a "
                    f"{rows} x {cols} token grid before stage {stage}, too small to pool by 2 "
                    f"(pooling_mode={pooling_mode!r}); use larger images or fewer stages "
                    f"(stage_depths={depths})."
                )
            rows, cols = (-(-rows // 2), -(-cols // 2)) if pooling_mode == "2d" else (
                1, -(-(rows * cols) // 2))
    _required({
        "stage_depths": (stage_depths, "blocks per stage, e.g. (4, 4, 4)"),
        "stage_dims": (stage_dims, "the width of each stage"),
        "stage_heads": (stage_heads, "the attention heads of each stage"),
    })
