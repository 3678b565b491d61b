"""Compile and fit with a recipe: optimizer, schedule, losses, checkpoints, logs.

`fit(model, train, val, recipe=..., out_dir=...)` is what `keras-spvit
train` runs. Everything it writes goes under `out_dir`:

- `backup/`: the resumption state (weights, optimizer, epoch and batches
  done, see `resume.py`), written every epoch (and every `save_freq`
  batches if given), removed once the run is saved. Running the same call
  again after an interruption resumes from it, mid-epoch included.
- `checkpoints/epoch_NNN.weights.h5`: the weights after every epoch.
- `log.csv` (appended across resumes) and `tensorboard/`.
- `model.keras`: the final model (EMA weights if the recipe keeps an EMA).
- `summary.json`: final metrics, images/s, paths.

With several workers (TensorFlow's `MultiWorkerMirroredStrategy`, JAX
multi-process) the chief (`distribution.worker`, index 0) writes these files
and prints; `out_dir` must be on a file system every worker reads, since each
resumes from the chief's backup. The other workers still run every save (under
TensorFlow saving reads variables with collective ops all workers must join,
as TensorFlow's multi-worker guide says) into a temporary directory of their
own, removed at the end.
"""

import contextlib
import csv
import json
import math
import os
import shutil
import tempfile
import time

import keras
import tensorflow as tf
from keras import ops

from keras_spvit.training.callbacks import SwapEMAWeights, Throughput
from keras_spvit.training.distribution import evaluation_input, local_replicas, worker
from keras_spvit.training.hardware import check_steps_per_execution
from keras_spvit.training.losses import SoftTargetCrossEntropy, TokenLabelCrossEntropy
from keras_spvit.training.optimizers import (
    ParamGroupAdamW,
    layer_decay_multipliers,
    no_weight_decay_paths,
)
from keras_spvit.training.recipes import get_recipe
from keras_spvit.training.resume import Backup, restore
from keras_spvit.training.schedules import warmup_cosine


@keras.saving.register_keras_serializable(package="keras_spvit")
def top1_accuracy(y_true, y_pred):
    """Top-1 accuracy against class ids `(batch,)` or soft targets `(batch, classes)`."""
    predicted = ops.argmax(y_pred, axis=-1)
    if len(y_true.shape) == len(y_pred.shape):
        y_true = ops.argmax(y_true, axis=-1)
    return ops.cast(ops.equal(ops.cast(y_true, "int32"), ops.cast(predicted, "int32")), "float32")


def returns_dense(model):
    return bool(getattr(model, "return_dense", False))


def dense_targets(labels, token_labels=None):
    """The `y` dict a `return_dense=True` classifier trains on."""
    return {
        "logits": labels,
        "class_logits": labels,
        "aux_logits": labels if token_labels is None else token_labels,
    }


def for_model(dataset, model):
    """Maps `(images, labels)` or `(images, {"labels", "token_labels"})` to the
    targets `model` trains on (a third element, sample weights, is kept)."""

    def targets(y):
        if isinstance(y, dict) and "labels" not in y:
            return y  # already the model's targets
        if isinstance(y, dict):
            labels = y["labels"]
            if returns_dense(model):
                return dense_targets(labels, y.get("token_labels"))
            return labels
        return dense_targets(y) if returns_dense(model) else y

    def to_targets(images, y, *sample_weight):
        return (images, targets(y), *sample_weight)

    # Look-ahead after the last map: the next batches are ready (and, under a
    # strategy, copied to the devices) while a step runs.
    return dataset.map(to_targets).prefetch(tf.data.AUTOTUNE)


def _is_distributed(dataset):
    if keras.backend.backend() != "tensorflow":
        return False
    return isinstance(dataset, tf.distribute.DistributedDataset)


def _for_model(dataset, model):
    if isinstance(dataset, tf.distribute.DistributedDataset):
        return dataset  # `distribute_input`: targets mapped inside its dataset_fn
    return for_model(dataset, model)


