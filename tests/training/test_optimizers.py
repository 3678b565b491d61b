import keras
import numpy as np
import pytest

import keras_spvit
from keras_spvit.training import (
    ParamGroupAdamW,
    layer_decay_multipliers,
    no_weight_decay_paths,
)


def _toy():
    inputs = keras.Input((3,))
    x = keras.layers.Dense(4, name="block_0")(inputs)
    x = keras.layers.LayerNormalization(name="norm")(x)
    outputs = keras.layers.Dense(2, name="head")(x)
    return keras.Model(inputs, outputs)


def _one_step(optimizer, model, grads):
    optimizer.apply([keras.ops.convert_to_tensor(g) for g in grads], model.trainable_variables)
    return [keras.ops.convert_to_numpy(v) for v in model.trainable_variables]


def _adamw_reference(w, g, lr, wd, beta_1=0.9, beta_2=0.999, eps=1e-7):
    """One AdamW step from zero moments, as Keras defines it (decay first)."""
    w = w - w * wd * lr
    m, v = (1 - beta_1) * g, (1 - beta_2) * g * g
    alpha = lr * np.sqrt(1 - beta_2) / (1 - beta_1)
    return w - alpha * m / (np.sqrt(v) + eps)


def test_param_groups_match_adamw_per_variable():
    model = _toy()
    rng = np.random.default_rng(0)
    for v in model.trainable_variables:
        v.assign(rng.normal(size=v.shape).astype("float32"))
    start = [keras.ops.convert_to_numpy(v) for v in model.trainable_variables]
    grads = [rng.normal(size=v.shape).astype("float32") for v in model.trainable_variables]
    paths = [v.path for v in model.trainable_variables]
    multipliers = {"block_0/kernel": 0.25, "block_0/bias": 0.5}
    no_decay = ["block_0/bias", "norm/gamma", "norm/beta", "head/bias"]
    optimizer = ParamGroupAdamW(
        learning_rate=0.1, weight_decay=0.3, lr_multipliers=multipliers, no_weight_decay=no_decay
    )
    after = _one_step(optimizer, model, grads)
    for path, w, g, got in zip(paths, start, grads, after):
        lr = 0.1 * multipliers.get(path, 1.0)
        wd = 0.0 if path in no_decay else 0.3
        np.testing.assert_allclose(got, _adamw_reference(w, g, lr, wd), rtol=1e-5, atol=1e-6)


def test_without_groups_equals_keras_adamw():
    rng = np.random.default_rng(1)
    models = [_toy(), _toy()]
    for a, b in zip(*(m.trainable_variables for m in models)):
        value = rng.normal(size=a.shape).astype("float32")
        a.assign(value)
        b.assign(value)
    grads = [rng.normal(size=v.shape).astype("float32") for v in models[0].trainable_variables]
    ours = _one_step(ParamGroupAdamW(learning_rate=0.01, weight_decay=0.1), models[0], grads)
    theirs = _one_step(keras.optimizers.AdamW(learning_rate=0.01, weight_decay=0.1), models[1], grads)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_no_weight_decay_follows_the_release():
    model = keras_spvit.SPViT_Tiny(num_classes=10)
    paths = set(no_weight_decay_paths(model))
    assert {"pos_embed/embedding", "class_token/token", "block_0/attn/b2",
            "block_0/norm1/gamma", "block_0/attn/proj/bias"} <= paths
    assert not {"block_0/attn/qk/kernel", "block_0/attn/w2", "stem/proj/kernel",
                "token_labeling_head/head/kernel"} & paths


def test_layer_decay_multipliers():
    model = keras_spvit.SPViT_Tiny(num_classes=10)  # 4 blocks
    scales = layer_decay_multipliers(model, 0.5)
    assert scales["stem/proj/kernel"] == scales["pos_embed/embedding"] == 0.5**5
    assert scales["block_0/attn/qk/kernel"] == scales["pos_cnn_0/conv/kernel"] == 0.5**4
    assert scales["block_3/mlp/fc1/kernel"] == 0.5
    assert scales["norm/gamma"] == scales["token_labeling_head/head/kernel"] == 1.0
    assert set(layer_decay_multipliers(model, 1.0).values()) == {1.0}
    with pytest.raises(ValueError, match="decay=1.5"):
        layer_decay_multipliers(model, 1.5)


def test_config_round_trip():
    optimizer = ParamGroupAdamW(
        learning_rate=1e-3, weight_decay=0.05, lr_multipliers={"a/kernel": 0.5},
        no_weight_decay=["a/bias"], global_clipnorm=1.0,
    )
    restored = ParamGroupAdamW.from_config(optimizer.get_config())
    assert restored.lr_multipliers == {"a/kernel": 0.5}
    assert restored.no_weight_decay == ["a/bias"]
    assert restored.global_clipnorm == 1.0
    with pytest.raises(ValueError, match="-1"):
        ParamGroupAdamW(lr_multipliers={"a": -1.0})


@pytest.mark.skipif(keras.backend.backend() != "torch",
                    reason="the multi-tensor update is PyTorch's; the other backends run "
                           "update_step per variable (tested above)")
@pytest.mark.parametrize("grad_dtype", ["float32", "bfloat16"])
def test_torch_multi_tensor_update_equals_update_step_per_variable(grad_dtype):
    # The `torch._foreach_*` path against Keras' own per-variable path on the same
    # optimizer class: bit for bit, over parameter groups (two learning-rate scales,
    # decayed and not), global clipping, a schedule and the EMA, for four steps.
    from keras.src.optimizers.base_optimizer import BaseOptimizer

    class PerVariable(ParamGroupAdamW):
        def _backend_update_step(self, grads, variables, learning_rate):
            return BaseOptimizer._backend_update_step(self, grads, variables, learning_rate)

        def _update_model_variables_moving_average(self, variables):
            return BaseOptimizer._update_model_variables_moving_average(self, variables)

    rng = np.random.default_rng(2)
    models = [_toy(), _toy()]
    for a, b in zip(*(m.trainable_variables for m in models)):
        a.assign(rng.normal(size=a.shape).astype("float32"))
        b.assign(a)
    start = [keras.ops.convert_to_numpy(v) for v in models[0].trainable_variables]
    settings = dict(
        learning_rate=keras.optimizers.schedules.ExponentialDecay(0.05, 2, 0.5),
        weight_decay=0.2, lr_multipliers={"block_0/kernel": 0.25, "block_0/bias": 0.5},
        no_weight_decay=["block_0/bias", "norm/gamma", "norm/beta", "head/bias"],
        global_clipnorm=1.0, use_ema=True, ema_momentum=0.9)
    fast, slow = ParamGroupAdamW(**settings), PerVariable(**settings)
    for _ in range(4):
        grads = [keras.ops.convert_to_tensor(rng.normal(size=v.shape), dtype=grad_dtype)
                 for v in models[0].trainable_variables]  # bfloat16: cast to float32
        ours, theirs = _one_step(fast, models[0], grads), _one_step(slow, models[1], grads)
        for a, b, path in zip(ours, theirs, [v.path for v in models[0].trainable_variables]):
            np.testing.assert_array_equal(a, b, err_msg=path)
    for a, b in zip(fast._model_variables_moving_average, slow._model_variables_moving_average):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    for a, b in zip(fast.variables, slow.variables):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    # The weights moved: a path that did nothing would pass the comparisons above.
    assert all(np.abs(a - b).max() > 1e-3 for a, b in zip(ours, start))
