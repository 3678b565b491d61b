"""Inference and training throughput (images/s) of keras_spvit models.

Usage (the backend is taken from KERAS_BACKEND, as everywhere in Keras):

    KERAS_BACKEND=jax python benchmarks/throughput.py \\
        --model SPViT_S LVViT_S --batch-size 16 --image-size 224 \\
        [--dtype float32|mixed_bfloat16] [--mode infer train] [--jit on off] \\
        [--warmup 2] [--repeats 5] [--steps 1] [--num-classes 1000] \\
        [--threads N] [--json out.json]

What is timed, per (model, mode, jit):
    infer  `model.predict_on_batch(x)`, output converted to numpy.
    train  `model.train_on_batch(x, y)`: AdamW(1e-4), sparse cross-entropy on
           the logits, no metrics.
Each repeat times `--steps` calls after `--warmup` untimed calls (the first
of which traces/compiles; its duration is the "1st call s" column).

`--jit on` compiles with `jit_compile=True` (XLA on TensorFlow and JAX,
torch.compile on torch); `--jit off` is a `tf.function` graph on TensorFlow,
op-by-op (eager) execution on JAX and eager torch. The default is
`--jit on off`, except on torch where it is `off` only: torch.compile on CPU
is slow to compile (minutes) and often unsupported; pass `--jit on` to try
it, with `--warmup 3` or more as it keeps recompiling for a few calls. A
configuration that raises prints "failed: <reason>" instead of stopping the
run.

How to read the numbers: models are run interleaved (every repeat times each
model in turn, with the same inputs), so slow drifts of a shared, noisy
machine hit all models alike and the `ratio` column (median images/s of the
model / median images/s of the first model, same mode and jit) is more
trustworthy than the absolute numbers. `min`/`max` show the spread over
repeats; if they are far apart, raise `--repeats` or `--steps`.

`--threads N` sets OMP/MKL/TF thread variables and pins the process to N
CPUs (the only knob XLA-on-CPU respects) before Keras is imported; without
it the environment is left alone.

`main(argv)` returns the results as a list of dicts (see `_row`) for tests.
"""

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="See the module docstring for details.",
    )
    p.add_argument("--model", nargs="+", default=["SPViT_S", "LVViT_S"],
                   help="builder names of keras_spvit, e.g. SPViT_S LVViT_S")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--dtype", default="float32",
                   help="dtype policy, e.g. float32 or mixed_bfloat16")
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--mode", nargs="+", choices=["infer", "train"],
                   default=["infer", "train"])
    p.add_argument("--jit", nargs="+", choices=["on", "off"], default=None,
                   help="default: on off (torch: off)")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls, >= 1")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--steps", type=int, default=1, help="timed calls per repeat")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args(argv)
    args.model = list(dict.fromkeys(args.model))  # results are keyed by name
    if min(args.warmup, args.repeats, args.steps, args.batch_size) < 1:
        p.error("--warmup, --repeats, --steps and --batch-size must be >= 1")
    return args


def limit_threads(n):
    """Must run before Keras (and its backend) is imported to take effect."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                "TF_NUM_INTRAOP_THREADS"):
        os.environ[var] = str(n)
    os.environ["TF_NUM_INTEROP_THREADS"] = "1"
    # XLA's CPU thread pool has no env var but sizes itself from the affinity.
    if hasattr(os, "sched_setaffinity"):
        cpus = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, cpus[:n])


def keras_hub_vit_s(num_classes, image_shape, dtype):
    """The external baseline: keras-hub's plain ViT at DeiT-S shape."""
    import keras_hub

    backbone = keras_hub.models.ViTBackbone(
        image_shape=image_shape, patch_size=16, num_layers=12, num_heads=6,
        hidden_dim=384, mlp_dim=1536, dtype=dtype,
    )
    return keras_hub.models.ViTImageClassifier(backbone, num_classes=num_classes)


# Baselines from other packages, benchmarked beside ours under these names.
BASELINES = {"KerasHubViT_S": keras_hub_vit_s}


def matmul_peak(keras, size=2048, repeats=10):
    """Median fp32 GFLOP/s of a jitted square matmul: the machine's ceiling."""
    from keras import ops

    a = ops.ones((size, size), "float32")
    b = ops.ones((size, size), "float32")
    if keras.backend.backend() == "jax":
        import jax

        matmul = jax.jit(ops.matmul)
    elif keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        matmul = tf.function(ops.matmul)
    else:
        matmul = ops.matmul
    ops.convert_to_numpy(matmul(a, b))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        ops.convert_to_numpy(matmul(a, b))
        times.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(times) / 1e9


def _short(exc):
    msg = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {msg[0][:100] if msg else ''}"


