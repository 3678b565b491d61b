"""Inference and training throughput (images/s) of keras_spvit models.

Usage (the backend is taken from KERAS_BACKEND, as everywhere in Keras):

    KERAS_BACKEND=jax python benchmarks/throughput.py \\
        --model SPViT_S LVViT_S --batch-size 16 --image-size 224 \\
        [--dtype float32 [mixed_bfloat16]] [--mode infer train] [--jit on off] \\
        [--warmup 2] [--repeats 5] [--steps 1] [--num-classes 1000] \\
        [--threads N] [--peak-size 2048] [--json out.json]

What is timed, per (model, dtype, mode, jit):
    infer  `model.predict_on_batch(x)`, output converted to numpy.
    train  `model.train_on_batch(x, y)`: AdamW(1e-4), sparse cross-entropy on
           the logits, no metrics.
Each repeat times `--steps` calls after `--warmup` untimed calls (the first
of which traces/compiles; its duration is the "1st call s" column).
Several `--dtype` policies (e.g. `--dtype float32 mixed_bfloat16`) are
measured in the same run, each with its own copy of every model.

Share of the matmul peak ("GFLOP/s" and "% peak" columns): the work of one
image is `2 * count_macs(model)` FLOPs for inference and 3x that for a
training step (the forward pass, then two matmuls per forward matmul in the
backward pass: gradients of inputs and of weights; normalisation, softmax,
activations and the optimizer update are not counted, as in `count_macs`).
GFLOP/s = FLOPs per image x median images/s. The peak ("peak" column) is
the median GFLOP/s of a square `--peak-size` matmul timed 3 times in every
repeat of the row's mode and jit, between the models (`PeakMeter`): on a
shared machine a peak taken once at the start (printed first, for
reference) can be 2x off the minutes the models ran in. It is measured on
the same backend, in the row's compute dtype (bfloat16 for
`mixed_bfloat16` rows, whose "% fp32 peak" column also gives the share of
the float32 peak). On TensorFlow it is the better of XLA and the graph's
oneDNN kernels, whatever the row's jit: on a CPU with AMX/AVX512-BF16,
oneDNN multiplies bfloat16 about 5x faster than float32 while XLA gains
nothing, and one ceiling per dtype keeps jit on/off rows comparable.
On TensorFlow the "% own engine's peak" column divides by the peak of the
engine the row ran on (XLA for `--jit on`, oneDNN for `--jit off`), sampled in
the same repeats: even in float32 XLA's own square matmul runs at ~0.7x
oneDNN's on an AVX512 CPU, so an XLA-trained model cannot reach more than
that share of "peak"; `benchmarks/matmul_ceiling.py` gives the share of its
own engine's peak that a block's matmuls reach alone.
Baselines from other packages give their MACs by formula (see `BASELINES`).

`--jit on` compiles with `jit_compile=True` (XLA on TensorFlow and JAX,
torch.compile on torch); `--jit off` is a `tf.function` graph on TensorFlow,
op-by-op (eager) execution on JAX and eager torch. The default is
`--jit on off`, except on torch where it is `off` only: torch.compile on CPU
is slow to compile (minutes) and often unsupported; pass `--jit on` to try
it, with `--warmup 3` or more as it keeps recompiling for a few calls. A
configuration that raises prints "failed: <reason>" instead of stopping the
run.

How to read the numbers: models (and their copies in every dtype) are run
interleaved (every repeat times each in turn, with the same inputs), so slow
drifts of a shared, noisy machine hit all alike and the `ratio` column
(median images/s of the row / median images/s of the first model in the
first dtype, same mode and jit) is more
trustworthy than the absolute numbers. `min`/`max` show the spread over
repeats; if they are far apart, raise `--repeats` or `--steps`.

bfloat16 on a CPU: compare `--dtype float32 mixed_bfloat16 --jit on off`
in one run. On an AVX512-BF16/AMX CPU, TensorFlow's graph mode (`--jit
off`) runs bfloat16 matmuls on oneDNN's AMX kernels (2048^2: about 4.6x
its float32), while XLA on CPU (TensorFlow `--jit on`, and JAX with any
`xla_cpu_*` flag tried) runs them no faster than float32; torch's CPU
bfloat16 matmul is about 3.5x its float32. So the bfloat16 route is jit off
on TensorFlow and eager torch; on JAX keep float32.

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
    p.add_argument("--dtype", nargs="+", default=["float32"],
                   help="dtype policies, e.g. float32 mixed_bfloat16")
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--mode", nargs="+", choices=["infer", "train"],
                   default=["infer", "train"])
    p.add_argument("--jit", nargs="+", choices=["on", "off"], default=None,
                   help="default: on off (torch: off)")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls, >= 1")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--steps", type=int, default=1, help="timed calls per repeat")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--peak-size", type=int, default=2048,
                   help="side of the square matmul that measures the peak")
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args(argv)
    args.model = list(dict.fromkeys(args.model))  # results are keyed by name
    args.dtype = list(dict.fromkeys(args.dtype))
    if min(args.warmup, args.repeats, args.steps, args.batch_size, args.peak_size) < 1:
        p.error("--warmup, --repeats, --steps, --batch-size and --peak-size must be >= 1")
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


VIT_S = dict(patch_size=16, num_layers=12, num_heads=6, hidden_dim=384, mlp_dim=1536)


def keras_hub_vit_s(num_classes, image_shape, dtype):
    """The external baseline: keras-hub's plain ViT at DeiT-S shape."""
    import keras_hub

    backbone = keras_hub.models.ViTBackbone(image_shape=image_shape, dtype=dtype, **VIT_S)
    return keras_hub.models.ViTImageClassifier(backbone, num_classes=num_classes)


