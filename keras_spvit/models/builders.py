"""Named model builders from variant tables, shared by every family."""


CLASSIFIER_ARGS = ("aux_weight", "return_dense", "head_dtype", "preprocessor")


def assemble(backbone_cls, classifier_cls, num_classes, name, **kwargs):
    """Backbone from `kwargs`, classifier around it from the classifier's own."""
    classifier_kwargs = {k: kwargs.pop(k) for k in CLASSIFIER_ARGS if k in kwargs}
    backbone = backbone_cls(**kwargs)
    return classifier_cls(backbone, num_classes, name=name, **classifier_kwargs)


def build_from_table(generic, variants, variant, **overrides):
    """Calls `generic` with the variant's architecture, any argument overridden."""
    if variant not in variants:
        raise ValueError(f"Unknown variant {variant!r}. Expected one of {sorted(variants)}.")
    return generic(**{**variants[variant]["arch"], **overrides})


def variant_builder(generic, variants, variant, name, summary):
    """A builder function `name(num_classes=1000, image_shape=None, **kwargs)`."""

    def builder(num_classes=1000, image_shape=None, **kwargs):
        if image_shape is not None:
            kwargs["image_shape"] = image_shape
        return build_from_table(generic, variants, variant, num_classes=num_classes, **kwargs)

    builder.__name__ = builder.__qualname__ = name
    builder.__doc__ = f"""{summary}

    Architecture: the {variant!r} row of the family's variant table.

    Args:
        num_classes: int. Classes of both heads (default 1000).
        image_shape: `(height, width, channels)`; defaults to the variant's
            (224 px, or 32 px for the tiny models).
        **kwargs: overrides of any argument of `{generic.__name__}`, e.g.
            `drop_path_rate`, `dtype="mixed_bfloat16"`, `return_dense=True`.

    Returns:
        The family's image classifier.

    Example:

    >>> model = {name}(num_classes=10)
    """
    return builder
