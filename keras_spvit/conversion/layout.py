"""The official layout the families share: tensor transforms, stem, blocks, tokens, heads.

Family converters (`conversion/spvit.py`, ...) build their weight maps from
these pieces and load through `convert_state`.
"""

import numpy as np

from keras_spvit.conversion.checkpoint import assign_state
from keras_spvit.models.resolution import (
    backbone_of,
    position_grid,
    resize_position_embedding,
)

HEAD_PREFIXES = ("head.", "aux_head.")
POSITION_KEY = "pos_embed"


def identity(array):
    return array


def conv(array):
    """torch Conv2d `(out, in, kh, kw)` -> Keras `(kh, kw, in, out)`."""
    return np.transpose(array, (2, 3, 1, 0))


def depthwise(array):
    """torch depthwise `(channels, 1, kh, kw)` -> Keras `(kh, kw, channels, 1)`."""
    return np.transpose(array, (2, 3, 0, 1))


def dense(prefix, layer):
    """Entries of a torch Linear (`weight` is `(out, in)`) for a Keras Dense."""
    weights = {f"{prefix}.weight": (layer.kernel, lambda w: w.T)}
    if layer.use_bias:
        weights[f"{prefix}.bias"] = (layer.bias, identity)
    return weights


def layer_norm(prefix, layer):
    return {
        f"{prefix}.weight": (layer.gamma, identity),
        f"{prefix}.bias": (layer.beta, identity),
    }


def batch_norm(prefix, layer):
    return {
        f"{prefix}.weight": (layer.gamma, identity),
        f"{prefix}.bias": (layer.beta, identity),
        f"{prefix}.running_mean": (layer.moving_mean, identity),
        f"{prefix}.running_var": (layer.moving_variance, identity),
    }


def stem_weights(stem):
    """`patch_embed.*` entries of the LV-ViT / Refiner convolutional stems."""
    weights = {}
    for layer in stem.conv_layers:
        if layer.name.startswith("conv"):
            weights[f"patch_embed.{layer.name}.weight"] = (layer.kernel, conv)
        elif layer.name.startswith("bn"):
            weights.update(batch_norm(f"patch_embed.{layer.name}", layer))
    weights["patch_embed.proj.weight"] = (stem.proj.kernel, conv)
    weights["patch_embed.proj.bias"] = (stem.proj.bias, identity)
    return weights


def block_weights(prefix, block):
    """The norms and MLP of a `TransformerBlock` (attention is family-specific)."""
    weights = {}
    weights.update(layer_norm(f"{prefix}.norm1", block.norm1))
    weights.update(layer_norm(f"{prefix}.norm2", block.norm2))
    weights.update(dense(f"{prefix}.mlp.fc1", block.mlp.fc1))
    weights.update(dense(f"{prefix}.mlp.fc2", block.mlp.fc2))
    if block.mlp.scale_channel is not None:
        weights[f"{prefix}.mlp.scale_channel"] = (block.mlp.scale_channel, identity)
    return weights


def backbone_weights(backbone, head):
    """Class token, position embedding, stem, final norm and heads."""
    weights = {
        "cls_token": (backbone.class_token.token, identity),
        POSITION_KEY: (backbone.position_embedding.embedding, identity),
        "norm.weight": (backbone.norm.gamma, identity),
        "norm.bias": (backbone.norm.beta, identity),
    }
    weights.update(stem_weights(backbone.stem))
    if head is not None:
        weights.update(dense("head", head.head))
        weights.update(dense("aux_head", head.aux_head))
    return weights


def state_grid(state, backbone):
    """The patch grid of a state_dict's position embedding in `backbone`'s architecture."""
    position = state.get(POSITION_KEY)
    if position is None or np.ndim(position) != 3:
        return None
    return position_grid(np.shape(position)[1], backbone)


def state_classes(state):
    """Classes of a state_dict's heads, `None` without heads."""
    head = state.get("head.weight")
    return None if head is None else int(np.shape(head)[0])


def convert_state(model, state, where, converter):
    """Loads an official state_dict into a backbone or a classifier with the same heads.

    The position embedding is resampled to the model's grid
    (`keras_spvit.models.resolution.resize_position_embedding`); a backbone
    skips the checkpoint's heads.

    Args:
        model: a backbone, or a classifier whose heads fit the checkpoint's.
        state: the state_dict.
        where: how to name it in messages.
        converter: the family's converter module (`weight_map`,
            `architecture_hint`; see `keras_spvit.conversion`).

    Returns:
        The model.

    Example:

    >>> convert_state(keras_spvit.SPViT_S(), state, "spvit_s.pth", keras_spvit.conversion.spvit)
    """
    backbone = backbone_of(model)
    head = getattr(model, "head", None) if backbone is not model else None
    if POSITION_KEY in state:
        resized = resize_position_embedding(state[POSITION_KEY], backbone)
        state = {**state, POSITION_KEY: resized}
    skip = HEAD_PREFIXES if head is None else ()
    weight_map = converter.weight_map(backbone, head)
    return assign_state(model, state, where, weight_map, skip, converter.architecture_hint)