def vit_macs(num_classes, image_shape, patch_size, num_layers, hidden_dim, mlp_dim, **_):
    """MACs per image of a plain ViT with a class token, by `count_macs`' rules."""
    patches = (image_shape[0] // patch_size) * (image_shape[1] // patch_size)
    tokens = patches + 1
    block = tokens * hidden_dim * (4 * hidden_dim + 2 * mlp_dim) + 2 * tokens**2 * hidden_dim
    stem = patches * patch_size**2 * image_shape[2] * hidden_dim
    return stem + num_layers * block + hidden_dim * num_classes


# Baselines from other packages, benchmarked beside ours under these names:
# name -> (builder, MACs per image as a function of (num_classes, image_shape)).
BASELINES = {
    "KerasHubViT_S": (keras_hub_vit_s, lambda n, shape: vit_macs(n, shape, **VIT_S)),
}


def is_bfloat16(dtype_policy):
    """Whether a dtype policy name computes in bfloat16 (`mixed_bfloat16`, `bfloat16`)."""
    return "bfloat16" in str(dtype_policy)


def matmul_timer(keras, size=2048, dtype="float32", jit=True):
    """A function that times one compiled square matmul and returns its GFLOP/s.

    `jit` picks XLA on TensorFlow (else a `tf.function` graph, which runs
    oneDNN kernels), as `--jit` does for the models; JAX always jits and torch
    runs eagerly (a single matmul is one library call either way). Compiled
    (and run once) here, so every call of the result times the matmul alone.
    """
    from keras import ops

    a = ops.ones((size, size), dtype)
    b = ops.ones((size, size), dtype)
    if keras.backend.backend() == "jax":
        import jax

        matmul = jax.jit(ops.matmul)
    elif keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        matmul = tf.function(ops.matmul, jit_compile=bool(jit))
    else:
        matmul = ops.matmul
    ops.convert_to_numpy(matmul(a, b))

    def run():
        start = time.perf_counter()
        ops.convert_to_numpy(matmul(a, b))
        return 2 * size**3 / (time.perf_counter() - start) / 1e9

    return run


def matmul_peak(keras, size=2048, repeats=10, dtype="float32", jit=True):
    """Median GFLOP/s of a compiled square matmul: the machine's ceiling.

    See `matmul_timer` for the engines.
    """
    run = matmul_timer(keras, size, dtype, jit)
    return statistics.median(run() for _ in range(repeats))


class PeakMeter:
    """The matmul peak of each compute dtype, sampled between the models' repeats.

    On a shared machine the load changes during a run: a peak measured once
    at the start, in a quiet second, makes every later row look far from it.
    `sample()` (called once per repeat, beside the models) times each
    engine's matmul `runs` times; `peaks()` gives, per compute dtype, the
    best engine's median over the samples taken since the last `reset()`,
    so each row is divided by the ceiling of the same minutes.

    Args:
        timers: `{(dtype, engine): matmul_timer(...)}`.
        runs: int. Matmuls per engine per sample.
    """

    def __init__(self, timers, runs=3):
        self.timers = timers
        self.runs = runs
        self.reset()

    def reset(self):
        self.samples = {key: [] for key in self.timers}

    def sample(self):
        for key, run in self.timers.items():
            self.samples[key] += [run() for _ in range(self.runs)]

    def peaks(self):
        best = {}
        for (dtype, _), values in self.samples.items():
            if values:
                best[dtype] = max(best.get(dtype, 0.0), statistics.median(values))
        return best

    def engine_peaks(self):
        """`{(dtype, engine): median}`: each engine's own peak over the same samples."""
        return {key: statistics.median(values) for key, values in self.samples.items() if values}


def _short(exc):
    msg = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {msg[0][:100] if msg else ''}"


# FLOPs of one image per mode, in forward FLOPs (2 x MACs): a training step
# is the forward pass plus two backward matmuls per forward matmul.
FORWARD_PASSES = {"infer": 1, "train": 3}


def _row(name, mode, jit, params, first_call=None, times=None, steps=1,
         batch_size=1, error=None, dtype="float32", macs=None, peaks=None,
         engine_peak=None):
    """One result; `peaks` maps "float32"/"bfloat16" to the peak GFLOP/s (the
    best engine's), `engine_peak` is the peak of the engine the row ran on."""
    ips = [steps * batch_size / t for t in times] if times else []
    images_per_s = statistics.median(ips) if ips else None
    flops = 2 * FORWARD_PASSES[mode] * macs if macs else None
    gflops = flops * images_per_s / 1e9 if flops and images_per_s else None
    peaks = peaks or {}
    peak = peaks.get("bfloat16" if is_bfloat16(dtype) else "float32")
    share = lambda p: 100 * gflops / p if gflops and p else None  # noqa: E731
    return {
        "model": name, "dtype": dtype, "mode": mode, "jit": jit, "params": params,
        "images_per_s": images_per_s,
        "min": min(ips) if ips else None, "max": max(ips) if ips else None,
        "ratio": None, "first_call_s": first_call, "times_s": times or [],
        "flops_per_image": flops, "gflops": gflops, "peak_gflops": peak,
        "pct_peak": share(peak), "pct_fp32_peak": share(peaks.get("float32")),
        "engine_peak_gflops": engine_peak, "pct_engine_peak": share(engine_peak),
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

    builders, baseline_macs = {}, {}
    for name in args.model:
        builder = getattr(keras_spvit, name, None)
        if name in BASELINES:
            builder, baseline_macs[name] = BASELINES[name]
        if builder is None or isinstance(builder, type) or not callable(builder):
            known = [n for n in dir(keras_spvit) if "_" in n and n[0].isupper()]
            raise SystemExit(
                f"Unknown model {name!r}; expected one of {known + sorted(BASELINES)}."
            )
        builders[name] = builder

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threads = args.threads or os.environ.get("OMP_NUM_THREADS") or "default"
    print(f"backend={backend} keras={keras.__version__} threads={threads} "
          f"(cpus={cpus}) dtype={' '.join(args.dtype)} batch={args.batch_size} "
          f"image={args.image_size}px classes={args.num_classes} "
          f"warmup={args.warmup} repeats={args.repeats} steps={args.steps}")
    # The peak of each compute dtype: the best of the backend's engines (on
    # TensorFlow XLA and the oneDNN graph kernels, which differ a lot in
    # bfloat16), so every row of a dtype shares one ceiling whatever its jit.
    compute_dtypes = ["float32"] + ["bfloat16"] * any(map(is_bfloat16, args.dtype))
    engines = backend_engines(keras)
    peaks, engine_peaks, timers = {}, {}, {}
    for dtype in compute_dtypes:
        for engine, jit in engines.items():
            timers[dtype, engine] = matmul_timer(keras, args.peak_size, dtype, jit)
            engine_peaks[f"{dtype} {engine}".strip()] = statistics.median(
                timers[dtype, engine]() for _ in range(10))
        peaks[dtype] = max(v for k, v in engine_peaks.items() if k.startswith(dtype))
        print(f"{dtype} matmul peak ({args.peak_size}^2): {peaks[dtype]:.0f} GFLOP/s"
              + (" (" + ", ".join(f"{e} {engine_peaks[f'{dtype} {e}']:.0f}" for e in engines)
                 + ")" if len(engines) > 1 else ""))

    # Same inputs for every model and configuration.
    rng = np.random.default_rng(0)
    shape = (args.image_size, args.image_size, 3)
    x = rng.standard_normal((args.batch_size, *shape), dtype=np.float32)
    y = rng.integers(0, args.num_classes, size=(args.batch_size,)).astype("int32")

    # One copy of every model per dtype policy, keyed (dtype, name).
    models, params, macs = {}, {}, {}
    for dtype in args.dtype:
        for name, builder in builders.items():
            model = builder(num_classes=args.num_classes, image_shape=shape, dtype=dtype)
            models[dtype, name] = model
            params[name] = model.count_params()
            macs[name] = (baseline_macs[name](args.num_classes, shape)
                          if name in baseline_macs else keras_spvit.count_macs(model))
    for name in builders:
        print(f"  {name}: {params[name] / 1e6:.2f}M parameters, "
              f"{macs[name] / 1e9:.2f} GMACs per image")

    def step(model, mode):
        if mode == "infer":
            out = model.predict_on_batch(x)
        else:
            out = model.train_on_batch(x, y)
        # Materialise, so asynchronous dispatch (JAX) is timed in full.
        keras.tree.map_structure(np.asarray, out)

    meter = PeakMeter(timers)
    results = []
    for jit in jits:
        results += run_group(keras, models, args, step, jit, params, macs, meter)

    print_table(results, multi=len(models) > 1)
    if args.json:
        meta = {"backend": backend, "keras": keras.__version__, "threads": threads,
                "matmul_peak_gflops": peaks, "matmul_peak_gflops_by_engine": engine_peaks,
                "cpus": cpus, **{k: v for k, v in vars(args).items() if k != "json"},
                "jit": jits}
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "results": results}, f, indent=2)
    return results


