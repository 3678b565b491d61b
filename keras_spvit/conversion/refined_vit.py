"""Converter of the Refined-ViT family: the released Refiner_ViT code's state_dict layout.

One mapping for the family: `load_official_weights`, builders and conversion
all go through `refined_vit_weight_map`.
"""

from keras_spvit.conversion.layout import (
    backbone_weights,
    batch_norm,
    block_weights,
    dense,
    depthwise,
)
from keras_spvit.layers.shared_attention import SharedAttention
from keras_spvit.models.refined_vit.refined_vit_backbone import RefinedViTBackbone

# The converter interface (see `keras_spvit.conversion`): the backbone class it
# fills, the weight map and an optional hint for checkpoints of another variant.
backbone_cls = RefinedViTBackbone


def pointwise(array):
    """torch 1x1 Conv2d `(out, in, 1, 1)` -> Keras Dense kernel `(in, out)`."""
    return array[:, :, 0, 0].T


def refiner_weights(prefix, refiner):
    """`attn.DLA.*` and `attn.adapt_bn.*` of one refined block."""
    weights = {
        f"{prefix}.DLA.conv_exp.weight": (refiner.conv_exp.kernel, pointwise),
        f"{prefix}.DLA.depth_sep_conv.weight": (refiner.depth_sep_conv.kernel, depthwise),
        f"{prefix}.DLA.conv_pro.weight": (refiner.conv_pro.kernel, pointwise),
    }
    for norm in (refiner.bn1, refiner.bn2, refiner.bn3):
        weights.update(batch_norm(f"{prefix}.DLA.{norm.name}", norm))
    if refiner.adapt_bn is not None:
        weights.update(batch_norm(f"{prefix}.adapt_bn", refiner.adapt_bn))
    return weights


def refined_vit_weight_map(backbone, head=None):
    """Official key -> `(variable, transform)` for a `RefinedViTBackbone`.

    Args:
        backbone: a `RefinedViTBackbone`.
        head: optional `TokenLabelingHead`.

    Returns:
        A dict from official state_dict names to `(keras.Variable, fn)`.
    """
    weights = backbone_weights(backbone, head)
    for i, block in enumerate(backbone.transformer_blocks):
        prefix = f"blocks.{i}"
        weights.update(block_weights(prefix, block))
        attention = block.attention
        if isinstance(attention, SharedAttention):
            # The release keeps the name `qkv` for the values-only projection.
            weights.update(dense(f"{prefix}.attn.qkv", attention.v))
            weights.update(refiner_weights(f"{prefix}.attn", attention.refiner))
        else:
            weights.update(dense(f"{prefix}.attn.qkv", attention.qkv))
        weights.update(dense(f"{prefix}.attn.proj", attention.proj))
    return weights


weight_map = refined_vit_weight_map
architecture_hint = None