def schedule_epochs(recipe, epochs=None):
    """`(epochs to run, cool-down epochs)`: the recipe's own length (its cosine
    plus cool-down) unless `epochs` is given, which then holds no cool-down."""
    if epochs is None:
        return recipe.epochs + recipe.cooldown_epochs, recipe.cooldown_epochs
    return epochs, 0


def build_optimizer(model, recipe, batch_size, steps_per_epoch, epochs=None):
    """`ParamGroupAdamW` with the recipe's schedule, decay groups, EMA and clipping.

    The schedule spans `epochs` (default: the recipe's epochs plus cool-down),
    stepping per batch; warm-up is capped to leave at least one epoch of decay.
    """
    epochs, cooldown_epochs = schedule_epochs(recipe, epochs)
    cooldown = cooldown_epochs * steps_per_epoch
    total = epochs * steps_per_epoch
    warmup = max(0, min(round(recipe.warmup_epochs * steps_per_epoch),
                        total - cooldown - steps_per_epoch))
    peak = recipe.learning_rate(batch_size)
    schedule = warmup_cosine(
        peak,
        total_steps=total,
        warmup_steps=warmup,
        warmup_learning_rate=recipe.warmup_learning_rate,
        min_learning_rate=min(recipe.min_learning_rate, peak),
        cooldown_steps=cooldown,
    )
    return ParamGroupAdamW(
        learning_rate=schedule,
        weight_decay=recipe.weight_decay,
        no_weight_decay=no_weight_decay_paths(model),
        lr_multipliers=(
            layer_decay_multipliers(model, recipe.layer_decay) if recipe.layer_decay else None
        ),
        global_clipnorm=recipe.clip_norm,
        use_ema=recipe.ema_momentum is not None,
        ema_momentum=recipe.ema_momentum or 0.99,
    )


def _uses_float16(model):
    policy = getattr(getattr(model, "backbone", model), "dtype_policy", None)
    return policy is not None and policy.name == "mixed_float16"


def compile_for_training(model, recipe, *, batch_size, steps_per_epoch, epochs=None,
                         jit_compile="auto", steps_per_execution=1, label_smoothing=None):
    """Compiles `model` with the recipe's optimizer and losses.

    A `return_dense=True` classifier trains `class_logits` and, weighted by
    `recipe.token_label_weight` (default 1.0), `aux_logits` with the
    token-labeling loss; accuracy is reported on the combined `logits`.
    Other models train their logits with soft-target cross-entropy.
    Under `mixed_float16` the optimizer is wrapped in a `LossScaleOptimizer`.

    Args:
        model: a Keras classifier (logits output, or the dense dict).
        recipe: a `Recipe` or recipe name.
        batch_size: int. Global batch size (scales the learning rate).
        steps_per_epoch: int.
        epochs: optional int overriding `recipe.epochs`.
        jit_compile: passed to `model.compile`.
        steps_per_execution: int. Passed to `model.compile` (see
            `hardware.check_steps_per_execution`).
        label_smoothing: optional float overriding the recipe's in the
            losses: `0.0` for targets that come smoothed (token-label
            pipelines apply the release's smoothing themselves).

    Returns:
        The model, compiled.

    Example:

    >>> model = keras_spvit.SPViT_Tiny(num_classes=10)
    >>> compile_for_training(model, "digits", batch_size=64, steps_per_epoch=23)
    """
    recipe = get_recipe(recipe)
    optimizer = build_optimizer(model, recipe, batch_size, steps_per_epoch, epochs)
    if _uses_float16(model):
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    accuracy = keras.metrics.MeanMetricWrapper(top1_accuracy, name="accuracy")
    smoothing = recipe.label_smoothing if label_smoothing is None else label_smoothing
    if returns_dense(model):
        weight = 1.0 if recipe.token_label_weight is None else recipe.token_label_weight
        loss = {
            "class_logits": SoftTargetCrossEntropy(smoothing),
            "aux_logits": TokenLabelCrossEntropy(smoothing),
        }
        loss_weights = {"class_logits": 1.0, "aux_logits": weight}
        metrics = {"logits": [accuracy]}
    else:
        loss = SoftTargetCrossEntropy(smoothing)
        loss_weights = None
        metrics = [accuracy]
    model.compile(
        optimizer=optimizer,
        loss=loss,
        loss_weights=loss_weights,
        # Weighted: padded validation rows (`evaluation_input`) carry weight 0.
        weighted_metrics=metrics,
        # Not keras-hub's "auto" (an unweighted SparseCategoricalAccuracy: the same
        # number logged twice, and counting padded rows).
        metrics=None,
        jit_compile=jit_compile,
        steps_per_execution=steps_per_execution,
    )
    return model