def run_group(keras, models, args, step, jit, params, macs, meter):
    """Times every mode of `models` ({(dtype, name): model}) under one jit setting.

    Models of every dtype are interleaved, so dtypes compare like models do;
    `meter` (a `PeakMeter`) samples the matmul peak once per repeat between
    them, and each mode's rows are shares of the peak of its own repeats.
    """
    results = []
    failed = {}  # (dtype, name) -> reason; compile errors fail both modes
    for key, model in models.items():
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
            failed[key] = _short(e)
    for mode in args.mode:
        rows, first, times = {}, {}, {}

        def failure(key, error):
            dtype, name = key
            return _row(name, mode, jit, params[name], dtype=dtype, error=error)

        for key, model in models.items():
            if key in failed:
                rows[key] = failure(key, failed[key])
                continue
            try:
                start = time.perf_counter()
                step(model, mode)  # traces / compiles
                first[key] = time.perf_counter() - start
                for _ in range(args.warmup - 1):
                    step(model, mode)
                times[key] = []
            except Exception as e:  # noqa: BLE001
                rows[key] = failure(key, _short(e))
        # Interleaved: every repeat times each (still healthy) model in turn,
        # and the matmul peak once.
        meter.reset()
        for _ in range(args.repeats):
            meter.sample()
            for key in list(times):
                try:
                    start = time.perf_counter()
                    for _ in range(args.steps):
                        step(models[key], mode)
                    times[key].append(time.perf_counter() - start)
                except Exception as e:  # noqa: BLE001
                    rows[key] = failure(key, _short(e))
                    del times[key]
        peaks, engine_peaks = meter.peaks(), meter.engine_peaks()
        for key in times:
            dtype, name = key
            compute = "bfloat16" if is_bfloat16(dtype) else "float32"
            rows[key] = _row(name, mode, jit, params[name], first[key], times[key],
                             args.steps, args.batch_size, dtype=dtype, macs=macs[name],
                             peaks=peaks,
                             engine_peak=engine_peaks.get((compute, engine_of(keras, jit))))
        base = rows[next(iter(models))]["images_per_s"]
        if len(models) > 1 and base:
            for row in rows.values():
                if row["images_per_s"]:
                    row["ratio"] = row["images_per_s"] / base
        results += [rows[key] for key in models]
    return results


