"""How the built-in `spvit_tiny_digits` preset is made.

Trains `SPViT_Tiny` on the bundled digits with the demo's recipe (or takes
a trained `model.keras`), attaches the digits preprocessing (bicubic resize
of the 8x8 images to 32 px, mean/std 0.5), measures the held-out accuracy
through that preprocessing on raw uint8 images, and writes the preset
folder with the accuracy in `metadata.json`:

    KERAS_BACKEND=tensorflow python examples/build_digits_preset.py \\
        --out keras_spvit/presets/spvit_tiny_digits --epochs 25 --seed 0
"""

import argparse
import json
import os
import shutil

import keras
import numpy as np

import keras_spvit
from keras_spvit.data import digits_split
from keras_spvit.data.sources import DIGITS_MEAN, DIGITS_STD
from keras_spvit.models.image_classifier_preprocessor import default_preprocessor


def digits_accuracy(classifier, split="test"):
    """Top-1 of a classifier with a preprocessor on raw uint8 digits (3 channels)."""
    images, labels = digits_split(split)
    logits = classifier.predict(images, batch_size=512, verbose=0)
    logits = logits["logits"] if isinstance(logits, dict) else logits
    return float(np.mean(np.argmax(keras.ops.convert_to_numpy(logits), -1) == labels))


def with_digits_preprocessing(model):
    preprocessor = default_preprocessor(model, crop_pct=1.0, mean=DIGITS_MEAN, std=DIGITS_STD)
    classifier = type(model)(model.backbone, model.num_classes, preprocessor=preprocessor,
                             name="spvit_tiny_digits")
    classifier.head.set_weights(model.head.get_weights())
    return classifier


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="preset folder to write")
    parser.add_argument("--model", default=None, help="a trained model.keras (else train)")
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    if args.model:
        model = keras.saving.load_model(args.model, compile=False)
        trained = {"source": os.path.basename(args.model)}
    else:
        from keras_spvit.cli.train import train_augment
        from keras_spvit.data.sources import source_dataset
        from keras_spvit.training import fit, get_recipe

        recipe = get_recipe("digits", epochs=args.epochs)
        keras.utils.set_random_seed(args.seed)
        model = keras_spvit.SPViT_Tiny(num_classes=10)
        train, _ = source_dataset("digits", "train", image_size=32, batch_size=64,
                                  training=True, augment=train_augment(recipe, args.seed),
                                  seed=args.seed)
        run_dir = args.out + "_run"
        shutil.rmtree(run_dir, ignore_errors=True)
        fit(model, train, None, recipe=recipe, batch_size=64, out_dir=run_dir,
            epochs=args.epochs, jit_compile=keras.backend.backend() != "torch", verbose=2)
        trained = {"recipe": "digits", "epochs": args.epochs, "seed": args.seed}
    classifier = with_digits_preprocessing(model)
    accuracy = digits_accuracy(classifier)
    shutil.rmtree(args.out, ignore_errors=True)
    classifier.save_to_preset(args.out)
    metadata_path = os.path.join(args.out, "metadata.json")
    with open(metadata_path) as f:
        metadata = json.load(f)
    metadata.update({
        "description": "SPViT_Tiny trained by keras_spvit on the bundled UCI digits "
                       "(CC BY 4.0), 32 px, 10 classes.",
        "held_out_accuracy": accuracy,
        "held_out_split": "digits test split (359 images, seed 0, 20%)",
        "backend": keras.backend.backend(),
        "training": trained,
    })
    with open(metadata_path, "w") as f:
        json.dump(metadata, f, indent=2)
    print(f"Wrote {args.out}: held-out accuracy {100 * accuracy:.2f}%")
    return accuracy


if __name__ == "__main__":
    main()
