"""What the hardware under the current Keras backend can do, and the training
defaults that follow from it.

`keras-spvit train --precision auto --jit auto` (the defaults) resolve here:

- precision: `mixed_bfloat16` on accelerators with bfloat16 matrix units (NVIDIA
  compute capability 8.0 or newer, every TPU), `float32` elsewhere. On CPUs
  float32 stays the default: see `CPU_BFLOAT16` for what was measured.
- XLA: on for TensorFlow and JAX on accelerators, including under
  `tf.distribute` strategies (Keras' own `jit_compile="auto"` turns XLA off
  under any strategy and on any CPU-only TensorFlow); on for a single CPU
  device (measured 2x faster than graph mode for these models in float32);
  off for bfloat16 on a TensorFlow CPU with bfloat16 instructions (AVX512-BF16
  or AMX: oneDNN's bf16 kernels are faster than XLA's), on for bfloat16 on
  a CPU without them (oneDNN then emulates bfloat16, 4x slower than XLA's
  float32-speed bfloat16); off across several *virtual* CPU devices, which TensorFlow
  cannot compile for; off on torch (`torch.compile` recompiles for minutes
  on these models).

`--device` (`check_device`, `hide_accelerators`) and the start-up line
(`describe_devices`) also live here, and `keep_tensorflow_off_gpus`: under
the JAX and torch backends TensorFlow only runs the input pipelines and is
kept off the GPUs.

Nothing here changes a model's numbers; it only picks engines.
"""

import os
import warnings

import keras
import tensorflow as tf

PRECISIONS = {
    "float32": "float32",
    "bf16": "mixed_bfloat16",
    "fp16": "mixed_float16",
}

# On CPUs `--precision auto` stays float32 (bf16 changes the numbers a run
# produces; ask for it). When asked, bf16 pays on TensorFlow only without
# XLA: graph mode runs bfloat16 matmuls on oneDNN's AVX512-BF16/AMX kernels
# (matmul peak 4.6x float32 here), while XLA on CPU multiplies bfloat16 no
# faster than float32. Measured on a 2-core AVX512-BF16 CPU, SPViT_S
# training step, batch 16 (benchmarks/throughput.py): bf16 graph 1.34x bf16
# XLA and ~1.3x float32 XLA; JAX gains nothing from bf16 on CPU. On a CPU
# without bfloat16 instructions (AVX512 without BF16, no AMX) oneDNN
# emulates them: 2048^2 matmul 14 GFLOP/s in bf16 graph mode against 55 in
# bf16 XLA (and 54-57 in float32), so there XLA stays on for bf16 (see
# `cpu_has_bfloat16_instructions`).
CPU_BFLOAT16 = False

# /proc/cpuinfo flags of the instructions oneDNN's fast bfloat16 kernels use:
# x86 AVX512-BF16 and AMX-BF16, Arm's BF16 extension.
_BFLOAT16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})


def cpu_has_bfloat16_instructions(cpuinfo_path="/proc/cpuinfo"):
    """Whether the CPU multiplies bfloat16 natively (AVX512-BF16, AMX-BF16, Arm BF16).

    Read from the `flags` (x86) or `Features` (Arm) lines of
    `/proc/cpuinfo`; `False` where that file does not exist (not Linux):
    unknown counts as absent, as XLA is the route that is never much slower.

    Args:
        cpuinfo_path: str. The file to read (tests pass their own).

    Returns:
        bool.

    Example:

    >>> cpu_has_bfloat16_instructions()  # a Sapphire Rapids Xeon
    True
    """
    try:
        with open(cpuinfo_path) as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return not _BFLOAT16_CPU_FLAGS.isdisjoint(value.split())
    except OSError:
        return False
    return False