def steps_in(dataset):
    if isinstance(dataset, tf.distribute.DistributedDataset):
        # One worker's pipeline of per-replica batches: a step takes one
        # batch per local replica.
        steps = int(dataset.cardinality)
        if steps in (tf.data.INFINITE_CARDINALITY, tf.data.UNKNOWN_CARDINALITY):
            return None
        return steps // local_replicas(tf.distribute.get_strategy())
    steps = int(dataset.cardinality())
    if steps in (tf.data.INFINITE_CARDINALITY, tf.data.UNKNOWN_CARDINALITY):
        return None
    return steps


def _accuracy(logs, prefix=""):
    for key in (f"{prefix}accuracy", f"{prefix}logits_accuracy"):
        if key in logs:
            return float(logs[key])
    return None


def fit(
    model,
    train_data,
    val_data=None,
    *,
    recipe,
    batch_size,
    out_dir,
    epochs=None,
    steps_per_epoch=None,
    save_freq="epoch",
    jit_compile="auto",
    callbacks=(),
    verbose="auto",
    compile=True,
    steps_per_execution=1,
    label_smoothing=None,
):
    """Trains `model` on `tf.data` input with a recipe, resumably.

    Calling it again with the same `out_dir` after an interruption resumes
    from the last backup (weights, optimizer state and schedule position,
    epoch and batch): the rest of an interrupted epoch runs as a short epoch,
    so the run ends with the same optimizer step count as an uninterrupted
    one. With `train_data` given as a stream (a function of the position)
    the resumed run also sees the same batches in the same order. A finished
    run is not overwritten (delete `out_dir` or pass a new one).

    Args:
        model: a classifier. Build it (and call this) inside
            `data_parallel(...)` to train on several devices.
        train_data: `tf.data.Dataset` of `(images, labels)` batches, labels
            class ids or soft targets, or `(images, {"labels", "token_labels"})`;
            or what `distribute_input` returns (under multi-worker TensorFlow a
            distributed dataset, whose `dataset_fn` must map the batches with
            `for_model` itself); or a stream: a function `(epoch, batch) ->`
            such a dataset, starting at batch `batch` of epoch `epoch` (both
            0-based) and running at least to the end of training, whose
            batches depend only on the position (the training pipelines'
            `start=` argument builds one).
        val_data: optional dataset like `train_data`.
        recipe: a `Recipe` or recipe name.
        batch_size: int. Global batch size of `train_data`.
        out_dir: str. Where checkpoints, logs and the model go (written by
            the chief worker only; see the module's docstring).
        epochs: optional int: epochs to run (default: the recipe's epochs plus
            its cool-down); the schedule fits itself to them.
        steps_per_epoch: optional int; needed if the dataset's length is
            unknown (always for a stream).
        save_freq: `"epoch"` or an int: also back up every this many batches.
        jit_compile: passed to `model.compile`.
        callbacks: extra Keras callbacks.
        verbose: Keras `fit` verbosity (progress bars by default).
        compile: bool. `False` keeps the model's own compilation.
        steps_per_execution: int. Training steps per compiled call: it
            must divide `steps_per_epoch` and an int `save_freq` (`1` on
            torch); more saves host round trips on accelerators.
        label_smoothing: optional float overriding the recipe's in the
            losses (`0.0` for a token-label pipeline's targets, smoothed
            already).

    Returns:
        A dict summary: accuracies, loss, images/s, seconds, file paths.

    Example:

    >>> from keras_spvit.data import digits_dataset
    >>> model = keras_spvit.SPViT_Tiny(num_classes=10)
    >>> summary = fit(model, digits_dataset("train"), digits_dataset("test"),
    ...               recipe="digits", batch_size=64, out_dir="runs/digits", epochs=5)
    """
    recipe = get_recipe(recipe)
    epochs, _ = schedule_epochs(recipe, epochs)
    if int(epochs) != epochs or epochs < 1:
        raise ValueError(f"Expected a positive int. Received: epochs={epochs}")
    stream = train_data if callable(train_data) and not _is_dataset(train_data) else None
    first = stream(0, 0) if stream is not None else train_data
    steps_per_epoch = steps_per_epoch or steps_in(first)
    if steps_per_epoch is None:
        raise ValueError(
            "The training data's length is unknown (infinite, filtered, or a stream). "
            "Pass `steps_per_epoch`."
        )
    if compile:
        check_steps_per_execution(steps_per_execution, steps_per_epoch, save_freq)
    index, workers = worker(_tf_strategy(model))
    chief = index == 0
    summary_path = os.path.join(out_dir, "summary.json")
    if os.path.exists(summary_path):
        raise FileExistsError(
            f"{summary_path} exists: a finished run is in {out_dir!r}. Delete it or choose "
            "another `out_dir`."
        )
    if compile:
        compile_for_training(
            model, recipe, batch_size=batch_size, steps_per_epoch=steps_per_epoch,
            epochs=epochs, jit_compile=jit_compile, steps_per_execution=steps_per_execution,
            label_smoothing=label_smoothing,
        )
    # Every worker resumes from the chief's backup; the others write theirs
    # (and everything else) aside.
    write_dir = out_dir if chief else tempfile.mkdtemp(prefix=f"keras_spvit_worker{index}_")
    os.makedirs(write_dir, exist_ok=True)
    backup_dir = os.path.join(out_dir, "backup")
    position = restore(model, backup_dir, steps_per_epoch)
    start_epoch, start_batch = (position["epoch"], position["batch"]) if position else (0, 0)
    resumed_at_step = position.get("optimizer_steps") if position else 0
    if resumed_at_step is None:  # a backup without the count: the batches before it
        resumed_at_step = start_epoch * steps_per_epoch + start_batch
    if not chief:
        verbose = 0
    if position and chief:
        _say_resumed(backup_dir, position, epochs, steps_per_epoch, exact=stream is not None)

    def data_from(epoch, batch):
        if stream is not None:
            return stream(epoch, batch) if (epoch, batch) != (0, 0) else first
        # A plain dataset reshuffles on every pass: the rest of an interrupted
        # epoch is `steps - batch` batches of a fresh pass.
        return train_data.skip(batch) if batch else train_data

    if val_data is not None and not _is_distributed(val_data):
        # Several replicas: full batches, the padding masked (exact metrics).
        val_data = evaluation_input(val_data, batch_size, strategy=_tf_strategy(model))
    val_data = _for_model(val_data, model) if val_data is not None else None
    throughput = Throughput(batch_size)
    extra = [
        throughput,
        keras.callbacks.ModelCheckpoint(
            os.path.join(write_dir, "checkpoints", "epoch_{epoch:03d}.weights.h5"),
            save_weights_only=True,
        ),
        keras.callbacks.CSVLogger(os.path.join(write_dir, "log.csv"), append=True),
        keras.callbacks.TensorBoard(os.path.join(write_dir, "tensorboard")),
    ]
    if recipe.ema_momentum is not None:
        # Validate (and checkpoint) the EMA weights at each epoch's end.
        extra.insert(0, SwapEMAWeights(last_epoch=epochs - 1))
    extra += list(callbacks)
    os.makedirs(os.path.join(write_dir, "checkpoints"), exist_ok=True)

    # A resumed epoch runs its remaining batches as a short epoch of its own,
    # then the remaining epochs run as one `fit`.
    phases = []
    if start_batch and start_epoch < epochs:
        phases.append((start_epoch, start_epoch + 1, steps_per_epoch - start_batch, start_batch))
        start_epoch += 1
    if start_epoch < epochs:
        phases.append((start_epoch, epochs, steps_per_epoch, 0))

    start = time.perf_counter()
    history = {}
    for first_epoch, end_epoch, steps, offset in phases:
        backup = Backup(os.path.join(write_dir, "backup"), save_freq=save_freq,
                        steps_per_epoch=steps_per_epoch, batch_offset=offset)
        with _finalizing(model.optimizer, end_epoch == epochs), _without_preprocessor(model):
            result = _engine_fit(
                model, workers,
                _for_model(data_from(first_epoch, offset), model),
                validation_data=val_data,
                initial_epoch=first_epoch,
                epochs=end_epoch,
                steps_per_epoch=steps,
                callbacks=[backup, *extra],
                verbose=verbose,
                shuffle=False,  # tf.data input shuffles itself
            )
        for key, values in result.history.items():
            history.setdefault(key, []).extend(values)
    seconds = time.perf_counter() - start
    model_path = os.path.join(out_dir, "model.keras")
    backbone = getattr(model, "backbone", None)
    if getattr(backbone, "_lora_enabled_layers", None) and hasattr(backbone, "merge_lora"):
        # Merged in float32 (Keras' own save would round to the compute dtype).
        backbone.merge_lora()
    model.save(os.path.join(write_dir, "model.keras"))
    last = {k: v[-1] for k, v in history.items() if v} or _last_logged(out_dir)
    summary = {
        "model": model.name,
        "recipe": recipe.name,
        "epochs": epochs,
        "train_accuracy": _accuracy(last),
        "val_accuracy": _accuracy(last, "val_"),
        "loss": float(last["loss"]) if "loss" in last else None,
        "val_loss": float(last["val_loss"]) if "val_loss" in last else None,
        "images_per_second": (
            sorted(throughput.history)[len(throughput.history) // 2]
            if throughput.history else None
        ),
        "seconds": seconds,
        "optimizer_steps": int(keras.ops.convert_to_numpy(model.optimizer.iterations)),
        # Where this run took over from an interrupted one (0: trained from the
        # start); `seconds` counts this run only.
        "resumed_at_step": int(resumed_at_step),
        "model_path": model_path,
        "log_path": os.path.join(out_dir, "log.csv"),
        "tensorboard_dir": os.path.join(out_dir, "tensorboard"),
        "checkpoint_dir": os.path.join(out_dir, "checkpoints"),
    }
    summary = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in summary.items()}
    if chief:
        with open(summary_path, "w") as f:
            json.dump(summary, f, indent=2)
        shutil.rmtree(backup_dir, ignore_errors=True)  # the run is saved and summarised
    else:
        shutil.rmtree(write_dir, ignore_errors=True)
    return summary


