"""Reduced precision: what stays float32 under `mixed_bfloat16` / `mixed_float16`.

References are float64 numpy on the exact values the layer sees (its bfloat16 or
float16 inputs), so the tests measure the rounding the layers add.
"""

import ml_dtypes
import numpy as np
import pytest
from keras import ops

from keras_spvit import layers
from keras_spvit.layers.base_attention import (
    attention_logits,
    fused_attention_logits_are_float32,
)
from tests.conftest import BACKEND, bf16_matmul_error_factor, to_numpy

BF16 = ml_dtypes.bfloat16


def as_float32(x):
    return to_numpy(ops.cast(x, "float32"))


def test_drop_path_rescales_in_float32_under_mixed_bfloat16():
    layer = layers.DropPath(rate=0.1, seed=0, dtype="mixed_bfloat16")
    # 512 samples, each a different bfloat16 value in [1, 4).
    values = (1.0 + 3.0 * np.arange(512) / 512).astype(BF16).astype("float32")
    x = ops.cast(np.repeat(values[:, None, None], 3, axis=2), "bfloat16")
    y = as_float32(layer(x, training=True))[:, 0, 0]
    kept = y != 0
    assert 400 < kept.sum() < 512
    scale = np.float32(1.0) / np.float32(0.9)  # 1/0.9 in float32, 1.1111112
    assert abs(float(scale) - 1 / 0.9) < 1e-7
    expected = (values * scale).astype(BF16).astype("float32")
    np.testing.assert_array_equal(y[kept], expected[kept])
    # What the bfloat16 keep rate gave: x / bf16(0.9) = x / 0.8984375, rounded.
    old = (values / np.float32(BF16(0.9))).astype(BF16).astype("float32")
    assert np.mean(old[kept] != expected[kept]) > 0.1


def bf16_values(shape, scale, seed):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) * scale).astype(BF16).astype("float32")


def test_bfloat16_attention_logits_are_float32_accurate():
    # Measured: max error 2.5e-6 (TF, torch) / 1.8e-6 (JAX) on logits of
    # magnitude up to 20.6, the float32 level (float32 inputs: the same);
    # rounding the product to bfloat16 first gave 0.062.
    query, key = bf16_values((2, 6, 197, 64), 2, 0), bf16_values((2, 6, 197, 64), 2, 1)
    reference = np.einsum("bhtd,bhsd->bhts", query.astype("float64"), key) / 8.0
    logits = attention_logits(ops.cast(query, "bfloat16"), ops.cast(key, "bfloat16"))
    assert ops.dtype(logits) == "float32"
    error = np.abs(to_numpy(logits) - reference).max()
    assert error < 1e-5, error
    float32_error = np.abs(to_numpy(attention_logits(query, key)) - reference).max()
    assert error <= 2 * float32_error


def large_qk_layer(kind, dtype, dim=64, tokens=16):
    """A one-head layer whose `q . k` reach 102,400 (> float16's 65,504); the
    scaled logits, 12,800 at most, are representable."""
    if kind == "spatial_prior":
        layer = layers.SpatialPriorAttention(num_heads=1, grid_shape=(4, 4), dtype=dtype)
    elif kind == "refiner":
        layer = layers.MultiHeadSelfAttention(
            num_heads=1, refiner=layers.AttentionRefiner(), dtype=dtype
        )
    else:
        layer = layers.MultiHeadSelfAttention(num_heads=1, dtype=dtype)
    layer.build((None, tokens, dim))
    # Token i is a_i * ones; q_i = k_i = 40 a_i * ones, v_i = a_i * ones.
    q_or_k = np.full((dim, dim), 40.0 / dim, "float32")
    v = np.eye(dim, dtype="float32")
    if kind == "spatial_prior":
        layer.qk.kernel.assign(np.concatenate([q_or_k, q_or_k], axis=1))
        layer.v.kernel.assign(v)
    else:
        layer.qkv.kernel.assign(np.concatenate([q_or_k, q_or_k, v], axis=1))
    layer.proj.kernel.assign(np.eye(dim, dtype="float32"))
    layer.proj.bias.assign(np.zeros(dim, "float32"))
    return layer


@pytest.mark.parametrize("kind", ["vanilla", "spatial_prior", "refiner"])
@pytest.mark.parametrize("scores", [False, True])
def test_float16_logits_do_not_overflow(kind, scores):
    a = np.linspace(0.5, 1.0, 16, dtype="float32")
    x = np.repeat(a[None, :, None], 64, axis=2)
    outputs = []
    built = [large_qk_layer(kind, dtype) for dtype in ("float32", "mixed_float16")]
    if kind == "refiner":
        built[1].refiner.set_weights(built[0].refiner.get_weights())
    for layer in built:
        y = layer(x, return_attention_scores=True)[0] if scores else layer(x)
        outputs.append(as_float32(y))
    float32, float16 = outputs
    assert np.all(np.isfinite(float16))
    # Logits 12,800 a_i a_j: every query attends to the largest a (1.0),
    # except where the refiner mixes the map.
    if kind != "refiner":
        np.testing.assert_allclose(float32, 1.0, rtol=1e-6)
    np.testing.assert_allclose(float16, float32, rtol=2e-3, atol=2e-3)