def accelerator():
    """`"gpu"`, `"tpu"` or `None` (CPU only) for the current Keras backend.

    Example:

    >>> accelerator()  # on a laptop
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        if tf.config.list_logical_devices("TPU"):
            return "tpu"
        return "gpu" if tf.config.list_physical_devices("GPU") else None
    if backend == "jax":
        import jax

        platform = jax.default_backend()
        return {"gpu": "gpu", "cuda": "gpu", "rocm": "gpu", "tpu": "tpu"}.get(platform)
    if backend == "torch":
        import torch

        return "gpu" if torch.cuda.is_available() else None
    return None


def _gpu_compute_capability():
    """`(major, minor)` of the first GPU, or `None` when unknown."""
    backend = keras.backend.backend()
    try:
        if backend == "tensorflow":
            gpus = tf.config.list_physical_devices("GPU")
            details = tf.config.experimental.get_device_details(gpus[0]) if gpus else {}
            capability = details.get("compute_capability")
            return tuple(capability) if capability else None
        if backend == "jax":
            import jax

            capability = getattr(jax.devices()[0], "compute_capability", None)
            return tuple(int(p) for p in str(capability).split(".")[:2]) if capability else None
        if backend == "torch":
            import torch

            return tuple(torch.cuda.get_device_capability(0))
    except Exception:  # noqa: BLE001 - a driver that cannot say: assume no bf16
        return None
    return None


def supports_bfloat16():
    """Whether the accelerator has fast bfloat16 matrix units (Ampere+, TPU)."""
    kind = accelerator()
    if kind == "tpu":
        return True
    if kind == "gpu":
        capability = _gpu_compute_capability()
        return capability is not None and capability >= (8, 0)
    return CPU_BFLOAT16


def resolve_precision(precision="auto"):
    """A Keras dtype policy name for `precision`.

    Args:
        precision: `"auto"`, `"float32"`, `"bf16"` or `"fp16"` (or a policy
            name such as `"mixed_bfloat16"`).

    Returns:
        `"float32"`, `"mixed_bfloat16"` or `"mixed_float16"`.

    Example:

    >>> resolve_precision("bf16")
    'mixed_bfloat16'
    """
    if precision == "auto":
        return "mixed_bfloat16" if supports_bfloat16() else "float32"
    if precision in PRECISIONS:
        return PRECISIONS[precision]
    if precision in PRECISIONS.values():
        return precision
    raise ValueError(
        f"Expected `precision` in {['auto', *PRECISIONS]}. Received: precision={precision!r}"
    )


def resolve_jit(jit="auto", replicas=1, dtype_policy="float32"):
    """`jit_compile` for `model.compile`: `True` or `False`.

    Args:
        jit: `"auto"`, `"on"`, `"off"` or a bool.
        replicas: int. Devices the model is replicated over.
        dtype_policy: the model's dtype policy name (bfloat16 on a
            TensorFlow CPU with bfloat16 instructions turns XLA off, see
            `CPU_BFLOAT16`).

    Returns:
        bool.

    Example:

    >>> resolve_jit("on")
    True
    """
    if isinstance(jit, bool):
        return jit
    if jit in ("on", "off"):
        return jit == "on"
    if jit != "auto":
        raise ValueError(f"Expected `jit` in ['auto', 'on', 'off']. Received: jit={jit!r}")
    backend = keras.backend.backend()
    if backend == "torch":
        return False
    if accelerator() is not None:
        return True
    if (backend == "tensorflow" and "bfloat16" in str(dtype_policy)
            and cpu_has_bfloat16_instructions()):
        return False  # oneDNN's bf16 kernels, not XLA's (see CPU_BFLOAT16)
    # On CPUs: XLA compiles one device; TensorFlow cannot place an XLA
    # cluster across several virtual CPU devices of a MirroredStrategy.
    return not (backend == "tensorflow" and replicas > 1)


DEVICES = ("auto", "cpu", "gpu", "tpu")
# What to install when the backend sees no accelerator of the kind asked for.
_ACCELERATOR_HINTS = {
    "jax": "pip install 'keras-spvit[jax-cuda]' (JAX's CUDA 12 wheels), or jax[tpu] on a TPU VM",
    "tensorflow": "pip install 'tensorflow[and-cuda]' on Linux",
    "torch": "a CUDA build of torch (https://pytorch.org/get-started)",
}


def hide_accelerators():
    """Keeps the process on the CPU: call before the backend starts.

    Sets `CUDA_VISIBLE_DEVICES=""` and `JAX_PLATFORMS=cpu` (what the engines
    read when they start), and hides GPUs from an already-imported
    TensorFlow when it has not touched them yet.

    Example:

    >>> hide_accelerators()  # then import keras / build models: CPU only
    """
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    os.environ["JAX_PLATFORMS"] = "cpu"
    keep_tensorflow_off_gpus()


def keep_tensorflow_off_gpus():
    """Hides GPUs from TensorFlow when it only feeds data (JAX or torch backend).

    tf.data and the eager TensorFlow ops of the input pipelines would
    otherwise initialise every GPU and reserve memory on it, memory the
    training engine then lacks. A no-op on the TensorFlow backend, and when
    TensorFlow already initialised its GPUs (then it says so once).

    Returns:
        bool, whether TensorFlow now sees no GPU.

    Example:

    >>> keep_tensorflow_off_gpus()  # KERAS_BACKEND=jax: tf.data stays on the CPU
    True
    """
    if keras.backend.backend() == "tensorflow":
        return False
    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:  # TensorFlow's runtime started with its GPUs
        if tf.config.get_visible_devices("GPU"):
            warnings.warn(
                "TensorFlow initialised its GPUs before they could be hidden: tf.data "
                "holds GPU memory the training engine cannot use. Import keras_spvit's "
                "pipelines before running any TensorFlow op.",
                stacklevel=2,
            )
            return False
    return not tf.config.get_visible_devices("GPU")


def describe_devices():
    """One line naming the devices the backend trains on.

    Example:

    >>> describe_devices()
    'jax 0.10.2: 2 x cpu'
    """
    backend = keras.backend.backend()
    names = []
    if backend == "jax":
        import jax

        names = [f"{d.platform}" + (f" ({d.device_kind})" if d.platform != "cpu" else "")
                 for d in jax.devices()]
        version = jax.__version__
    elif backend == "tensorflow":
        kinds = ("TPU", "GPU") if accelerator() else ("CPU",)
        for kind in kinds:
            names += [kind.lower() for _ in tf.config.list_logical_devices(kind)]
        version = tf.__version__
    else:
        import torch

        if torch.cuda.is_available():
            names = [f"gpu ({torch.cuda.get_device_name(i)})"
                     for i in range(torch.cuda.device_count())]
        else:
            names = ["cpu"]
        version = torch.__version__
    counts = {}
    for name in names:
        counts[name] = counts.get(name, 0) + 1
    listed = ", ".join(f"{n} x {name}" if n > 1 else name for name, n in counts.items())
    cores = f" ({os.cpu_count()} cores)" if listed in ("cpu", "") else ""
    return f"{backend} {version}: {listed or 'cpu'}{cores}"


def check_device(device):
    """Raises when the backend lacks the accelerator asked for.

    Args:
        device: one of `DEVICES`. `"auto"` and `"cpu"` always pass (call
            `hide_accelerators` before the backend starts for `"cpu"`).

    Example:

    >>> check_device("gpu")  # on a CPU-only JAX
    Traceback (most recent call last):
    ValueError: --device gpu: jax sees no GPU (only cpu). ...
    """
    if device not in DEVICES:
        raise ValueError(f"Expected `device` in {list(DEVICES)}. Received: device={device!r}")
    if device in ("auto", "cpu"):
        return
    found = accelerator()
    if found != device:
        backend = keras.backend.backend()
        raise ValueError(
            f"{backend} sees no {device.upper()} (only "
            f"{found or 'cpu'}). Install the backend's accelerator build ("
            f"{_ACCELERATOR_HINTS[backend]}) or pass --device auto to train on what is there."
        )


def _divisors(n):
    return [d for d in range(1, n + 1) if n % d == 0]


def check_steps_per_execution(steps_per_execution, steps_per_epoch, save_freq="epoch"):
    """Raises unless `steps_per_execution` fits the run.

    Keras runs `steps_per_execution` steps per compiled call and sees the
    batches only between calls, so it must divide the steps per epoch (an
    epoch would otherwise take batches of the next one) and the backup
    interval `save_freq` (backups are taken between calls). torch runs one
    step per call.

    Args:
        steps_per_execution: positive int.
        steps_per_epoch: positive int.
        save_freq: `"epoch"` or an int.

    Example:

    >>> check_steps_per_execution(4, 100, save_freq=20)
    """
    value = steps_per_execution
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"Expected `steps_per_execution` to be a positive int. Received: {value!r}")
    if value == 1:
        return
    if keras.backend.backend() == "torch":
        raise ValueError(
            f"steps_per_execution={value}: the torch backend runs one step per call. Expected 1."
        )
    for what, count in (("steps per epoch", steps_per_epoch), ("--save-every", save_freq)):
        if isinstance(count, int) and count % value:
            fits = [d for d in _divisors(count) if d <= max(value, 32)]
            raise ValueError(
                f"steps_per_execution={value} does not divide the {what} ({count}). "
                f"Expected one of {fits}."
            )


def resolve_steps_per_execution(value, steps_per_epoch, save_freq="epoch", limit=32):
    """`steps_per_execution` for `fit`: `"auto"`, or an int (or digits) checked.

    `"auto"` is 1 on CPUs (nothing to gain: the host is the device) and on
    torch; on accelerators the largest divisor of the steps per epoch (and
    of `save_freq`) up to `limit`, which amortises the host's per-call cost.

    Args:
        value: `"auto"`, an int or a string of digits.
        steps_per_epoch: positive int.
        save_freq: `"epoch"` or an int.
        limit: int. Largest value `"auto"` picks.

    Returns:
        int.

    Example:

    >>> resolve_steps_per_execution("auto", 1251)  # on a GPU: 1251 = 3 x 417
    3
    """
    if value == "auto":
        if accelerator() is None or keras.backend.backend() == "torch":
            return 1
        fits = [d for d in _divisors(steps_per_epoch) if d <= limit
                and (not isinstance(save_freq, int) or save_freq % d == 0)]
        return max(fits)
    if isinstance(value, str):
        if not value.isdigit():
            raise ValueError(f"Expected 'auto' or a positive int. Received: {value!r}")
        value = int(value)
    check_steps_per_execution(value, steps_per_epoch, save_freq)
    return value
