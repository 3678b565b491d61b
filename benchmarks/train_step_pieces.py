"""Where SPViT_S's training step goes on TensorFlow: forward + backward of each piece.

Usage:

    KERAS_BACKEND=tensorflow python benchmarks/train_step_pieces.py \\
        [--model SPViT_S] [--batch-size 16] [--jit on off] [--dtype float32] \\
        [--repeats 7] [--json out.json]

Each piece of the model runs alone, on the model's own layers and shapes,
as a compiled function (`tf.function`, `jit_compile` per `--jit`) that
computes the piece's forward pass in training mode and the gradients of
`sum(outputs * r)` (fixed random `r`) with respect to its inputs (except the
images) and its trainable weights:

    stem        ConvStem (4_2: three convolutions with BatchNorm, patch matmul)
    stem_conv1  (convolutional stems) its first convolution, 7x7 stride 2 on
                the padded images (kernel gradient only, as in the step)
    stem_conv2  its second convolution, 3x3 on the first's maps
    stem_bn     its second BatchNorm + ReLU (`batch_norm_relu`, training)
    stem_proj   its patchify projection (kernel = stride, a reshape + matmul)
    sp_block    one TransformerBlock with SpatialPriorAttention (196 tokens)
    vit_block   one TransformerBlock with MultiHeadSelfAttention (197 tokens)
    sp_attn     SpatialPriorAttention alone; mlp: MLP alone; norm: LayerNorm
    pos_cnn     one PosCNN (depthwise 3x3 on the grid)
    head_loss   final LayerNorm, token-labeling head, cross-entropy
    optimizer   AdamW's update of all weights from given gradients
    step        the whole `train_on_batch`, as benchmarks/throughput.py times it

"x count" is how many times the piece occurs in one step (0: a part of
another piece, shown alone); "1x/step" is one occurrence's median time over
the step's; "share" is count x median time / step time (the shares of the real pieces should add
up to about 1). "ideal ms" is the piece's matmul FLOPs (forward 2 x MACs,
training 3x that) at the float32 matmul peak measured between the repeats of
the same run; "x ideal" = median / ideal shows which pieces are far from
what their matmuls should cost. Pieces and the peak are interleaved (every
repeat times each in turn), so a noisy machine hits all alike.
"""

import argparse
import json
import statistics
import time

import numpy as np


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="SPViT_S")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--jit", nargs="+", choices=["on", "off"], default=["on"])
    p.add_argument("--dtype", default="float32")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--pieces", nargs="+", default=None, help="subset of the pieces")
    p.add_argument("--json", default=None)
    return p.parse_args(argv)


def stem_pieces(stem, images, rng):
    """The pieces of a convolutional stem (none for a patchify stem), in
    `main`'s `pieces` format, each part of `stem` (count 0)."""
    if not stem.conv_layers:
        return {}
    import tensorflow as tf

    from keras_spvit.layers._batch_norm_relu import batch_norm_relu

    pad, conv1, _, _, conv2, bn2 = stem.conv_layers[:6]
    shape = conv1.compute_output_shape(pad.compute_output_shape(images.shape))
    maps = tf.constant(rng.standard_normal(shape, dtype=np.float32))
    rows, cols = shape[1:3]
    proj_macs = rows * cols * int(np.prod(stem.proj.kernel.shape)) // stem.proj.kernel_size[0] ** 2
    return {
        "stem_conv1": (lambda x: conv1(pad(x)), images, 0,
                       rows * cols * int(np.prod(conv1.kernel.shape)), True),
        "stem_conv2": (conv2, maps, 0, rows * cols * int(np.prod(conv2.kernel.shape)), False),
        "stem_bn": (lambda x: batch_norm_relu(bn2, x, training=True), maps, 0, 0, False),
        "stem_proj": (stem._patchify, maps, 0, proj_macs, False),
    }