def test_attention_under_mixed_bfloat16_keeps_float32_logits_on_its_default_path():
    """The path the layer takes by default (the fused kernel where it keeps
    float32 logits, TensorFlow's explicit path) against float64 attention on
    the layer's own bfloat16 q, k, v. Measured max error 0.012 (TF, JAX),
    0.008 (torch); Keras' TensorFlow fused kernel, which rounds the logits
    to bfloat16, gave 0.031. TensorFlow on a CPU without native bfloat16
    (AVX2): 0.020, its matmuls' rounding error twice that of one rounding
    (`bf16_matmul_error_factor`), by which the bound scales."""
    rng = np.random.default_rng(0)
    dim, heads, tokens = 64, 2, 50
    x = rng.standard_normal((2, tokens, dim)).astype("float32")
    layer = layers.MultiHeadSelfAttention(num_heads=heads, dtype="mixed_bfloat16")
    layer.build((None, tokens, dim))
    kernel = rng.standard_normal((dim, 3 * dim)).astype("float32") / 8
    layer.qkv.kernel.assign(kernel * np.repeat([2.0, 2.0, 1.0], dim))
    layer.proj.kernel.assign(np.eye(dim, dtype="float32"))
    layer.proj.bias.assign(np.zeros(dim, "float32"))
    qkv = as_float32(layer.qkv(x)).astype("float64").reshape(2, tokens, 3, heads, dim // heads)
    query, key, value = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    logits = np.einsum("bthd,bshd->bhts", query, key) * (dim // heads) ** -0.5
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    expected = np.einsum("bhts,bshd->bthd", weights, value).reshape(2, tokens, dim)
    assert np.abs(logits).max() > 15
    error = np.abs(as_float32(layer(x)) - expected).max()
    assert error < 0.016 * bf16_matmul_error_factor(), error
    assert fused_attention_logits_are_float32("bfloat16") == (BACKEND != "tensorflow")
    assert fused_attention_logits_are_float32("float32")


def gradients(fn, args, cotangent):
    """`fn(*args)` and the gradients of `sum(fn(*args) * cotangent)` wrt `args`."""
    if BACKEND == "jax":
        import jax

        def loss(*a):
            out = fn(*a)
            return (out.astype("float32") * cotangent).sum(), out

        grads, out = jax.grad(loss, argnums=tuple(range(len(args))), has_aux=True)(*args)
        return out, list(grads)
    if BACKEND == "tensorflow":
        import tensorflow as tf

        args = [tf.convert_to_tensor(a) for a in args]
        with tf.GradientTape() as tape:
            for a in args:
                tape.watch(a)
            out = fn(*args)
            loss = tf.reduce_sum(tf.cast(out, "float32") * cotangent)
        return out, tape.gradient(loss, args)
    import torch

    args = [a.detach().clone().requires_grad_(True) for a in args]
    out = fn(*args)
    (out.float() * torch.tensor(cotangent)).sum().backward()
    return out, [a.grad for a in args]


def plain_prior_softmax(query, key, prior):
    return ops.softmax(attention_logits(query, key) * prior[None], axis=-1)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_prior_softmax_gradients_match_autodiff_of_the_formula(dtype):
    from keras_spvit.layers.spatial_prior_attention import prior_softmax

    rng = np.random.default_rng(0)
    query, key = (ops.cast(bf16_values((2, 3, 16, 8), 1.5, s), dtype) for s in (1, 2))
    prior = ops.convert_to_tensor(rng.uniform(0.5, 1.5, (3, 16, 16)).astype("float32"))
    cotangent = rng.normal(size=(2, 3, 16, 16)).astype("float32")
    out, grads = gradients(lambda q, k, p: prior_softmax(q, k, p, dtype), [query, key, prior],
                           cotangent)
    ref_out, ref_grads = gradients(plain_prior_softmax, [query, key, prior], cotangent)
    assert ops.dtype(out) == dtype
    # Same forward (rounded once to the dtype); gradients equal to float32
    # rounding in float32. In bfloat16 the kept weights are rounded: against
    # float32 gradients of the same values, measured max error / max |grad|
    # 3.9e-3 (query), 5.2e-3 (key), 3.2e-3 (prior), where autodiff of the
    # formula gives 2.0e-3, 2.8e-3 and 0 (all backends alike).
    np.testing.assert_array_equal(as_float32(out), as_float32(ops.cast(ref_out, dtype)))
    tolerance = 1e-5 if dtype == "float32" else 1.5e-2
    for grad, ref in zip(grads, ref_grads):
        assert ops.dtype(grad) == ops.dtype(ref)
        grad, ref = as_float32(grad), as_float32(ref)
        np.testing.assert_allclose(grad, ref, rtol=tolerance, atol=tolerance * np.abs(ref).max())


def test_spatial_prior_attention_light_path_has_the_same_forward():
    x = bf16_values((2, 16, 32), 1.0, 0)
    layer = layers.SpatialPriorAttention(num_heads=2, grid_shape=(4, 4), dtype="mixed_bfloat16")
    light = as_float32(layer(x))
    plain = as_float32(layer(x, return_attention_scores=True)[0])
    np.testing.assert_array_equal(light, plain)
