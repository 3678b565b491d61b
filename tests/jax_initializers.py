"""JAX test sessions: Keras' random initializers without one XLA compile per shape.

Keras draws each initial weight with `jax.random.<kind>(seed, shape)` run eagerly, and
eager JAX compiles one program per (kind, shape): building PSViT's 5-family test model
spent 12 of its 17.5 s compiling threefry samplers (AMD EPYC, JAX 0.10), and a test
session builds hundreds of shapes. With JAX's partitionable threefry (the default
since 0.5) element i of a draw depends only on the key and i, so the first n elements
of a flat draw of any larger size are the draw of n elements: this module draws a flat
vector of the next power-of-two size (one compile per size class, shared by every
shape in it), then slices, reshapes, scales and shifts in float32 numpy, as Keras'
separate eager multiply and add round. The weights are bit-identical to Keras' own
(`tests/test_jax_initializers.py` checks it against the unpatched functions), so a
test's subprocesses, which build with Keras' functions, start from the same weights.

Only eager, float32, concrete-seed draws take this path; traced draws (dropout inside
a compiled step), other dtypes, or JAX without partitionable threefry go to Keras.
"""

import functools

import jax
import numpy as np
from keras.backend import floatx, standardize_dtype
from keras.src.backend.jax import random as keras_jax_random

ORIGINAL = {name: getattr(keras_jax_random, name)
            for name in ("normal", "uniform", "truncated_normal")}
_SMALLEST = 1024


def _size_class(n):
    return max(_SMALLEST, 1 << (n - 1).bit_length())


@functools.lru_cache(maxsize=None)
def _flat_sampler(kind, size):
    if kind == "normal":
        return jax.jit(lambda key: jax.random.normal(key, (size,), "float32"))
    if kind == "truncated_normal":
        return jax.jit(
            lambda key: jax.random.truncated_normal(key, -2.0, 2.0, (size,), "float32"))
    return jax.jit(
        lambda key, low, high: jax.random.uniform(key, (size,), "float32", low, high))


def _draw(kind, shape, dtype, key, *bounds):
    """The flat draw's first prod(shape) elements as a float32 numpy array, or None
    when this draw must go to Keras' own function."""
    if standardize_dtype(dtype or floatx()) != "float32" or isinstance(key, jax.core.Tracer):
        return None
    n = int(np.prod(shape))
    if n == 0 or not jax.config.jax_threefry_partitionable:
        return None
    sample = _flat_sampler(kind, _size_class(n))(key, *bounds)
    if isinstance(sample, jax.core.Tracer):
        return None
    return np.asarray(sample)[:n].reshape(shape)


# Each draws its key once (a SeedGenerator advances) and hands that key on to Keras'
# function when it falls back.
def normal(shape, mean=0.0, stddev=1.0, dtype=None, seed=None):
    key = keras_jax_random.jax_draw_seed(seed)
    sample = _draw("normal", shape, dtype, key)
    if sample is None:
        return ORIGINAL["normal"](shape, mean, stddev, dtype, key)
    return jax.numpy.asarray(sample * np.float32(stddev) + np.float32(mean))


def truncated_normal(shape, mean=0.0, stddev=1.0, dtype=None, seed=None):
    key = keras_jax_random.jax_draw_seed(seed)
    sample = _draw("truncated_normal", shape, dtype, key)
    if sample is None:
        return ORIGINAL["truncated_normal"](shape, mean, stddev, dtype, key)
    return jax.numpy.asarray(sample * np.float32(stddev) + np.float32(mean))


def uniform(shape, minval=0.0, maxval=1.0, dtype=None, seed=None):
    key = keras_jax_random.jax_draw_seed(seed)
    sample = _draw("uniform", shape, dtype, key, np.float32(minval), np.float32(maxval))
    if sample is None:
        return ORIGINAL["uniform"](shape, minval, maxval, dtype, key)
    return jax.numpy.asarray(sample)


def install():
    """Routes Keras' JAX `normal`, `uniform` and `truncated_normal` through this module."""
    keras_jax_random.normal = normal
    keras_jax_random.uniform = uniform
    keras_jax_random.truncated_normal = truncated_normal
