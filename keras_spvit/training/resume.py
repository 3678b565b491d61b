"""Resuming a run exactly where it stopped, mid-epoch included.

Keras' `BackupAndRestore` restores the weights, the optimizer (so the
learning-rate schedule's position) and the epoch, but restarts an
interrupted epoch at its first batch: the batches before the backup are
seen twice and the run ends with more optimizer steps than planned.
`Backup` records how many batches of the epoch were done, and `fit` (see
`trainer.py`) resumes there: it runs the rest of the interrupted epoch as a
short epoch of its own, then the remaining epochs. With training data given
as a stream (`train_data(epoch, batch)`, a dataset starting at that position
whose order and random draws depend only on the seed and the position, as
`keras_spvit.data`'s training pipelines build with `start=`) the resumed run
sees the same batches in the same order as an uninterrupted one.
"""

import json
import os

import keras

METADATA = "training_metadata.json"
WEIGHTS = "latest.weights.h5"


def read_metadata(backup_dir):
    """The backup's `training_metadata.json` as a dict (`{}` without one)."""
    path = os.path.join(backup_dir, METADATA)
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def _random_state(model):
    # The seed generators' states (drop path, ...): variables of the model
    # that its weights files leave out.
    weights = {id(v) for v in model.weights}
    return {
        v.path: keras.ops.convert_to_numpy(v).tolist()
        for v in model.variables
        if id(v) not in weights
    }


def _set_random_state(model, state):
    for v in model.variables:
        if v.path in state:
            v.assign(keras.ops.convert_to_tensor(state[v.path], dtype=v.dtype))


def read_position(backup_dir):
    """Where the backup in `backup_dir` stands, or `None` without one.

    Args:
        backup_dir: str. The `Backup` callback's directory.

    Returns:
        `None`, or a dict: `epoch` (0-based, the epoch in progress),
        `batch` (batches of that epoch done), `steps_per_epoch` and
        `optimizer_steps` (`None` in a backup written by Keras' own
        `BackupAndRestore`, which records only the epoch: `batch` is then 0).

    Example:

    >>> read_position("runs/digits/backup")
    {'epoch': 1, 'batch': 9, 'steps_per_epoch': 22, 'optimizer_steps': 31}
    """
    metadata = read_metadata(backup_dir)
    if not metadata:
        return None
    if "batches_done" not in metadata:  # Keras' own format: the epoch only
        return {"epoch": int(metadata["epoch"]), "batch": 0, "steps_per_epoch": None,
                "optimizer_steps": None}
    return {
        "epoch": int(metadata["epoch"]),
        "batch": int(metadata["batches_done"]),
        "steps_per_epoch": metadata.get("steps_per_epoch"),
        "optimizer_steps": metadata.get("optimizer_steps"),
    }


def restore(model, backup_dir, steps_per_epoch):
    """Loads the backup's weights and optimizer into `model`; returns the position.

    The weights are the truth: if the process died between writing the
    weights and the metadata, the optimizer's step count (restored with the
    weights) says how many batches the metadata missed.

    Args:
        model: the compiled, built model.
        backup_dir: str.
        steps_per_epoch: int. Must match the backed-up run's.

    Returns:
        `None` without a backup, else `read_position`'s dict (corrected).

    Example:

    >>> position = restore(model, "runs/digits/backup", steps_per_epoch=22)
    """
    position = read_position(backup_dir)
    weights = os.path.join(backup_dir, WEIGHTS)
    if position is None or not os.path.exists(weights):
        return None
    recorded = position["steps_per_epoch"]
    if recorded is not None and recorded != steps_per_epoch:
        raise ValueError(
            f"The backup in {backup_dir!r} was made with {recorded} steps per epoch; this run "
            f"has {steps_per_epoch} (a different dataset or batch size). Use the same data and "
            "--batch-size to resume, or a new run directory."
        )
    if model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    model.load_weights(weights)
    _set_random_state(model, read_metadata(backup_dir).get("random_state", {}))
    missed = 0
    if position["optimizer_steps"] is not None:
        steps = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
        missed = max(0, steps - position["optimizer_steps"])
        position = dict(position, optimizer_steps=steps)
    # A backup after an epoch's last batch (every N batches) is the next
    # epoch's start.
    done = position["epoch"] * steps_per_epoch + position["batch"] + missed
    return dict(position, epoch=done // steps_per_epoch, batch=done % steps_per_epoch)


class Backup(keras.callbacks.BackupAndRestore):
    """`BackupAndRestore` that records the batches done in the current epoch.

    Saves only: `restore` loads the backup before `fit` (the data stream
    and the epochs to run depend on the position). Keeps its files at the end of training (the trainer removes
    them once the final model is saved), so that a run interrupted between
    two `fit` calls of a resumed epoch loses nothing.

    Args:
        backup_dir: str. Where the weights and `training_metadata.json` go.
        save_freq: `"epoch"` or an int: also back up every this many batches.
        steps_per_epoch: int. Recorded with each backup.
        batch_offset: int. Batches of the first epoch done before this
            `fit` call (a resumed epoch's earlier part).

    Example:

    >>> model.fit(data, epochs=3, callbacks=[Backup("runs/a/backup", 5, steps_per_epoch=22)])
    """

    def __init__(self, backup_dir, save_freq="epoch", *, steps_per_epoch, batch_offset=0):
        super().__init__(backup_dir, save_freq=save_freq, delete_checkpoint=False)
        self.steps_per_epoch = int(steps_per_epoch)
        self.batch_offset = int(batch_offset)
        self._first_epoch = None
        self._batches_done = 0

    def on_train_begin(self, logs=None):
        pass  # `restore` loaded the backup before `fit` (it needs the position first)

    def on_epoch_begin(self, epoch, logs=None):
        if self._first_epoch is None:
            self._first_epoch = epoch
        self._current_epoch = epoch
        self._batches_done = self.batch_offset if epoch == self._first_epoch else 0

    def on_train_batch_end(self, batch, logs=None):
        offset = self.batch_offset if self._current_epoch == self._first_epoch else 0
        self._batches_done = offset + batch + 1
        super().on_train_batch_end(batch, logs)

    def on_epoch_end(self, epoch, logs=None):
        self._batches_done = 0
        super().on_epoch_end(epoch, logs)

    def _save_model(self):
        os.makedirs(self.backup_dir, exist_ok=True)
        metadata = {
            "epoch": self._current_epoch,
            "batches_done": self._batches_done,
            "steps_per_epoch": self.steps_per_epoch,
            "optimizer_steps": int(keras.ops.convert_to_numpy(self.model.optimizer.iterations)),
            "batch": self._batches_done,  # read by Keras' own `BackupAndRestore`
            "random_state": _random_state(self.model),
        }
        # Both files written aside, then renamed: a crash leaves whole files
        # (between the two renames, `restore` corrects the position from the
        # optimizer's step count in the newer weights).
        weights = os.path.join(self.backup_dir, "writing." + WEIGHTS)
        self.model.save_weights(filepath=weights, overwrite=True)
        temporary = self._training_metadata_path + ".writing"
        with open(temporary, "w") as f:
            json.dump(metadata, f)
        os.replace(weights, self._weights_path)
        os.replace(temporary, self._training_metadata_path)

    def on_train_end(self, logs=None):
        pass  # the trainer deletes the backup after the final save
