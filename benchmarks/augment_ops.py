"""CPU milliseconds per image of each training augmentation operation, one thread.

Usage (the operations are TensorFlow ops, so the Keras backend does not matter):

    KERAS_BACKEND=tensorflow python benchmarks/augment_ops.py \\
        [--image-size 224] [--source-size 500x375] [--magnitude 9] \\
        [--policy rand-m9-mstd0.5] [--calls 20] [--repeats 7] \\
        [--only Rotate,erasing] [--json out.json]

What is timed: every RandAugment operation of `RAND_TRANSFORMS` in the fast
mode (`apply_op(..., exact=False)`, the kernels the training pipeline runs,
at timm's argument for `--magnitude`, positive sign, bilinear), random
erasing when it fires (`TrainAugment.erase` at probability 1: timm's
per-pixel mode on a normalised image, a new box each call) and when it does
not (`erasing idle`: probability 1e-9, the gate's draw), the whole
`--policy` (`RandAugment`: the draws and the ops drawn, a new seed each call,
the same seeds every repeat) and its draws with no operation applied
(`RandAugment idle`: the policy with `-p0`), the horizontal
flip (always flipping) and the random resized crop (bicubic, antialiased,
from a `--source-size` image, a new box each call). Each operation is one
`tf.function` on a `--image-size` image of uint8 values (smooth gradients
and noise), traced once; each call gets its own seed.

Method: TensorFlow runs on ONE thread (intra- and inter-op), so CPU time is
the operation's work, not a share of several cores (when the process already
started TensorFlow, e.g. a test, its threads stay: `meta["one_thread"]`).
Every repeat calls each operation `--calls` times, the operations interleaved
within the repeat (a slow drift of a shared machine hits them alike);
`cpu_ms` is the median over repeats of process CPU time per call, `wall_ms`
the same in wall time. `identity` (a function returning its input,
no work) is the cost of one call of a `tf.function` itself; `net_cpu_ms` is
`cpu_ms` minus it: what the operation adds inside a pipeline, where no Python
call is paid per image.

`--pipeline` measures the same operations where the training pipeline runs
them: each is the `map` of its own endless `tf.data` iterator (one private
thread, a new seed per element, batched by 8 and reduced to one value per
image), created and warmed up before timing, so the rows are the
steady-state CPU ms per image with no Python call per image and no iterator
start-up (a `Dataset.reduce` per repeat would pay the function instantiation
of every map each time: for RandAugment's switches that is several ms per
image at a few hundred images). `--calls` is then the images per repeat.
Both modes add `share`, how often an operation runs per image under
`--policy` and `--erasing`, and print the expected augmentation cost per
image: `RandAugment idle + sum(share * net) + erasing idle + erasing *
(erasing - erasing idle)`, the budget the pipeline's ratio is made of.

`main(argv)` returns the rows for tests.
"""

import argparse
import json
import os
import statistics
import time

import numpy as np


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--source-size", default="500x375",
                   help="width x height of the random resized crop's input")
    p.add_argument("--magnitude", type=float, default=9.0, help="RandAugment magnitude (of 10)")
    p.add_argument("--policy", default="rand-m9-mstd0.5",
                   help="RandAugment policy of the whole-policy rows")
    p.add_argument("--calls", type=int, default=20,
                   help="calls (with --pipeline: images) per operation per repeat")
    p.add_argument("--pipeline", action="store_true",
                   help="time each operation inside a running tf.data iterator (steady state)")
    p.add_argument("--erasing", type=float, default=0.25,
                   help="erasing probability of the expected-cost line")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--only", default=None, help="comma-separated operation names")
    p.add_argument("--json", default=None, help="also write the rows here")
    return p.parse_args(argv)


