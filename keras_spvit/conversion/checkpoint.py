"""The strict state_dict loader: every checkpoint entry used, every variable filled.

It knows no family: a family's converter gives it the weight map (official
key -> `(keras.Variable, transform)`).
"""

import os
from collections.abc import Mapping

import numpy as np
from absl import logging

from keras_spvit.utils.torch_checkpoint import extract_state_dict, load_torch_state_dict

# Buffers a checkpoint carries that no Keras variable needs.
IGNORED_SUFFIXES = (".num_batches_tracked",)
MAX_LISTED = 20


def read_state(source, prefer_ema=False):
    """Reads a state_dict from a checkpoint file or a mapping, without torch.

    Args:
        source: a mapping from state_dict names to arrays, or the path of a
            `.pth` / `.pth.tar` checkpoint (see `keras_spvit.utils.torch_checkpoint`).
        prefer_ema: bool. Take `state_dict_ema` when the checkpoint has one.

    Returns:
        `(state, where)`: the state_dict and how to name it in messages.

    Example:

    >>> state, where = read_state("spvit_s_224.pth.tar")
    """
    if isinstance(source, Mapping):
        return extract_state_dict(dict(source), "<mapping>", prefer_ema), "the mapping"
    path = os.fspath(source)
    return load_torch_state_dict(path, prefer_ema=prefer_ema), path


def _listing(items):
    items = list(items)
    shown = "\n".join(f"  {item}" for item in items[:MAX_LISTED])
    if len(items) > MAX_LISTED:
        shown += f"\n  ... and {len(items) - MAX_LISTED} more"
    return shown


def assign_state(model, state, where, weight_map, skip_prefixes=(), hint=None):
    """Assigns a state_dict through a weight map, all or nothing.

    Args:
        model: the model being filled (named in messages).
        state: dict from state_dict names to arrays.
        where: how to name the state in messages (a path).
        weight_map: dict official key -> `(keras.Variable, transform)`;
            `transform` turns the stored array into the variable's layout.
        skip_prefixes: keys to skip silently when the map has no place for
            them (a backbone skips the checkpoint's heads).
        hint: optional `hint(state, weight_map) -> str` adding a sentence to
            the error (e.g. which architecture the checkpoint has).

    Returns:
        The model.

    Raises:
        ValueError: naming the missing, unexpected and mismatched entries;
            nothing is assigned then.

    Example:

    >>> assign_state(backbone, state, "ckpt.pth", spvit_weight_map(backbone), ("head.",))
    """
    unexpected, mismatched, skipped = [], [], []
    values = {}
    for key, array in state.items():
        if key.endswith(IGNORED_SUFFIXES):
            continue
        if key not in weight_map:
            if skip_prefixes and key.startswith(tuple(skip_prefixes)):
                skipped.append(key)
            else:
                unexpected.append(f"{key} {list(np.shape(array))}")
            continue
        variable, transform = weight_map[key]
        value = transform(np.asarray(array, dtype="float32"))
        if tuple(value.shape) != tuple(variable.shape):
            mismatched.append(
                f"{key}: checkpoint {list(np.shape(array))} -> {list(value.shape)}, "
                f"model variable {variable.path} {list(variable.shape)}"
            )
            continue
        values[key] = value
    missing = [
        f"{key} (model variable {variable.path} {list(variable.shape)})"
        for key, (variable, _) in weight_map.items()
        if key not in state
    ]
    if missing or unexpected or mismatched:
        message = [f"The checkpoint in {where} does not fit {model.name}."]
        if mismatched:
            message.append(f"Shapes that differ:\n{_listing(mismatched)}")
        if missing:
            message.append(f"Model weights the checkpoint lacks:\n{_listing(missing)}")
        if unexpected:
            message.append(f"Checkpoint entries the model has no place for:\n{_listing(unexpected)}")
        extra = hint(state, weight_map) if hint is not None else ""
        if extra:
            message.append(extra)
        raise ValueError("\n".join(message))
    for key, value in values.items():
        variable = weight_map[key][0]
        variable.assign(value.astype(variable.dtype))
    if skipped:
        logging.info(
            "%s has no classification heads; skipped %d head entries of the checkpoint.",
            model.name,
            len(skipped),
        )
    return model