def _tf_strategy(model):
    if keras.backend.backend() != "tensorflow":
        return None
    return getattr(model, "distribute_strategy", None)


def _engine_fit(model, workers, data, **kwargs):
    """`model.fit(data, ...)`, working around Keras under multi-worker TensorFlow.

    keras-hub's `PipelineModel.fit` rebuilds its input as a `tf.data` pipeline
    to map the preprocessor over it, which fails on a
    `tf.distribute.DistributedDataset` (it cannot be mapped): such input
    (`distribute_input`'s, preprocessed in its `dataset_fn`) goes to Keras'
    own `fit`.
    """
    distributed = isinstance(data, tf.distribute.DistributedDataset)
    if keras.backend.backend() != "tensorflow" or (workers < 2 and not distributed):
        return model.fit(data, **kwargs)
    if not distributed:
        with _multi_worker_keras(model, data):
            return model.fit(data, **kwargs)
    with _multi_worker_keras(model, data):
        return keras.Model.fit(model, data, **kwargs)


@contextlib.contextmanager
def _multi_worker_keras(model, data):
    """Works around two failures of Keras 3.15's TensorFlow `fit` under
    `MultiWorkerMirroredStrategy` (tensorflow/tensorflow#72388).

    1. `fit` and `evaluate` first build the model on a batch they average
       across replicas with `strategy.reduce`, which fails on the per-replica
       batch ("Attempt to convert a value (PerReplica...) to a Tensor"). The
       model is built here from the input's spec (shapes and dtypes are all a
       symbolic build reads) and that step is skipped while `fit` runs:
       everything it would build is built.
    2. Each step's logs are reduced across workers with
       `strategy.reduce("MEAN", value, axis=0)`, which fails on the scalar
       metric results ("Invalid reduction dimension 0 for input with 0
       dimensions"). The steps return them with shape `(1,)`: the same
       reduction is then the mean over replicas, a scalar. (The values are
       equal on every replica anyway: metric variables are summed across
       all of them at each update.)
    """

    def one_replica(spec):
        if isinstance(spec, dict):
            return {key: one_replica(value) for key, value in spec.items()}
        if isinstance(spec, (tuple, list)):
            return type(spec)(one_replica(value) for value in spec)
        if isinstance(spec, tf.TensorSpec):
            return spec
        return one_replica(spec._component_specs[0])  # a `PerReplicaSpec`: replica 0

    spec = one_replica(data.element_spec)
    with model.distribute_strategy.scope():
        model._symbolic_build(data_batch=spec)
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None

    def rank_one(step):
        def step_with_rank_one_logs(batch):
            return keras.tree.map_structure(
                lambda v: tf.reshape(v, [1]) if tf.is_tensor(v) and v.shape.rank == 0 else v,
                step(batch),
            )

        return step_with_rank_one_logs

    model.train_step = rank_one(type(model).train_step.__get__(model))
    model.test_step = rank_one(type(model).test_step.__get__(model))
    try:
        yield
    finally:
        # The compiled step functions keep the wrapped steps (harmless on
        # one worker too).
        del model._maybe_symbolic_build, model.train_step, model.test_step


