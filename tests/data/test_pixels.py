"""Per-channel values as image-shaped tensors (keras_spvit.data.pixels)."""

import numpy as np
import tensorflow as tf

from keras_spvit.data.pixels import channel_image, channel_offsets


def test_channel_image_is_one_image_for_an_image_and_for_a_batch():
    image = tf.zeros((4, 5, 3))
    out = channel_image((1, 2, 3), image)
    assert out.shape == (4, 5, 3)
    np.testing.assert_array_equal(out.numpy(), np.broadcast_to([1, 2, 3], (4, 5, 3)))
    # A batch gets ONE image (broadcast over the batch axis), built at run time.
    batch = tf.zeros((6, 4, 5, 3))
    out = channel_image((1, 2, 3), batch, tf.int32)
    assert out.shape == (1, 4, 5, 3) and out.dtype == tf.int32
    added = (batch + tf.cast(out, tf.float32))[5].numpy()
    np.testing.assert_array_equal(added, np.broadcast_to([1, 2, 3], (4, 5, 3)))


def test_channel_image_builds_no_image_sized_constant():
    # A static shape must not become a graph constant of the image's size.
    fn = tf.function(lambda x: x - channel_image((7.0, 8.0, 9.0), x))
    graph = fn.get_concrete_function(tf.TensorSpec((1, 64, 64, 3))).graph
    constants = [op for op in graph.get_operations() if op.type == "Const"]
    sizes = [op.get_attr("value").tensor_shape for op in constants]
    assert max(np.prod([d.size for d in s.dim]) if s.dim else 1 for s in sizes) < 64


def test_channel_offsets_index_per_image_and_channel_tables():
    images = tf.constant(np.random.default_rng(0).integers(0, 256, (3, 4, 5, 2)), tf.float32)
    offsets = channel_offsets(images).numpy()
    assert offsets.shape == (3, 4, 5, 2)
    expected = (np.arange(3)[:, None] * 2 + np.arange(2)[None, :]) * 256
    expected = np.broadcast_to(expected[:, None, None, :], offsets.shape)
    np.testing.assert_array_equal(offsets, expected)
    # One image: the channel term only; unknown batch size works too.
    np.testing.assert_array_equal(channel_offsets(images[:1]).numpy(), offsets[:1])
    fn = tf.function(channel_offsets, input_signature=[tf.TensorSpec((None, 4, 5, 2))])
    np.testing.assert_array_equal(fn(images).numpy(), offsets)
