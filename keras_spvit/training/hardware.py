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
  off for bfloat16 on a TensorFlow CPU (oneDNN's bf16 kernels are faster
  than XLA's); off across several *virtual* CPU devices, which TensorFlow
  cannot compile for; off on torch (`torch.compile` recompiles for minutes
  on these models).

Nothing here changes a model's numbers; it only picks engines.
"""

import keras

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
# XLA and ~1.3x float32 XLA; JAX gains nothing from bf16 on CPU.
CPU_BFLOAT16 = False


def accelerator():
    """`"gpu"`, `"tpu"` or `None` (CPU only) for the current Keras backend.

    Example:

    >>> accelerator()  # on a laptop
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

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
            import tensorflow as tf

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
            TensorFlow CPU turns XLA off, see `CPU_BFLOAT16`).

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
    if backend == "tensorflow" and "bfloat16" in str(dtype_policy):
        return False  # oneDNN's bf16 kernels, not XLA's (see CPU_BFLOAT16)
    # On CPUs: XLA compiles one device; TensorFlow cannot place an XLA
    # cluster across several virtual CPU devices of a MirroredStrategy.
    return not (backend == "tensorflow" and replicas > 1)