@contextlib.contextmanager
def _without_preprocessor(model):
    """The model's preprocessor (a preset's) detached while `fit` runs: the
    pipelines hand `fit` preprocessed images, and keras-hub's `fit` would map
    the preprocessor over them a second time (the preset's digits: 13%
    validation accuracy instead of 98.9%). It is back for `model.keras`."""
    preprocessor = getattr(model, "preprocessor", None)
    if preprocessor is None:
        yield
        return
    model.preprocessor = None
    try:
        yield
    finally:
        model.preprocessor = preprocessor


@contextlib.contextmanager
def _finalizing(optimizer, final):
    # `fit` ends by `optimizer.finalize_variable_values`, which copies the EMA
    # over the training weights: right after the run's last epoch, wrong
    # after the first part of a resumed run (training goes on).
    if final:
        yield
        return
    optimizer.finalize_variable_values = lambda var_list: None
    try:
        yield
    finally:
        del optimizer.finalize_variable_values


def _is_dataset(data):
    return isinstance(data, (tf.data.Dataset, tf.distribute.DistributedDataset))


def _say_resumed(backup_dir, position, epochs, steps_per_epoch, *, exact):
    where = f"epoch {position['epoch'] + 1}/{epochs}"
    if position["batch"]:
        where += f", after batch {position['batch']}/{steps_per_epoch}"
    steps = position.get("optimizer_steps")
    note = "" if steps is None else f" (optimizer step {steps})"
    if position["batch"] and not exact:
        note += "; the rest of that epoch comes from a new pass over the data (give `fit` a " \
                "stream to resume on the same batches)"
    print(f"Resuming from {backup_dir}: {where}{note}.")


def logged_epochs(out_dir):
    """The rows of a run's `log.csv` (one dict of strings per epoch logged,
    kept across resumes); `[]` before its first epoch ends.

    Example:

    >>> logged_epochs("runs/spvit")[-1]["val_accuracy"]
    '0.9832'
    """
    try:
        with open(os.path.join(out_dir, "log.csv"), newline="") as f:
            return list(csv.DictReader(f))
    except FileNotFoundError:
        return []


def _last_logged(out_dir):
    # Killed after the last epoch's backup, before the final save: the
    # metrics come from the log.
    rows = logged_epochs(out_dir)
    if not rows:
        return {}
    return {k: float(v) for k, v in rows[-1].items() if k != "epoch" and v not in ("", None)}
