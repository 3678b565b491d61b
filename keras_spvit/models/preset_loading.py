"""`from_preset` of every keras_spvit backbone and classifier: keras-hub's, at any resolution.

A preset loads into a model built for another image shape (the position
embedding is resampled, `keras_spvit.models.resolution`) and, for a
classifier, another number of classes (fresh heads, `keras_spvit.models.heads`).
"""

import json
import os

import keras
from keras_hub.src.utils import preset_utils

from keras_spvit.models.heads import fresh_heads_reason, notice_fresh_heads
from keras_spvit.models.keras_weights import load_h5
from keras_spvit.models.presets import PresetError, inspect_preset
from keras_spvit.models.resolution import backbone_of, set_image_size

# Backbone arguments that change no weight: a preset loads into a model that
# differs from it only in these.
NON_ARCHITECTURE_ARGS = (
    "name", "trainable", "dtype", "image_shape", "drop_path_rate", "dropout", "attention_dropout",
    "remat",
)


def load_preset_weights(model, preset, info=None):
    """Loads a preset's weights into a backbone or classifier of its architecture.

    The model may be built for another image shape (the position embedding
    is resampled) and, for a classifier, another number of classes (the
    heads then start fresh, and a warning says so).

    Args:
        model: a keras_spvit backbone or classifier.
        preset: a registered preset name, a hub handle or a folder.
        info: optional `PresetInfo` of `preset` (from `inspect_preset`).

    Returns:
        The model.

    Example:

    >>> model = SPViT_Tiny(num_classes=10, image_shape=(64, 64, 3))
    >>> load_preset_weights(model, "./spvit_tiny_digits")
    """
    info = info or inspect_preset(preset)
    backbone = backbone_of(model)
    weights_path = preset_utils.get_file(
        preset,
        preset_utils.MODEL_WEIGHTS_FILE
        if preset_utils.check_file_exists(preset, preset_utils.MODEL_WEIGHTS_FILE)
        else preset_utils.SHARDED_MODEL_WEIGHTS_CONFIG_FILE,
    )
    what = f"'model.weights.h5' of the preset {preset!r}"
    grid = None
    if info.image_shape is not None:
        height, width = info.image_shape[:2]
        grid = (height // backbone.patch_size, width // backbone.patch_size)
    load_h5(backbone, weights_path, what, grid)
    if backbone is not model:
        reason = fresh_heads_reason(model, info.num_classes, "preset")
        if reason is not None:
            notice_fresh_heads(model, f"the preset {preset!r}", reason)
        else:
            path = preset_utils.get_file(preset, preset_utils.TASK_WEIGHTS_FILE)
            try:
                model.load_task_weights(path)
            except Exception as error:
                raise ValueError(
                    f"Cannot load 'task.weights.h5' of the preset {preset!r} ({path}) into "
                    f"{model.name}: {type(error).__name__}: {error}"
                ) from error
    return model


def task_from_preset(cls, parent_from_preset, preset, load_weights=True, **kwargs):
    """`from_preset` of the keras_spvit classifiers: keras-hub's, plus new resolutions.

    The model is built by keras-hub's loader without weights (for the
    requested `image_shape` and `num_classes`), then `load_preset_weights`
    fills it. A preset without preprocessing files gives `preprocessor=None`.

    Args:
        cls: the classifier class.
        parent_from_preset: keras-hub's `from_preset` of that class.
        preset: a registered preset name, a hub handle or a folder.
        load_weights: bool. Load the saved weights.
        **kwargs: classifier or backbone arguments to override.

    Returns:
        The classifier.

    Example:

    >>> task_from_preset(SPViTImageClassifier, super_from_preset, "./spvit_tiny_digits")
    """
    preset = os.fspath(preset)
    info = inspect_preset(preset)
    if not info.has_task and "num_classes" not in kwargs:
        raise PresetError(
            f"The preset {preset!r} holds a backbone only (no 'task.json'): pass "
            f"`num_classes` to build {cls.__name__} heads on it."
        )
    if not info.has_task and not info.has_preprocessor:
        kwargs.setdefault("preprocessor", None)
    image_shape = kwargs.get("image_shape")
    model = parent_from_preset(preset, load_weights=False, **kwargs)
    if image_shape is not None:
        set_image_size(model, image_shape)
    if load_weights:
        load_preset_weights(model, preset, info)
    return model


def backbone_from_preset(parent_from_preset, preset, load_weights=True, **kwargs):
    """`from_preset` of the keras_spvit backbones: keras-hub's, plus new resolutions.

    Args:
        parent_from_preset: keras-hub's `Backbone.from_preset` of the class.
        preset: a registered preset name, a hub handle or a folder.
        load_weights: bool. Load the saved weights.
        **kwargs: backbone arguments to override, e.g. `image_shape`.

    Returns:
        The backbone.

    Example:

    >>> backbone_from_preset(super_from_preset, "./spvit_tiny_digits", image_shape=(64, 64, 3))
    """
    preset = os.fspath(preset)
    info = inspect_preset(preset)
    model = parent_from_preset(preset, load_weights=False, **kwargs)
    if load_weights:
        load_preset_weights(model, preset, info)
    return model


def check_architecture(backbone, info):
    """Raises if a preset's backbone is not the architecture `backbone` has.

    Args:
        backbone: the backbone built to take the preset.
        info: the preset's `PresetInfo`.

    Example:

    >>> check_architecture(SPViT_Tiny().backbone, inspect_preset("./spvit_tiny_digits"))
    """
    saved_class = keras.saving.get_registered_object(info.backbone_class)
    if saved_class is not type(backbone):
        raise PresetError(
            f"The preset {info.preset!r} holds a {info.backbone_class}, not a "
            f"{type(backbone).__name__}: load it with its own classes' `from_preset`."
        )
    built = json.loads(json.dumps(backbone.get_config()))
    saved = info.backbone_config
    differ = [
        f"{key}: preset {saved.get(key)!r}, model {built.get(key)!r}"
        for key in sorted(set(built) | set(saved))
        if key not in NON_ARCHITECTURE_ARGS and saved.get(key) != built.get(key)
    ]
    if differ:
        raise PresetError(
            f"The preset {info.preset!r} is another variant than the model being built:\n"
            + "\n".join(f"  {d}" for d in differ)
            + "\nBuild the matching variant, or load the preset with `from_preset`."
        )
