"""Memory of one training step, from XLA's compiled memory analysis (JAX).

    python benchmarks/memory.py [--models SPViT_S RefinedViT_S] [--sizes 224 384]
        [--batch 8] [--precisions float32 mixed_bfloat16] [--measure xla|torch-rss]

For each model, image size, precision and `remat` off/on, it compiles the
training step (forward, loss, gradients; the optimizer update excluded) with
`jax.jit(...).lower(...).compile()` and prints XLA's buffer assignment:
`temp` (activations and scratch, what remat and bf16 cut), `arguments`
(weights, state, batch) and their sum. Nothing is executed, so a CPU shows
the memory a GPU step would need (XLA's GPU scheduling differs somewhat).
`--measure torch-rss` instead runs one step on the torch backend in a fresh
subprocess per row and prints the peak resident memory the step added
(`ru_maxrss` after the step minus before it): what the step really held.
"""

import argparse
import os

os.environ.setdefault("KERAS_BACKEND", "jax")


def step_memory(model_name, size, batch, precision, remat):
    """`(temp_bytes, argument_bytes)` of the compiled training step."""
    import jax
    import keras
    import numpy as np

    import keras_spvit

    keras.config.set_dtype_policy(precision)
    try:
        model = getattr(keras_spvit, model_name)(
            num_classes=1000, image_shape=(size, size, 3), remat=remat,
        )
    finally:
        keras.config.set_dtype_policy("float32")
    trainable = [v.value for v in model.trainable_variables]
    frozen = [v.value for v in model.non_trainable_variables]
    images = jax.ShapeDtypeStruct((batch, size, size, 3), np.float32)
    labels = jax.ShapeDtypeStruct((batch,), np.int32)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def loss(trainable, frozen, images, labels):
        logits, frozen = model.stateless_call(trainable, frozen, images, training=True)
        if isinstance(logits, (tuple, list)):
            logits = logits[0]
        return loss_fn(labels, keras.ops.cast(logits, "float32")), frozen

    step = jax.jit(jax.grad(loss, has_aux=True))
    compiled = step.lower(trainable, frozen, images, labels).compile()
    analysis = compiled.memory_analysis()
    return analysis.temp_size_in_bytes, analysis.argument_size_in_bytes


def _torch_step_rss(model_name, size, batch, precision, remat):
    """Peak RSS (bytes) one torch training step adds; run in its own process."""
    import resource

    import keras
    import numpy as np

    import keras_spvit

    keras.config.set_dtype_policy(precision)
    model = getattr(keras_spvit, model_name)(
        num_classes=1000, image_shape=(size, size, 3), remat=remat,
    )
    model.compile(optimizer=keras.optimizers.SGD(0.01),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    images = np.random.default_rng(0).normal(size=(batch, size, size, 3)).astype("float32")
    labels = np.zeros((batch,), "int32")
    model.predict_on_batch(images[:1])
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    model.train_on_batch(images, labels)
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024


def _in_subprocess(model_name, size, batch, precision, remat):
    import subprocess
    import sys

    code = (f"import sys; sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r}); "
            f"import memory; print(memory._torch_step_rss({model_name!r}, {size}, {batch}, "
            f"{precision!r}, {remat}))")
    env = dict(os.environ, KERAS_BACKEND="torch")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["SPViT_S", "RefinedViT_S"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[224, 384])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--precisions", nargs="+", default=["float32", "mixed_bfloat16"])
    parser.add_argument("--measure", choices=("xla", "torch-rss"), default="xla")
    args = parser.parse_args()
    gib = 2.0**30
    if args.measure == "torch-rss":
        print(f"batch {args.batch}; GiB of peak RSS added by one torch training step")
        print(f"{'model':14s} {'px':>4s} {'precision':15s} {'remat':5s} {'step':>7s}")
        for name in args.models:
            for size in args.sizes:
                for precision in args.precisions:
                    for remat in (False, True):
                        added = _in_subprocess(name, size, args.batch, precision, remat)
                        print(f"{name:14s} {size:4d} {precision:15s} "
                              f"{'on' if remat else 'off':5s} {added / gib:7.2f}", flush=True)
        return
    print(f"batch {args.batch}; GiB from XLA's compiled memory analysis (JAX)")
    print(f"{'model':14s} {'px':>4s} {'precision':15s} {'remat':5s} "
          f"{'temp':>7s} {'args':>6s} {'total':>7s}")
    for name in args.models:
        for size in args.sizes:
            for precision in args.precisions:
                for remat in (False, True):
                    temp, arguments = step_memory(name, size, args.batch, precision, remat)
                    print(f"{name:14s} {size:4d} {precision:15s} {'on' if remat else 'off':5s} "
                          f"{temp / gib:7.2f} {arguments / gib:6.2f} "
                          f"{(temp + arguments) / gib:7.2f}", flush=True)


if __name__ == "__main__":
    main()
