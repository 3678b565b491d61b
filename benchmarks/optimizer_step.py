"""PyTorch: the recipe optimizer's multi-tensor update against Keras' per-variable one.

Usage:

    KERAS_BACKEND=torch OMP_NUM_THREADS=1 python benchmarks/optimizer_step.py \\
        [--model SPViT_Tiny ...] [--ema] [--rounds 6] [--steps 5]

`ParamGroupAdamW` (every recipe's optimizer) updates all variables of a
parameter group with `torch._foreach_*` ops on the torch backend; Keras' own
path for a subclass runs `update_step` per variable. Two copies of each model
(same seed, same batch) are trained, one per path, alternating in rounds in
one process; printed are the medians of CPU milliseconds per training step and
the largest weight difference after the same steps (0.0: the same arithmetic).
"""

import argparse
import importlib
import statistics
import time


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", nargs="+", default=["SPViT_Tiny"])
    p.add_argument("--ema", action="store_true", help="the EMA and gradient clipping on too")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--steps", type=int, default=5)
    args = p.parse_args(argv)
    import dataclasses

    import keras
    import numpy as np
    from keras.src.optimizers.base_optimizer import BaseOptimizer

    from keras_spvit.training import get_recipe
    from keras_spvit.training.trainer import compile_for_training

    if keras.backend.backend() != "torch":
        raise SystemExit("Run with KERAS_BACKEND=torch: the multi-tensor update is PyTorch's.")
    study = importlib.import_module("keras_spvit.study")
    recipe = get_recipe("digits")
    if args.ema:
        recipe = dataclasses.replace(recipe, ema_momentum=0.9999, clip_norm=5.0)
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(64, 32, 32, 3)).astype("float32")
    y = np.eye(10, dtype="float32")[rng.integers(0, 10, 64)]
    for name in args.model:
        models = {}
        for arm in ("multi-tensor", "per-variable"):
            keras.utils.set_random_seed(0)
            model = study.study_builders()[name](num_classes=10, image_shape=(32, 32, 3))
            compile_for_training(model, recipe, batch_size=64, steps_per_epoch=100, epochs=10,
                                 jit_compile=False)
            if arm == "per-variable":  # Keras' own loop, as before
                o = model.optimizer
                o._backend_update_step = (
                    lambda g, v, lr, o=o: BaseOptimizer._backend_update_step(o, g, v, lr))
                o._update_model_variables_moving_average = (
                    lambda v, o=o: BaseOptimizer._update_model_variables_moving_average(o, v))
            for _ in range(3):
                model.train_on_batch(x, y)
            models[arm] = model
        times = {arm: [] for arm in models}
        for r in range(args.rounds):
            for arm in (list(models) if r % 2 else list(models)[::-1]):
                start = time.process_time()
                for _ in range(args.steps):
                    models[arm].train_on_batch(x, y)
                times[arm].append(1000 * (time.process_time() - start) / args.steps)
        fast, slow = (statistics.median(times[a]) for a in models)
        weights = [[keras.ops.convert_to_numpy(v) for v in m.trainable_variables]
                   for m in models.values()]
        diff = max(float(np.abs(a - b).max()) for a, b in zip(*weights))
        print(f"{name}: {len(weights[0])} variables, CPU ms per step: multi-tensor {fast:.1f}, "
              f"per-variable {slow:.1f} ({slow / fast:.2f}x); max weight difference {diff}",
              flush=True)


if __name__ == "__main__":
    main()
