"""`dense_teacher`: a classifier's logits at every location of its last feature map."""

import keras
import keras_hub
import numpy as np
import pytest
from keras import ops

import keras_spvit
from keras_spvit.models.dense_teacher import dense_teacher

IMAGES = np.random.default_rng(0).normal(size=(3, 32, 32, 3)).astype("float32")


def _numpy(x):
    return ops.convert_to_numpy(x)


def _run(model, x=IMAGES):
    """One jitted call (eager JAX compiles op by op: much slower), without the
    model's preprocessor (`predict_on_batch` of a keras-hub task runs it)."""
    if getattr(model, "preprocessor", None) is not None:
        model = keras.Model(model.input, model.output)
    outputs = model.predict_on_batch(x)
    if isinstance(outputs, dict):
        return {k: _numpy(v) for k, v in outputs.items()}
    return _numpy(outputs)


def _tiny_resnet(num_classes=7):
    backbone = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[3],
        stackwise_num_filters=[64, 32], stackwise_num_blocks=[1, 1],
        stackwise_num_strides=[1, 2], block_type="basic_block", use_pre_activation=False,
        image_shape=(32, 32, 3),
    )
    return keras_hub.models.ImageClassifier(backbone=backbone, num_classes=num_classes)


def test_keras_hub_resnet_logits_at_every_location():
    model = _tiny_resnet()
    dense = _run(dense_teacher(model))
    assert dense.shape == (3, 4, 4, 7) and dense.dtype == np.float32
    # The dense layer after average pooling is linear: the mean of the
    # per-location logits is the model's own output.
    np.testing.assert_allclose(dense.mean((1, 2)), _run(model), atol=1e-5)
    # And each location is the Dense applied to that feature vector.
    features = _run(model.backbone).astype("float64")
    kernel, bias = (_numpy(w).astype("float64") for w in model.output_dense.weights)
    np.testing.assert_allclose(dense, features @ kernel + bias, atol=1e-4)


def test_spvit_preset_gives_the_aux_head_per_token():
    model = keras_spvit.SPViTImageClassifier.from_preset("spvit_tiny_digits")
    dense = _run(dense_teacher(model))
    two_headed = keras_spvit.SPViTImageClassifier.from_preset(
        "spvit_tiny_digits", return_dense=True)
    aux = _run(two_headed)["aux_logits"]  # (3, 64, 10), tokens row-major
    assert dense.shape == (3, 8, 8, 10)
    np.testing.assert_allclose(dense, aux.reshape(3, 8, 8, 10), atol=1e-5)


def test_psvit_uses_the_pooled_token_grid():
    model = keras_spvit.PSViT((1, 1), (16, 32), (1, 2), patch_size=4, num_classes=6,
                              image_shape=(32, 32, 3))
    dense = _run(dense_teacher(model))
    assert dense.shape == (3, 4, 4, 6)  # 8x8 patches pooled once
    tokens = _run(model.backbone)[:, 1:].astype("float64")
    kernel, bias = (_numpy(w).astype("float64") for w in model.head.aux_head.weights)
    np.testing.assert_allclose(dense.reshape(3, 16, 6), tokens @ kernel + bias, atol=1e-4)


def test_a_keras_cnn_with_softmax_output_gives_logits():
    model = keras.Sequential([
        keras.Input((32, 32, 3)),
        keras.layers.Conv2D(8, 3, strides=4, padding="same", activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.BatchNormalization(),
        keras.layers.Dropout(0.5),
        keras.layers.Dense(5, activation="softmax"),
    ])
    norm = model.layers[2]
    norm.set_weights([np.linspace(0.5, 2, 8), np.linspace(-1, 1, 8), np.linspace(0, 0.3, 8),
                      np.linspace(1, 3, 8)])
    dense = _run(dense_teacher(model))
    assert dense.shape == (3, 8, 8, 5)
    # Batch norm at inference is affine per channel: it commutes with the mean.
    probs = _numpy(ops.softmax(dense.mean((1, 2))))
    np.testing.assert_allclose(probs, _run(model), atol=1e-5)


@pytest.mark.parametrize("build, reason", [
    (lambda: keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(),
                               keras.layers.Dense(3)]),
     "Flatten 'flatten' stands between the final Dense and a global pooling"),
    (lambda: keras.Sequential([keras.Input((8, 8, 3)), keras.layers.GlobalAveragePooling2D(),
                               keras.layers.Activation("relu")]),
     "its output comes from Activation, not a Dense"),
    (lambda: keras.layers.Dense(3), "dense_teacher takes a keras.Model"),
])
def test_unsupported_models_get_one_line(build, reason):
    keras.utils.clear_session()
    with pytest.raises(ValueError) as error:
        dense_teacher(build())
    message = str(error.value)
    assert reason in message and "Supported:" in message and "\n" not in message


def test_a_layer_norm_after_pooling_is_applied_at_every_location():
    conv = keras.layers.Conv2D(8, 3, strides=8, padding="same")
    norm = keras.layers.LayerNormalization(epsilon=1e-3)
    model = keras.Sequential([keras.Input((32, 32, 3)), conv,
                              keras.layers.GlobalAveragePooling2D(), norm,
                              keras.layers.Dense(4)])
    rng = np.random.default_rng(1)
    norm.set_weights([rng.normal(size=8), rng.normal(size=8)])
    dense = _run(dense_teacher(model))
    features = _run(keras.Sequential([keras.Input((32, 32, 3)), conv])).astype("float64")
    gamma, beta = (_numpy(w).astype("float64") for w in norm.weights)
    normed = (features - features.mean(-1, keepdims=True)) / np.sqrt(
        features.var(-1, keepdims=True) + 1e-3) * gamma + beta
    kernel, bias = (_numpy(w).astype("float64") for w in model.layers[-1].weights)
    assert dense.shape == (3, 4, 4, 4)
    np.testing.assert_allclose(dense, normed @ kernel + bias, atol=1e-4)