def test_image(height, width, seed=0):
    """A `(height, width, 3)` float32 image of uint8 values: gradients, blotches, noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    base = np.stack([200 * x + 30, 180 * y + 40, 120 * (x + y) + 20], axis=-1)
    blotch = 40 * np.sin(7 * x + 3 * y)[..., None]
    noise = rng.normal(0, 12, (height, width, 3))
    return np.clip(np.round(base + blotch + noise), 0, 255).astype(np.float32)


def operations(args, tf):
    """`{name: (fn, input)}`: each `fn(input, seed)` one `tf.function` of one image."""
    from keras_spvit.data.rand_augment import RandAugment, apply_op, level_to_arg
    from keras_spvit.data.rand_augment_policy import RAND_TRANSFORMS
    from keras_spvit.data.train_augment import TrainAugment
    from keras_spvit.data.transforms import random_resized_crop

    size = args.image_size
    image = tf.constant(test_image(size, size))
    source_w, source_h = (int(v) for v in args.source_size.split("x"))
    source = tf.constant(test_image(source_h, source_w, seed=1).astype(np.uint8))
    ops = {"identity": (lambda x, seed: tf.identity(x), image)}
    for name in RAND_TRANSFORMS:
        arg = float(level_to_arg(name, args.magnitude))
        ops[name] = (
            lambda x, seed, name=name, arg=arg: apply_op(
                name, x, arg, interpolation="bilinear", exact=False
            ),
            image,
        )
    erase = TrainAugment(random_erasing=1.0)
    normalised = (image - 128.0) / 64.0
    ops["erasing"] = (lambda x, seed: erase.erase(x, seed=seed), normalised)
    idle_erase = TrainAugment(random_erasing=1e-9)
    ops["erasing idle"] = (lambda x, seed: idle_erase.erase(x, seed=seed), normalised)
    for name, policy in (("RandAugment", args.policy), ("RandAugment idle", f"{args.policy}-p0")):
        augment = RandAugment(policy)
        ops[name] = (lambda x, seed, augment=augment: augment(x, seed), image / 255.0)
    ops["flip"] = (lambda x, seed: tf.reverse(x, axis=[1]), image / 255.0)
    ops["crop"] = (lambda x, seed: random_resized_crop(x, size, seed=seed), source)
    if args.only:
        names = args.only.split(",")
        unknown = sorted(set(names) - set(ops))
        if unknown:
            raise SystemExit(f"--only: unknown operations {unknown}; operations are {list(ops)}")
        ops = {k: v for k, v in ops.items() if k in names or k == "identity"}
    seed_spec = tf.TensorSpec((2,), tf.int32)
    return {
        name: (tf.function(fn, input_signature=[tf.TensorSpec(x.shape, x.dtype), seed_spec]), x)
        for name, (fn, x) in ops.items()
    }


def measure(ops, calls, repeats, tf):
    """Interleaved repeats: `{name: ([cpu_ms per call], [wall_ms per call])}`."""
    samples = {name: ([], []) for name in ops}
    seeds = [tf.constant([i, 7], tf.int32) for i in range(calls)]
    for fn, x in ops.values():  # trace and warm up
        fn(x, seeds[0]).numpy()
    for _ in range(repeats):
        for name, (fn, x) in ops.items():
            c0, t0 = time.process_time(), time.perf_counter()
            for seed in seeds:
                out = fn(x, seed)
            out.numpy()
            samples[name][0].append((time.process_time() - c0) / calls * 1e3)
            samples[name][1].append((time.perf_counter() - t0) / calls * 1e3)
    return samples


def measure_pipeline(ops, images, repeats, tf):
    """`measure` inside `tf.data`: one endless iterator per operation, interleaved repeats.

    Each element gets its own seed `(index, 7)`; batches of 8 are reduced to
    one value per image (a slice, the same for every row), so the rows
    differ only by the operation.
    """
    batch = 8

    def iterator(fn, x):
        def apply(index, x):
            return fn(x, tf.stack([tf.cast(index, tf.int32), 7]))

        dataset = tf.data.Dataset.from_tensors(x).repeat().enumerate().map(apply)
        dataset = dataset.batch(batch).map(lambda y: tf.reshape(y, (batch, -1))[:, 0])
        options = tf.data.Options()
        options.threading.private_threadpool_size = 1
        it = iter(dataset.with_options(options))
        for _ in range(3):  # start-up and warm-up, untimed
            next(it)
        return it

    iterators = {name: iterator(fn, x) for name, (fn, x) in ops.items()}
    steps = max(1, images // batch)
    samples = {name: ([], []) for name in ops}
    for _ in range(repeats):
        for name, it in iterators.items():
            c0, t0 = time.process_time(), time.perf_counter()
            for _ in range(steps):
                next(it)
            samples[name][0].append((time.process_time() - c0) / (steps * batch) * 1e3)
            samples[name][1].append((time.perf_counter() - t0) / (steps * batch) * 1e3)
    return samples


def shares(args):
    """`{name: runs per image}`: RandAugment's operations under `--policy`
    (`num_ops * prob / len(transforms)`), erasing at `--erasing`, 1 for the rest."""
    from keras_spvit.data.rand_augment import RandAugment

    augment = RandAugment(args.policy)
    per_op = augment.num_ops * augment.prob / len(augment.transforms)
    # The rows time `RAND_TRANSFORMS`' kernels; `inc1`'s increasing variants
    # (`PosterizeIncreasing`, ...) run the same kernels at other arguments.
    table = {name.replace("Increasing", ""): per_op for name in augment.transforms}
    table["erasing"] = args.erasing
    return table


def expected_ms(rows, args):
    """Expected augmentation CPU ms per image (RandAugment + erasing) from the rows."""
    net = {r["name"]: r["net_cpu_ms"] for r in rows}
    share = shares(args)
    if not {"RandAugment idle", "erasing", "erasing idle"} <= set(net):
        return None
    ops = sum(share[name] * net[name] for name in net if name in share and name != "erasing")
    erasing = net["erasing idle"] + args.erasing * (net["erasing"] - net["erasing idle"])
    return net["RandAugment idle"] + ops + erasing


def rows_of(samples):
    base = statistics.median(samples["identity"][0])
    rows = []
    for name, (cpu, wall) in samples.items():
        cpu_ms = statistics.median(cpu)
        rows.append({
            "name": name,
            "cpu_ms": cpu_ms,
            "net_cpu_ms": cpu_ms - base if name != "identity" else 0.0,
            "wall_ms": statistics.median(wall),
            "cpu_ms_repeats": cpu,
        })
    return rows


def one_thread(tf):
    """Runs TensorFlow on one thread; False when it is already set up (e.g. under pytest)."""
    try:
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # threads cannot change once TensorFlow has started
        return False
    return True


def main(argv=None):
    args = parse_args(argv)
    import tensorflow as tf

    single = one_thread(tf)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    threads = "one thread" if single else "threads as TensorFlow was already set up (not one)"
    print(f"image={args.image_size}px magnitude={args.magnitude} calls={args.calls} "
          f"repeats={args.repeats} {threads} tf={tf.__version__} load={load:.2f}", flush=True)
    timer = measure_pipeline if args.pipeline else measure
    rows = rows_of(timer(operations(args, tf), args.calls, args.repeats, tf))
    share = shares(args)
    for r in rows:
        r["share"] = share.get(r["name"], 1.0)
    print(f"{'operation':<16}{'CPU ms':>9}{'net':>9}{'wall ms':>9}{'share':>7}")
    for r in rows:
        print(f"{r['name']:<16}{r['cpu_ms']:9.3f}{r['net_cpu_ms']:9.3f}{r['wall_ms']:9.3f}"
              f"{r['share']:7.3f}")
    expected = expected_ms(rows, args)
    if expected is not None:
        print(f"expected augmentation CPU ms per image (RandAugment + erasing): {expected:.3f}")
    if args.json:
        meta = {"image_size": args.image_size, "magnitude": args.magnitude,
                "calls": args.calls, "repeats": args.repeats, "load": load,
                "one_thread": single, "pipeline": args.pipeline,
                "expected_ms": expected}
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=1)
    return rows


if __name__ == "__main__":
    main()
