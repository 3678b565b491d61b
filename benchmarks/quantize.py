"""int8 quantization: accuracy and inference speed, float32 beside int8 in the same run.

Accuracy: the built-in `spvit_tiny_digits` preset on the held-out digits
(359 images), before and after Keras' `model.quantize("int8")`.
Speed: `predict_on_batch` images/s of a classifier (default SPViT_S at 224 px,
random weights: the speed does not depend on them) in float32 and int8,
interleaved repeats, medians and their ratio.

    KERAS_BACKEND=tensorflow python benchmarks/quantize.py [--model SPViT_S] [--batch 8]
"""

import argparse
import json
import statistics
import time

import keras
import numpy as np

import keras_spvit
from keras_spvit.data import digits_split


def digits_accuracy():
    images, labels = digits_split("test")
    results = {}
    for mode in ("float32", "int8"):
        model = keras_spvit.SPViTImageClassifier.from_preset("spvit_tiny_digits")
        if mode == "int8":
            model.quantize("int8")
        logits = keras.ops.convert_to_numpy(model.predict(images, batch_size=128, verbose=0))
        results[mode] = float(np.mean(logits.argmax(-1) == labels))
    return results


def speed(builder, batch, repeats):
    models = {}
    for mode in ("float32", "int8"):
        model = getattr(keras_spvit, builder)(num_classes=1000)
        if mode == "int8":
            model.quantize("int8")
        models[mode] = model
    shape = (batch,) + tuple(models["float32"].input_shape[1:])
    x = np.random.default_rng(0).normal(size=shape).astype("float32")
    timings = {mode: [] for mode in models}
    for mode, model in models.items():  # warm-up (tracing)
        model.predict_on_batch(x)
    for _ in range(repeats):
        for mode, model in models.items():
            start = time.perf_counter()
            model.predict_on_batch(x)
            timings[mode].append(batch / (time.perf_counter() - start))
    medians = {mode: statistics.median(values) for mode, values in timings.items()}
    return {"images_per_second": medians, "int8_over_float32": medians["int8"] / medians["float32"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="SPViT_S")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    report = {"backend": keras.backend.backend(), "digits_accuracy": digits_accuracy(),
              args.model: speed(args.model, args.batch, args.repeats)}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
