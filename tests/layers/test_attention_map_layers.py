"""Refiner and attention-map passing: what each computes, and their errors."""

import numpy as np
import pytest

import keras_spvit
from keras_spvit import layers
from tests.conftest import to_numpy


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


def test_refiner_folded_inference_equals_its_stages():
    refiner = randomised_refiner()
    a = maps((2, 3, 6, 6))
    x = np.transpose(a, (0, 2, 3, 1))
    relu6 = lambda t: np.clip(t, 0, 6)  # noqa: E731
    x1 = relu6(to_numpy(refiner.bn1(refiner.conv_exp(x), training=False)))
    x2 = relu6(to_numpy(refiner.bn2(refiner.depth_sep_conv(x1), training=False)))
    x3 = to_numpy(refiner.bn3(refiner.conv_pro(x2), training=False)) + x
    expected = np.transpose(to_numpy(refiner.adapt_bn(x3, training=False)), (0, 3, 1, 2))
    np.testing.assert_allclose(to_numpy(refiner(a)), expected, rtol=1e-5, atol=1e-5)


def test_refiner_training_uses_batch_statistics():
    refiner = randomised_refiner(normalize_output=False)
    a = maps((4, 3, 6, 6))
    train = to_numpy(refiner(a, training=True))
    assert train.shape == a.shape and not np.allclose(train, to_numpy(refiner(a)))


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
