"""The one fresh-heads rule of every load path.

Weights trained for another number of classes (or without heads) fill the
backbone only; the classifier's two heads keep their fresh initialization
and a `UserWarning` says so, once per load.
"""

import warnings


def fresh_heads_reason(model, source_classes, source):
    """Why `model`'s heads cannot take the stored heads, or `None` when they can.

    Args:
        model: a keras_spvit classifier.
        source_classes: classes of the stored heads, `None` without heads.
        source: what holds the weights, e.g. `"preset"`, `"file"`, `"checkpoint"`.

    Returns:
        A one-sentence reason, or `None` if the class counts agree.

    Example:

    >>> fresh_heads_reason(SPViT_Tiny(num_classes=3), 10, "checkpoint")
    'The checkpoint was trained for 10 classes.'
    """
    if source_classes is None:
        return f"The {source} has no classification heads."
    if source_classes != model.num_classes:
        return f"The {source} was trained for {source_classes} classes."
    return None


def notice_fresh_heads(model, where, reason):
    """Warns that `model`'s heads start fresh while its backbone comes from `where`.

    Args:
        model: the classifier being filled.
        where: str naming the weights (a path or a preset).
        reason: the sentence of `fresh_heads_reason`.

    Example:

    >>> notice_fresh_heads(model, "spvit_s.pth", "The checkpoint has no classification heads.")
    """
    warnings.warn(
        f"{model.name}: {reason} The backbone weights come from {where}; the classification "
        f"heads ({model.num_classes} classes) start from a fresh initialization.",
        UserWarning,
        stacklevel=4,
    )
