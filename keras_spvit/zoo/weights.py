"""Weights resolution for the builders: a preset, a Keras weights file or an official checkpoint.

`SPViT_S(weights=...)`, the generic builders and `keras-spvit convert` come
through `build_with_weights`. Whatever the kind, the model is built for the
weights' grid unless an `image_shape` is given (the position embedding is
then resampled, `keras_spvit.models.resolution`), and another class count
keeps the backbone only (`keras_spvit.models.heads`).
"""

import os

from keras_hub.models import ImageClassifierPreprocessor

from keras_spvit.conversion.checkpoint import read_state
from keras_spvit.conversion.layout import convert_state, state_classes, state_grid
from keras_spvit.models.heads import fresh_heads_reason, notice_fresh_heads
from keras_spvit.models.image_classifier_preprocessor import default_preprocessor
from keras_spvit.models.keras_weights import inspect_keras_weights, load_keras_weights
from keras_spvit.models.preset_loading import check_architecture, load_preset_weights
from keras_spvit.models.presets import inspect_preset, is_registered, registered_presets
from keras_spvit.models.resolution import at_grid, backbone_of, position_grid
from keras_spvit.utils.torch_checkpoint import load_torch_state_dict
from keras_spvit.zoo.families import FAMILIES, family_of_model

_UNSET = object()


def _converter_of(model):
    family = family_of_model(model)
    if family is None or family.converter is None:
        supported = " and ".join(f.backbone_cls.__name__ for f in FAMILIES if f.converter)
        raise ValueError(
            f"load_official_weights supports {supported} models (backbones and "
            f"classifiers). Received a {type(model).__name__}."
        )
    return family.converter


def load_official_state(model, state, where):
    """Loads an official state_dict; other class counts give fresh heads.

    Args:
        model: a backbone or classifier of a family with a converter.
        state: the state_dict.
        where: how to name it in messages.

    Returns:
        The model.

    Example:

    >>> load_official_state(model, state, "spvit_s_224.pth")
    """
    converter = _converter_of(model)
    backbone = backbone_of(model)
    if backbone is model:
        return convert_state(model, state, where, converter)
    reason = fresh_heads_reason(model, state_classes(state), "checkpoint")
    if reason is None:
        return convert_state(model, state, where, converter)
    convert_state(backbone, state, where, converter)
    notice_fresh_heads(model, where, reason)
    return model


def load_official_weights(model, source, prefer_ema=False):
    """Fills a model with the weights of an official PyTorch checkpoint.

    Reading a checkpoint file needs no torch and never runs code from the
    file (see `keras_spvit.utils.torch_checkpoint`). Every checkpoint entry
    must be used and every model variable filled, otherwise nothing is
    assigned and a `ValueError` names the keys and shapes at fault. A
    backbone (no heads) skips the checkpoint's `head` / `aux_head` entries.

    A model built for another resolution than the checkpoint's gets the
    checkpoint's position embedding resized as the official fine-tuning
    loader does: the square grid of patch entries is resampled with
    PyTorch's bicubic kernel (in numpy, identical on every backend), a
    class-token entry is kept as it is. Spatial priors and PosCNNs do not
    depend on the resolution and load unchanged.

    Args:
        model: an SP-ViT / LV-ViT or Refined-ViT classifier or backbone.
        source: a mapping from official state_dict names to arrays, or the
            path of an official `.pth` / `.pth.tar` checkpoint (a plain
            state_dict, or a dict holding `state_dict` / `state_dict_ema`;
            `module.` prefixes are stripped).
        prefer_ema: bool. Load `state_dict_ema` when the checkpoint has one.

    Returns:
        The model, for chaining.

    Example:

    >>> model = keras_spvit.SPViT_S()
    >>> keras_spvit.load_official_weights(model, "spvit_s_224.pth.tar")
    """
    converter = _converter_of(model)
    state, where = read_state(source, prefer_ema)
    return convert_state(model, state, where, converter)


