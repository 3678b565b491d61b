"""Behaviour every SP-ViT model shows: round trips, fit, jit, bf16, errors."""

import keras
import numpy as np
import pytest

import keras_spvit
from keras_spvit.layers import SpatialPriorAttention
from tests.conftest import to_numpy

SMALL = dict(
    embed_dim=32, depth=3, num_heads=2, spatial_prior_blocks=1, stem="patch",
    patch_size=8, skip_lam=2.0, num_classes=5, image_shape=(24, 40, 3),
)


def small_model(**overrides):
    keras.utils.set_random_seed(0)
    return keras_spvit.SPViT(**{**SMALL, **overrides})


def images(batch=2, shape=SMALL["image_shape"], seed=0):
    return np.random.default_rng(seed).normal(size=(batch,) + tuple(shape)).astype("float32")


def test_non_square_grid():
    model = small_model()
    assert model.backbone.grid_shape == (3, 5)
    assert model(images()).shape == (2, 5)
    prior = model.backbone.transformer_blocks[0].attention.spatial_prior()
    assert prior.shape == (2, 15, 15)


def test_convolutional_stem_and_late_class_token():
    model = small_model(stem="4_2", patch_size=16, image_shape=(32, 48, 3), depth=4,
                        spatial_prior_blocks=1, class_token_block=3)
    backbone = model.backbone
    assert backbone.get_layer("block_2").output.shape == (None, 6, 32)
    assert backbone.get_layer("block_3").output.shape == (None, 7, 32)
    assert backbone.position_embedding.embedding.shape == (1, 6, 32)
    assert model(images(shape=(32, 48, 3))).shape == (2, 5)


def test_lvvit_position_embedding_covers_the_class_token():
    model = small_model(spatial_prior_blocks=0)
    assert model.backbone.position_embedding.embedding.shape == (1, 16, 32)
    assert not any(
        isinstance(b.attention, SpatialPriorAttention) for b in model.backbone.transformer_blocks
    )


def test_fit_with_both_heads():
    model = small_model(return_dense=True)

    def token_label_loss(y_true, y_pred):
        return keras.losses.categorical_crossentropy(y_true, y_pred, from_logits=True)

    model.compile(
        optimizer="adam",
        loss={
            "class_logits": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            "aux_logits": token_label_loss,
        },
    )
    x = images(4)
    dense = np.eye(5, dtype="float32")[np.arange(4 * 15) % 5].reshape(4, 15, 5)
    y = {"class_logits": np.arange(4) % 5, "aux_logits": dense}
    history = model.fit(x, y, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_mixed_bfloat16_keeps_the_prior_in_float32():
    model = small_model(dtype="mixed_bfloat16")
    block = model.backbone.transformer_blocks[0]
    assert block.attention.compute_dtype == "bfloat16"
    assert block.norm1.compute_dtype == "bfloat16" and not block.norm1.autocast
    dtype = keras.backend.standardize_dtype
    assert dtype(block.attention.spatial_prior().dtype) == "float32"
    tokens = keras.ops.zeros((1, 15, 32), "bfloat16")
    _, weights = block.attention(tokens, return_attention_scores=True)
    assert dtype(weights.dtype) == "float32"


@pytest.mark.parametrize(
    "overrides, match",
    [
        (dict(image_shape=(25, 40, 3)),
         r"multiples of the stem stride \(patch_size=8\).*\(25, 40, 3\).*\(24, 40, 3\)"),
        (dict(image_shape=(24, 40)), "image_shape"),
        (dict(embed_dim=30, num_heads=4), "embed_dim=30, num_heads=4"),
        (dict(spatial_prior_blocks=3), "spatial_prior_blocks=3, depth=3"),
        (dict(class_token_block=0), "class_token_block=0"),
        (dict(drop_path_rate=1.0), r"drop_path_rate=1\.0"),
        (dict(drop_path_rate=-0.1), r"drop_path_rate=-0\.1"),
        (dict(dropout=1.5), r"dropout=1\.5"),
        (dict(stem="4_2", patch_size=8), "patch_size=8"),
    ],
)
def test_bad_configuration_is_named(overrides, match):
    with pytest.raises(ValueError, match=match):
        small_model(**overrides)


def test_wrong_channel_count_is_named():
    model = small_model()
    expected = r"shaped \(batch, 24, 40, 3\); received shape \(2, 24, 40, 1\)"
    with pytest.raises(ValueError, match=expected):
        model(images(shape=(24, 40, 1)))


def test_named_builders_follow_the_variant_table():
    from keras_spvit.models.spvit.spvit_variants import SPVIT_VARIANTS

    model = keras_spvit.SPViT_Tiny(num_classes=10)
    arch = SPVIT_VARIANTS["spvit_tiny"]["arch"]
    backbone = model.backbone
    assert backbone.image_shape == arch["image_shape"] and backbone.depth == arch["depth"]
    assert sum(isinstance(b.attention, SpatialPriorAttention) for b in backbone.transformer_blocks) == 2
    assert keras_spvit.SPViT_Tiny.__name__ == "SPViT_Tiny" and "Args:" in keras_spvit.SPViT_Tiny.__doc__
    baseline = keras_spvit.LVViT_Tiny(num_classes=10, image_shape=(48, 32, 3))
    assert baseline.backbone.grid_shape == (12, 8)


def test_odd_grid_with_class_token_keeps_the_class_token_off_the_grid():
    # The released code guesses "class token present" from the token count's
    # parity and breaks on 7 x 7; ours is told.
    model = keras_spvit.SPViT_Tiny(num_classes=3, image_shape=(28, 28, 3))
    backbone = model.backbone
    assert backbone.grid_shape == (7, 7)
    pos_cnn = backbone.pos_cnns[-1]
    tokens = np.random.default_rng(0).normal(size=(2, 50, 64)).astype("float32")
    np.testing.assert_array_equal(to_numpy(pos_cnn(tokens))[:, 0], tokens[:, 0])
    assert model(images(shape=(28, 28, 3))).shape == (2, 3)
