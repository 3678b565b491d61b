"""Data parallel on 2 virtual CPU devices gives the same training as 1 device."""

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

import keras_spvit
from keras_spvit.training import compile_for_training, data_parallel

SCRIPT = Path(__file__).with_name("distributed_steps.py")
BACKEND = keras.backend.backend()
multi_device = pytest.mark.skipif(
    BACKEND == "torch", reason="Keras has no multi-device engine for the torch backend"
)


def _two_devices(dtypes):
    env = dict(os.environ, KERAS_BACKEND=BACKEND)
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--devices", "2", "--dtypes", *dtypes],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@multi_device
def test_two_devices_match_one():
    """The same steps on 1 and 2 devices; bfloat16 on 2 devices trains too."""
    from tests.training.distributed_steps import train_steps

    two = _two_devices(["float32", "mixed_bfloat16"])
    one = train_steps("float32", "none")
    assert (one["replicas"], two["float32"]["replicas"]) == (1, 2)
    # Same global batches and initial weights: only the reduction order differs.
    np.testing.assert_allclose(two["float32"]["loss"], one["loss"], rtol=1e-5)
    assert two["float32"]["weight_sum"] == pytest.approx(one["weight_sum"], rel=1e-6)
    assert one["loss"][-1] < one["loss"][0]
    bf16 = two["mixed_bfloat16"]
    assert all(np.isfinite(bf16["loss"])) and bf16["loss"][-1] < bf16["loss"][0]
    # bfloat16 tracks float32 loosely (8-bit mantissa matmuls).
    np.testing.assert_allclose(bf16["loss"], one["loss"], rtol=0.05)


def test_torch_refuses_multi_device():
    if BACKEND != "torch":
        with data_parallel("none") as replicas:
            assert replicas == 1
        return
    with pytest.raises(ValueError, match="TensorFlow or JAX"), data_parallel("mirrored"):
        pass


def test_float16_wraps_loss_scaling():
    model = keras_spvit.SPViT(
        embed_dim=32, depth=1, num_heads=2, stem="patch", patch_size=4, num_classes=3,
        image_shape=(8, 8, 3), dtype="mixed_float16",
    )
    compile_for_training(model, "digits", batch_size=4, steps_per_epoch=2, epochs=1)
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    if BACKEND == "jax":
        pytest.skip("XLA:CPU has no float16 dot_general; the wrapping is what is checked")
    x = np.random.default_rng(0).normal(size=(4, 8, 8, 3)).astype("float32")
    history = model.fit(x, np.arange(4) % 3, epochs=1, batch_size=4, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_a_classifier_logs_one_accuracy_the_weighted_one():
    """keras-hub's classifiers add an unweighted SparseCategoricalAccuracy when
    compiled with their default metrics: it would count padded validation rows."""
    model = keras_spvit.SPViT_Tiny(num_classes=3, image_shape=(16, 16, 3))
    compile_for_training(model, "digits", batch_size=4, steps_per_epoch=1, epochs=1)
    x = np.random.default_rng(0).normal(size=(4, 16, 16, 3)).astype("float32")
    weights = np.array([1.0, 1.0, 0.0, 0.0], "float32")  # two padded rows
    logits = keras.ops.convert_to_numpy(model(x, training=False))
    labels = logits.argmax(-1)
    labels[2:] = (labels[2:] + 1) % 3  # padded rows wrong: they must not count
    logs = model.evaluate(x, labels, sample_weight=weights, batch_size=4, verbose=0,
                          return_dict=True)
    assert sorted(logs) == ["accuracy", "loss"]
    assert logs["accuracy"] == 1.0


def test_distribute_input_on_one_worker_is_the_global_pipeline():
    from keras_spvit.training.distribution import distribute_input

    contexts = []

    def build(*, input_context):
        contexts.append(input_context)
        return "global pipeline"

    assert distribute_input(build) == "global pipeline" and contexts == [None]
    with pytest.raises(ValueError, match="dataset_fn=3"):
        distribute_input(3)


@pytest.mark.skipif(BACKEND != "tensorflow", reason="tf.distribute is TensorFlow's")
def test_one_gpu_trains_under_a_one_device_strategy(monkeypatch):
    # No GPU here: stand the CPU in for the single GPU the strategy is for.
    import tensorflow as tf

    from keras_spvit.training import distribution

    monkeypatch.setattr(distribution, "_single_gpu", lambda: "/cpu:0")
    with distribution.data_parallel("auto") as replicas:
        assert isinstance(tf.distribute.get_strategy(), tf.distribute.OneDeviceStrategy)
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        model.compile("sgd", "mse", jit_compile=False)
    assert replicas == 1
    data = tf.data.Dataset.from_tensor_slices((np.ones((8, 3), "float32"),
                                               np.zeros((8, 2), "float32"))).batch(4)
    history = model.fit(data, epochs=2, verbose=0)
    assert history.history["loss"][1] < history.history["loss"][0]
    with distribution.data_parallel("none"):
        assert not tf.distribute.has_strategy()


def test_gather_from_workers_in_one_process_writes_nothing(tmp_path):
    from keras_spvit.training.distribution import gather_from_workers

    assert gather_from_workers(str(tmp_path), "bad_files", {"a": 1}, tag=3) == [{"a": 1}]
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="key=''"):
        gather_from_workers(str(tmp_path), "", 1)
    with pytest.raises(ValueError, match="timeout=0"):
        gather_from_workers(str(tmp_path), "x", 1, timeout=0)
