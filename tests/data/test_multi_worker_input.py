"""Two workers on localhost read an image folder as `fit` would: each decodes only its share.

Each worker is a process (`multi_worker_input_steps.py`): TensorFlow's
`MultiWorkerMirroredStrategy` with a `TF_CONFIG` per process, or two JAX
processes (`keras.distribution.initialize`, Gloo on CPU). The single-worker
reference is read in each worker process after its distributed epochs.

`multi_worker_input_steps.py --fit` also runs a plain `model.fit`: it trains
under two JAX processes (6 steps, identical weights). Keras 3.15's own `fit`
crashes under TensorFlow's multi-worker strategy (the `PerReplica` batch
reduce, tensorflow#72388); `keras_spvit.training.fit` works around it, tested
in `tests/training/test_multi_worker_train.py`.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_spvit.data import array_dataset
from tests.conftest import free_ports

SCRIPT = Path(__file__).with_name("multi_worker_input_steps.py")
BACKEND = keras.backend.backend()
COUNT, BATCH, WORKERS = 24, 4, 2


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """24 PNGs 8x8, image i in class folder i with every pixel 10 * i."""
    root = tmp_path_factory.mktemp("ids")
    for i in range(COUNT):
        (root / f"c{i:02d}").mkdir()
        image = np.full((8, 8, 3), 10 * i, np.uint8)
        (root / f"c{i:02d}" / f"{i:02d}.png").write_bytes(tf.io.encode_png(image).numpy())
    return root


def _run_workers(folder, tmp_path, fit=False):
    ports = ",".join(str(p) for p in free_ports(WORKERS))
    env = dict(os.environ, KERAS_BACKEND=BACKEND)
    env.pop("TF_CONFIG", None)
    procs = []
    for task in range(WORKERS):
        command = [sys.executable, str(SCRIPT), str(folder), str(tmp_path / f"{task}.json"),
                   "--task", str(task), "--ports", ports] + (["--fit"] if fit else [])
        procs.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    try:
        outputs = [p.communicate(timeout=240) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (_, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]
    return [json.loads((tmp_path / f"{task}.json").read_text()) for task in range(WORKERS)]


@pytest.mark.skipif(BACKEND == "torch", reason="Keras has no multi-worker engine for torch")
def test_two_workers_read_each_image_once_per_epoch(folder, tmp_path):
    workers = _run_workers(folder, tmp_path)
    steps = COUNT // BATCH
    for worker in workers:
        assert worker["replicas"] == 2  # one device per process, two processes
        # Keras' fit input path (TF: TFEpochIterator, JAX: the data adapter) takes it as is.
        assert worker["fit_consumes_it_as_is"]
        assert worker["num_batches"] == steps
    # Every worker computed the same single-worker reference.
    reference = workers[0]["single_worker"]
    assert workers[1]["single_worker"] == reference
    assert reference[0] != reference[1]  # a new shuffle each epoch
    for epoch in range(2):
        shares = [w["epochs"][epoch] for w in workers]
        union = sorted(i for share in shares for step in share["steps"] for i in step)
        assert union == list(range(COUNT))  # the dataset, each image once
        for k in range(steps):
            assert [len(s["steps"][k]) for s in shares] == [BATCH // WORKERS] * WORKERS
            # Step k of all workers together is the single-worker global batch k:
            # worker w holds elements w, w + 2 of it.
            for w, share in enumerate(shares):
                assert share["steps"][k] == reference[epoch][k][w::WORKERS]
        for share in shares:
            # Each worker read and decoded exactly the images it trained on.
            assert share["decoded"] == sorted(i for step in share["steps"] for i in step)


def test_input_contexts_share_the_single_worker_batches_and_seeds():
    """In one process, one `InputContext` per worker (what a JAX process or
    `distribute_datasets_from_function` passes): 3 workers x 2 replicas."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (COUNT, 12, 12, 3), dtype=np.uint8)
    kwargs = {"image_size": 8, "batch_size": 12, "training": True, "seed": 7}
    single = [(x.numpy(), y.numpy()) for x, y in array_dataset(images, np.arange(COUNT), **kwargs)]
    assert len(single) == 2
    for w in range(3):
        context = tf.distribute.InputContext(
            num_input_pipelines=3, input_pipeline_id=w, num_replicas_in_sync=6
        )
        share = array_dataset(images, np.arange(COUNT), input_context=context, **kwargs)
        assert int(share.cardinality()) == 4  # 2 steps x 2 replicas, batches of 2
        batches = [(x.numpy(), y.numpy()) for x, y in share]
        assert [len(y) for _, y in batches] == [2] * 4
        for k, (x, y) in enumerate(single):
            # The worker's two replica batches at step k: elements w, w + 3, ... of batch k.
            got_x = np.concatenate([b[0] for b in batches[2 * k:2 * k + 2]])
            got_y = np.concatenate([b[1] for b in batches[2 * k:2 * k + 2]])
            np.testing.assert_array_equal(got_y, y[w::3])
            # Same per-example seeds as one worker: identical augmented pixels.
            np.testing.assert_array_equal(got_x, x[w::3])


def test_input_context_batch_must_split_over_replicas():
    context = tf.distribute.InputContext(
        num_input_pipelines=2, input_pipeline_id=0, num_replicas_in_sync=2
    )
    images = np.zeros((8, 12, 12, 3), np.uint8)
    with pytest.raises(ValueError, match="5"):
        array_dataset(images, np.arange(8) % 2, image_size=8, batch_size=5, training=True,
                      input_context=context)
