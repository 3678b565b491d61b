"""Exact resumption: a run SIGKILLed at several points and rerun ends where an
uninterrupted run ends (same optimizer steps, same batches, same weights)."""

import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np

from keras_spvit.training.resume import read_position

HERE = Path(__file__).parent


def _start(out, kill_at=None):
    env = dict(os.environ, KERAS_BACKEND=keras.backend.backend(), TF_CPP_MIN_LOG_LEVEL="3")
    command = [sys.executable, str(HERE / "resume_run.py"), str(out)]
    if kill_at is not None:
        command.append(str(kill_at))
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _finish(process):
    stdout, stderr = process.communicate(timeout=600)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def _run(out, kill_at=None):
    return _finish(_start(out, kill_at))


def _final(out):
    with np.load(out / "final.npz") as f:
        return {k: f[k] for k in f.files}


def test_killed_three_times_ends_like_an_uninterrupted_run(tmp_path):
    # The uninterrupted reference runs beside the interrupted run (independent processes).
    reference = _start(tmp_path / "reference")

    run = tmp_path / "run"
    # 3 epochs x 6 steps, a backup every 4 batches and at every epoch's end.
    # Killed after step 9 (backup at step 8: epoch 1, 2 batches done);
    # resumed, it runs epoch 1's last 4 batches (a backup after them, step
    # 12) and is killed after step 17 (a backup at step 16: epoch 2, 4
    # batches done); then it runs to the end.
    for kill_at, (epoch, batch) in ((9, (1, 2)), (17, (2, 4))):
        crashed = _run(run, kill_at)
        assert crashed.returncode == -9, crashed.stderr[-3000:]
        position = read_position(run / "backup")
        assert (position["epoch"], position["batch"]) == (epoch, batch), position
        assert position["optimizer_steps"] == 6 * epoch + batch
    resumed = _run(run)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resuming from" in resumed.stdout and "epoch 3/3, after batch 4/6" in resumed.stdout

    done = _finish(reference)
    assert done.returncode == 0, done.stderr[-3000:]
    ours, theirs = _final(run), _final(tmp_path / "reference")
    assert int(ours["steps"]) == int(theirs["steps"]) == 18
    # The summary says where the last run took over (its seconds count the rest).
    assert (int(ours.pop("resumed_at")), int(theirs.pop("resumed_at"))) == (16, 0)
    assert ours.keys() == theirs.keys()
    # Same batches in the same order, same drop-path draws, same EMA: bit for
    # bit (TensorFlow with op determinism, JAX and torch on CPU are
    # deterministic; the backup holds the exact float32 state). A replayed or
    # skipped batch, or a repeated random draw, moves weights by ~1e-4.
    for key in ours:
        np.testing.assert_array_equal(ours[key], theirs[key], err_msg=key)
    assert not (run / "backup").exists()  # removed once the run was saved
    logged = (run / "log.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in logged[1:]] == ["0", "1", "2"]
