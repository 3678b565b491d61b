"""Seeds of the data package's stateless random ops.

Everything random in `keras_spvit.data` is stateless: `seed` is a
shape-`(2,)` integer tensor for TensorFlow's stateless random ops (what
`tf.random.experimental.stateless_split` / `stateless_fold_in` produce), or a
Python int (read as `[seed, 0]`). The same seed gives the same result. `None`
draws a fresh, unreproducible seed on every call. The pipelines in
`keras_spvit.data.pipelines` hand each example its own seed.
"""

import tensorflow as tf


def as_seed(seed):
    """A shape-`(2,)` int64 seed for stateless ops from an int, a seed tensor or `None`."""
    if seed is None:
        return tf.random.uniform((2,), maxval=tf.int64.max, dtype=tf.int64)
    if isinstance(seed, int) and not isinstance(seed, bool):
        return tf.constant([seed, 0], tf.int64)
    seed = tf.convert_to_tensor(seed)
    if not seed.dtype.is_integer or seed.shape.rank != 1 or seed.shape[0] not in (None, 2):
        raise ValueError(
            "Expected `seed` to be an int or an integer tensor of shape (2,). "
            f"Received: seed={seed!r}"
        )
    return tf.cast(seed, tf.int64)


def split_seed(seed, num):
    """`num` independent shape-`(2,)` seeds derived from `seed`.

    Args:
        seed: an int, a shape-`(2,)` integer tensor or `None` (see `as_seed`).
        num: int. How many seeds.

    Returns:
        A list of `num` int64 tensors of shape `(2,)`.

    Example:

    >>> crop_seed, flip_seed = split_seed(0, 2)
    """
    return tf.unstack(tf.random.experimental.stateless_split(as_seed(seed), num))
