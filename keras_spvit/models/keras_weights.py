"""Keras `.weights.h5` files of keras_spvit models, at any resolution and class count.

A file written for another image shape loads without a second model. Only
the position embedding depends on the patch grid (every family; spatial
priors, PosCNNs and the rest carry over): Keras' own loader
(`Model.load_weights` with `objects_to_skip`) fills every other layer, with
its usual checks; the stored embedding is read from the file with h5py,
resampled by the one resampler
(`keras_spvit.models.resolution.resize_position_embedding`) and assigned.

Keras' file layout (`keras/src/saving/saving_lib.py`): each layer's own
variables are the datasets `<object path>/vars/0`, `/vars/1`, ...; a layer
in a functional model's `layers` list is named after its class in
snake_case (`PositionEmbedding` -> `position_embedding`), so a backbone's
file holds `layers/position_embedding/vars/0` and a classifier's
`layers/<backbone>/layers/position_embedding/vars/0`. A sharded file
(`.weights.json`) maps `/<object path>/vars` to its shard in `weight_map`.
"""

import json
import os

import numpy as np

from keras_spvit.models.heads import fresh_heads_reason, notice_fresh_heads
from keras_spvit.models.presets import check_weights_file
from keras_spvit.models.resolution import (
    backbone_grid,
    backbone_of,
    num_prefix_tokens,
    position_grid,
    resize_position_embedding,
)

# The position embedding layer's group name in Keras' layout (see above).
POSITION_GROUP = "position_embedding"


def load_h5(model, path, what, source_grid=None, skip_heads=False):
    """`model.load_weights(path)` for a file written at any patch grid.

    Every layer but the position embedding (and, with `skip_heads`, the
    classifier's heads) is loaded by Keras; the stored position embedding
    is resampled from `source_grid` to the model's grid and assigned.

    Args:
        model: the backbone or classifier to fill.
        path: a `.weights.h5` file (or a sharded `.weights.json` config) of
            the model's architecture.
        what: how the file is named in error messages.
        source_grid: optional `(rows, cols)` patch grid the file was
            written for; by default the model's own grid or a square one
            that fits the stored embedding.
        skip_heads: bool. Leave a classifier's heads as they are (the file's
            are for another class count).

    Example:

    >>> load_h5(model, "digits.weights.h5", "The Keras weights file", source_grid=(8, 8))
    """
    path = os.fspath(path)
    if path.endswith(".h5"):
        stored = _count_weights(path)
        if stored != len(model.weights):
            raise ValueError(
                f"{what} ({path}) holds {stored} weights, {model.name} has "
                f"{len(model.weights)}: the file is for another architecture."
            )
    backbone = backbone_of(model)
    variable = backbone.position_embedding.embedding
    skipped = [backbone.position_embedding] + ([model.head] if skip_heads else [])
    try:
        stored = _read_position_embedding(path)
        value = resize_position_embedding(stored, backbone, source_grid)
        fits = tuple(np.shape(value)) == tuple(variable.shape)
        if fits:  # nothing is loaded from a file whose embedding fits no grid
            model.load_weights(path, objects_to_skip=skipped)
    except Exception as error:  # any failure is the file's: name it
        raise ValueError(
            f"Cannot load {what} ({path}) into {model.name}: {type(error).__name__}: {error}"
        ) from error
    if not fits:
        raise ValueError(
            f"{what} ({path}) holds a position embedding of shape {list(np.shape(stored))}, "
            f"which fits no grid of {backbone.name} (it takes {list(variable.shape)}): the "
            "file is for another architecture."
        )
    variable.assign(value)  # cast to the variable's dtype by Keras


def _read_position_embedding(path):
    """The position embedding array stored in a Keras weights file (or sharded config)."""
    import h5py

    files = [path]
    if path.endswith(".json"):
        with open(path) as file:
            weight_map = json.load(file)["weight_map"]
        files = sorted({
            os.path.join(os.path.dirname(path), shard)
            for key, value in weight_map.items()
            if key.rstrip("/").split("/")[-2:] == [POSITION_GROUP, "vars"]
            for shard in (value if isinstance(value, list) else [value])
        })
    arrays = []

    def visit(name, item):
        if isinstance(item, h5py.Dataset) and name.split("/")[-3:] == [POSITION_GROUP, "vars", "0"]:
            arrays.append(_dataset_array(item))

    for name in files:
        with h5py.File(name, "r") as file:
            file.visititems(visit)
    if len(arrays) != 1:
        raise ValueError(
            f"expected one '{POSITION_GROUP}/vars/0' dataset in the file, found {len(arrays)}"
        )
    return arrays[0]


def _dataset_array(dataset):
    """A dataset's array as Keras reads it (bfloat16 is stored with a `dtype` attribute)."""
    if dataset.attrs.get("dtype") == "bfloat16":
        import ml_dtypes

        return np.array(dataset, dtype=ml_dtypes.bfloat16)
    return np.array(dataset)


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
            if name.split("/")[-3:] == [POSITION_GROUP, "vars", "0"]:
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
    what = "The Keras weights file"
    has_heads = backbone is not model
    if file_classes is not None and not has_heads:
        raise ValueError(
            f"The Keras weights file {path} is a classifier's; {model.name} is a backbone. "
            "Load the file into the classifier and take its `backbone`."
        )
    if file_classes is None:
        load_h5(backbone, path, what, grid)
        if has_heads:
            notice_fresh_heads(model, path, fresh_heads_reason(model, None, "file"))
        return model
    reason = fresh_heads_reason(model, file_classes, "file")
    load_h5(model, path, what, grid, skip_heads=reason is not None)
    if reason is not None:
        notice_fresh_heads(model, path, reason)
    return model
