"""Refiner and attention-map passing: what each computes, and their errors."""

import numpy as np
import pytest
from keras import ops

import keras_spvit
from keras_spvit import layers
from tests.conftest import BACKEND, to_numpy


def maps(shape, seed=0):
    m = np.random.default_rng(seed).uniform(size=shape)
    return (m / m.sum(-1, keepdims=True)).astype("float32")


def randomised_refiner(**kwargs):
    refiner = layers.AttentionRefiner(**kwargs)
    refiner.build((None, 3, 6, 6))
    rng = np.random.default_rng(0)
    for v in refiner.weights:
        low = 0.5 if "variance" in v.path or "gamma" in v.path else -0.5
        v.assign(rng.uniform(low, 1.0, v.shape).astype("float32"))
    return refiner


@pytest.mark.parametrize("normalize_output", [True, False])
def test_refiner_folded_inference_equals_its_stages(normalize_output):
    refiner = randomised_refiner(normalize_output=normalize_output)
    a = maps((2, 3, 6, 6))
    x = np.transpose(a, (0, 2, 3, 1))
    relu6 = lambda t: np.clip(t, 0, 6)  # noqa: E731
    x1 = relu6(to_numpy(refiner.bn1(refiner.conv_exp(x), training=False)))
    x2 = relu6(to_numpy(refiner.bn2(refiner.depth_sep_conv(x1), training=False)))
    x3 = to_numpy(refiner.bn3(refiner.conv_pro(x2), training=False)) + x
    if normalize_output:
        x3 = to_numpy(refiner.adapt_bn(x3, training=False))
    expected = np.transpose(x3, (0, 3, 1, 2))
    np.testing.assert_allclose(to_numpy(refiner(a)), expected, rtol=1e-5, atol=1e-5)


def test_refiner_training_uses_batch_statistics():
    refiner = randomised_refiner(normalize_output=False)
    a = maps((4, 3, 6, 6))
    train = to_numpy(refiner(a, training=True))
    assert train.shape == a.shape and not np.allclose(train, to_numpy(refiner(a)))


class KerasLayersRefiner(layers.AttentionRefiner):
    """The refiner's training step written with its Keras sub-layers: the reference."""

    def call(self, inputs, training=None):
        x = ops.transpose(inputs, (0, 2, 3, 1))
        maps = x
        x = self.activation_fn(self.bn1(self.conv_exp(x), training=training))
        x = self.activation_fn(self.bn2(self.depth_sep_conv(x), training=training))
        x = self.bn3(self.conv_pro(x), training=training) + maps
        if self.adapt_bn is not None:
            x = self.adapt_bn(x, training=training)
        return ops.transpose(x, (0, 3, 1, 2))


def output_and_gradients(layer, a, cotangent, compiled=False):
    """`layer(a, training=True)` and the gradients of `sum(out * cotangent)`
    with respect to `a` and the trainable weights; the layer's state is
    updated. `compiled`: on TensorFlow, under XLA (JAX always compiles)."""
    if BACKEND == "jax":
        import jax

        trainable = [v.value for v in layer.trainable_variables]
        frozen = [v.value for v in layer.non_trainable_variables]

        def loss(trainable, a):
            out, frozen_after = layer.stateless_call(trainable, frozen, a, training=True)
            return (out * cotangent).sum(), (out, frozen_after)

        grad_fn = jax.jit(jax.grad(loss, (0, 1), has_aux=True))
        grads, (out, frozen_after) = grad_fn(trainable, a)
        for v, value in zip(layer.non_trainable_variables, frozen_after):
            v.assign(value)
        return out, [grads[1]] + list(grads[0])
    if BACKEND == "tensorflow":
        import tensorflow as tf

        def step(a):
            with tf.GradientTape() as tape:
                tape.watch(a)
                out = layer(a, training=True)
                loss = tf.reduce_sum(out * cotangent)
            return out, tape.gradient(loss, [a] + layer.trainable_variables)

        if compiled:
            step = tf.function(step, jit_compile=True)
        return step(tf.constant(a))
    import torch

    a = torch.tensor(a, requires_grad=True)
    out = layer(a, training=True)
    (out * torch.tensor(cotangent)).sum().backward()
    return out, [a.grad] + [v.value.grad for v in layer.trainable_variables]


@pytest.mark.parametrize("compiled", [False, True] if BACKEND == "tensorflow" else [False])
@pytest.mark.parametrize(
    "normalize_output, frozen, kernel_size", [(True, None, 3), (False, "bn2", 3), (True, None, 5)]
)
def test_refiner_training_equals_its_keras_layers(normalize_output, frozen, kernel_size, compiled):
    """Forward, gradients and moving statistics of the fused training path
    (on TensorFlow and JAX: the hand-written convolution and batch-norm
    gradients; on TensorFlow both under XLA and outside it)."""
    shape = (3, 4, 9, 9)
    a = maps(shape, seed=4)
    cotangent = np.random.default_rng(5).normal(size=shape).astype("float32")
    results = []
    for cls in (layers.AttentionRefiner, KerasLayersRefiner):
        refiner = cls(normalize_output=normalize_output, kernel_size=kernel_size)
        refiner.build(shape)
        rng = np.random.default_rng(0)
        for v in refiner.weights:
            low = 0.5 if "variance" in v.path or "gamma" in v.path else -0.5
            v.assign(rng.uniform(low, 1.0, v.shape).astype("float32"))
        if frozen:
            getattr(refiner, frozen).trainable = False
        before = [to_numpy(v) for v in refiner.non_trainable_variables]
        out, grads = output_and_gradients(refiner, a, cotangent, compiled)
        moved = {
            v.path.split("/", 1)[1]: to_numpy(v) - start
            for v, start in zip(refiner.non_trainable_variables, before)
        }
        results.append((to_numpy(out), [to_numpy(g) for g in grads], moved))
    (out, grads, moving), (ref_out, ref_grads, ref_moving) = results
    np.testing.assert_allclose(out, ref_out, rtol=1e-5, atol=1e-5)
    assert len(grads) == len(ref_grads) == 1 + (11 if normalize_output else 9) - 2 * bool(frozen)
    # Relative to the largest: with normalize_output, bn3/beta's gradient is
    # zero (adapt_bn removes any shift) and both results are rounding noise.
    np.testing.assert_allclose(grads[0], ref_grads[0], atol=1e-5 * np.abs(ref_grads[0]).max())
    largest = max(np.abs(ref).max() for ref in ref_grads[1:])
    for g, ref in zip(grads[1:], ref_grads[1:]):
        np.testing.assert_allclose(g, ref, rtol=1e-5, atol=1e-5 * largest)
    # Moving statistics move 0.1 of the way to the batch mean and biased
    # variance (an unbiased one would move them 0.4% further here).
    assert moving.keys() == ref_moving.keys()
    for path, ref in ref_moving.items():
        if frozen and path.startswith(frozen):
            assert not np.any(ref) and not np.any(moving[path])
        else:
            assert np.abs(ref).min() > 1e-4
            np.testing.assert_allclose(moving[path], ref, rtol=1e-4, atol=1e-6)


