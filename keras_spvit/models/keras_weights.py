"""Keras `.weights.h5` files of keras_spvit models, at any resolution and class count."""

import os

from keras_spvit.models.heads import fresh_heads_reason, notice_fresh_heads
from keras_spvit.models.presets import check_weights_file
from keras_spvit.models.resolution import (
    backbone_grid,
    backbone_of,
    num_prefix_tokens,
    position_grid,
    rebuild,
    transfer_weights,
)


def load_h5(model, path, what):
    """`model.load_weights(path)`, refusing a file with another number of weights.

    Args:
        model: the model to fill.
        path: a `.weights.h5` file (or a sharded weights config).
        what: how the file is named in error messages.

    Example:

    >>> load_h5(model, "digits.weights.h5", "The Keras weights file")
    """
    if str(path).endswith(".h5"):
        stored = _count_weights(path)
        if stored != len(model.weights):
            raise ValueError(
                f"{what} ({path}) holds {stored} weights, {model.name} has "
                f"{len(model.weights)}: the file is for another architecture."
            )
    try:
        model.load_weights(path)
    except Exception as error:  # any failure is the file's: name it
        raise ValueError(
            f"Cannot load {what} ({path}) into {model.name}: {type(error).__name__}: {error}"
        ) from error


def load_h5_at(backbone, path, what, image_shape):
    """Loads a backbone's weights file written at `image_shape` (a twin of that shape reads it)."""
    if image_shape is None or tuple(image_shape) == tuple(backbone.image_shape):
        load_h5(backbone, path, what)
        return
    twin = type(backbone).from_config({**backbone.get_config(), "image_shape": tuple(image_shape)})
    load_h5(twin, path, what)
    transfer_weights(twin, backbone)


def _count_weights(path):
    """Number of weight arrays in a Keras `.weights.h5` file (Keras skips extra ones silently)."""
    import h5py

    count = 0

    def visit(_, item):
        nonlocal count
        count += isinstance(item, h5py.Dataset)

    with h5py.File(path, "r") as file:
        if "layers" in file:
            file["layers"].visititems(visit)
    return count


def inspect_keras_weights(path):
    """Position-embedding shape and head classes stored in a `.weights.h5` file.

    Args:
        path: a file written by `save_weights`.

    Returns:
        `(tokens, num_classes)`; `num_classes` is `None` for a backbone's file.

    Example:

    >>> inspect_keras_weights("digits.weights.h5")
    (65, 10)
    """
    import h5py

    check_weights_file(path, "The Keras weights file")
    found = {}

    def visit(name, item):
        if isinstance(item, h5py.Dataset):
            if name.endswith("position_embedding/vars/0"):
                found.setdefault("position", item.shape)
            elif name.endswith("token_labeling_head/head/vars/0"):
                found.setdefault("head", item.shape)

    with h5py.File(path, "r") as file:
        file.visititems(visit)
    if "position" not in found or len(found["position"]) != 3:
        raise ValueError(
            f"The Keras weights file {path} holds no position embedding: it is not the "
            "weights file of a keras_spvit backbone or classifier."
        )
    head = found.get("head")
    return found["position"][1], (head[1] if head is not None else None)


def load_keras_weights(model, path):
    """Loads a `.weights.h5` file of a backbone or classifier of the model's architecture.

    The file may be for another resolution (square grid; see
    `keras_spvit.models.resolution`) or number of classes (fresh heads, see
    `keras_spvit.models.heads`).

    Args:
        model: a keras_spvit backbone or classifier.
        path: a file written by `save_weights`.

    Returns:
        The model.

    Example:

    >>> model = SPViT_Tiny(num_classes=3)
    >>> load_keras_weights(model, "digits.weights.h5")
    """
    path = os.fspath(path)
    tokens, file_classes = inspect_keras_weights(path)
    backbone = backbone_of(model)
    grid = position_grid(tokens, backbone)
    if grid is None:
        raise ValueError(
            f"The Keras weights file {path} has a position embedding of {tokens} entries, which "
            f"fits no patch grid of {backbone.name} ({num_prefix_tokens(backbone)} class-token "
            f"entries, then the {backbone_grid(backbone)} grid or a square one): the file is "
            "for another architecture."
        )
    image_shape = (grid[0] * backbone.patch_size, grid[1] * backbone.patch_size,
                   backbone.image_shape[2])
    what = "The Keras weights file"
    same_shape = tuple(image_shape) == tuple(backbone.image_shape)
    has_heads = backbone is not model
    if file_classes is not None and not has_heads:
        raise ValueError(
            f"The Keras weights file {path} is a classifier's; {model.name} is a backbone. "
            "Load the file into the classifier and take its `backbone`."
        )
    if file_classes is None:
        load_h5_at(backbone, path, what, image_shape)
        if has_heads:
            notice_fresh_heads(model, path, fresh_heads_reason(model, None, "file"))
        return model
    reason = fresh_heads_reason(model, file_classes, "file")
    if same_shape and reason is None:
        load_h5(model, path, what)
        return model
    source = rebuild(model, image_shape=image_shape, num_classes=file_classes)
    load_h5(source, path, what)
    transfer_weights(source, model)
    if reason is not None:
        notice_fresh_heads(model, path, reason)
    return model
