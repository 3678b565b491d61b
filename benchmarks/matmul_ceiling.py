"""The ceiling a ViT training step can reach: its own matmuls, timed alone, as a share of the peak.

Usage (the backend is taken from KERAS_BACKEND):

    KERAS_BACKEND=tensorflow python benchmarks/matmul_ceiling.py \\
        [--batch-size 16] [--tokens 197] [--dim 384] [--heads 6] [--mlp-ratio 4] \\
        [--depth 1] [--stem none] [--image-size 224] \\
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

`--depth D --stem 4_2` makes it a model's ceiling: D blocks (each of their
products counted D times) and a convolutional stem's convolutions at
`--image-size` (forward, input gradient and kernel gradient of each; the
first convolution's input is the image, so it has no input gradient), e.g.
SPViT_S: `--depth 16 --stem 4_2`. Each convolution runs as the backend's
own (`keras.ops.conv`, its gradients by the backend's autodiff), compiled
as the products are.

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
    p.add_argument("--depth", type=int, default=1, help="blocks (each product counted D times)")
    p.add_argument("--stem", choices=["none", *STEM_WIDTHS], default="none")
    p.add_argument("--image-size", type=int, default=224, help="the stem's input side")
    p.add_argument("--jit", choices=["on", "off"], default="on")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--runs", type=int, default=3, help="calls per product per repeat")
    p.add_argument("--peak-size", type=int, default=2048)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    if args.dim % args.heads:
        p.error(f"--dim must be divisible by --heads; got --dim {args.dim} --heads {args.heads}")
    if args.stem != "none" and args.image_size % 16:
        p.error(f"--image-size must be a multiple of the stem's stride 16; got {args.image_size}")
    if args.depth < 1:
        p.error(f"--depth must be at least 1; got {args.depth}")
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


# The convolutional stems' widths, as `keras_spvit.layers.conv_stem.STEM_WIDTHS`
# (a benchmark does not import the package before its backend is set).
STEM_WIDTHS = {"4_2": (64, 64, 64), "4_2_128": (128, 128, 128), "refiner": (32, 64, 128)}


def stem_convolutions(batch, image_size, widths, dim):
    """The convolutions of a conv stem's training step, channels-last.

    conv 7x7 stride 2 (input pre-padded by 3), conv 3x3 and conv 3x3
    ("same"), then the 8x8 stride-8 projection to `dim` (as the model runs
    it: one matmul of the 8x8 patches, so it is a product here).

    Returns:
        list of `(name, input_shape, kernel_shape, stride, padding, output_shape, gradient)`
        with `gradient` one of `"fwd"`, `"dx"`, `"dw"`, and the projection's
        products as `block_products` gives them.

    Example:

    >>> convs, products = stem_convolutions(2, 32, (8, 8, 8), 16)
    >>> [c[0] for c in convs][:5]
    ['conv1 fwd', 'conv1 dw', 'conv2 fwd', 'conv2 dx', 'conv2 dw']
    >>> [p[0] for p in products]
    ['proj fwd', 'proj dx', 'proj dw']
    """
    half = image_size // 2
    first, second, third = widths
    layers = [("conv1", (batch, image_size + 6, image_size + 6, 3), (7, 7, 3, first), 2,
               "valid", (batch, half, half, first)),
              ("conv2", (batch, half, half, first), (3, 3, first, second), 1, "same",
               (batch, half, half, second)),
              ("conv3", (batch, half, half, second), (3, 3, second, third), 1, "same",
               (batch, half, half, third))]
    convs = []
    for name, x_shape, w_shape, stride, padding, y_shape in layers:
        for gradient in ("fwd", "dw") if name == "conv1" else ("fwd", "dx", "dw"):
            convs.append((f"{name} {gradient}", x_shape, w_shape, stride, padding, y_shape,
                          gradient))
    rows, patch = batch * (image_size // 16) ** 2, 64 * third
    products = [("proj fwd", (rows, patch), (patch, dim), False, False),
                ("proj dx", (rows, dim), (patch, dim), False, True),
                ("proj dw", (rows, patch), (rows, dim), True, False)]
    return convs, products


def convolution_flops(output_shape, kernel_shape):
    """2 x multiply-adds of a convolution (its forward; each gradient is as many).

    Example:

    >>> convolution_flops((1, 4, 4, 8), (3, 3, 2, 8))
    4608
    """
    return 2 * int(np.prod(output_shape)) * int(np.prod(kernel_shape[:3]))


def compiled_convolution(keras, stride, padding, gradient, jit):
    """`f(x, w, dy)`: the convolution's output (`fwd`), or its input or
    kernel gradient for the output gradient `dy`, by the backend's autodiff."""
    from keras import ops

    def conv(x, w):
        return ops.conv(x, w, strides=stride, padding=padding)

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        def step(x, w, dy):
            if gradient == "fwd":
                return conv(x, w)
            with tf.GradientTape() as tape:
                target = x if gradient == "dx" else w
                tape.watch(target)
                y = conv(x, w)
            return tape.gradient(y, target, output_gradients=dy)

        return tf.function(step, jit_compile=jit)
    if backend == "jax":
        import jax

        def step(x, w, dy):
            if gradient == "fwd":
                return conv(x, w)
            if gradient == "dx":
                return jax.vjp(lambda t: conv(t, w), x)[1](dy)[0]
            return jax.vjp(lambda t: conv(x, t), w)[1](dy)[0]

        return jax.jit(step) if jit else step
    import torch

    def step(x, w, dy):
        if gradient == "fwd":
            with torch.no_grad():
                return conv(x, w)
        target = (x if gradient == "dx" else w).detach().requires_grad_(True)
        y = conv(target, w) if gradient == "dx" else conv(x, target)
        return torch.autograd.grad(y, target, dy)[0]

    return step


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


