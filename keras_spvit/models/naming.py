"""Default names of models and preprocessing layers: after their family or builder.

Keras would name `SPViTBackbone` `"sp_vi_t_backbone"` (the class name in
snake case); keras_spvit names things as its builders are spelled:
`SPViT_Tiny()` is `"spvit_tiny"` with backbone `"spvit_tiny_backbone"`, a
`RefinedViTBackbone` built directly `"refined_vit_backbone"`. A name is
config: saved models and presets keep the name they were saved with.
"""


def default_name(name, family, suffix=None):
    """`name` if given, else `"<family>_<suffix>"` (or `None` without a family).

    Args:
        name: the name passed by the caller, or `None`.
        family: the family's prefix (`"spvit"`, `"refined_vit"`, `"psvit"`),
            or `None`.
        suffix: optional str appended with an underscore.

    Example:

    >>> default_name(None, "spvit", "backbone")
    'spvit_backbone'
    >>> default_name("mine", "spvit", "backbone")
    'mine'
    """
    if name is not None or family is None:
        return name
    return f"{family}_{suffix}" if suffix else family
