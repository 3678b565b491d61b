"""Per-channel values as whole-image tensors, for the augmentation kernels (TF ops).

TensorFlow's CPU kernels are several times slower on a binary op that
broadcasts a per-channel constant over an image (`image - fill`, `(h, w, 3)`
against `(3,)`) than on equal shapes, or on shapes that differ only in the
leading (batch) axis. So the kernels combine an image with ONE image-shaped
tensor of the per-channel values, built at run time by one `broadcast_to`
(no image-sized graph constants: they lengthen every iterator's start-up),
and for a batch of one image's shape, broadcast over the batch axis.
"""

import tensorflow as tf


def channel_image(values, like, dtype=tf.float32):
    """`values` (one per channel) at every pixel of one image shaped like `like`.

    Args:
        values: one number per channel (the last axis of `like`).
        like: `(h, w, c)` image or `(n, h, w, c)` batch.
        dtype: the result's dtype.

    Returns:
        `(h, w, c)` for an image, `(1, h, w, c)` for a batch (it broadcasts
        over the batch axis at equal-shape speed).

    Example:

    >>> fill = channel_image((124, 116, 104), images)  # images: (n, 224, 224, 3)
    >>> shifted = images - fill
    """
    shape = tf.shape(like)
    if like.shape.rank == 4:
        shape = tf.concat([[1], shape[1:]], axis=0)
    return tf.broadcast_to(tf.constant(values, dtype), shape)


def channel_offsets(images, size=256):
    """`(i * channels + c) * size` at every value of channel `c` of image `i`, int32.

    Flat indices of `(n * channels, size)` per-channel tables: add to the
    values of `images` and look them up in the flattened tables with one
    `gather_nd`.

    Args:
        images: `(n, h, w, c)` batch (static channel count).
        size: entries per table.

    Returns:
        int32 tensor of `images`' shape (a batch of one: no per-image term).

    Example:

    >>> indices = tf.cast(images, tf.int32) + channel_offsets(images)
    >>> out = tf.gather_nd(tf.reshape(tables, [-1]), indices[..., None])
    """
    channels = images.shape[-1]
    per_channel = channel_image([c * size for c in range(channels)], images, tf.int32)
    if images.shape[0] == 1:
        return per_channel
    per_image = tf.reshape(tf.range(tf.shape(images)[0]) * (channels * size), (-1, 1, 1, 1))
    return per_channel + per_image