def resolve_weights(weights):
    """`(kind, location)` of a builder's `weights` argument.

    `kind` is `"preset"` (a registered name, a hub handle or a folder),
    `"keras"` (a `.weights.h5` file) or `"official"` (any other file, read
    as a PyTorch checkpoint).

    Args:
        weights: str or path-like.

    Returns:
        `(kind, location)`.

    Example:

    >>> resolve_weights("spvit_tiny_digits")
    ('preset', 'spvit_tiny_digits')
    """
    if not isinstance(weights, (str, os.PathLike)):
        raise TypeError(
            "Expected `weights` to be None, a preset name, a preset folder or handle, a "
            f"`.weights.h5` file or an official checkpoint file. Received: weights={weights!r}"
        )
    location = os.fspath(weights)
    if is_registered(location) or "://" in location or os.path.isdir(location):
        return "preset", location
    if os.path.isfile(location):
        if location.endswith(".keras"):
            raise ValueError(
                f"weights={location!r} is a whole saved model: load it with "
                "`keras.saving.load_model`, or pass its `.weights.h5` or a preset folder."
            )
        return ("keras" if location.endswith(".weights.h5") else "official"), location
    raise FileNotFoundError(
        f"weights={location!r} is neither a registered preset name "
        f"({sorted(registered_presets()) or 'none registered'}), a preset handle "
        "(hf://..., kaggle://...), an existing folder nor an existing file."
    )


def build_with_weights(
    build,
    weights,
    num_classes=None,
    image_shape=None,
    crop_pct=None,
    prefer_ema=False,
    preprocessor=_UNSET,
    **kwargs,
):
    """Builds a classifier with `build(num_classes=, image_shape=, **kwargs)` and loads `weights`.

    `num_classes` and `image_shape` default to the weights' own. A preset
    brings its preprocessor; an official checkpoint gets the released
    evaluation preprocessing (`crop_pct` of the variant); a `.weights.h5`
    file none. An explicit `preprocessor` wins.

    Args:
        build: function building the classifier.
        weights: see `resolve_weights`.
        num_classes: optional int.
        image_shape: optional `(height, width, channels)`.
        crop_pct: optional float for an official checkpoint's preprocessing.
        prefer_ema: bool. Load an official checkpoint's EMA weights.
        preprocessor: optional preprocessor replacing the weights'.
        **kwargs: passed to `build`.

    Returns:
        The classifier with its weights.

    Example:

    >>> build_with_weights(SPViT_Tiny, "spvit_tiny_digits")
    """
    kind, location = resolve_weights(weights)
    if preprocessor is not _UNSET:
        kwargs["preprocessor"] = preprocessor
    if kind == "preset":
        info = inspect_preset(location)
        image_shape = image_shape or info.image_shape
        if preprocessor is _UNSET and info.has_preprocessor:
            kwargs["preprocessor"] = _preset_preprocessor(location, image_shape)
        model = build(
            num_classes=num_classes or info.num_classes or 1000,
            image_shape=image_shape,
            **kwargs,
        )
        check_architecture(model.backbone, info)
        return load_preset_weights(model, location, info)

    if kind == "keras":
        tokens, file_classes = inspect_keras_weights(location)
        model = build(num_classes=num_classes or file_classes or 1000, image_shape=image_shape, **kwargs)
        if image_shape is None:
            model = at_grid(model, position_grid(tokens, model.backbone))
        return load_keras_weights(model, location)

    state = load_torch_state_dict(location, prefer_ema=prefer_ema)
    file_classes = state_classes(state)
    model = build(num_classes=num_classes or file_classes or 1000, image_shape=image_shape, **kwargs)
    if image_shape is None:
        model = at_grid(model, state_grid(state, model.backbone))
    if preprocessor is _UNSET:
        model.preprocessor = default_preprocessor(model, crop_pct)
    return load_official_state(model, state, location)


def _preset_preprocessor(preset, image_shape):
    preprocessor = ImageClassifierPreprocessor.from_preset(preset)
    converter = getattr(preprocessor, "image_converter", None)
    if converter is not None and converter.image_size is not None and image_shape is not None:
        converter.image_size = tuple(image_shape[:2])
    return preprocessor
