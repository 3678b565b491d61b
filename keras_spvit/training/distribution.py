"""Data parallelism with each backend's own engine.

- TensorFlow: `tf.distribute.MirroredStrategy` on one machine (on a single
  GPU a `OneDeviceStrategy`, whose input iterator prefetches to the GPU),
  `MultiWorkerMirroredStrategy` across machines (each worker reads
  `TF_CONFIG`; see the README). Build and compile the model inside the scope;
  `model.fit` splits each global batch across the replicas and shards the
  `tf.data` input.
- JAX: `keras.distribution.DataParallel` over every local device (multi-host
  JAX: call `keras.distribution.initialize()` first on every host).
- PyTorch: Keras has no multi-device engine for the torch backend; asking for
  more than one device raises.

Input across workers: build the training data with `distribute_input`, so
each worker (TF) or process (JAX) reads and decodes only its share of the
images while every step still trains on the single-worker global batch.
Without it, Keras shards a global `tf.data` pipeline itself and every worker
decodes every image. `data_parallel("multi_worker")` on JAX creates its
`DataParallel` with `auto_shard_dataset=False` for that reason: give it
datasets from `distribute_input` (or shard per process yourself).
"""

import contextlib
import json
import os

import keras
import tensorflow as tf

MODES = ("none", "auto", "mirrored", "multi_worker")


def _tf_devices():
    gpus = tf.config.list_logical_devices("GPU")
    return gpus or tf.config.list_logical_devices("CPU")


def _single_gpu():
    """The name of the only GPU TensorFlow sees, else `None`."""
    gpus = tf.config.list_logical_devices("GPU")
    return gpus[0].name if len(gpus) == 1 else None


def replica_devices(mode="auto"):
    """Names of the devices `data_parallel(mode)` would use."""
    if mode not in MODES:
        raise ValueError(f"Expected `mode` in {MODES}. Received: mode={mode!r}")
    backend = keras.backend.backend()
    if mode == "none":
        return []
    if backend == "tensorflow":
        devices = [d.name for d in _tf_devices()]
        if mode == "auto" and not any("GPU" in d for d in devices):
            return []  # several logical CPUs share one CPU: not worth replicas
        return devices if len(devices) > 1 or mode != "auto" else []
    if backend == "jax":
        devices = keras.distribution.list_devices()
        if mode == "auto" and all(d.lower().startswith("cpu") for d in devices):
            return []
        return devices if len(devices) > 1 or mode != "auto" else []
    return []


