"""Converter of the SP-ViT / LV-ViT family: the released SP-ViT code's state_dict layout.

One mapping for the family: `load_official_weights`, builders and the
conversion command all go through `spvit_weight_map`.
"""

from keras_spvit.conversion.layout import (
    backbone_weights,
    block_weights,
    dense,
    depthwise,
    identity,
)
from keras_spvit.layers.spatial_prior_attention import SpatialPriorAttention
from keras_spvit.models.spvit.spvit_backbone import SPViTBackbone

# The converter interface (see `keras_spvit.conversion`): the backbone class it
# fills, the weight map and an optional hint for checkpoints of another variant.
backbone_cls = SPViTBackbone


def spvit_weight_map(backbone, head=None):
    """Official key -> `(variable, transform)` for a `SPViTBackbone`.

    Args:
        backbone: an `SPViTBackbone`.
        head: optional `TokenLabelingHead` whose `head` / `aux_head` receive
            the checkpoint's heads.

    Returns:
        A dict from official state_dict names to `(keras.Variable, fn)`, where
        `fn` turns the torch-layout array into the variable's layout.
    """
    weights = backbone_weights(backbone, head)
    for i, (block, pos_cnn) in enumerate(zip(backbone.transformer_blocks, backbone.pos_cnns)):
        prefix = f"blocks.{i}"
        weights.update(block_weights(prefix, block))
        attention = block.attention
        if isinstance(attention, SpatialPriorAttention):
            heads, head_dim = attention.w2.shape
            weights.update(dense(f"{prefix}.attn.qk", attention.qk))
            weights.update(dense(f"{prefix}.attn.v", attention.v))
            weights[f"{prefix}.attn.w1.weight"] = (attention.w1_kernel, lambda w: w.T)
            weights[f"{prefix}.attn.w1.bias"] = (attention.w1_bias, identity)
            weights[f"{prefix}.attn.w2"] = (
                attention.w2,
                lambda w, shape=(heads, head_dim): w.reshape(shape),
            )
            weights[f"{prefix}.attn.b2"] = (attention.b2, identity)
        else:
            weights.update(dense(f"{prefix}.attn.qkv", attention.qkv))
        weights.update(dense(f"{prefix}.attn.proj", attention.proj))
        weights[f"{prefix}.pos_block.proj.0.weight"] = (pos_cnn.conv.kernel, depthwise)
        weights[f"{prefix}.pos_block.proj.0.bias"] = (pos_cnn.conv.bias, identity)
    return weights


def architecture_hint(state, weight_map):
    """Says which blocks the checkpoint builds with spatial priors, if that differs."""
    def spsa_blocks(keys):
        return sorted(
            {int(k.split(".")[1]) for k in keys if k.startswith("blocks.") and ".attn.qk." in k}
        )

    in_checkpoint, in_model = spsa_blocks(state), spsa_blocks(weight_map)
    if in_checkpoint == in_model:
        return ""
    return (
        f"The checkpoint has spatial-prior attention in blocks {in_checkpoint or 'none'}, "
        f"the model in blocks {in_model or 'none'}: build the model with "
        f"spatial_prior_blocks={len(in_checkpoint)}."
    )


weight_map = spvit_weight_map
