"""The main job: SP-ViT against the same ViT without spatial priors, on digits.

Trains `SPViT_Tiny` (spatial-prior attention in its first 2 of 4 blocks) and
`LVViT_Tiny` (the same network with vanilla attention everywhere) with the
same recipe, data and seeds on the bundled UCI digits (1,438 training and
359 held-out 8x8 images, upsampled to 32 px), prints the held-out
accuracies side by side and writes a PNG of the learned priors next to each
saved SP-ViT model. Both models get identical settings: nothing is tuned for
one of them.

    KERAS_BACKEND=tensorflow python examples/digits_demo.py --epochs 20 --seeds 0 1

`make demo` now runs the data-efficiency study (`keras-spvit study`, docs/study.md),
of which this script is the two-model, one-size special case.
"""

import argparse
import json
import os
import shutil
import statistics
import time

import keras

import keras_spvit
from keras_spvit.cli.train import train_augment
from keras_spvit.data.sources import source_dataset
from keras_spvit.training import fit, get_recipe
from keras_spvit.training.hardware import resolve_jit
from keras_spvit.analysis.plots import plot_spatial_priors

MODELS = {"SPViT_Tiny": keras_spvit.SPViT_Tiny, "LVViT_Tiny": keras_spvit.LVViT_Tiny}


def train_one(name, seed, recipe, epochs, batch_size, out_dir, jit="auto"):
    keras.utils.set_random_seed(seed)
    model = MODELS[name](num_classes=10)
    size = model.input_shape[1]
    train, _ = source_dataset("digits", "train", image_size=size, batch_size=batch_size,
                              training=True, augment=train_augment(recipe, seed), seed=seed)
    test, _ = source_dataset("digits", "test", image_size=size, batch_size=256,
                             training=False)
    run_dir = os.path.join(out_dir, f"{name}_seed{seed}")
    shutil.rmtree(run_dir, ignore_errors=True)
    summary = fit(model, train, test, recipe=recipe, batch_size=batch_size, out_dir=run_dir,
                  epochs=epochs, jit_compile=resolve_jit(jit), verbose=0)
    if name == "SPViT_Tiny":
        summary["priors_png"] = plot_spatial_priors(
            model, os.path.join(run_dir, "spatial_priors.png"),
            title=f"SPViT_Tiny on digits, seed {seed}:\nprior around the centre token (+)",
        )
    print(f"  {name:<11} seed {seed}: held-out accuracy {100 * summary['val_accuracy']:.2f}% "
          f"({summary['seconds']:.0f} s, {summary['images_per_second']:.0f} img/s)", flush=True)
    return summary


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--out", default="runs/demo")
    parser.add_argument("--jit", choices=["auto", "on", "off"], default="auto",
                        help="XLA: auto (the train command's choice for this machine), on, off")
    args = parser.parse_args(argv)

    recipe = get_recipe("digits", epochs=args.epochs)
    start = time.perf_counter()
    print(f"Training on the bundled digits, backend {keras.backend.backend()}, "
          f"{args.epochs} epochs, seeds {args.seeds}, recipe {recipe.name!r}", flush=True)
    results = {name: {} for name in MODELS}
    for seed in args.seeds:
        for name in MODELS:
            summary = train_one(name, seed, recipe, args.epochs, args.batch_size, args.out,
                                args.jit)
            results[name][seed] = summary
    minutes = (time.perf_counter() - start) / 60

    names = list(MODELS)
    print(f"\nHeld-out accuracy on 359 digits ({minutes:.1f} min of training):")
    print(f"{'seed':>6} " + " ".join(f"{n:>12}" for n in names))
    for seed in args.seeds:
        row = " ".join(f"{100 * results[n][seed]['val_accuracy']:>11.2f}%" for n in names)
        print(f"{seed:>6} {row}")
    means = {n: statistics.mean(r["val_accuracy"] for r in results[n].values()) for n in names}
    print(f"{'mean':>6} " + " ".join(f"{100 * means[n]:>11.2f}%" for n in names))
    gap = 100 * (means["SPViT_Tiny"] - means["LVViT_Tiny"])
    print(f"\nSpatial priors {'help' if gap > 0 else 'do not help'} here: "
          f"{gap:+.2f} points over {len(args.seeds)} seed(s). "
          "(Small test set: one image is 0.28 points.)")
    for seed in args.seeds:
        print(f"Priors (seed {seed}): {results['SPViT_Tiny'][seed]['priors_png']}")
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump({"epochs": args.epochs, "seeds": args.seeds, "minutes": minutes,
                   "val_accuracy": {n: {str(s): r["val_accuracy"] for s, r in results[n].items()}
                                    for n in names}}, f, indent=2)
    return results


if __name__ == "__main__":
    main()