def multi_worker_environment():
    """What tells this process it is one of several workers, or `None`.

    The variables each engine documents for a job of several processes (one
    per node, each told its rank by the environment):

    - `TF_CONFIG` with several `chief` / `worker` tasks (TensorFlow);
    - `KERAS_DISTRIBUTION_NUM_PROCESSES` (Keras' `initialize()`),
      `JAX_NUM_PROCESSES` or `JAX_COORDINATOR_ADDRESS` (JAX), or a SLURM job
      step of several tasks (`SLURM_NTASKS`, which `jax.distributed`
      detects by itself) (JAX; PyTorch's `WORLD_SIZE` too, to refuse it).

    Returns:
        The name of the variable that says so, or `None`.

    Example:

    >>> multi_worker_environment()  # a laptop
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        try:
            cluster = json.loads(os.environ.get("TF_CONFIG") or "{}").get("cluster", {})
        except (ValueError, AttributeError):
            return None
        tasks = sum(len(cluster.get(job, ())) for job in ("chief", "worker"))
        return "TF_CONFIG" if tasks > 1 else None
    names = ["KERAS_DISTRIBUTION_NUM_PROCESSES", "JAX_NUM_PROCESSES", "SLURM_NTASKS"]
    if backend == "torch":
        names = ["WORLD_SIZE", *names]
    for name in names:
        value = os.environ.get(name, "")
        if value.isdigit() and int(value) > 1:
            return name
    if backend == "jax" and os.environ.get("JAX_COORDINATOR_ADDRESS"):
        return "JAX_COORDINATOR_ADDRESS"
    return None


def resolve_mode(mode="auto"):
    """The data-parallel mode `data_parallel(mode)` runs, and why.

    `"auto"` becomes `"multi_worker"` when `multi_worker_environment()` names
    a variable (on TensorFlow and JAX), else stays `"auto"` (every local
    accelerator). On PyTorch, which Keras gives no multi-device engine,
    several GPUs or processes raise rather than silently train on one GPU.

    Args:
        mode: one of `MODES`.

    Returns:
        `(mode, reason)`: the mode and a phrase saying why.

    Example:

    >>> resolve_mode("auto")
    ('auto', 'local devices')
    """
    if mode not in MODES:
        raise ValueError(f"Expected `mode` in {MODES}. Received: mode={mode!r}")
    backend = keras.backend.backend()
    found = multi_worker_environment() if mode in ("auto", "multi_worker") else None
    if backend == "torch":
        gpus = 0
        if mode != "none":
            import torch

            gpus = torch.cuda.device_count()
        if found or gpus > 1:
            seen = f"{found} in the environment" if found else f"{gpus} GPUs"
            raise ValueError(
                f"Data parallelism with KERAS_BACKEND='torch' ({seen}): Keras has no "
                "multi-device engine for torch. Use KERAS_BACKEND=jax or tensorflow, or "
                "CUDA_VISIBLE_DEVICES=0 with --distribute none for one GPU."
            )
    if mode == "auto" and found:
        return "multi_worker", f"{found} set: one process per worker"
    if mode == "auto":
        return mode, "local devices"
    return mode, "asked"


@contextlib.contextmanager
def data_parallel(mode="auto"):
    """Context in which to build and compile a model for data-parallel training.

    Args:
        mode: `"none"` (one device), `"auto"` (`"multi_worker"` when the
            environment names several workers, see `resolve_mode`; else
            every accelerator when there are several, else one device),
            `"mirrored"` (every local device,
            CPUs included: what the tests use with 2 virtual CPUs) or
            `"multi_worker"` (TensorFlow's `MultiWorkerMirroredStrategy`).

    Yields:
        The number of replicas.

    Example:

    >>> with data_parallel("auto") as replicas:
    ...     model = keras_spvit.SPViT_Tiny(num_classes=10)
    ...     model.compile(...)
    >>> model.fit(dataset)  # global batch split over `replicas` devices
    """
    mode, _ = resolve_mode(mode)
    backend = keras.backend.backend()
    if mode == "none":
        yield 1
        return
    if backend == "tensorflow":
        if mode == "multi_worker":
            strategy = tf.distribute.MultiWorkerMirroredStrategy()
        else:
            devices = replica_devices(mode)
            gpu = _single_gpu() if mode == "auto" and len(devices) < 2 else None
            if gpu is not None:
                # Under a strategy Keras' iterator copies each batch to the
                # device ahead of the step; without one, at the step.
                strategy = tf.distribute.OneDeviceStrategy(gpu)
            elif len(devices) < 2:
                yield 1
                return
            else:
                strategy = tf.distribute.MirroredStrategy(devices)
        with strategy.scope():
            yield strategy.num_replicas_in_sync
        return
    if backend == "jax":
        if mode == "multi_worker":
            keras.distribution.initialize()
            devices = keras.distribution.list_devices()
        else:
            devices = replica_devices(mode)
        if len(devices) < 2:
            yield 1
            return
        previous = keras.distribution.distribution()
        # Multi-process input comes pre-sharded per process from `distribute_input`.
        keras.distribution.set_distribution(
            keras.distribution.DataParallel(
                devices=devices, auto_shard_dataset=mode != "multi_worker"
            )
        )
        try:
            yield len(devices)
        finally:
            keras.distribution.set_distribution(previous)
        return
    if mode in ("mirrored", "multi_worker"):
        raise ValueError(
            f"Data parallelism mode={mode!r} needs the TensorFlow or JAX backend: Keras has "
            f"no multi-device engine for KERAS_BACKEND={backend!r}."
        )
    yield 1


def _tf_num_workers(strategy):
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return 1
    spec = resolver.cluster_spec().as_dict()
    return max(1, sum(len(spec.get(job, ())) for job in ("chief", "worker")))


def worker(strategy=None):
    """`(index, count)` of this process among the workers of the run.

    The one place that decides who is the chief (index 0), for both engines:

    - TensorFlow: the task of `strategy`'s cluster resolver (`TF_CONFIG`):
      the `chief` task if the cluster has one, else `worker` 0; the other
      workers follow in order.
    - JAX: `jax.process_index()` of `jax.process_count()` (after
      `keras.distribution.initialize()`).
    - Otherwise, one process: `(0, 1)`.

    Args:
        strategy: optional `tf.distribute.Strategy` (default: the one in
            scope, if any). Ignored on other backends.

    Returns:
        A tuple of two ints.

    Example:

    >>> index, count = worker()
    >>> if index == 0:
    ...     write_summary()
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        if strategy is None and tf.distribute.has_strategy():
            strategy = tf.distribute.get_strategy()
        resolver = getattr(strategy, "cluster_resolver", None)
        count = _tf_num_workers(strategy) if strategy is not None else 1
        if resolver is None or count < 2:
            return 0, 1
        has_chief = bool(resolver.cluster_spec().as_dict().get("chief"))
        if resolver.task_type == "chief":
            return 0, count
        return int(resolver.task_id) + int(has_chief), count
    if backend == "jax":
        import jax

        return jax.process_index(), jax.process_count()
    return 0, 1


def is_chief(strategy=None):
    """Whether this process writes the run's files and prints (see `worker`).

    Example:

    >>> is_chief()  # one process
    True
    """
    return worker(strategy)[0] == 0


def gather_from_workers(directory, key, value, tag=None, timeout=600.0, strategy=None):
    """Every worker's `value` on the chief, through files in `directory`.

    For what each worker collects on its own during a run (the files its
    share of the input failed to decode, say) and the chief reports. Call it
    on every worker after `fit`: a non-chief writes `value` as JSON to
    `directory/.KEY.workerI.json` (aside, then renamed) and returns `None`;
    the chief waits for every other worker's file (the run directory is on a
    shared file system, as resuming needs), reads and deletes them, and
    returns the values in worker order, its own first. A file whose `tag`
    differs from the chief's is a stale one (an earlier run's) and is waited
    past. Workers missing after `timeout` seconds are left out with a
    warning naming them. In a one-process run: `[value]`, no file.

    Args:
        directory: str, the run directory every worker sees.
        key: str, a name for the gathered value (part of the file name).
        value: anything `json.dumps` takes.
        tag: optional JSON value the workers agree on (e.g. the optimizer
            step count at the end of `fit`).
        timeout: float > 0, seconds the chief waits for the other workers.
        strategy: optional `tf.distribute.Strategy` (see `worker`).

    Returns:
        On the chief, a list of the workers' values; elsewhere `None`.

    Example:

    >>> shares = gather_from_workers("runs/a", "bad_files", errors.state())
    >>> if shares is not None:
    ...     for share in shares[1:]:
    ...         errors.merge(share)
    """
    import time
    import warnings

    if not isinstance(key, str) or not key or os.sep in key:
        raise ValueError(f"Expected a non-empty file-name part as `key`. Received: key={key!r}")
    if not timeout > 0:
        raise ValueError(f"Expected a positive number of seconds. Received: timeout={timeout!r}")
    index, count = worker(strategy)

    def path(task):
        return os.path.join(directory, f".{key}.worker{task}.json")

    if index != 0:
        os.makedirs(directory, exist_ok=True)
        aside = f"{path(index)}.{os.getpid()}.tmp"
        with open(aside, "w") as f:
            json.dump({"tag": tag, "value": value}, f)
        os.replace(aside, path(index))
        return None
    values, waiting = {0: value}, set(range(1, count))
    deadline = time.monotonic() + timeout
    while waiting:
        for task in sorted(waiting):
            try:
                with open(path(task)) as f:
                    record = json.load(f)
            except (FileNotFoundError, json.JSONDecodeError):
                continue
            if record.get("tag") == tag:
                values[task] = record["value"]
                waiting.discard(task)
                os.remove(path(task))
        if waiting and time.monotonic() > deadline:
            warnings.warn(
                f"gather_from_workers: no {key!r} from worker(s) {sorted(waiting)} after "
                f"{timeout:g} s; reporting the other workers' only."
            )
            break
        if waiting:
            time.sleep(0.1)
    return [values[task] for task in sorted(values)]


def local_replicas(strategy):
    """Replicas of a `tf.distribute` strategy on this worker."""
    return max(1, strategy.num_replicas_in_sync // _tf_num_workers(strategy))


def distribute_input(dataset_fn):
    """The training input for `fit`, read by each worker only for its share.

    `dataset_fn` builds the pipeline from a `tf.distribute.InputContext` (or
    `None`) passed as `input_context=`, as `image_folder_dataset`, `array_dataset` and `tfds_dataset`
    (and `source_dataset`) do with their `input_context` argument, given the
    GLOBAL batch size:

    - TensorFlow, `MultiWorkerMirroredStrategy` over several workers (call this
      inside its scope): `strategy.distribute_datasets_from_function(dataset_fn)`,
      a distributed dataset that `model.fit` consumes as it is (no second
      sharding or rebatching). Each worker's pipeline batches the per-replica
      batch size and reads only its share of the shuffled file list.
    - JAX with several processes (`keras.distribution.initialize()` and a
      `DataParallel(..., auto_shard_dataset=False)`, as
      `data_parallel("multi_worker")` sets): `dataset_fn` with the context of
      process `jax.process_index()` of `jax.process_count()`: this process's
      share at `global_batch // process_count` per batch, which Keras
      assembles into the global batch across processes.
    - Otherwise (one worker, `MirroredStrategy`, one JAX process, PyTorch):
      `dataset_fn(input_context=None)`, the global pipeline, unchanged.

    Args:
        dataset_fn: function called as `dataset_fn(input_context=...)` once
            per worker or process, returning a `tf.data.Dataset` at the
            global batch size when `input_context` is `None`.

    Returns:
        A `tf.data.Dataset`, or a `tf.distribute.DistributedDataset` under
        multi-worker TensorFlow (map the batches inside `dataset_fn`).

    Example:

    >>> import functools
    >>> with data_parallel("multi_worker"):
    ...     model = build_and_compile()
    ...     train = distribute_input(functools.partial(
    ...         image_folder_dataset, "imagenet/train", image_size=224,
    ...         batch_size=1024, training=True, seed=0))
    >>> model.fit(train, epochs=300)
    """
    if not callable(dataset_fn):
        raise ValueError(
            f"Expected `dataset_fn` to be a function of an input context. "
            f"Received: dataset_fn={dataset_fn!r}"
        )
    backend = keras.backend.backend()
    if backend == "tensorflow":
        if tf.distribute.has_strategy():
            strategy = tf.distribute.get_strategy()
            if _tf_num_workers(strategy) > 1:
                return strategy.distribute_datasets_from_function(
                    lambda context: dataset_fn(input_context=context)
                )
        return dataset_fn(input_context=None)
    if backend == "jax":
        import jax

        distribution = keras.distribution.distribution()
        count = jax.process_count()
        if distribution is not None and count > 1:
            if getattr(distribution, "auto_shard_dataset", False):
                raise ValueError(
                    "distribute_input shards the input per process itself: create the "
                    "distribution with auto_shard_dataset=False (data_parallel('multi_worker') "
                    f"does). Received: {distribution!r} with auto_shard_dataset=True"
                )
            context = tf.distribute.InputContext(
                num_input_pipelines=count,
                input_pipeline_id=jax.process_index(),
                num_replicas_in_sync=count,
            )
            return dataset_fn(input_context=context)
    return dataset_fn(input_context=None)


def _replicas_and_processes(strategy=None):
    """`(replicas in sync, processes)` of the current data parallel setup."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        if strategy is None and tf.distribute.has_strategy():
            strategy = tf.distribute.get_strategy()
        if strategy is None:
            return 1, 1
        return strategy.num_replicas_in_sync, _tf_num_workers(strategy)
    if backend == "jax":
        import jax

        distribution = keras.distribution.distribution()
        if distribution is None:
            return 1, jax.process_count()
        devices = getattr(distribution, "device_mesh", None)
        replicas = devices.devices.size if devices is not None else jax.device_count()
        return int(replicas), jax.process_count()
    return 1, 1


def count_examples(dataset):
    """Examples in a finite batched dataset of `(x, y)` (one pass, labels only kept)."""

    def size(count, batch):
        leaf = tf.nest.flatten(batch[1])[0]
        return count + tf.cast(tf.shape(leaf)[0], tf.int64)

    return int(dataset.reduce(tf.constant(0, tf.int64), size))


def evaluation_input(dataset, global_batch, num_examples=None, strategy=None):
    """Validation batches every replica and process can share: padded and masked.

    With one replica `dataset` is returned unchanged. Over several replicas a
    last batch smaller than `global_batch` cannot be split evenly (JAX fails
    on it; across processes a worker without a batch waits forever in the
    collectives). Each batch is therefore padded to `global_batch` with
    zero rows carrying sample weight 0, and every real example gets the
    weight `padded / real` (the same for all): Keras averages a batch's
    weighted loss over the whole batch and weighs batches by their size, so
    the validation loss and accuracy come out exactly those of the real
    examples. Under JAX multi-process each process then keeps its rows of
    every global batch (`distribute_input`'s convention).

    Args:
        dataset: finite `tf.data.Dataset` of `(x, y)` batches of
            `global_batch` (the last one may be smaller).
        global_batch: int. The batch size, a multiple of the replicas.
        num_examples: optional int, the examples in `dataset`; counted with
            one pass over it when not given (or not carried by the dataset as
            `num_examples`).
        strategy: the model's `tf.distribute` strategy (TensorFlow), when
            this runs outside its scope.

    Returns:
        A dataset of `(x, y, sample_weight)` batches, or `dataset`.

    Example:

    >>> with data_parallel("mirrored"):
    ...     val = evaluation_input(val, 256)
    """
    replicas, processes = _replicas_and_processes(strategy)
    if replicas <= 1 and processes <= 1:
        return dataset
    if global_batch % max(replicas, processes):
        raise ValueError(
            f"Expected a batch size divisible by the {replicas} replicas. "
            f"Received: batch_size={global_batch}"
        )
    if num_examples is None:
        num_examples = getattr(dataset, "num_examples", None)
    if num_examples is None:
        num_examples = count_examples(dataset)
    batches = -(-num_examples // global_batch)
    if num_examples < 1:
        raise ValueError("The validation data holds no example.")
    scale = batches * global_batch / num_examples

    def pad(x, y):
        rows = tf.shape(tf.nest.flatten(x)[0])[0]
        missing = global_batch - rows

        def pad_rows(t):
            t = tf.pad(t, [[0, missing]] + [[0, 0]] * (t.shape.rank - 1))
            return tf.ensure_shape(t, [global_batch] + t.shape.as_list()[1:])

        weights = tf.concat([tf.fill([rows], tf.constant(scale, tf.float32)),
                             tf.zeros([missing], tf.float32)], 0)
        return (tf.nest.map_structure(pad_rows, x), tf.nest.map_structure(pad_rows, y),
                tf.ensure_shape(weights, [global_batch]))

    padded = dataset.map(pad)
    if keras.backend.backend() == "jax" and processes > 1:
        import jax

        share, index = global_batch // processes, jax.process_index()

        def rows_of_process(*batch):
            return tf.nest.map_structure(lambda t: t[index * share:(index + 1) * share], batch)

        padded = padded.map(rows_of_process)
    return padded.prefetch(tf.data.AUTOTUNE)
