"""The public API without traps: attention maps of every block, clear errors for
input the model cannot take and for `return_attention_scores`, builders that
name the argument at fault, and models named after their builder."""

import json

import keras
import numpy as np
import pytest

import keras_spvit
from keras_spvit.data import digits_split
from keras_spvit.models.presets import PRESETS_DIR
from keras_spvit.models.attention_maps import attention_maps
from tests.conftest import to_numpy

SMALL = dict(stem="patch", patch_size=4, image_shape=(16, 16, 3), num_classes=3)
FAMILIES = {
    "spvit": lambda: keras_spvit.SPViT(embed_dim=16, depth=3, num_heads=2,
                                       spatial_prior_blocks=1, **SMALL),
    "lvvit": lambda: keras_spvit.SPViT(embed_dim=16, depth=1, num_heads=2,
                                       class_token_block=0, **SMALL),
    "refined_vit": lambda: keras_spvit.RefinedViT(embed_dim=16, depth=5, num_heads=4, **SMALL),
    "psvit": lambda: keras_spvit.PSViT((2, 2), (16, 24), (2, 3), shared_layers=[3],
                                       spatial_prior_layers=[0], class_token_block=1, **SMALL),
}


def images(batch=3, seed=0):
    return np.random.default_rng(seed).normal(size=(batch, 16, 16, 3)).astype("float32")


def per_layer_map(backbone, block, x):
    """The block's map from its own attention layer, fed the block's input
    computed by a sub-model of the backbone (independent of `attention_maps`)."""
    feed = keras.Model(backbone.input, block.input)
    inputs = feed(x)
    inputs, previous = (inputs, None) if not isinstance(inputs, (list, tuple)) else inputs
    extra = {} if previous is None else {"attention_map": previous}
    normed = block.norm1(block._scaled(inputs))
    return to_numpy(block.attention(normed, return_attention_scores=True, **extra)[-1])


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_attention_maps_of_every_block_equal_the_per_layer_maps(family):
    keras.utils.set_random_seed(0)
    model = FAMILIES[family]()
    x = images()
    maps = attention_maps(model, x, batch_size=2)  # two passes: 2 + 1 images
    blocks = [layer for layer in model.backbone.layers
              if isinstance(layer, keras_spvit.layers.TransformerBlock)]
    assert list(maps) == [block.name for block in blocks]
    for block in blocks:
        heads = block.attention.num_heads
        tokens = block.input[0].shape[1] if isinstance(block.input, list) else block.input.shape[1]
        assert maps[block.name].shape == (3, heads, tokens, tokens)
        np.testing.assert_allclose(
            maps[block.name], per_layer_map(model.backbone, block, x), rtol=1e-5, atol=1e-6
        )
    sums = {name: m.sum(-1) for name, m in maps.items()}
    if family != "refined_vit":  # softmax attention, fresh or shared
        for name, s in sums.items():
            np.testing.assert_allclose(s, 1.0, atol=1e-5, err_msg=name)
    else:
        # Refined-ViT applies softmax + head_dim**-0.5 * the previous map in its
        # even blocks (rows 1, 1 + s, 1 + s + s^2 with s = (16 / 4) ** -0.5).
        s = 0.5
        for i, expected in ((0, 1.0), (2, 1 + s), (4, 1 + s + s * s)):
            np.testing.assert_allclose(sums[f"block_{i}"], expected, atol=1e-5)


def test_token_counts_follow_the_architecture():
    keras.utils.set_random_seed(0)
    maps = attention_maps(FAMILIES["psvit"](), images(1))
    # Spatial-prior block on the 4x4 patches, class token from block 1, then
    # 2D pooling to 2x2 patches (+ class token) in the second stage.
    assert [m.shape[1:] for m in maps.values()] == [
        (2, 16, 16), (2, 17, 17), (3, 5, 5), (3, 5, 5)
    ]


