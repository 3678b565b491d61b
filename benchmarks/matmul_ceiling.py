"""The ceiling a ViT training step can reach: its own matmuls, timed alone, as a share of the peak.

Usage (the backend is taken from KERAS_BACKEND):

    KERAS_BACKEND=tensorflow python benchmarks/matmul_ceiling.py \\
        [--batch-size 16] [--tokens 197] [--dim 384] [--heads 6] [--mlp-ratio 4] \\
        [--jit on] [--dtype float32] [--repeats 7] [--peak-size 2048] [--json out.json]

The defaults are the blocks of SPViT_S / DeiT-S at 224 px. A training step
of a transformer block runs, per Dense layer (`qkv`, `proj`, `fc1`, `fc2`),
the forward product and two backward products (input gradient `dy @ W^T`,
weight gradient `x^T @ dy`), and per attention the batched products
`q @ k^T`, `weights @ v` and their four gradients (`dq`, `dk`, `dweights`,
`dv`), all of the shapes the model uses (tokens flattened with the batch for
the Dense layers; batch x heads for attention). Each product is compiled on
its own (`jit` on: XLA on TensorFlow and JAX; off: a `tf.function` graph,
which runs oneDNN on TensorFlow, eager JAX, eager torch; torch always runs
eagerly) and timed with the square `--peak-size` matmul that defines the
peak, interleaved (every repeat times each in turn), so a noisy machine hits
all alike.

Printed per product: GFLOP/s and its share of the peak (medians over the
repeats; the peak is the median of the square matmul over the same repeats).
"ceiling" is the FLOP-weighted total: the share of the peak the block's
matmuls reach if nothing else ran (total FLOPs / sum of the products' median
times). A whole training step also spends time on norms, softmax, GELU,
copies and the optimizer, so its share of the peak is below this ceiling;
`benchmarks/throughput.py --mode train` reports that share for a model.

`main(argv)` returns `{"peak_gflops", "ceiling", "products": [...]}`.
"""

import argparse
import json
import statistics
import time

import numpy as np


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--tokens", type=int, default=197)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--heads", type=int, default=6)
    p.add_argument("--mlp-ratio", type=float, default=4.0)
    p.add_argument("--jit", choices=["on", "off"], default="on")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--runs", type=int, default=3, help="calls per product per repeat")
    p.add_argument("--peak-size", type=int, default=2048)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    if args.dim % args.heads:
        p.error(f"--dim must be divisible by --heads; got --dim {args.dim} --heads {args.heads}")
    return args


def block_products(batch, tokens, dim, heads, mlp_ratio):
    """The matmuls of one transformer block's training step.

    Returns:
        list of `(name, a_shape, b_shape, transpose_a, transpose_b)`; the
        product is `op(a) @ op(b)` with `op` the transpose of the last two
        axes when asked.

    Example:

    >>> len(block_products(2, 5, 8, 2, 4.0))  # 4 Dense x 3 + attention 2 x 3
    18
    """
    rows, head_dim, hidden = batch * tokens, dim // heads, int(dim * mlp_ratio)
    products = []
    for name, (n_in, n_out) in (("qkv", (dim, 3 * dim)), ("proj", (dim, dim)),
                                ("fc1", (dim, hidden)), ("fc2", (hidden, dim))):
        products += [(f"{name} fwd", (rows, n_in), (n_in, n_out), False, False),
                     (f"{name} dx", (rows, n_out), (n_in, n_out), False, True),
                     (f"{name} dw", (rows, n_in), (rows, n_out), True, False)]
    maps = (batch * heads, tokens, tokens)
    per_head = (batch * heads, tokens, head_dim)
    products += [("q@k^T fwd", per_head, per_head, False, True),
                 ("q@k^T dq", maps, per_head, False, False),
                 ("q@k^T dk", maps, per_head, True, False),
                 ("w@v fwd", maps, per_head, False, False),
                 ("w@v dw", per_head, per_head, False, True),
                 ("w@v dv", maps, per_head, True, False)]
    return products


