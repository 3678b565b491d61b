"""Another resolution for trained weights: patch grids and the one position-embedding resampler.

Only the learned position embedding depends on the patch grid. Every load
path (presets, Keras `.weights.h5` files, official checkpoints) resamples it
with `resize_position_embedding`: the square (or the model's own) grid of
patch entries is resampled with PyTorch's bicubic kernel in numpy
(`keras_spvit.utils.resample`, timm's `resample_abs_pos_embed` is the
model), class-token entries are kept. Spatial priors, PosCNNs and every other
weight carry over unchanged.
"""

import math

import numpy as np
from absl import logging

from keras_spvit.utils.resample import resample_position_embedding


def backbone_of(model):
    """The backbone of a classifier, or the model itself if it is a backbone."""
    return getattr(model, "backbone", None) or model


def backbone_grid(backbone):
    """`(rows, cols)` of the patch grid the backbone's position embedding covers."""
    height, width = backbone.image_shape[:2]
    return height // backbone.patch_size, width // backbone.patch_size


def num_prefix_tokens(backbone):
    """Entries of the backbone's position embedding before the grid's (a class token's)."""
    rows, cols = backbone_grid(backbone)
    return backbone.position_embedding.embedding.shape[1] - rows * cols


def position_grid(tokens, backbone):
    """The grid a position embedding of `tokens` entries covers in this architecture.

    The backbone's own grid if the count fits it, else a square grid (as
    trained checkpoints have), else `None`.
    """
    grid = backbone_grid(backbone)
    cells = tokens - num_prefix_tokens(backbone)
    if cells == grid[0] * grid[1]:
        return grid
    side = math.isqrt(max(cells, 0))
    return (side, side) if side > 0 and side * side == cells else None


def resize_position_embedding(array, backbone, source_grid=None):
    """A stored position embedding resampled to `backbone`'s patch grid.

    The one resampler of every load path. The array is returned unchanged
    when it already fits, has another width, or its entries fit no grid of
    this architecture (the loader's shape check then names it).

    Args:
        array: `(1, tokens, dim)` position embedding of the stored weights.
        backbone: the keras_spvit backbone being filled.
        source_grid: optional `(rows, cols)` the array covers (a model's
            own grid); by default the backbone's grid or a square one.

    Returns:
        The float32 array for the backbone's grid (or `array` as it was).

    Example:

    >>> backbone = SPViTBackbone(embed_dim=64, depth=2, num_heads=2, image_shape=(64, 64, 3))
    >>> resize_position_embedding(np.zeros((1, 197, 64)), backbone).shape
    (1, 17, 64)
    """
    variable = backbone.position_embedding.embedding
    if np.ndim(array) != 3 or tuple(np.shape(array)) == tuple(variable.shape):
        return array
    if np.shape(array)[2] != variable.shape[2]:
        return array
    if source_grid is None:
        source_grid = position_grid(np.shape(array)[1], backbone)
    if source_grid is None:
        return array
    grid = backbone_grid(backbone)
    logging.info(
        "Resizing the position embedding from a %dx%d to a %dx%d grid.", *source_grid, *grid
    )
    return resample_position_embedding(
        np.asarray(array, "float32"),
        source_grid,
        grid,
        num_prefix_tokens=num_prefix_tokens(backbone),
    )


def rebuild(model, image_shape=None, num_classes=None):
    """A fresh model like `model`, for another image shape and/or class count.

    Args:
        model: a keras_spvit backbone or classifier.
        image_shape: optional `(height, width, channels)`.
        num_classes: optional int (classifiers only).

    Returns:
        A new, randomly initialized model.

    Example:

    >>> rebuild(SPViT_Tiny(num_classes=3), image_shape=(64, 64, 3)).backbone.image_shape
    (64, 64, 3)
    """
    config = model.get_config()
    backbone_config = config["backbone"]["config"] if "backbone" in config else config
    if image_shape is not None:
        backbone_config["image_shape"] = tuple(image_shape)
    if num_classes is not None and "backbone" in config:
        config["num_classes"] = num_classes
    clone = type(model).from_config(config)
    if image_shape is not None:
        set_image_size(clone, image_shape)
    return clone


def set_image_size(model, image_shape):
    """Points a classifier's image converter at the model's input size."""
    preprocessor = getattr(model, "preprocessor", None)
    converter = getattr(preprocessor, "image_converter", None)
    if converter is not None and converter.image_size is not None:
        converter.image_size = tuple(image_shape[:2])


def at_grid(model, grid):
    """The model rebuilt for the weights' grid, when that is not the one it was built for."""
    backbone = model.backbone
    if grid is None or tuple(grid) == backbone_grid(backbone):
        return model
    image_shape = (grid[0] * backbone.patch_size, grid[1] * backbone.patch_size,
                   backbone.image_shape[2])
    return rebuild(model, image_shape=image_shape)