def test_attention_maps_of_the_preset_from_raw_images():
    model = keras_spvit.SPViTImageClassifier.from_preset("spvit_tiny_digits")
    raw, _ = digits_split("test")
    maps = attention_maps(model, raw[:4], preprocess=True)
    x = model.preprocessor(raw[:4])
    reference = attention_maps(model.backbone, x[0] if isinstance(x, tuple) else x)
    assert [m.shape for m in maps.values()] == [(4, 2, 64, 64)] * 2 + [(4, 2, 65, 65)] * 2
    for name in maps:
        np.testing.assert_allclose(maps[name], reference[name], atol=1e-6)
    with pytest.raises(ValueError, match="has none"):
        attention_maps(model.backbone, raw[:4], preprocess=True)


def test_return_attention_scores_points_to_attention_maps():
    keras.utils.set_random_seed(0)
    model = FAMILIES["spvit"]()
    x = images(2)
    for call in (
        lambda: model.predict(x, return_attention_scores=True),
        lambda: model.backbone(x, return_attention_scores=True),
        lambda: model(x, return_attention_scores=True),
    ):
        with pytest.raises(TypeError, match=r"keras_spvit\.attention_maps\(model, images\)") as info:
            call()
        assert "\n" not in str(info.value)


def test_input_the_preprocessing_cannot_take_is_named():
    model = keras_spvit.SPViTImageClassifier.from_preset("spvit_tiny_digits")
    grey, _ = digits_split("test", channels=1)
    no_channel = grey[..., 0]  # (359, 8, 8)
    expected = r"\(batch, height, width, 3\).*received shape \(359, 8, 8\).*images\[\.\.\., None\]"
    for call in (
        lambda: model.predict(no_channel, verbose=0),
        lambda: model.evaluate(no_channel, np.zeros(359), verbose=0),
        lambda: model.preprocessor(no_channel),
        lambda: model.preprocessor.image_converter(no_channel),
    ):
        with pytest.raises(ValueError, match=expected) as info:
            call()
        assert "\n" not in str(info.value)
    # Grey with a channel axis broadcasts to the 3 normalised channels.
    assert model.predict(grey[:4], verbose=0).shape == (4, 10)
    with pytest.raises(ValueError, match=r"received shape \(2, 8, 8, 2\)"):
        model.preprocessor.image_converter(np.zeros((2, 8, 8, 2), "uint8"))


def test_input_a_model_without_preprocessor_cannot_take_is_named():
    model = keras_spvit.SPViT_Tiny(num_classes=10)
    raw, _ = digits_split("test")
    match = r"'spvit_tiny'.*\(batch, 32, 32, 3\); received shape \(2, 8, 8, 3\)"
    for call in (
        lambda: model.predict(raw[:2], verbose=0),
        lambda: model(raw[:2]),
        lambda: model.backbone(raw[:2]),
        lambda: attention_maps(model, raw[:2]),
    ):
        with pytest.raises(ValueError, match=match.replace("'spvit_tiny'", ".*spvit_tiny")):
            call()


SP = dict(embed_dim=64, depth=4, num_heads=2, stem="patch", patch_size=4, image_shape=(32, 32, 3))
RF = dict(embed_dim=64, depth=4, num_heads=4, stem="patch", patch_size=4, image_shape=(32, 32, 3))
PS = dict(stage_depths=(2, 2), stage_dims=(32, 64), stage_heads=(2, 2), patch_size=8,
          image_shape=(32, 32, 3))
