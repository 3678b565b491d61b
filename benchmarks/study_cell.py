"""Where one study cell's time goes: input pipeline, train step, compile, evaluation.

Usage:

    KERAS_BACKEND=jax python benchmarks/study_cell.py [--data fashion_mnist] \\
        [--model SPViT_Tiny] [--size 100] [--seed 0] [--epochs 10] [--min-steps 1000] \\
        [--steps 30] [--json out.json]

The cell is built as `keras_spvit.study.run_cell` builds it (the same subset,
recipe, pipeline, model and compiled training), then its pieces run one after
the other, each timed in wall seconds and in this process's CPU seconds (on a
machine shared with other work the CPU seconds are the steadier figure: they
do not count the time the process waited for a core):

    model        building the model
    pipeline     `--steps` batches of the cell's training pipeline alone
    compile      the first training call (tracing, compiling, one step)
    step         `--steps` training steps on one fixed batch (compute only)
    fit_steps    `--steps` training steps fed by the cell's pipeline
    evaluate     the cell's evaluation (its training subset and the test split),
                 first call (compiles) and second call

Run it with the thread limits of a study's cell (`--jobs 2` on 2 cores: one
thread each) by setting `XLA_FLAGS="--xla_cpu_multi_thread_eigen=false
intra_op_parallelism_threads=1"` and `OMP_NUM_THREADS=1`.
"""

import argparse
import importlib
import json
import time


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="fashion_mnist")
    p.add_argument("--model", default="SPViT_Tiny")
    p.add_argument("--size", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--min-steps", type=int, default=1000)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--json", default=None)
    return p.parse_args(argv)


def timed(results, name, function):
    """Runs `function()`; records its wall and CPU seconds under `name`."""
    wall, cpu = time.perf_counter(), time.process_time()
    value = function()
    results[name] = {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu}
    print(f"{name:10s} wall {results[name]['wall']:8.2f} s   cpu {results[name]['cpu']:8.2f} s",
          flush=True)
    return value


def main(argv=None):
    args = parse_args(argv)
    import keras
    import numpy as np
    import tensorflow as tf

    study = importlib.import_module("keras_spvit.study")
    from keras_spvit.data.datasets import array_dataset
    from keras_spvit.data.sources import source_preprocessing
    from keras_spvit.data.train_augment import TrainAugment
    from keras_spvit.training.hardware import resolve_jit
    from keras_spvit.training.trainer import compile_for_training, for_model

    _, _, _, settings = study.check_study(
        args.data, [args.model], [args.size], [args.seed], epochs=args.epochs, image_size=32,
        batch_size=64, min_steps=args.min_steps, test_size=None, test_data=None, baseline=None,
        model_args=None, jobs=1, recipe="digits", data_dir=None)
    images, labels = study._arrays(args.data, "train")
    keep = study.balanced_subset(labels, args.size, args.seed, settings["num_classes"])
    images, labels = images[keep], labels[keep]
    recipe = study._recipe(settings)
    batch, repeats, steps_per_epoch = study.cell_schedule(settings, args.size)
    train = array_dataset(
        np.tile(images, (repeats,) + (1,) * (images.ndim - 1)), np.tile(labels, repeats),
        image_size=32, batch_size=batch, training=True,
        augment=TrainAugment.from_recipe(recipe, args.seed), num_classes=settings["num_classes"],
        seed=args.seed, cache=True, **source_preprocessing(args.data)).repeat()
    results = {}
    keras.utils.set_random_seed(args.seed)
    model = timed(results, "model", lambda: study.study_builders()[args.model](
        num_classes=settings["num_classes"], image_shape=(32, 32, 3)))
    timed(results, "pipeline", lambda: [None for _ in train.take(args.steps)])
    compile_for_training(model, recipe, batch_size=batch, steps_per_epoch=steps_per_epoch,
                         epochs=args.epochs, jit_compile=resolve_jit(settings["jit"]))
    data = for_model(train, model)
    fixed = tf.data.Dataset.from_tensors(next(iter(data))).repeat()
    timed(results, "compile", lambda: model.fit(fixed, steps_per_epoch=1, verbose=0))
    timed(results, "step", lambda: model.fit(fixed, steps_per_epoch=args.steps, verbose=0))
    timed(results, "fit_steps", lambda: model.fit(data, steps_per_epoch=args.steps, verbose=0))
    splits = ((images, labels), study.test_arrays(settings))
    for name in ("evaluate", "evaluate2"):
        timed(results, name, lambda: study._accuracies(model, settings, *splits))
    for name in ("pipeline", "step", "fit_steps"):
        for clock in ("wall", "cpu"):
            results[name][f"{clock}_per_batch_ms"] = 1000 * results[name][clock] / args.steps
    print(f"per batch of {batch}: pipeline cpu {results['pipeline']['cpu_per_batch_ms']:.0f} ms,"
          f" step cpu {results['step']['cpu_per_batch_ms']:.0f} ms, fed step cpu "
          f"{results['fit_steps']['cpu_per_batch_ms']:.0f} ms", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "backend": keras.backend.backend(), **results}, f,
                      indent=2)
    return results


if __name__ == "__main__":
    main()
