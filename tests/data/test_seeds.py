import numpy as np
import pytest
import tensorflow as tf

from keras_spvit.data.seeds import as_seed, split_seed

# Pure TensorFlow (runs inside tf.data whatever the Keras backend).


def test_int_seed_is_the_pair_seed_zero():
    np.testing.assert_array_equal(as_seed(7).numpy(), [7, 0])
    assert as_seed(7).dtype == tf.int64
    np.testing.assert_array_equal(as_seed(tf.constant([3, 4], tf.int32)).numpy(), [3, 4])


def test_none_draws_a_fresh_seed():
    assert as_seed(None).shape == (2,)
    assert not np.array_equal(as_seed(None).numpy(), as_seed(None).numpy())


@pytest.mark.parametrize("bad", [1.5, tf.constant([1, 2, 3]), tf.constant([0.5, 1.0])])
def test_bad_seeds_are_named(bad):
    with pytest.raises(ValueError, match="Received: seed="):
        as_seed(bad)


def test_split_is_tensorflows_stateless_split():
    seeds = split_seed(5, 3)
    expected = tf.random.experimental.stateless_split(tf.constant([5, 0], tf.int64), 3)
    assert len(seeds) == 3
    for got, want in zip(seeds, expected):
        np.testing.assert_array_equal(got.numpy(), want.numpy())
    assert len({tuple(s.numpy()) for s in seeds}) == 3