BAD_ARGUMENTS = [
    # (builder, arguments, the argument the message must name)
    (keras_spvit.SPViT, dict(embed_dim=65, num_heads=2), "embed_dim=65, num_heads=2"),
    (keras_spvit.SPViT, dict(embed_dim=64, num_heads=2), "depth=None"),
    (keras_spvit.SPViT, dict(SP, depth=0), "depth=0"),
    (keras_spvit.SPViT, dict(SP, num_heads=2.5), "num_heads=2.5"),
    (keras_spvit.SPViT, dict(SP, drop_path_rate=1.0), "drop_path_rate=1.0"),
    (keras_spvit.SPViT, dict(SP, dropout=-0.1), "dropout=-0.1"),
    (keras_spvit.SPViT, dict(SP, attention_dropout=2), "attention_dropout=2"),
    (keras_spvit.SPViT, dict(SP, image_shape=(30, 32, 3)), r"image_shape=\(30, 32, 3\)"),
    (keras_spvit.SPViT, dict(SP, spatial_prior_blocks=4), "spatial_prior_blocks=4, depth=4"),
    (keras_spvit.SPViT, dict(SP, spatial_prior_blocks=2, class_token_block=1), "class_token_block=1"),
    (keras_spvit.SPViT, dict(SP, stem="4_2"), "patch_size=4"),
    (keras_spvit.SPViT, dict(SP, stem="conv"), "stem='conv'"),
    (keras_spvit.SPViT, dict(SP, mlp_ratio=0), "mlp_ratio=0"),
    (keras_spvit.SPViT, dict(SP, num_classes=0), "num_classes=0"),
    (keras_spvit.SPViT, dict(SP, refiner_kernel_size=4), "refiner_kernel_size=4"),
    (keras_spvit.SPViT_Tiny, dict(embed_dim=65), "embed_dim=65, num_heads=2"),
    (keras_spvit.LVViT_Tiny, dict(image_shape=(32, 30, 3)), r"image_shape=\(32, 30, 3\)"),
    (keras_spvit.RefinedViT, dict(embed_dim=64, num_heads=3), "embed_dim=64, num_heads=3"),
    (keras_spvit.RefinedViT, dict(RF, refiner_blocks=[0]), r"refiner_blocks=\[0\]"),
    (keras_spvit.RefinedViT, dict(RF, adjust_ratio=0), "adjust_ratio=0"),
    (keras_spvit.RefinedViT, dict(RF, drop_path_rate=-0.5), "drop_path_rate=-0.5"),
    (keras_spvit.RefinedViT_Tiny, dict(patch_size=0), "patch_size=0"),
    (keras_spvit.PSViT, dict(stage_dims=(32, 64), stage_heads=(2, 3)), r"stage_heads=\(2, 3\)"),
    (keras_spvit.PSViT, dict(PS, stage_dims=(32,)), r"stage_dims=\(32,\)"),
    (keras_spvit.PSViT, dict(PS, stage_depths=(2, 0)), r"stage_depths\[1\]=0"),
    (keras_spvit.PSViT, dict(PS, pooling_mode="3d"), "pooling_mode='3d'"),
    (keras_spvit.PSViT, dict(PS, class_token_block=4), "class_token_block=4"),
    (keras_spvit.PSViT, dict(PS, image_shape=(8, 8, 3)), r"image_shape.*\(8, 8, 3\)"),
    (keras_spvit.PSViT_Tiny_CPU, dict(drop_path_rate=1.5), "drop_path_rate=1.5"),
    # A typo is named, not swallowed by Keras' **kwargs.
    (keras_spvit.SPViT_Tiny, dict(bogus=1), "'bogus'"),
    (keras_spvit.RefinedViT_Tiny, dict(embed_dims=64), "'embed_dims'"),
    (keras_spvit.PSViT_Tiny_CPU, dict(drop_rate=0.1), "'drop_rate'"),
]


@pytest.mark.parametrize("builder, arguments, named", BAD_ARGUMENTS,
                         ids=[f"{b.__name__}-{n}" for b, _, n in BAD_ARGUMENTS])
