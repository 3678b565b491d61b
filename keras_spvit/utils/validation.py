"""Eager argument checks whose messages name the bad value and what was expected."""

import math
import numbers


def check_rate(value, name):
    """Returns `value` as a float in `[0, 1)` or raises a `ValueError`."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not 0.0 <= float(value) < 1.0
    ):
        raise ValueError(
            f"Expected a float in [0, 1) for `{name}`. Received: {name}={value!r}"
        )
    return float(value)


def check_positive_int(value, name):
    """Returns `value` as an int > 0 or raises a `ValueError`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(
            f"Expected a positive integer for `{name}`. Received: {name}={value!r}"
        )
    return int(value)


def check_non_negative_int(value, name):
    """Returns `value` as an int >= 0 or raises a `ValueError`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(
            f"Expected a non-negative integer for `{name}`. Received: {name}={value!r}"
        )
    return int(value)


def check_positive_float(value, name):
    """Returns `value` as a float > 0 or raises a `ValueError`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or value <= 0:
        raise ValueError(
            f"Expected a positive number for `{name}`. Received: {name}={value!r}"
        )
    return float(value)


def check_grid_shape(value, name="grid_shape"):
    """Returns `value` as a `(rows, cols)` tuple of positive ints, or `None`."""
    if value is None:
        return None
    try:
        rows, cols = value
    except (TypeError, ValueError):
        raise ValueError(
            f"Expected `{name}` to be a pair (rows, cols) of positive integers. "
            f"Received: {name}={value!r}"
        ) from None
    return (check_positive_int(rows, f"{name}[0]"), check_positive_int(cols, f"{name}[1]"))


def check_one_of(value, choices, name):
    """Returns `value` if it is one of `choices`, else raises a `ValueError`."""
    if value not in choices:
        raise ValueError(
            f"Expected `{name}` to be one of {sorted(choices)}. Received: {name}={value!r}"
        )
    return value


def check_transformer_dims(embed_dim, depth, num_heads):
    """Validates a transformer's width, depth and heads; returns them as ints."""
    embed_dim = check_positive_int(embed_dim, "embed_dim")
    depth = check_positive_int(depth, "depth")
    num_heads = check_positive_int(num_heads, "num_heads")
    if embed_dim % num_heads:
        raise ValueError(
            "`embed_dim` must be divisible by `num_heads`. Received: "
            f"embed_dim={embed_dim}, num_heads={num_heads}"
        )
    return embed_dim, depth, num_heads


def check_size(value, name):
    """Returns `value` as a `(height, width)` tuple of positive ints.

    Args:
        value: a positive int (both sides) or a pair of positive ints.
        name: the argument's name, for the message.

    Example:

    >>> check_size(32, "size")
    (32, 32)
    """
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    if (
        not isinstance(value, (tuple, list))
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    ):
        raise ValueError(
            f"Expected `{name}` to be a positive int or a pair of positive ints. "
            f"Received: {name}={value!r}"
        )
    return tuple(value)


def check_increasing_pair(value, name, low=0.0, high=math.inf):
    """Returns `value` as an increasing `(min, max)` pair of floats in `[low, high]`.

    Args:
        value: a pair of numbers.
        name: the argument's name, for the message.
        low: lowest value allowed.
        high: highest value allowed.

    Example:

    >>> check_increasing_pair((0.08, 1.0), "scale", 0.0, 1.0)
    (0.08, 1.0)
    """
    if (
        not isinstance(value, (tuple, list))
        or len(value) != 2
        or not low <= value[0] <= value[1] <= high
    ):
        raise ValueError(
            f"Expected `{name}` to be an increasing pair in [{low}, {high}]. "
            f"Received: {name}={value!r}"
        )
    return (float(value[0]), float(value[1]))


def check_probability(value, name):
    """Returns `value` as a float in `[0, 1]` or raises a `ValueError`.

    Example:

    >>> check_probability(0.5, "hflip")
    0.5
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= value <= 1.0:
        raise ValueError(f"Expected `{name}` in [0, 1]. Received: {name}={value!r}")
    return float(value)


def check_crop_pct(value):
    """Returns a center-crop fraction as a float in `(0, 1]` or raises a `ValueError`.

    Example:

    >>> check_crop_pct(0.875)
    0.875
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 < value <= 1.0:
        raise ValueError(
            f"Expected a float in (0, 1] for `crop_pct`. Received: crop_pct={value!r}"
        )
    return float(value)
