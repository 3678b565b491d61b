"""`BaseAttention`: one overridable method, one map-passing protocol, and the
saved names (variable paths, config keys) of the release kept."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_spvit import layers
from tests.conftest import to_numpy


class MeanAttention(layers.BaseAttention):
    """Uniform attention over the tokens: only `_compute_attention` written."""

    input_projections = (("v", ("value",)),)

    def _compute_attention(self, query, key, value, attention_map=None, training=None,
                           return_attention_scores=False):
        tokens = value.shape[1]
        weights = ops.full((1, self.num_heads, tokens, tokens), 1.0 / tokens)
        return self._weighted_sum(weights, value, training), weights, weights


def test_a_variant_overrides_only_the_attention_math():
    x = np.random.default_rng(0).normal(size=(2, 5, 8)).astype("float32")
    layer = MeanAttention(num_heads=2, output_attention_map=True)
    out, handed_on, scores = layer(x, return_attention_scores=True)
    assert [v.path for v in layer.weights] == [
        "mean_attention/v/kernel", "mean_attention/proj/kernel", "mean_attention/proj/bias"
    ]
    mean_value = (x @ to_numpy(layer.v.kernel)).mean(axis=1, keepdims=True)
    expected = np.repeat(mean_value, 5, axis=1) @ to_numpy(layer.proj.kernel)
    np.testing.assert_allclose(to_numpy(out), expected + to_numpy(layer.proj.bias), atol=1e-5)
    np.testing.assert_array_equal(to_numpy(handed_on), np.full((1, 2, 5, 5), 0.2, "float32"))
    np.testing.assert_array_equal(to_numpy(scores), to_numpy(handed_on))
    assert len(layer(x)) == 2  # (outputs, map) without the scores


def test_the_base_alone_says_what_to_override():
    with pytest.raises(NotImplementedError, match="_compute_attention"):
        layers.BaseAttention(num_heads=2)(np.zeros((1, 3, 4), "float32"))


@pytest.mark.parametrize(
    "make, takes_map",
    [
        (lambda: layers.MultiHeadSelfAttention(2), False),
        (lambda: layers.MultiHeadSelfAttention(2, previous_map_scale=0.5), True),
        (lambda: layers.SpatialPriorAttention(2), False),
        (lambda: layers.SharedAttention(2), True),
    ],
)
def test_each_layer_says_whether_it_takes_a_map(make, takes_map):
    assert make().requires_attention_map is takes_map


def test_a_block_refuses_a_map_its_attention_does_not_take():
    block = layers.TransformerBlock(layers.SpatialPriorAttention(2, grid_shape=(2, 2)))
    maps = np.full((1, 2, 4, 4), 0.25, "float32")
    with pytest.raises(ValueError, match="does not take one"):
        block(np.zeros((1, 4, 8), "float32"), attention_map=maps)


def test_a_block_hands_the_map_on_and_forwards_it():
    x = np.random.default_rng(1).normal(size=(2, 5, 8)).astype("float32")
    first = layers.TransformerBlock(layers.MultiHeadSelfAttention(2, output_attention_map=True))
    second = layers.TransformerBlock(layers.SharedAttention(2))
    y, attention_map = first(x)
    np.testing.assert_allclose(to_numpy(attention_map).sum(-1), 1.0, atol=1e-6)
    _, applied = second(y, attention_map=attention_map, return_attention_scores=True)
    np.testing.assert_array_equal(to_numpy(applied), to_numpy(attention_map))


REFINER = [
    f"a/r/{name}"
    for name in ["conv_exp/kernel", "depth_sep_conv/kernel", "conv_pro/kernel"]
    + [f"{bn}/{v}" for bn in ("bn1", "bn2", "bn3", "adapt_bn")
       for v in ("gamma", "beta", "moving_mean", "moving_variance")]
]
# The release's config keys and variable paths, in order (printed from the
# release's layers): saved weights, presets and optimizer states depend on them.
RELEASED = {
    "MultiHeadSelfAttention": (
        lambda: layers.MultiHeadSelfAttention(2, refiner=layers.AttentionRefiner(name="r"),
                                              name="a"),
        {"num_heads", "qkv_bias", "attention_dropout", "dropout", "previous_map_scale",
         "output_attention_map", "refiner"},
        REFINER + ["a/qkv/kernel", "a/proj/kernel", "a/proj/bias"],
    ),
    "SpatialPriorAttention": (
        lambda: layers.SpatialPriorAttention(2, refiner=layers.AttentionRefiner(name="r"),
                                             name="a"),
        {"num_heads", "grid_shape", "qkv_bias", "attention_dropout", "dropout", "refiner",
         "output_attention_map"},
        ["a/w1_kernel", "a/w1_bias", "a/w2", "a/b2"] + REFINER
        + ["a/qk/kernel", "a/v/kernel", "a/proj/kernel", "a/proj/bias"],
    ),
    "SharedAttention": (
        lambda: layers.SharedAttention(2, refiner=layers.AttentionRefiner(name="r"), name="a"),
        {"num_heads", "qkv_bias", "refiner", "output_attention_map", "dropout"},
        REFINER + ["a/v/kernel", "a/v/bias", "a/proj/kernel", "a/proj/bias"],
    ),
}


@pytest.mark.parametrize("name", sorted(RELEASED))
def test_config_keys_and_variable_paths_are_the_releases(name):
    make, keys, paths = RELEASED[name]
    layer = make()
    layer.build((None, 4, 8))
    base_keys = set(keras.layers.Layer(name="x").get_config())
    assert set(layer.get_config()) - base_keys == keys
    assert [v.path for v in layer.weights] == paths
    # A deserialized layer (a saved model's) builds the same variables, in order.
    clone = type(layer).from_config(layer.get_config())
    clone.build((None, 4, 8))
    assert [v.path.split("/")[-2:] for v in clone.weights] == [p.split("/")[-2:] for p in paths]