def test_builders_name_the_argument_at_fault(builder, arguments, named):
    with pytest.raises(ValueError, match=named) as info:
        builder(**arguments)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("backbone_cls, arguments, named", [
    (keras_spvit.SPViTBackbone, dict(embed_dim=65, num_heads=2), "embed_dim=65, num_heads=2"),
    (keras_spvit.RefinedViTBackbone, dict(embed_dim=64, depth=2), "num_heads=None"),
    (keras_spvit.PSViTBackbone, dict(stage_depths=(2,), stage_dims=(32, 64)), "stage_dims"),
])
def test_backbones_name_the_argument_at_fault(backbone_cls, arguments, named):
    with pytest.raises(ValueError, match=named):
        backbone_cls(**arguments)


@pytest.mark.parametrize("builder, name", [
    (keras_spvit.SPViT_Tiny, "spvit_tiny"),
    (keras_spvit.LVViT_Tiny, "lvvit_tiny"),
    (keras_spvit.RefinedViT_Tiny, "refined_vit_tiny"),
    (keras_spvit.PSViT_Tiny_CPU, "psvit_tiny_cpu"),
])
def test_models_are_named_after_their_builder(builder, name):
    model = builder(num_classes=3)
    assert (model.name, model.backbone.name) == (name, f"{name}_backbone")
    assert builder(num_classes=3, name="mine").backbone.name == "mine_backbone"


def test_default_names_follow_the_family():
    model = keras_spvit.RefinedViT(embed_dim=16, depth=2, num_heads=2, **SMALL)
    assert (model.name, model.backbone.name) == ("refined_vit", "refined_vit_backbone")
    backbone = keras_spvit.SPViTBackbone(embed_dim=16, depth=2, num_heads=2, stem="patch",
                                         patch_size=4, image_shape=(16, 16, 3))
    assert backbone.name == "spvit_backbone"
    assert keras_spvit.SPViTImageClassifier(backbone, 3).name == "spvit_image_classifier"
    converter = keras_spvit.PSViTImageConverter(image_size=(16, 16))
    preprocessor = keras_spvit.PSViTImageClassifierPreprocessor(converter)
    assert (converter.name, preprocessor.name) == (
        "psvit_image_converter", "psvit_image_classifier_preprocessor"
    )


def test_a_name_is_config_saved_names_load(tmp_path):
    # The shipped preset was saved with Keras' old default names.
    saved = json.loads((PRESETS_DIR / "spvit_tiny_digits" / "config.json").read_text())
    model = keras_spvit.SPViTImageClassifier.from_preset("spvit_tiny_digits")
    assert model.backbone.name == saved["config"]["name"] == "sp_vi_t_backbone"
    renamed = keras_spvit.SPViT_Tiny(weights="spvit_tiny_digits")
    assert renamed.backbone.name == "spvit_tiny_backbone"
    x = images(2, seed=1).repeat(2, 1).repeat(2, 2)  # 32 px
    np.testing.assert_allclose(to_numpy(renamed(x)), to_numpy(model(x)), atol=1e-5)
    renamed.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", compile=False)
    assert (loaded.name, loaded.backbone.name) == ("spvit_tiny", "spvit_tiny_backbone")
    np.testing.assert_array_equal(to_numpy(loaded(x)), to_numpy(renamed(x)))


@pytest.mark.parametrize("builder, arguments", [
    (keras_spvit.SPViT, SP), (keras_spvit.RefinedViT, RF), (keras_spvit.PSViT, PS),
])
def test_generic_builders_load_weights(builder, arguments, tmp_path):
    # `weights=` used to vanish into Keras' **kwargs: a "fine-tuned" model
    # started from random weights without a word.
    source = builder(**arguments, num_classes=3)
    path = str(tmp_path / "source.weights.h5")
    source.save_weights(path)
    loaded = builder(**arguments, num_classes=3, weights=path)
    for a, b in zip(source.weights, loaded.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    fresh = builder(**arguments, num_classes=5, weights=path)  # new heads, same backbone
    for a, b in zip(source.backbone.weights, fresh.backbone.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    assert fresh.output_shape[-1] == 5