def backend_engines(keras):
    """`{engine: jit}`: the matmul engines of the backend whose peaks are sampled.
    TensorFlow has two, XLA ("xla", jit) and the graph's oneDNN kernels ("graph");
    the other backends one ("")."""
    if keras.backend.backend() == "tensorflow":
        return {"xla": True, "graph": False}
    return {"": True}


def engine_of(keras, jit):
    """The `PeakMeter` engine a row with `jit` ("on"/"off") runs its matmuls on."""
    engines = backend_engines(keras)
    if len(engines) == 1:
        return next(iter(engines))
    return next(engine for engine, on in engines.items() if on == (jit == "on"))


def print_table(results, multi):
    bf16 = any(is_bfloat16(r["dtype"]) for r in results)
    engines = any(r.get("engine_peak_gflops") not in (None, r.get("peak_gflops"))
                  for r in results)
    cols = ["model", "dtype", "mode", "jit", "img/s median", "min", "max"]
    cols += ["ratio"] * multi + ["GFLOP/s", "peak", "% peak"] + ["% fp32 peak"] * bf16
    cols += ["% own engine's peak"] * engines
    cols += ["1st call s"]
    text = 4  # leading text columns, left-aligned
    num = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
    lines = []
    for r in results:
        cells = [r["model"], r["dtype"], r["mode"], r["jit"]]
        if r["error"]:
            cells += [f"failed: {r['error']}"]
        else:
            cells += [f"{r['images_per_s']:.2f}", f"{r['min']:.2f}", f"{r['max']:.2f}"]
            cells += [num(r["ratio"], ".3f")] * multi
            cells += [num(r["gflops"], ".1f"), num(r["peak_gflops"], ".0f"),
                      num(r["pct_peak"], ".1f")]
            cells += [num(r["pct_fp32_peak"], ".1f")] * bf16
            cells += [num(r["pct_engine_peak"], ".1f")] * engines
            cells += [f"{r['first_call_s']:.1f}"]
        lines.append(cells)
    # Failure messages span the numeric columns, so they don't set widths.
    widths = [max([len(c)] + [len(l[i]) for l in lines
                               if i < len(l) and not l[i].startswith("failed")])
              for i, c in enumerate(cols)]
    fmt = lambda cells: "  ".join(  # noqa: E731
        c.ljust(w) if i < text or c.startswith("failed") else c.rjust(w)
        for i, (c, w) in enumerate(zip(cells, widths)))
    print(fmt(cols))
    print("  ".join("-" * w for w in widths))
    for cells in lines:
        print(fmt(cells))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
