"""Builders from the family table: `assemble` (generic builders) and named variant builders."""

import functools
import inspect

from keras_spvit.utils.validation import check_positive_int
from keras_spvit.zoo.weights import build_with_weights

# `compile` is keras-hub's `Task` argument: `compile=False` skips the default compile
# (and its optimizer's variables), e.g. to build under a `keras.StatelessScope`.
CLASSIFIER_ARGS = ("aux_weight", "return_dense", "head_dtype", "preprocessor", "compile")
DEFAULT_NUM_CLASSES = 1000
# Keras' own layer arguments a backbone passes on through `**kwargs`.
_KERAS_ARGS = ("dtype", "trainable")


def assemble(backbone_cls, classifier_cls, num_classes, name, weights=None, **kwargs):
    """Backbone from `kwargs`, classifier around it from the classifier's own.

    Every argument is checked before anything is built (the backbone checks
    its own first). The classifier is named `name` (by default the family's,
    e.g. `"spvit"`), its backbone `name + "_backbone"`. With `weights` (a
    preset, `.weights.h5` file or official checkpoint), the model is built
    with exactly the given `num_classes` and `image_shape` and the weights
    are loaded into it as the named builders load them (new heads for
    another class count, position embeddings resampled for another grid).
    """
    check_positive_int(num_classes, "num_classes")
    _check_known(backbone_cls, kwargs)
    if weights is not None:
        def build(**arguments):
            return assemble(backbone_cls, classifier_cls, name=name, **{**kwargs, **arguments})

        return build_with_weights(build, weights, num_classes=num_classes,
                                  image_shape=kwargs.pop("image_shape"))
    name = name or backbone_cls.family
    classifier_kwargs = {k: kwargs.pop(k) for k in CLASSIFIER_ARGS if k in kwargs}
    backbone = backbone_cls(name=f"{name}_backbone", **kwargs)
    return classifier_cls(backbone, num_classes, name=name, **classifier_kwargs)


def generic_builder(family):
    """Decorator: the family's generic builder from its declared signature and docstring.

    The decorated function only declares the builder's public arguments
    (defaults and docstring); calling the builder passes every argument, by
    name, to `assemble` with the family's backbone and classifier classes.

    Args:
        family: a `keras_spvit.zoo.families.Family`.

    Returns:
        The decorator.

    Example:

    >>> @generic_builder(SPVIT)
    ... def SPViT(embed_dim=None, depth=None, num_heads=None, num_classes=1000, name=None,
    ...           **kwargs):
    ...     \"\"\"Builds an `SPViTImageClassifier` from hyper-parameters.\"\"\"
    """

    def decorate(declaration):
        signature = inspect.signature(declaration)

        @functools.wraps(declaration)
        def build(*args, **kwargs):
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            arguments = dict(bound.arguments)
            arguments.update(arguments.pop("kwargs", {}))
            num_classes, name = arguments.pop("num_classes"), arguments.pop("name")
            return assemble(
                family.backbone_cls, family.classifier_cls, num_classes, name, **arguments
            )

        return build

    return decorate


def _check_known(backbone_cls, kwargs):
    """Rejects an argument neither the backbone nor the classifier takes (a
    typo would otherwise vanish into Keras' `**kwargs`)."""
    parameters = inspect.signature(backbone_cls.__init__).parameters
    known = {*parameters, *_KERAS_ARGS, *CLASSIFIER_ARGS} - {"self", "kwargs"}
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise ValueError(
            f"Unknown argument {unknown[0]!r} for a {backbone_cls.family} model. "
            f"Expected one of: {', '.join(sorted(known))}."
        )


def build_from_table(generic, variants, variant, **overrides):
    """Calls `generic` with the variant's architecture, any argument overridden."""
    if variant not in variants:
        raise ValueError(f"Unknown variant {variant!r}. Expected one of {sorted(variants)}.")
    return generic(**{**variants[variant]["arch"], **overrides})


def build_variant(generic, variants, variant, num_classes=None, image_shape=None, weights=None,
                  **kwargs):
    """A variant's classifier, optionally with pretrained weights (see `variant_builder`).

    The model is named after the variant (`"spvit_tiny"`) unless `name` is given.
    """
    kwargs["name"] = kwargs.get("name") or variant
    if weights is None:
        if image_shape is not None:
            kwargs["image_shape"] = image_shape
        return build_from_table(
            generic, variants, variant, num_classes=num_classes or DEFAULT_NUM_CLASSES, **kwargs
        )
    def build(image_shape=None, **overrides):
        if image_shape is not None:
            overrides["image_shape"] = image_shape
        return build_from_table(generic, variants, variant, **overrides)

    kwargs.setdefault("crop_pct", variants[variant]["info"].get("crop_pct"))
    return build_with_weights(
        build, weights, num_classes=num_classes, image_shape=image_shape, **kwargs
    )


def variant_builder(generic, variants, variant, name, summary):
    """A builder function `name(num_classes=None, image_shape=None, weights=None, **kwargs)`."""
    builder = functools.partial(build_variant, generic, variants, variant)

    def named(num_classes=None, image_shape=None, weights=None, **kwargs):
        return builder(num_classes=num_classes, image_shape=image_shape, weights=weights, **kwargs)

    named.__name__ = named.__qualname__ = name
    named.__doc__ = f"""{summary}

    Architecture: the {variant!r} row of the family's variant table.

    Args:
        num_classes: int. Classes of both heads. Defaults to the weights'
            class count, or 1000 without weights. A count other than the
            weights' keeps their backbone and starts fresh heads (a warning
            says so).
        image_shape: `(height, width, channels)`. Defaults to the weights'
            resolution, or the variant's (224 px, or 32 px for the tiny
            models). Another resolution than the weights' resamples their
            position embedding (bicubic, identical on every backend).
        weights: `None` (random initialization), a registered preset name,
            a preset folder or `hf://` / `kaggle://` handle, a `.weights.h5`
            file, or an official PyTorch checkpoint file (converted on the
            fly, no torch needed). A preset must hold this variant.
        **kwargs: overrides of any argument of `{generic.__name__}`, e.g.
            `name` (default `{variant!r}`, the backbone `{variant}_backbone`),
            `drop_path_rate`, `dtype="mixed_bfloat16"`, `return_dense=True`,
            `preprocessor`. With `weights`, also `crop_pct` (the preprocessing
            attached to official checkpoints; the variant's by default) and
            `prefer_ema` (load an official checkpoint's EMA weights).

    Returns:
        The family's image classifier. With `weights`, its `preprocessor`
        is the preset's or, for an official checkpoint, the released
        evaluation transform (bicubic resize, center crop, ImageNet
        mean / std); it runs in `predict` / `fit` / `evaluate`.

    Example:

    >>> model = {name}(num_classes=10)
    >>> model = {name}(weights="spvit_s.pth", image_shape=(384, 384, 3))  # doctest: +SKIP
    """
    return named


def named_builder(family, generic, name):
    """The named builder `name` of a family, as its table row declares it.

    Args:
        family: a `keras_spvit.zoo.families.Family`.
        generic: the family's generic builder function.
        name: a key of `family.builders`.

    Returns:
        The builder function (see `variant_builder`).

    Example:

    >>> SPViT_S = named_builder(SPVIT, SPViT, "SPViT_S")
    """
    variant, summary = family.builders[name]
    return variant_builder(generic, family.variants, variant, name, summary)