def main(argv=None):
    args = parse_args(argv)
    import keras
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")  # one tf.function per piece: retracing warnings

    from throughput import matmul_timer  # beside this script

    import keras_spvit

    if keras.backend.backend() != "tensorflow":
        raise SystemExit("train_step_pieces.py profiles the TensorFlow backend only.")
    batch = args.batch_size
    model = getattr(keras_spvit, args.model)(num_classes=1000, dtype=args.dtype)
    model.compile(
        optimizer=keras.optimizers.AdamW(1e-4),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    backbone = model.backbone
    dim = backbone.embed_dim
    rows, cols = backbone.grid_shape
    patches = rows * cols
    rng = np.random.default_rng(0)
    images = rng.standard_normal((batch, *backbone.image_shape), dtype=np.float32)
    labels = rng.integers(0, 1000, size=(batch,)).astype("int32")
    tokens = lambda n: tf.constant(  # noqa: E731
        rng.standard_normal((batch, n, dim), dtype=np.float32))

    blocks = backbone.transformer_blocks
    sp_index = [i for i, b in enumerate(blocks)
                if type(b.attention).__name__ == "SpatialPriorAttention"]
    vit_index = [i for i, b in enumerate(blocks) if i not in sp_index]
    cls_block = backbone.class_token_block
    hidden = blocks[0].mlp.hidden_dim
    mlp_macs = lambda n: 2 * n * dim * hidden  # noqa: E731
    attn_macs = lambda n: n * dim * 4 * dim + 2 * n * n * dim  # noqa: E731
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def head_loss(x):
        logits = model.head(backbone.norm(x))
        return loss_fn(labels, logits)

    # name -> (layer or callable, inputs, count per step, MACs, takes images)
    n_sp_tokens = patches + int(sp_index and sp_index[0] >= cls_block)
    pieces = {
        "stem": (lambda x: backbone.stem(x, training=True), tf.constant(images), 1,
                 None, True),
        "sp_block": (lambda x: blocks[sp_index[0]](x, training=True), tokens(n_sp_tokens),
                     len(sp_index), attn_macs(n_sp_tokens) + mlp_macs(n_sp_tokens), False),
        "sp_attn": (lambda x: blocks[sp_index[0]].attention(x, training=True),
                    tokens(n_sp_tokens), 0, attn_macs(n_sp_tokens), False),
        "vit_block": (lambda x: blocks[vit_index[-1]](x, training=True), tokens(patches + 1),
                      len(vit_index), attn_macs(patches + 1) + mlp_macs(patches + 1), False),
        "mlp": (lambda x: blocks[0].mlp(x, training=True), tokens(n_sp_tokens), 0,
                mlp_macs(n_sp_tokens), False),
        "norm": (lambda x: blocks[0].norm1(x), tokens(n_sp_tokens), 0, 0, False),
        "pos_cnn": (lambda x: backbone.pos_cnns[-1](x), tokens(patches + 1),
                    len(blocks), 0, False),
        "head_loss": (head_loss, tokens(patches + 1), 1,
                      (patches + 1) * 1000 * dim, False),
    }
    stem_macs, shape = 0, (1, *backbone.image_shape)
    for layer in backbone.stem.conv_layers + [backbone.stem.proj]:
        shape = layer.compute_output_shape(shape)
        if hasattr(layer, "kernel"):
            stem_macs += int(np.prod(shape[1:3])) * int(np.prod(layer.kernel.shape))
    pieces["stem"] = pieces["stem"][:3] + (stem_macs, True)
    pieces.update(stem_pieces(backbone.stem, tf.constant(images), rng))
    if args.pieces:
        pieces = {k: v for k, v in pieces.items() if k in args.pieces}

    def compiled(fn, x, images_input, jit):
        # Variables of the piece: traced on a first call.
        layer_vars = []

        @tf.function(jit_compile=jit)
        def run(x, r):
            with tf.GradientTape() as tape:
                if not images_input:
                    tape.watch(x)
                out = fn(x)
                loss = tf.reduce_sum(tf.cast(out, "float32") * r) if r is not None else out
            wrt = list(layer_vars) + ([] if images_input else [x])
            return tape.gradient(loss, wrt)

        with tf.GradientTape() as probe:
            out = fn(x)
        layer_vars.extend(v for v in probe.watched_variables() if v.trainable)
        r = None if out.shape.rank == 0 else tf.constant(
            rng.standard_normal(out.shape, dtype=np.float32))
        return lambda: [g.numpy() for g in run(x, r) if g is not None]

    variables = model.trainable_variables
    model.optimizer.build(variables)  # its variables are created outside tf.function
    grads = [tf.constant(rng.standard_normal(v.shape, dtype=np.float32) * 1e-3)
             for v in variables]

    results = []
    for jit_name in args.jit:
        jit = jit_name == "on"
        fns = {name: compiled(fn, x, img, jit) for name, (fn, x, _, _, img) in pieces.items()}

        @tf.function(jit_compile=jit)
        def apply(grads):
            model.optimizer.apply(grads, variables)

        fns["optimizer"] = lambda: apply(grads)
        model.compile(
            optimizer=model.optimizer,
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            jit_compile=jit,
        )
        fns["step"] = lambda: model.train_on_batch(images, labels)
        for fn in fns.values():
            fn()
            fn()
        times = {name: [] for name in fns}
        peaks = []
        peak_run = matmul_timer(keras, 2048, "float32", jit=True)
        for _ in range(args.repeats):
            peaks += [peak_run() for _ in range(3)]
            for name, fn in fns.items():
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
        peak = statistics.median(peaks)
        step = statistics.median(times["step"])
        print(f"jit={jit_name} dtype={args.dtype} batch={batch} float32 peak (median "
              f"of repeats) {peak:.0f} GFLOP/s, step {step * 1e3:.0f} ms")
        print(f"{'piece':<10} {'x count':>7} {'median ms':>9} {'min':>7} {'max':>7} "
              f"{'1x/step':>7} {'share':>6} {'ideal ms':>8} {'x ideal':>7}")
        total = 0.0
        for name in fns:
            med = statistics.median(times[name])
            count, macs = (1, None) if name in ("optimizer", "step") else pieces[name][2:4]
            if name == "optimizer":
                count = 1
            if name == "step":
                macs = keras_spvit.count_macs(model)
            share = count * med / step
            if name not in ("step",):
                total += share
            ideal = 6 * macs * batch / peak / 1e9 if macs else None
            row = {"jit": jit_name, "dtype": args.dtype, "piece": name, "count": count,
                   "median_s": med, "min_s": min(times[name]), "max_s": max(times[name]),
                   "share": share, "ideal_s": ideal, "peak_gflops": peak}
            results.append(row)
            print(f"{name:<10} {count:>7} {med * 1e3:9.1f} {min(times[name]) * 1e3:7.1f} "
                  f"{max(times[name]) * 1e3:7.1f} {med / step:7.3f} {share:6.3f} "
                  + (f"{ideal * 1e3:8.1f} {med / ideal:7.2f}" if ideal else f"{'-':>8} {'-':>7}"))
        print(f"sum of shares of the pieces (count > 0): {total:.3f}\n")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main()
