"""Checks of the images a model, preprocessor or image converter receives.

Each raises one line naming the received shape and what is expected, before
the input reaches keras-hub or a backend op (where the error would be deep
and name neither).
"""

import numbers

import numpy as np

ATTENTION_MAPS_HINT = (
    "use keras_spvit.attention_maps(model, images) for every block's attention map "
    "({block_name: (batch, heads, tokens, tokens)})"
)


def static_shape(x):
    """The static shape of an array-like as a tuple (`None` for unknown dims), or `None`.

    Datasets, generators and dicts have no shape: `None` (nothing is checked).

    Example:

    >>> static_shape(np.zeros((2, 8, 8)))
    (2, 8, 8)
    """
    if x is None or isinstance(x, dict):
        return None
    shape = getattr(x, "shape", None)
    if shape is None and isinstance(x, (list, tuple)):
        try:
            shape = np.shape(x)
        except ValueError:
            return None
    if shape is None:
        return None
    # Symbolic dimensions (jax2tf's shape polymorphism, tracing) count as unknown.
    return tuple(int(d) if isinstance(d, numbers.Integral) else None for d in shape)


def check_converter_images(x, where, channels=None, channels_first=False):
    """Raises a one-line `ValueError` if `x` cannot be a batch or an image.

    Args:
        x: the images (array, tensor, nested lists); others pass unchecked.
        where: the receiving object's description, for the message.
        channels: int or `None`. The channels the converter normalises (grey,
            1 channel, is also taken: it broadcasts); `None` takes 1 or 3.
        channels_first: bool. The channel axis comes before height and width.

    Example:

    >>> check_converter_images(np.zeros((5, 8, 8)), "SPViTImageConverter", channels=3)
    Traceback (most recent call last):
    ValueError: SPViTImageConverter takes images shaped (batch, height, width, 3) ...
    """
    shape = static_shape(x)
    if shape is None:
        return
    allowed = (1, 3) if channels in (None, 1) else (1, channels)
    rank = len(shape)
    found = shape[-3] if channels_first and rank >= 3 else (shape[-1] if rank else None)
    if rank in (3, 4) and (found is None or found in allowed):
        return
    c = channels or 3
    layout = f"({c}, height, width)" if channels_first else f"(height, width, {c})"
    batch = f"(batch, {layout[1:]}"
    hint = ""
    if rank == 3 and not channels_first and shape[-1] not in allowed:
        hint = " For a batch of grey images add the channel axis: images[..., None]."
    raise ValueError(
        f"{where} takes images shaped {batch} or {layout} ({'channels first' if channels_first else 'channels last'}, "
        f"grey images may have 1 channel); received shape {shape}.{hint}"
    )


def check_model_images(x, image_shape, where):
    """Raises a one-line `ValueError` unless `x` is a batch shaped `(batch,) + image_shape`.

    Args:
        x: the images (array, tensor); others pass unchecked.
        image_shape: `(height, width, channels)` the model takes.
        where: the receiving model's description, for the message.

    Example:

    >>> check_model_images(np.zeros((5, 8, 8)), (32, 32, 3), "spvit_tiny")
    Traceback (most recent call last):
    ValueError: spvit_tiny takes normalised images shaped (batch, 32, 32, 3) ...
    """
    shape = static_shape(x)
    if shape is None:
        return
    if len(shape) == 4 and all(
        got is None or got == want for got, want in zip(shape[1:], image_shape)
    ):
        return
    raise ValueError(
        f"{where} takes normalised images shaped (batch, {', '.join(map(str, image_shape))}); "
        f"received shape {shape}."
    )


def refuse_attention_scores(kwargs, where):
    """Raises a one-line `TypeError` if `return_attention_scores` was passed.

    Example:

    >>> refuse_attention_scores({"return_attention_scores": True}, "spvit_tiny.predict()")
    Traceback (most recent call last):
    TypeError: spvit_tiny.predict() does not take `return_attention_scores`; use ...
    """
    if "return_attention_scores" in kwargs:
        raise TypeError(f"{where} does not take `return_attention_scores`; {ATTENTION_MAPS_HINT}.")
