"""What each layer computes, checked against plain numpy or an equivalent layer."""

import numpy as np
import pytest

from keras_spvit import layers
from keras_spvit.layers.grid import relative_offsets
from tests.conftest import to_numpy


def random(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def test_relative_offsets_non_square():
    offsets, index = relative_offsets((2, 3))
    rows, cols = np.divmod(np.arange(6), 3)
    for i in range(6):
        for j in range(6):
            assert tuple(offsets[index[i, j]]) == (cols[j] - cols[i], rows[j] - rows[i])


def test_spatial_prior_matches_its_formula_on_a_non_square_grid():
    layer = layers.SpatialPriorAttention(num_heads=2, grid_shape=(3, 2))
    layer.build((None, 6, 8))
    rng = np.random.default_rng(0)
    w1, b1 = rng.normal(size=(2, 8)), rng.normal(size=(8,))
    w2, b2 = rng.normal(size=(2, 4)), rng.normal(size=(2,))
    for variable, value in zip([layer.w1_kernel, layer.w1_bias, layer.w2, layer.b2], [w1, b1, w2, b2]):
        variable.assign(value.astype("float32"))
    rows, cols = np.divmod(np.arange(6), 2)
    expected = np.zeros((2, 6, 6))
    for h in range(2):
        for i in range(6):
            for j in range(6):
                offset = np.array([cols[j] - cols[i], rows[j] - rows[i]])
                hidden = np.maximum(offset @ w1 + b1, 0.0)[h * 4 : (h + 1) * 4]
                expected[h, i, j] = hidden @ w2[h] + b2[h]
    np.testing.assert_allclose(to_numpy(layer.spatial_prior()), expected, rtol=1e-5, atol=1e-5)


def test_spatial_prior_multiplies_logits_before_softmax():
    x = random((2, 4, 8))
    layer = layers.SpatialPriorAttention(num_heads=2)
    layer.build(x.shape)
    for variable in layer.weights:
        variable.assign(random(variable.shape, seed=len(variable.path)))
    _, weights = layer(x, return_attention_scores=True)
    q, k = np.split(x @ to_numpy(layer.qk.kernel), 2, axis=-1)
    q, k = q.reshape(2, 4, 2, 4), k.reshape(2, 4, 2, 4)
    logits = np.einsum("bqhd,bkhd->bhqk", q, k) * 4**-0.5 * to_numpy(layer.spatial_prior())
    expected = np.exp(logits - logits.max(-1, keepdims=True))
    expected /= expected.sum(-1, keepdims=True)
    np.testing.assert_allclose(to_numpy(weights), expected, rtol=1e-4, atol=1e-6)


def test_spatial_prior_attention_starts_as_plain_attention():
    x = random((2, 9, 8))
    spatial = layers.SpatialPriorAttention(num_heads=2)
    spatial.build(x.shape)
    vanilla = layers.MultiHeadSelfAttention(num_heads=2)
    vanilla.build(x.shape)
    qkv = np.concatenate([to_numpy(spatial.qk.kernel), to_numpy(spatial.v.kernel)], axis=1)
    vanilla.qkv.kernel.assign(qkv)
    vanilla.proj.set_weights(spatial.proj.get_weights())
    np.testing.assert_allclose(to_numpy(spatial(x)), to_numpy(vanilla(x)), atol=1e-6)


def test_fused_and_explicit_attention_agree():
    x = random((2, 7, 16))
    layer = layers.MultiHeadSelfAttention(num_heads=4, qkv_bias=True)
    fused = to_numpy(layer(x))
    explicit, weights = layer(x, return_attention_scores=True)
    np.testing.assert_allclose(fused, to_numpy(explicit), atol=1e-5)
    np.testing.assert_allclose(to_numpy(weights).sum(-1), 1.0, atol=1e-5)
    assert weights.shape == (2, 4, 7, 7)


def test_pos_cnn_leaves_the_class_token_alone():
    x = random((2, 1 + 6, 4))
    layer = layers.PosCNN(grid_shape=(2, 3), num_prefix_tokens=1)
    y = to_numpy(layer(x))
    np.testing.assert_array_equal(y[:, 0], x[:, 0])
    kernel, bias = (to_numpy(w) for w in layer.conv.weights)
    grid = np.pad(x[:, 1:].reshape(2, 2, 3, 4), ((0, 0), (1, 1), (1, 1), (0, 0)))
    conv = sum(
        grid[:, dy : dy + 2, dx : dx + 3] * kernel[dy, dx, :, 0]
        for dy in range(3)
        for dx in range(3)
    )
    np.testing.assert_allclose(y[:, 1:], x[:, 1:] + (conv + bias).reshape(2, 6, 4), atol=1e-5)


def test_drop_path_drops_whole_samples_and_keeps_the_mean():
    layer = layers.DropPath(rate=0.25, seed=3)
    x = np.ones((4000, 3, 2), "float32")
    np.testing.assert_array_equal(to_numpy(layer(x)), x)
    y = to_numpy(layer(x, training=True))
    per_sample = y.reshape(4000, -1)
    kept = per_sample[:, 0] > 0
    np.testing.assert_allclose(per_sample[kept], 1 / 0.75, rtol=1e-6)
    assert np.all(per_sample.min(1) == per_sample.max(1))
    assert abs(per_sample.mean() - 1.0) < 0.05


def test_token_labeling_head_combines_both_heads():
    x = random((2, 5, 8))
    head = layers.TokenLabelingHead(num_classes=3, return_dense=True)
    out = {k: to_numpy(v) for k, v in head(x).items()}
    np.testing.assert_allclose(
        out["logits"], out["class_logits"] + 0.5 * out["aux_logits"].max(1), atol=1e-6
    )
    assert out["aux_logits"].shape == (2, 4, 3)


def test_conv_stem_pads_symmetrically():
    stem = layers.ConvStem(8, stem="4_2")
    y = stem(random((1, 32, 32, 3)))
    assert y.shape == (1, 2, 2, 8)
    assert stem.conv_layers[0].padding == ((3, 3), (3, 3))


def test_class_token_and_position_embedding():
    x = random((3, 4, 8))
    y = to_numpy(layers.ClassToken()(x))
    assert y.shape == (3, 5, 8)
    np.testing.assert_array_equal(y[0, 0], y[2, 0])
    embedding = layers.PositionEmbedding()
    np.testing.assert_allclose(
        to_numpy(embedding(x)) - x, np.broadcast_to(to_numpy(embedding.embedding), x.shape), atol=1e-6
    )


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: layers.DropPath(rate=1.0), r"rate=1\.0"),
        (lambda: layers.MLP(hidden_dim=0), "hidden_dim=0"),
        (lambda: layers.MultiHeadSelfAttention(num_heads=2, dropout=-0.1), "dropout=-0.1"),
        (lambda: layers.SpatialPriorAttention(num_heads=2, grid_shape=(2,)), "grid_shape"),
        (lambda: layers.ConvStem(8, stem="4_4"), "'4_4'"),
        (lambda: layers.ConvStem(8, stem="4_2", patch_size=8), "patch_size=8"),
        (lambda: layers.TransformerBlock("attention"), "attention='attention'"),
        (lambda: layers.TransformerBlock(layers.MLP(4), skip_lam=0), "skip_lam=0"),
        (lambda: layers.TokenLabelingHead(num_classes=0), "num_classes=0"),
    ],
)
def test_bad_arguments_are_named(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize(
    "layer, shape, match",
    [
        (layers.SpatialPriorAttention(2), (1, 6, 8), "6 patch tokens"),
        (layers.SpatialPriorAttention(2, grid_shape=(2, 2)), (1, 5, 8), "Received 5 tokens"),
        (layers.SpatialPriorAttention(3), (1, 4, 8), "dim=8, num_heads=3"),
        (layers.PosCNN(), (1, 5, 8), "5 patch tokens"),
    ],
)
def test_bad_inputs_are_named(layer, shape, match):
    with pytest.raises(ValueError, match=match):
        layer(np.zeros(shape, "float32"))


def test_conv_stem_rejects_sizes_it_cannot_divide():
    with pytest.raises(ValueError, match=r"stride 16.*\(1, 40, 32, 3\)"):
        layers.ConvStem(8, stem="4_2")(np.zeros((1, 40, 32, 3), "float32"))
