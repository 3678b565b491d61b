"""Search PSViT's pooling positions and attention sharing on the bundled digits.

A small, CPU-sized run of `keras_spvit.search` (KerasTuner underneath): every
trial trains a 3-stage PSViT on 32 px digits and is scored on held-out digits.

    python examples/psvit_search.py --trials 8 --epochs 3

Prints every trial's validation accuracy and the best, builder-ready config.
"""

import argparse
import tempfile


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=8, help="models to train (the budget)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per trial")
    parser.add_argument("--depth", type=int, default=6)
    parser.add_argument("--tuner", default="random", choices=["random", "bayesian", "hyperband"])
    parser.add_argument("--limit", type=int, default=None,
                        help="use only this many training batches (quick runs)")
    parser.add_argument("--directory", default=None, help="where trials are kept (resumable)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jit", choices=["auto", "on", "off"], default="auto",
                        help="XLA for each trial (auto: Keras' choice)")
    args = parser.parse_args(argv)

    import keras_spvit
    from keras_spvit.data import digits_dataset

    train = digits_dataset("train", image_size=32, batch_size=64, seed=args.seed)
    test = digits_dataset("test", image_size=32, batch_size=128, seed=args.seed)
    if args.limit:
        train = train.take(args.limit)
    best, tuner = keras_spvit.search(
        train, test, num_classes=10, depth=args.depth, num_stages=3,
        stage_dims=(32, 48, 64), stage_heads=(2, 2, 4), patch_size=4,
        image_shape=(32, 32, 3), max_trials=args.trials, epochs=args.epochs,
        tuner=args.tuner, seed=args.seed,
        jit_compile={"auto": "auto", "on": True, "off": False}[args.jit],
        directory=args.directory or tempfile.mkdtemp(prefix="psvit_search_"),
    )
    for trial in tuner.oracle.get_best_trials(num_trials=args.trials):
        print(f"val_accuracy {trial.score:.3f}  {trial.hyperparameters.values}")
    print("best config:", best)
    return best, tuner


if __name__ == "__main__":
    main()
