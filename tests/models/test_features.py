"""Features for dense tasks: block outputs as maps or tokens, pyramid_outputs, the extractor."""

import keras
import numpy as np
import pytest

import keras_spvit
from keras_spvit.models.features import FeatureExtractor
from tests.conftest import to_numpy

IMAGE_SHAPE = (32, 48, 3)  # not square: rows and cols must not swap


def _spvit():
    # Class token enters before block 2: blocks 0-1 have no prefix token.
    return keras_spvit.SPViTBackbone(
        embed_dim=16, depth=4, num_heads=2, spatial_prior_blocks=2, image_shape=IMAGE_SHAPE,
    )


def _refined():
    return keras_spvit.RefinedViTBackbone(
        embed_dim=16, depth=3, num_heads=2, refiner_blocks=[1], image_shape=IMAGE_SHAPE,
    )


def _psvit():
    # Patch 8: a 4 x 6 grid in stage 0, pooled to 2 x 3 in stage 1; the
    # class token enters before block 1; block 3 shares block 2's map.
    return keras_spvit.PSViTBackbone(
        stage_depths=(2, 2), stage_dims=(16, 32), stage_heads=(1, 2), shared_layers=[3],
        spatial_prior_layers=[0], class_token_block=1, patch_size=8, image_shape=IMAGE_SHAPE,
    )


# family -> (builder, per block: (rows, cols, prefix tokens, channels), graph tensor name)
CASES = {
    "spvit": (_spvit, [(2, 3, 0, 16), (2, 3, 0, 16), (2, 3, 1, 16), (2, 3, 1, 16)], "pos_cnn_{}"),
    "refined_vit": (_refined, [(2, 3, 1, 16)] * 3, "block_{}"),
    "psvit": (_psvit, [(4, 6, 0, 16), (4, 6, 1, 16), (2, 3, 1, 32), (2, 3, 1, 32)], "block_{}"),
}


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).normal(size=(2, *IMAGE_SHAPE)).astype("float32")


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request):
    build, expected, tensor_name = CASES[request.param]
    return build(), expected, tensor_name


def _reference(backbone, tensor_name, images):
    """Every block's output, from the layers' own outputs in the backbone's graph."""
    outputs = []
    for i in range(len(backbone.transformer_blocks)):
        output = backbone.get_layer(tensor_name.format(i)).output
        outputs.append(output[0] if isinstance(output, (tuple, list)) else output)
    return [to_numpy(x) for x in keras.Model(backbone.input, outputs)(images)]


def test_maps_and_tokens_equal_the_backbones_tensors(case, images):
    backbone, expected, tensor_name = case
    blocks = list(range(len(expected)))
    reference = _reference(backbone, tensor_name, images)
    tokens = [to_numpy(x) for x in keras_spvit.feature_extractor(backbone, blocks, "tokens")(images)]
    maps = [to_numpy(x) for x in keras_spvit.feature_extractor(backbone, blocks)(images)]
    for i, (rows, cols, prefix, channels) in enumerate(expected):
        assert tokens[i].shape == (2, prefix + rows * cols, channels)
        np.testing.assert_array_equal(tokens[i], reference[i])
        assert maps[i].shape == (2, rows, cols, channels)
        # Row-major patch order: token prefix + r * cols + c is map[r, c].
        np.testing.assert_array_equal(maps[i][:, 1, 2], reference[i][:, prefix + cols + 2])
        np.testing.assert_array_equal(maps[i].reshape(2, -1, channels), reference[i][:, prefix:])
    # The last block through the final norm is the backbone's output.
    np.testing.assert_allclose(
        to_numpy(backbone.norm(tokens[-1])), to_numpy(backbone(images)), rtol=1e-5, atol=1e-5
    )
    info = backbone.feature_info
    assert [(e["grid_shape"], e["num_prefix_tokens"], e["channels"]) for e in info] == [
        ((r, c), p, ch) for r, c, p, ch in expected
    ]


def test_pyramid_outputs(case, images):
    backbone, expected, _ = case
    pyramid = backbone.pyramid_outputs
    last = {(r, c): i for i, (r, c, _, _) in enumerate(expected)}  # last block per grid
    keys = {(4, 6): "P3", (2, 3): "P4"}  # stride 8 and 16 on 32 x 48 images
    assert sorted(pyramid) == sorted(keys[grid] for grid in last)
    model = keras.Model(backbone.input, pyramid)
    outputs = model(images)
    for grid, i in last.items():
        want = to_numpy(keras_spvit.feature_extractor(backbone, [i])(images))  # one: unwrapped
        np.testing.assert_array_equal(to_numpy(outputs[keys[grid]]), want)


def test_negative_blocks_default_and_classifier():
    backbone = _spvit()
    assert keras_spvit.feature_extractor(backbone).blocks == [3]
    assert keras_spvit.feature_extractor(backbone, [-1, 0]).blocks == [3, 0]
    classifier = keras_spvit.SPViTImageClassifier(backbone=backbone, num_classes=3)
    assert keras_spvit.feature_extractor(classifier, [1]).backbone is backbone


def test_round_trips(tmp_path, images):
    backbone = _psvit()
    extractor = keras_spvit.feature_extractor(backbone, [1, 3])
    want = [to_numpy(x) for x in extractor(images)]
    restored = FeatureExtractor.from_config(extractor.get_config())
    restored.set_weights(extractor.get_weights())
    assert restored.blocks == [1, 3] and restored.format == "maps"
    for a, b in zip(restored(images), want):
        np.testing.assert_array_equal(to_numpy(a), b)
    path = str(tmp_path / "features.keras")
    extractor.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, FeatureExtractor)
    for a, b in zip(loaded(images), want):
        np.testing.assert_array_equal(to_numpy(a), b)


def test_a_segmentation_head_trains_on_top(images):
    backbone = _spvit()
    features = keras_spvit.feature_extractor(backbone, [1, 3])
    x = keras.layers.Concatenate()(features.outputs)
    x = keras.layers.Conv2D(5, 1)(x)
    x = keras.layers.UpSampling2D(16)(x)
    model = keras.Model(features.input, x)
    assert model(images).shape == (2, 32, 48, 5)
    stem_before = to_numpy(backbone.stem.weights[0]).copy()
    model.compile(optimizer="sgd", jit_compile=False,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(images, np.zeros((2, 32, 48), "int32"), epochs=1, verbose=0)
    assert not np.array_equal(to_numpy(backbone.stem.weights[0]), stem_before)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"blocks": [4]}, r"Block indices must be ints in \[-4, 4\).*blocks=\[4\]"),
        ({"blocks": [-5]}, r"blocks=\[-5\]"),
        ({"blocks": [1.0]}, r"blocks=\[1.0\]"),
        ({"blocks": 2}, r"non-empty list.*blocks=2"),
        ({"blocks": []}, r"non-empty list.*blocks=\[\]"),
        ({"blocks": [1, -3]}, r"once.*blocks=\[1, -3\]"),
        ({"format": "NCHW"}, r"one of \('maps', 'tokens'\).*format='NCHW'"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message) as error:
        keras_spvit.feature_extractor(_spvit(), **kwargs)
    assert "\n" not in str(error.value)


def test_not_a_backbone():
    with pytest.raises(ValueError, match="Expected a keras_spvit backbone"):
        keras_spvit.feature_extractor(keras.Sequential([keras.layers.Dense(2)]))
