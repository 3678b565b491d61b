"""`--distribute auto` reads the engines' multi-worker environment; torch refuses several GPUs."""

import json

import keras
import pytest

from keras_spvit.training import distribution

BACKEND = keras.backend.backend()
VARIABLES = ("TF_CONFIG", "KERAS_DISTRIBUTION_NUM_PROCESSES", "JAX_NUM_PROCESSES",
             "JAX_COORDINATOR_ADDRESS", "SLURM_NTASKS", "WORLD_SIZE")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)


def _tf_config(workers):
    return json.dumps({"cluster": {"worker": [f"127.0.0.1:{2000 + i}" for i in range(workers)]},
                       "task": {"type": "worker", "index": 0}})


def test_one_process_is_the_chief_and_auto_stays_local():
    assert distribution.multi_worker_environment() is None
    assert distribution.worker() == (0, 1) and distribution.is_chief()
    assert distribution.resolve_mode("auto") == ("auto", "local devices")
    assert distribution.resolve_mode("none") == ("none", "asked")
    with pytest.raises(ValueError, match="mode='ring'"):
        distribution.resolve_mode("ring")


@pytest.mark.skipif(BACKEND != "tensorflow", reason="TF_CONFIG is TensorFlow's")
def test_tf_config_of_several_workers_makes_auto_multi_worker(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", _tf_config(1))
    assert distribution.resolve_mode("auto")[0] == "auto"  # a cluster of one
    monkeypatch.setenv("TF_CONFIG", _tf_config(2))
    assert distribution.multi_worker_environment() == "TF_CONFIG"
    assert distribution.resolve_mode("auto") == (
        "multi_worker", "TF_CONFIG set: one process per worker")
    assert distribution.resolve_mode("none")[0] == "none"
    monkeypatch.setenv("SLURM_NTASKS", "4")  # read by JAX, not by TensorFlow
    monkeypatch.setenv("TF_CONFIG", _tf_config(1))
    assert distribution.multi_worker_environment() is None


@pytest.mark.skipif(BACKEND != "jax", reason="JAX's and Keras' multi-process variables")
@pytest.mark.parametrize("name, value", [
    ("KERAS_DISTRIBUTION_NUM_PROCESSES", "2"), ("JAX_NUM_PROCESSES", "8"),
    ("SLURM_NTASKS", "2"), ("JAX_COORDINATOR_ADDRESS", "10.0.0.1:1234"),
])
def test_jax_multi_process_variables_make_auto_multi_worker(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    assert distribution.multi_worker_environment() == name
    assert distribution.resolve_mode("auto")[0] == "multi_worker"


@pytest.mark.skipif(BACKEND != "jax", reason="JAX's and Keras' multi-process variables")
def test_one_task_is_not_multi_worker(monkeypatch):
    monkeypatch.setenv("SLURM_NTASKS", "1")
    monkeypatch.setenv("KERAS_DISTRIBUTION_NUM_PROCESSES", "1")
    assert distribution.resolve_mode("auto")[0] == "auto"


@pytest.mark.skipif(BACKEND != "torch", reason="the torch backend's refusal")
def test_torch_refuses_several_gpus_or_processes(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ValueError, match="2 GPUs.*CUDA_VISIBLE_DEVICES=0"):
        distribution.resolve_mode("auto")
    with pytest.raises(ValueError, match="2 GPUs"), distribution.data_parallel("auto"):
        pass
    assert distribution.resolve_mode("none")[0] == "none"
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert distribution.resolve_mode("auto")[0] == "auto"  # one GPU: fine
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="WORLD_SIZE in the environment"):
        distribution.resolve_mode("auto")
