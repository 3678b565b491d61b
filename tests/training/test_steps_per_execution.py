"""`steps_per_execution` in `fit` and the CLI, and the `--device` checks."""

import keras
import numpy as np
import pytest

import keras_spvit
from keras_spvit.training import fit, get_recipe
from keras_spvit.training.hardware import (
    check_device,
    check_steps_per_execution,
    describe_devices,
    keep_tensorflow_off_gpus,
    resolve_steps_per_execution,
)

BACKEND = keras.backend.backend()


def _data(steps, batch=4, seed=0):
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(steps * batch, 16, 16, 3)).astype("float32")
    y = rng.integers(0, 3, steps * batch).astype("int32")
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch)


def _train(tmp_path, name, steps_per_execution, save_freq="epoch"):
    keras.utils.set_random_seed(0)
    # Two blocks, one with spatial priors (SPViT_Tiny has four, two): the same layers
    # and training step, half the graph to trace on TensorFlow, twice (1 and 2 steps).
    model = keras_spvit.SPViT(image_shape=(16, 16, 3), num_classes=3, stem="patch",
                              patch_size=4, embed_dim=16, depth=2, num_heads=2,
                              spatial_prior_blocks=1)
    recipe = get_recipe("digits", ema_momentum=None)
    summary = fit(model, _data(4), recipe=recipe, batch_size=4, out_dir=str(tmp_path / name),
                  epochs=2, steps_per_epoch=4, verbose=0, save_freq=save_freq,
                  jit_compile=BACKEND == "jax", steps_per_execution=steps_per_execution)
    return model, summary


@pytest.mark.skipif(BACKEND == "torch", reason="torch runs one step per call")
def test_several_steps_per_call_train_like_one(tmp_path):
    one, one_summary = _train(tmp_path, "one", 1)
    two, two_summary = _train(tmp_path, "two", 2, save_freq=2)
    assert two.steps_per_execution == 2
    assert one_summary["optimizer_steps"] == two_summary["optimizer_steps"] == 8
    for a, b in zip(one.weights, two.weights):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b),
                                   rtol=1e-5, atol=1e-6, err_msg=a.path)
    # Different seeds of the same model do differ (the comparison can fail).
    assert not np.allclose(keras.ops.convert_to_numpy(one.weights[0]), 0.0)


def test_steps_per_execution_checks(tmp_path):
    check_steps_per_execution(1, 7)
    if BACKEND == "torch":
        with pytest.raises(ValueError, match="torch backend runs one step per call. Expected 1"):
            check_steps_per_execution(2, 8)
        return
    check_steps_per_execution(4, 100, save_freq=20)
    with pytest.raises(ValueError, match=r"does not divide the steps per epoch \(22\)\. "
                                         r"Expected one of \[1, 2, 11, 22\]"):
        check_steps_per_execution(4, 22)
    with pytest.raises(ValueError, match=r"does not divide the --save-every \(6\)"):
        check_steps_per_execution(4, 24, save_freq=6)
    with pytest.raises(ValueError, match="positive int. Received: 0"):
        check_steps_per_execution(0, 24)
    with pytest.raises(ValueError, match="does not divide the steps per epoch"):
        _train(tmp_path, "bad", 3)
    assert not (tmp_path / "bad").exists()  # checked before anything is written


def test_auto_is_one_on_a_cpu():
    assert resolve_steps_per_execution("auto", 1251) == 1
    assert resolve_steps_per_execution("1", 1251) == 1
    with pytest.raises(ValueError, match="Expected 'auto' or a positive int. Received: 'x'"):
        resolve_steps_per_execution("x", 10)


def test_devices_on_a_cpu():
    check_device("auto")
    check_device("cpu")
    with pytest.raises(ValueError, match=rf"^{BACKEND} sees no GPU \(only cpu\)\. Install "):
        check_device("gpu")
    line = describe_devices()
    assert line.startswith(f"{BACKEND} ") and "cpu" in line
    if BACKEND != "tensorflow":
        import tensorflow as tf

        assert keep_tensorflow_off_gpus()
        assert tf.config.get_visible_devices("GPU") == []