def _timer(keras, fn, *args, runs):
    from keras import ops

    ops.convert_to_numpy(fn(*args))  # compile / warm up

    def run():
        start = time.perf_counter()
        for _ in range(runs):
            out = fn(*args)
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
    def product(name, a_shape, b_shape, ta, tb, count):
        return {"name": name, "a": a_shape, "b": b_shape, "count": count,
                "flops": product_flops(a_shape, b_shape, ta, tb),
                "timer": _timer(keras, compiled_product(keras, ta, tb, jit),
                                tensor(a_shape), tensor(b_shape), runs=args.runs),
                "times_s": []}

    products = [product(*shapes, count=args.depth) for shapes in block_products(
        args.batch_size, args.tokens, args.dim, args.heads, args.mlp_ratio)]
    if args.stem != "none":
        convs, projection = stem_convolutions(args.batch_size, args.image_size,
                                              STEM_WIDTHS[args.stem], args.dim)
        for name, x_shape, w_shape, stride, padding, y_shape, gradient in convs:
            products.append({
                "name": name, "a": x_shape, "b": w_shape, "count": 1,
                "flops": convolution_flops(y_shape, w_shape),
                "timer": _timer(keras, compiled_convolution(keras, stride, padding, gradient, jit),
                                tensor(x_shape), tensor(w_shape), tensor(y_shape),
                                runs=args.runs),
                "times_s": []})
        products += [product(*shapes, count=1) for shapes in projection]
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
    total_flops = sum(p["count"] * p["flops"] for p in products)
    total_s = sum(p["count"] * p["median_s"] for p in products)
    ceiling = total_flops / total_s / 1e9 / peak
    print(f"{keras.backend.backend()}, jit {args.jit}, {args.dtype}; batch {args.batch_size}, "
          f"{args.tokens} tokens, width {args.dim}, {args.heads} heads, MLP x{args.mlp_ratio:g}"
          + (f"; {args.depth} blocks" if args.depth > 1 else "")
          + (f"; stem {args.stem} at {args.image_size} px" if args.stem != "none" else ""))
    print(f"{'product':12s} {'shapes':42s} {'GFLOP/s':>8s} {'% peak':>7s} {'% time':>7s}")
    for p in products:
        shapes = f"{p['a']} {p['b']}"
        share_of_time = p["count"] * p["median_s"] / total_s
        print(f"{p['name']:12s} {shapes:42s} {p['gflops']:8.1f} {100 * p['share']:6.1f}% "
              f"{100 * share_of_time:6.1f}%")
    print(f"peak ({size}^2 matmul, median of the same repeats): {peak:.1f} GFLOP/s")
    what = "the block's matmuls alone" if args.depth == 1 and args.stem == "none" else (
        f"{args.depth} blocks' matmuls" + (" and the stem's convolutions" * (args.stem != "none"))
        + " alone")
    print(f"ceiling ({what}, FLOP-weighted): {100 * ceiling:.1f}% of peak")
    result = {"backend": keras.backend.backend(), "jit": args.jit, "dtype": args.dtype,
              "depth": args.depth, "stem": args.stem, "peak_gflops": peak, "ceiling": ceiling,
              "products": products}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()
