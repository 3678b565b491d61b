"""Token labeling at toy scale: does training on a teacher's dense labels help?

The papers' recipe (LV-ViT / SP-ViT) trains the aux head on dense labels
made by a teacher. This runs it end to end with the package's own commands,
on real data that is on this machine:

1. trains a teacher, a small Keras CNN (global average pooling, then one
   Dense layer: `keras_spvit.dense_teacher` applies that layer at every
   location of its 8 x 8 feature map), on the training split;
2. `keras-spvit label --teacher teacher.keras` writes its top-5 logits per
   location for every training image;
3. for each seed trains `SPViT_Tiny` twice with the same recipe, data and
   seed: with the image label given to every token (no teacher), and with
   `--token-labels` (the teacher's dense targets, cropped with each random
   crop, and its whole-crop distribution as the class target);
4. `keras-spvit evaluate` on the held-out split; prints mean +/- std and
   the per-seed differences, and writes `results.json`.

    KERAS_BACKEND=tensorflow python examples/token_labeling_demo.py \\
        --data digits --epochs 30 --seeds 0 1 2 --out runs/token_labels_digits
    KERAS_BACKEND=tensorflow python examples/token_labeling_demo.py \\
        --data fashion_mnist --split "train[:3000]" --epochs 15 --seeds 0 1 2 \\
        --out runs/token_labels_fashion

Runs already done (a `summary.json` and `eval.json` in their folder) are
reused: rerunning the command continues. Both arms use the `digits` recipe
with `token_label_weight=1.0` (the aux head on) and nothing else changed.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys


def run(command):
    print("$ keras-spvit " + " ".join(command), flush=True)
    subprocess.run([sys.executable, "-m", "keras_spvit.cli", *command], check=True,
                   stdout=subprocess.DEVNULL)


def train_teacher(data, split, test_split, epochs, path, seed=0):
    """A small CNN on the pipelines' images (normalised as the data source says)."""
    import keras

    from keras_spvit.cli.train import train_augment
    from keras_spvit.data.sources import source_dataset, source_info
    from keras_spvit.training import get_recipe

    keras.utils.set_random_seed(seed)
    classes = source_info(data)["num_classes"]
    augment = train_augment(get_recipe("digits"), seed)
    train, _ = source_dataset(data, split, image_size=32, batch_size=64, training=True,
                              augment=augment, seed=seed)
    test, _ = source_dataset(data, test_split, image_size=32, batch_size=256, training=False)

    def block(x, width, stride=1):
        x = keras.layers.Conv2D(width, 3, stride, padding="same", use_bias=False)(x)
        x = keras.layers.BatchNormalization()(x)
        return keras.layers.ReLU()(x)

    inputs = keras.Input((32, 32, 3))
    x = block(inputs, 32)
    x = block(x, 64, 2)
    x = block(x, 64)
    x = block(x, 128, 2)  # 8 x 8
    x = block(x, 128)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.2)(x)
    model = keras.Model(inputs, keras.layers.Dense(classes)(x), name="teacher_cnn")
    steps = int(train.cardinality())
    schedule = keras.optimizers.schedules.CosineDecay(2e-3, epochs * steps)
    model.compile(keras.optimizers.AdamW(schedule, weight_decay=0.05),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(train, epochs=epochs, verbose=0)
    accuracy = model.evaluate(test, verbose=0, return_dict=True)["accuracy"]
    model.save(path)
    return accuracy


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="digits")
    parser.add_argument("--split", default="train")
    parser.add_argument("--test-split", default="test")
    parser.add_argument("--val-split", default=None,
                        help="monitored during training (default: --test-split)")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--teacher-epochs", type=int, default=30)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--model", default="SPViT_Tiny")
    parser.add_argument("--jit", default="auto")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)

    teacher = os.path.join(args.out, "teacher.keras")
    results_path = os.path.join(args.out, "results.json")
    results = json.load(open(results_path)) if os.path.exists(results_path) else {}
    if not os.path.exists(teacher):
        results["teacher_accuracy"] = train_teacher(
            args.data, args.split, args.test_split, args.teacher_epochs, teacher)
    print(f"teacher (CNN) held-out accuracy: {100 * results['teacher_accuracy']:.2f}%")
    labels = os.path.join(args.out, "labels")
    run(["label", "--teacher", teacher, "--data", args.data, "--split", args.split,
         "--out", labels])

    common = ["--model", args.model, "--data", args.data, "--split", args.split,
              "--val-split", args.val_split or args.test_split, "--recipe", "digits",
              "--set", "token_label_weight=1.0", "--epochs", str(args.epochs),
              "--jit", args.jit]
    arms = {"image labels": [], "token labels": ["--token-labels", labels]}
    for seed in args.seeds:
        for arm, extra in arms.items():
            out = os.path.join(args.out, f"{arm.split()[0]}_seed{seed}")
            evaluation = os.path.join(out, "eval.json")
            if not os.path.exists(evaluation):
                if not os.path.exists(os.path.join(out, "summary.json")):
                    run(["train", *common, *extra, "--seed", str(seed), "--out", out])
                run(["evaluate", out, "--data", args.data, "--split", args.test_split,
                     "--json", evaluation])
            accuracy = json.load(open(evaluation))["top1"]
            results.setdefault(arm, {})[str(seed)] = accuracy
            print(f"  {arm:<12} seed {seed}: {100 * accuracy:.2f}%", flush=True)
            with open(results_path, "w") as f:
                json.dump(results, f, indent=2)

    print(f"\n{args.model} on {args.data} [{args.split}], held out on [{args.test_split}], "
          f"{args.epochs} epochs, seeds {args.seeds}:")
    for arm in arms:
        values = [100 * results[arm][str(s)] for s in args.seeds]
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        print(f"  {arm:<12} {statistics.mean(values):6.2f} +/- {spread:.2f}%")
    differences = [100 * (results["token labels"][str(s)] - results["image labels"][str(s)])
                   for s in args.seeds]
    print("  token - image labels, per seed: "
          + ", ".join(f"{d:+.2f}" for d in differences) + " points")
    print(f"Results: {results_path}")


if __name__ == "__main__":
    main()
