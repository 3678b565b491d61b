"""`trainer.fit` on two worker processes on localhost: same training as one
process, one set of files (the chief's), a crash of both workers resumes, and
the chief's summary lists the bad files of every worker's share.

TensorFlow: `MultiWorkerMirroredStrategy` with a `TF_CONFIG` per process; JAX:
two processes of one CPU device (`keras.distribution.initialize`, Gloo). Each
worker is `multi_worker_train.py`.
"""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from tests.conftest import free_ports

SCRIPT = Path(__file__).with_name("multi_worker_train.py")
BACKEND = keras.backend.backend()
EPOCHS, STEPS = 2, 4


def _start(out, workers, tmp, kill_at=None, images=None):
    """Starts `workers` processes of one run."""
    tmp.mkdir(parents=True, exist_ok=True)
    # Each launch's temporary files (the non-chiefs' write-aside directories) in `tmp`.
    env = dict(os.environ, KERAS_BACKEND=BACKEND, TMPDIR=str(tmp))
    env.pop("TF_CONFIG", None)
    ports = ",".join(map(str, free_ports(workers)))
    procs = [
        subprocess.Popen(
            [sys.executable, str(SCRIPT), str(out), "--task", str(task), "--ports", ports]
            + (["--kill-at", str(kill_at)] if kill_at else [])
            + (["--images", str(images)] if images else []),
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for task in range(workers)
    ]
    return procs


def _wait(procs):
    """`[(returncode, stdout, stderr, pid)]` of the processes, run to the end."""
    try:
        outputs = [p.communicate(timeout=400) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return [(p.returncode, o, e, p.pid) for p, (o, e) in zip(procs, outputs)]


def _losses(run, key="loss"):
    with open(run / "log.csv") as f:
        return [(int(row["epoch"]), float(row[key])) for row in csv.DictReader(f)]


def _files(run):
    return sorted(str(p.relative_to(run)) for p in run.rglob("*") if p.is_file())


@pytest.mark.skipif(BACKEND == "torch", reason="Keras has no multi-worker engine for torch")
def test_two_workers_train_like_one_write_once_and_resume(tmp_path):
    two = tmp_path / "two" / "run"
    # Two good and two corrupt images; sharded over 2 workers (sorted, every
    # other file), each worker's share holds one corrupt file.
    images = tmp_path / "images"
    images.mkdir()
    for i in range(2):
        (images / f"broken_{i}.jpg").write_bytes(b"\xff\xd8 not a jpeg" * (i + 1))
        keras.utils.save_img(images / f"good_{i}.png", np.full((4, 4, 3), 60 * i, "uint8"))
    bad = [str(images / f"broken_{i}.jpg") for i in range(2)]
    # The one-process reference runs beside the first 2-process run.
    one = _start(tmp_path / "one" / "run", 1, tmp_path / "tmp_one", images=images)
    killed = _wait(_start(two, 2, tmp_path / "tmp_killed", kill_at=STEPS + 2))
    [(code, _, err, _)] = _wait(one)
    assert code == 0, err[-3000:]
    assert [k[0] for k in killed] == [-9, -9], killed[0][2][-3000:] + killed[1][2][-3000:]
    metadata = json.loads((two / "backup" / "training_metadata.json").read_text())
    assert (metadata["epoch"], metadata["batches_done"]) == (1, 2)  # mid-epoch, by the chief
    assert [epoch for epoch, _ in _losses(two)] == [0]

    resumed = _wait(_start(two, 2, tmp_path / "tmp_resumed", images=images))
    for code, _, err, _ in resumed:
        assert code == 0, err[-3000:]
    chief_out, other_out = resumed[0][1], resumed[1][1]
    assert "Resuming from" in chief_out and "epoch 2/2, after batch 2/4" in chief_out
    # Only the chief prints (JAX's Gloo says it connected, from C++).
    assert [line for line in other_out.splitlines() if not line.startswith("[Gloo]")] == []

    # Same global batches and initial weights as one process: only the
    # reduction order differs (the tolerances of test_distribution's
    # 1-vs-2-device test).
    one_losses = _losses(tmp_path / "one" / "run")
    assert _losses(two)[0][0] == 0
    np.testing.assert_allclose(_losses(two)[0][1], one_losses[0][1], rtol=1e-5)
    # Validation on 11 images (batches of 8 and 3) over 2 replicas: the last
    # batch padded and masked, the metrics those of the 11 images exactly.
    for key in ("val_loss", "val_accuracy"):
        np.testing.assert_allclose([v for _, v in _losses(two, key)],
                                   [v for _, v in _losses(tmp_path / "one" / "run", key)],
                                   rtol=1e-4, err_msg=key)
    assert all(round(v * 11) == v * 11 or abs(round(v * 11) - v * 11) < 1e-4
               for _, v in _losses(two, "val_accuracy"))
    one_final = np.load(tmp_path / "one" / "final_0.npz")
    for task in (0, 1):
        final = np.load(two.parent / f"final_{task}.npz")
        assert int(final["replicas"]) == 2
        # Resumed at the backup's position: no step replayed or skipped.
        assert int(final["steps"]) == int(one_final["steps"]) == EPOCHS * STEPS
        total = sum(np.abs(final[k].astype("float64")).sum() for k in final if k[0] == "w")
        expected = sum(np.abs(one_final[k].astype("float64")).sum()
                       for k in one_final if k[0] == "w")
        assert total == pytest.approx(expected, rel=1e-6)
        for key in (k for k in one_final if k[0] == "w"):
            np.testing.assert_allclose(final[key], one_final[key], rtol=0, atol=1e-5, err_msg=key)

    # One set of files, the chief's: the same names as a one-process run, the
    # TensorBoard events of the chief's process only; the backup is gone, and
    # so are the other worker's write-aside files.
    assert not (two / "backup").exists()
    names = [n for n in _files(two) if not n.startswith("tensorboard")]
    assert names == [n for n in _files(tmp_path / "one" / "run") if not n.startswith("tensorboard")]
    assert names == ["checkpoints/epoch_001.weights.h5", "checkpoints/epoch_002.weights.h5",
                     "log.csv", "model.keras", "summary.json"]
    events = [n for n in _files(two) if n.startswith("tensorboard")]
    chief_pids = {killed[0][3], resumed[0][3]}
    assert events and all(any(f".{pid}." in n for pid in chief_pids) for n in events)
    assert list((tmp_path / "tmp_resumed").iterdir()) == []
    summary = json.loads((two / "summary.json").read_text())
    assert summary["optimizer_steps"] == EPOCHS * STEPS
    # Every worker's bad files in the chief's summary, as one process finds them.
    assert summary["bad_files"] == bad and summary["decode_failures"] == 2
    assert list(summary["own_bad_files"]["reasons"]) == bad[:1]  # the chief's share alone
    one_summary = json.loads((tmp_path / "one" / "run" / "summary.json").read_text())
    assert one_summary["bad_files"] == bad and one_summary["decode_failures"] == 2
    assert [epoch for epoch, _ in _losses(two)] == [0, 1]