def product_flops(a_shape, b_shape, transpose_a, transpose_b):
    """2 x multiply-adds of `op(a) @ op(b)`.

    Example:

    >>> product_flops((3, 4), (4, 5), False, False)
    120
    """
    m, k = (a_shape[-1], a_shape[-2]) if transpose_a else (a_shape[-2], a_shape[-1])
    n = b_shape[-2] if transpose_b else b_shape[-1]
    batch = int(np.prod(a_shape[:-2])) if len(a_shape) > 2 else 1
    return 2 * batch * m * k * n


def compiled_product(keras, transpose_a, transpose_b, jit):
    """`f(a, b) = op(a) @ op(b)` in the backend's own compiled form (see the module doc)."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(
            lambda a, b: tf.linalg.matmul(a, b, transpose_a=transpose_a, transpose_b=transpose_b),
            jit_compile=jit,
        )
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        def product(a, b):
            a = jnp.swapaxes(a, -1, -2) if transpose_a else a
            b = jnp.swapaxes(b, -1, -2) if transpose_b else b
            return a @ b

        return jax.jit(product) if jit else product
    import torch

    def product(a, b):
        a = a.transpose(-1, -2) if transpose_a else a
        b = b.transpose(-1, -2) if transpose_b else b
        return torch.matmul(a, b)

    return product


def _timer(keras, fn, a, b, runs):
    from keras import ops

    ops.convert_to_numpy(fn(a, b))  # compile / warm up

    def run():
        start = time.perf_counter()
        for _ in range(runs):
            out = fn(a, b)
        ops.convert_to_numpy(out)
        return (time.perf_counter() - start) / runs

    return run


def main(argv=None):
    args = parse_args(argv)
    import keras
    from keras import ops

    rng = np.random.default_rng(0)

    def tensor(shape):
        return ops.convert_to_tensor(rng.standard_normal(shape).astype("float32"), args.dtype)

    from throughput import matmul_timer  # beside this script: the peak every benchmark uses

    jit = args.jit == "on"
    size = args.peak_size
    peak_run = matmul_timer(keras, size, args.dtype, jit)
    products = []
    for name, a_shape, b_shape, ta, tb in block_products(
        args.batch_size, args.tokens, args.dim, args.heads, args.mlp_ratio
    ):
        products.append({
            "name": name, "a": a_shape, "b": b_shape,
            "flops": product_flops(a_shape, b_shape, ta, tb),
            "timer": _timer(keras, compiled_product(keras, ta, tb, jit),
                            tensor(a_shape), tensor(b_shape), args.runs),
            "times_s": [],
        })
    peak_samples = []
    for _ in range(args.repeats):
        peak_samples += [peak_run() for _ in range(args.runs)]
        for p in products:
            p["times_s"].append(p["timer"]())
    peak = statistics.median(peak_samples)
    for p in products:
        del p["timer"]
        p["median_s"] = statistics.median(p["times_s"])
        p["gflops"] = p["flops"] / p["median_s"] / 1e9
        p["share"] = p["gflops"] / peak
    total_flops = sum(p["flops"] for p in products)
    total_s = sum(p["median_s"] for p in products)
    ceiling = total_flops / total_s / 1e9 / peak
    print(f"{keras.backend.backend()}, jit {args.jit}, {args.dtype}; batch {args.batch_size}, "
          f"{args.tokens} tokens, width {args.dim}, {args.heads} heads, MLP x{args.mlp_ratio:g}")
    print(f"{'product':12s} {'shapes':34s} {'GFLOP/s':>8s} {'% peak':>7s}")
    for p in products:
        shapes = f"{p['a']} {p['b']}"
        print(f"{p['name']:12s} {shapes:34s} {p['gflops']:8.1f} {100 * p['share']:6.1f}%")
    print(f"peak ({size}^2 matmul, median of the same repeats): {peak:.1f} GFLOP/s")
    print(f"ceiling (the block's matmuls alone, FLOP-weighted): {100 * ceiling:.1f}% of peak")
    result = {"backend": keras.backend.backend(), "jit": args.jit, "dtype": args.dtype,
              "peak_gflops": peak, "ceiling": ceiling, "products": products}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()