def _row(name, mode, jit, params, first_call=None, times=None, steps=1,
         batch_size=1, error=None):
    ips = [steps * batch_size / t for t in times] if times else []
    return {
        "model": name, "mode": mode, "jit": jit, "params": params,
        "images_per_s": statistics.median(ips) if ips else None,
        "min": min(ips) if ips else None, "max": max(ips) if ips else None,
        "ratio": None, "first_call_s": first_call, "times_s": times or [],
        "error": error,
    }


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        limit_threads(args.threads)

    import keras  # after limit_threads, on purpose

    import keras_spvit

    backend = keras.backend.backend()
    if backend == "torch" and args.threads:
        import torch

        torch.set_num_threads(args.threads)
    jits = args.jit or (["off"] if backend == "torch" else ["on", "off"])

    builders = {}
    for name in args.model:
        builder = BASELINES.get(name) or getattr(keras_spvit, name, None)
        if builder is None or isinstance(builder, type) or not callable(builder):
            known = [n for n in dir(keras_spvit) if "_" in n and n[0].isupper()]
            raise SystemExit(
                f"Unknown model {name!r}; expected one of {known + sorted(BASELINES)}."
            )
        builders[name] = builder

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threads = args.threads or os.environ.get("OMP_NUM_THREADS") or "default"
    print(f"backend={backend} keras={keras.__version__} threads={threads} "
          f"(cpus={cpus}) dtype={args.dtype} batch={args.batch_size} "
          f"image={args.image_size}px classes={args.num_classes} "
          f"warmup={args.warmup} repeats={args.repeats} steps={args.steps}")
    peak = matmul_peak(keras)
    print(f"fp32 matmul peak (2048^2, jitted): {peak:.0f} GFLOP/s")

    # Same inputs for every model and configuration.
    rng = np.random.default_rng(0)
    shape = (args.image_size, args.image_size, 3)
    x = rng.standard_normal((args.batch_size, *shape), dtype=np.float32)
    y = rng.integers(0, args.num_classes, size=(args.batch_size,)).astype("int32")

    models, params = {}, {}
    for name, builder in builders.items():
        models[name] = builder(num_classes=args.num_classes, image_shape=shape,
                               dtype=args.dtype)
        params[name] = models[name].count_params()
        print(f"  {name}: {params[name] / 1e6:.2f}M parameters")

    def step(model, mode):
        if mode == "infer":
            out = model.predict_on_batch(x)
        else:
            out = model.train_on_batch(x, y)
        # Materialise, so asynchronous dispatch (JAX) is timed in full.
        keras.tree.map_structure(np.asarray, out)

    results = []
    for jit in jits:
        failed = {}  # model name -> reason; compile errors fail both modes
        for name, model in models.items():
            try:
                # A fresh compile resets the compiled functions, so each jit
                # setting traces anew. Metrics off: time the step only.
                model.compile(
                    optimizer=keras.optimizers.AdamW(1e-4),
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                    metrics=None,
                    jit_compile=jit == "on",
                )
            except Exception as e:  # noqa: BLE001 - report and go on
                failed[name] = _short(e)
        for mode in args.mode:
            rows, first, times = {}, {}, {}
            for name, model in models.items():
                if name in failed:
                    rows[name] = _row(name, mode, jit, params[name], error=failed[name])
                    continue
                try:
                    start = time.perf_counter()
                    step(model, mode)  # traces / compiles
                    first[name] = time.perf_counter() - start
                    for _ in range(args.warmup - 1):
                        step(model, mode)
                    times[name] = []
                except Exception as e:  # noqa: BLE001
                    rows[name] = _row(name, mode, jit, params[name], error=_short(e))
            # Interleaved: every repeat times each (still healthy) model in turn.
            for _ in range(args.repeats):
                for name in list(times):
                    try:
                        start = time.perf_counter()
                        for _ in range(args.steps):
                            step(models[name], mode)
                        times[name].append(time.perf_counter() - start)
                    except Exception as e:  # noqa: BLE001
                        rows[name] = _row(name, mode, jit, params[name], error=_short(e))
                        del times[name]
            for name in models:
                if name in times:
                    rows[name] = _row(name, mode, jit, params[name], first[name],
                                      times[name], args.steps, args.batch_size)
            base = rows[args.model[0]]["images_per_s"]
            if len(models) > 1 and base:
                for row in rows.values():
                    if row["images_per_s"]:
                        row["ratio"] = row["images_per_s"] / base
            results += [rows[name] for name in models]

    print_table(results, multi=len(models) > 1)
    if args.json:
        meta = {"backend": backend, "keras": keras.__version__, "threads": threads,
                "matmul_peak_gflops": peak,
                "cpus": cpus, **{k: v for k, v in vars(args).items() if k != "json"},
                "jit": jits}
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "results": results}, f, indent=2)
    return results


def print_table(results, multi):
    cols = ["model", "mode", "jit", "img/s median", "min", "max"]
    cols += ["ratio"] * multi + ["1st call s"]
    lines = []
    for r in results:
        if r["error"]:
            cells = [r["model"], r["mode"], r["jit"], f"failed: {r['error']}"]
        else:
            cells = [r["model"], r["mode"], r["jit"], f"{r['images_per_s']:.2f}",
                     f"{r['min']:.2f}", f"{r['max']:.2f}"]
            cells += [f"{r['ratio']:.3f}" if r["ratio"] else "-"] * multi
            cells += [f"{r['first_call_s']:.1f}"]
        lines.append(cells)
    # Failure messages span the numeric columns, so they don't set widths.
    widths = [max([len(c)] + [len(l[i]) for l in lines
                               if i < len(l) and not l[i].startswith("failed")])
              for i, c in enumerate(cols)]
    fmt = lambda cells: "  ".join(  # noqa: E731
        c.ljust(w) if i < 3 or c.startswith("failed") else c.rjust(w)
        for i, (c, w) in enumerate(zip(cells, widths)))
    print(fmt(cols))
    print("  ".join("-" * w for w in widths))
    for cells in lines:
        print(fmt(cells))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
