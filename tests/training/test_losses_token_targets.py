"""Memory-light token targets (int ids, top-k) give the dense targets' loss exactly."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from keras_spvit.data.mix_token import mix_token, token_targets
from keras_spvit.training.losses import TokenLabelCrossEntropy, pack_top_k

BATCH, GRID, CLASSES = 4, (3, 3), 7


def value(x):
    return float(ops.convert_to_numpy(x))


def logits(seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(BATCH, 9, CLASSES)) * 3).astype("float32")


def two_class_soft(seed=1):
    """Per token: weight w on one class and 1 - w on another (a MixUp pair)."""
    rng = np.random.default_rng(seed)
    first = rng.integers(0, CLASSES, (BATCH,) + GRID)
    second = (first + rng.integers(1, CLASSES, (BATCH,) + GRID)) % CLASSES
    weight = rng.random((BATCH,) + GRID).astype("float32")
    dense = np.zeros((BATCH,) + GRID + (CLASSES,), "float32")
    np.put_along_axis(dense, first[..., None], weight[..., None], -1)
    np.put_along_axis(dense, second[..., None], (1 - weight)[..., None], -1)
    order = weight >= 1 - weight
    values = np.stack([np.where(order, weight, 1 - weight), np.where(order, 1 - weight, weight)], -1)
    indices = np.stack([np.where(order, first, second), np.where(order, second, first)], -1)
    return dense, values.astype("float32"), indices.astype("int32")


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_token_ids_give_the_one_hot_loss_exactly(smoothing):
    ids = np.random.default_rng(2).integers(0, CLASSES, (BATCH,) + GRID).astype("int32")
    dense = np.eye(CLASSES, dtype="float32")[ids]
    loss = TokenLabelCrossEntropy(label_smoothing=smoothing)
    expected = value(loss(dense, logits()))
    assert value(loss(ids, logits())) == expected
    assert value(loss(ids.reshape(BATCH, 9), logits())) == expected
    # Independent reference (float64 numpy).
    x = logits().astype("float64")
    log_p = x - x.max(-1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(-1, keepdims=True))
    target = dense.reshape(BATCH, 9, CLASSES) * (1 - smoothing) + smoothing / CLASSES
    assert expected == pytest.approx(-(target * log_p).sum(-1).mean(), rel=1e-6)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_top_2_gives_the_dense_soft_loss_exactly(smoothing):
    dense, values, indices = two_class_soft()
    loss = TokenLabelCrossEntropy(label_smoothing=smoothing)
    expected = value(loss(dense, logits()))
    assert value(loss((values, indices), logits())) == expected
    assert value(loss(pack_top_k(values, indices), logits())) == expected
    flat = (values.reshape(BATCH, 9, 2), indices.reshape(BATCH, 9, 2))
    assert value(loss(flat, logits())) == expected


def test_top_3_matches_the_dense_loss_to_rounding():
    rng = np.random.default_rng(3)
    dense = np.zeros((BATCH,) + GRID + (CLASSES,), "float32")
    indices = np.stack([rng.permutation(CLASSES)[:3] for _ in range(BATCH * 9)]).reshape(
        (BATCH,) + GRID + (3,)).astype("int32")
    values = rng.dirichlet([1, 1, 1], size=(BATCH,) + GRID).astype("float32")
    np.put_along_axis(dense, indices, values, -1)
    loss = TokenLabelCrossEntropy(label_smoothing=0.1)
    assert value(loss((values, indices), logits())) == pytest.approx(
        value(loss(dense, logits())), rel=1e-6)


def test_pack_top_k_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="indices.shape"):
        pack_top_k(np.zeros((2, 3, 3, 2), "float32"), np.zeros((2, 3, 3, 1), "int32"))


@pytest.mark.parametrize("sparse", [True, False])
def test_mix_token_on_light_targets_gives_the_dense_pipelines_loss(sparse):
    """The CLI's dense pipeline (image labels broadcast to (B, g, g, C), then
    MixToken) against `token_targets` then MixToken: the same loss exactly."""
    rng = np.random.default_rng(5)
    images = rng.random((BATCH, 12, 12, 3)).astype("float32")
    ids = np.array([0, 3, 5, 3], "int32")
    one_hot = np.eye(CLASSES, dtype="float32")[ids]
    labels = ids if sparse else 0.3 * one_hot + 0.7 * one_hot[[1, 2, 3, 0]]
    soft = one_hot if sparse else labels
    dense = np.broadcast_to(soft[:, None, None], (BATCH,) + GRID + (CLASSES,))
    light = token_targets(labels, GRID)
    assert light.dtype == (tf.int32 if sparse else tf.float32)
    assert tuple(light.shape) == ((BATCH,) + GRID if sparse else (BATCH,) + GRID + (2, 2))
    loss = TokenLabelCrossEntropy(label_smoothing=0.1)
    for i in range(4):
        seed = tf.constant([i, 1], tf.int64)
        _, _, mixed_dense = mix_token(images, labels, dense, patch_size=4, seed=seed,
                                      num_classes=CLASSES)
        _, _, mixed_light = mix_token(images, labels, light, patch_size=4, seed=seed,
                                      num_classes=CLASSES)
        assert value(loss(mixed_light.numpy(), logits(i))) == value(
            loss(mixed_dense.numpy(), logits(i)))
    values, indices = (light[..., 0], tf.cast(light[..., 1], tf.int32)) if not sparse else (
        None, None)
    if not sparse:
        _, _, (mixed_values, mixed_indices) = mix_token(
            images, labels, (values, indices), patch_size=4, seed=0, num_classes=CLASSES)
        _, _, mixed_dense = mix_token(images, labels, dense, patch_size=4, seed=0,
                                      num_classes=CLASSES)
        assert value(loss((mixed_values.numpy(), mixed_indices.numpy()), logits())) == value(
            loss(mixed_dense.numpy(), logits()))


def test_packed_top_k_targets_train_through_fit():
    inputs = keras.Input((9, 4))
    aux = keras.layers.Dense(CLASSES, name="aux_logits")(inputs)
    cls = keras.layers.Dense(CLASSES, name="class_logits")(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, {"class_logits": cls, "aux_logits": aux})
    model.compile(optimizer="sgd", loss={"class_logits": "categorical_crossentropy",
                                         "aux_logits": TokenLabelCrossEntropy()})
    _, values, indices = two_class_soft()
    x = np.random.default_rng(0).normal(size=(BATCH, 9, 4)).astype("float32")
    y = {"class_logits": np.eye(CLASSES, dtype="float32")[[0, 1, 2, 3]],
         "aux_logits": ops.convert_to_numpy(pack_top_k(values, indices))}
    history = model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_token_targets_reject_bad_arguments():
    with pytest.raises(ValueError, match="k=0"):
        token_targets(tf.constant([1]), (2, 2), k=0)
    with pytest.raises(ValueError, match="labels.shape"):
        token_targets(tf.zeros((2, 2), tf.int32), (2, 2))