def test_shared_attention_without_refiner_applies_the_map_as_is():
    x = np.random.default_rng(1).normal(size=(2, 5, 8)).astype("float32")
    m = maps((2, 2, 5, 5))
    shared = layers.SharedAttention(2, qkv_bias=False)
    out, applied = shared(x, attention_map=m, return_attention_scores=True)
    np.testing.assert_array_equal(to_numpy(applied), m)
    v = (x @ to_numpy(shared.v.kernel)).reshape(2, 5, 2, 4).transpose(0, 2, 1, 3)
    mixed = (m @ v).transpose(0, 2, 1, 3).reshape(2, 5, 8)
    expected = mixed @ to_numpy(shared.proj.kernel) + to_numpy(shared.proj.bias)
    np.testing.assert_allclose(to_numpy(out), expected, atol=1e-5)


def test_previous_map_is_added_after_the_softmax():
    x = np.random.default_rng(2).normal(size=(2, 5, 8)).astype("float32")
    m = maps((2, 2, 5, 5))
    fresh = layers.MultiHeadSelfAttention(2)
    _, p = fresh(x, return_attention_scores=True)
    chained = layers.MultiHeadSelfAttention(2, previous_map_scale=0.3, output_attention_map=True)
    chained.build(x.shape)
    chained.set_weights(fresh.get_weights())
    _, handed_on = chained(x, attention_map=m)
    np.testing.assert_allclose(to_numpy(handed_on), to_numpy(p) + 0.3 * m, atol=1e-6)


def test_refined_fresh_map_is_applied_but_the_raw_map_handed_on():
    x = np.random.default_rng(3).normal(size=(2, 16, 8)).astype("float32")
    attention = layers.SpatialPriorAttention(
        2, refiner=layers.AttentionRefiner(), output_attention_map=True
    )
    _, handed_on, applied = attention(x, return_attention_scores=True)
    np.testing.assert_allclose(to_numpy(handed_on).sum(-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(
        to_numpy(applied), to_numpy(attention.refiner(handed_on)), atol=1e-6
    )


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: layers.SharedAttention(2)(np.zeros((1, 4, 8), "float32")), "needs the previous"),
        (
            lambda: layers.MultiHeadSelfAttention(2)(
                np.zeros((1, 4, 8), "float32"), attention_map=maps((1, 2, 4, 4))
            ),
            "does not take one",
        ),
        (
            lambda: layers.SharedAttention(4)(
                np.zeros((1, 4, 8), "float32"), attention_map=maps((1, 2, 4, 4))
            ),
            r"4 heads.*\(1, 2, 4, 4\)",
        ),
        (lambda: layers.AttentionRefiner(kernel_size=4), "kernel_size=4"),
        (lambda: layers.SharedAttention(2, refiner="dla"), "refiner='dla'"),
        (
            lambda: keras_spvit.RefinedViT(64, 4, 4, refiner_blocks=[0, 1], image_shape=(32, 32, 3)),
            r"refiner_blocks=\[0, 1\]",
        ),
        (
            lambda: keras_spvit.SPViT(64, 4, 4, refiner_blocks=[4], image_shape=(32, 32, 3)),
            r"refiner_blocks=\[4\]",
        ),
    ],
)
def test_errors_name_the_problem(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_shared_map_over_other_tokens_is_refused():
    with pytest.raises(ValueError, match=r"received 5 tokens.*over 4 tokens"):
        layers.SharedAttention(2)(np.zeros((1, 5, 8), "float32"), attention_map=maps((1, 2, 4, 4)))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(shared_layers=[2]), "first layer of its stage"),
        (dict(shared_layers=[9]), "does not exist"),
        (dict(shared_layers=[1], class_token_block=1), "class token enters just before it"),
        (dict(spatial_prior_layers=[1]), "before `class_token_block`"),
        (dict(stage_heads=(2, 3)), r"stage_dims=\(32, 64\), stage_heads=\(2, 3\)"),
        (dict(stage_dims=(32,)), "one value per stage"),
    ],
)
def test_psvit_configuration_errors(kwargs, match):
    config = dict(stage_depths=(2, 2), stage_dims=(32, 64), stage_heads=(2, 2),
                  patch_size=8, image_shape=(32, 32, 3))
    with pytest.raises(ValueError, match=match):
        keras_spvit.PSViT(**{**config, **kwargs})
