"""`keras-spvit evaluate`: accuracy, loss and images/s of a model on a split."""

import os
import time


def add_parser(subparsers):
    from keras_spvit.cli.common import (
        add_data_arguments,
        add_model_argument,
        add_preprocessing_arguments,
        add_run_options,
    )

    parser = subparsers.add_parser(
        "evaluate", help="top-1 / top-5 accuracy, loss and images/s on a data split",
        description="Evaluate a model on a data split with the model's own preprocessing: "
        "a run directory's recorded one, else the model's keras-hub preprocessor (a preset, "
        "an official checkpoint's variant), else the data source's defaults. --crop-pct, "
        "--mean and --std override it; the output says which one was used.",
    )
    add_model_argument(parser, quantize=True)
    add_data_arguments(parser, split_default="test")
    add_preprocessing_arguments(parser)
    parser.add_argument("--json", default=None, help="also write the results to this file")
    add_run_options(parser)
    parser.set_defaults(run=run)
    return parser


def evaluate(model, dataset):
    """Top-1 / top-5 accuracy, mean cross-entropy and images/s over `dataset`.

    The first batch (tracing) is left out of the images/s.
    """
    import numpy as np
    from keras import ops

    from keras_spvit.cli.common import logits_of

    correct1 = correct5 = seen = timed = 0
    loss_sum = seconds = 0.0
    for step, (images, labels) in enumerate(dataset):
        start = time.perf_counter()
        # The images are preprocessed already: call the network, not a keras-hub
        # task's `predict_on_batch` (it would run the task's preprocessor again).
        logits = ops.convert_to_numpy(logits_of(model(images, training=False)))
        if step:
            seconds += time.perf_counter() - start
            timed += len(logits)
        logits = logits.astype("float64")
        labels = np.asarray(labels)
        if labels.ndim == 2:
            labels = labels.argmax(-1)
        top = np.argsort(-logits, axis=-1)[:, :5]
        correct1 += int((top[:, 0] == labels).sum())
        correct5 += int((top == labels[:, None]).any(-1).sum())
        shifted = logits - logits.max(-1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
        loss_sum += float(-log_probs[np.arange(len(labels)), labels].sum())
        seen += len(labels)
    if not seen:
        from keras_spvit.cli.common import UsageError

        raise UsageError("the evaluation data is empty")
    return {
        "examples": seen,
        "top1": correct1 / seen,
        "top5": correct5 / seen,
        "loss": loss_sum / seen,
        "images_per_second": timed / seconds if seconds else None,
    }


def run(args):
    from keras_spvit.cli.common import (
        UsageError,
        load_model,
        model_classes,
        resolve_model,
        resolve_preprocessing,
        write_json,
    )
    from keras_spvit.data.sources import SourceError, check_source, source_dataset

    kind, _ = resolve_model(args.model, args.weights)
    try:
        info = check_source(args.data, args.split, args.data_dir)
    except SourceError as error:
        raise UsageError(str(error)) from None
    if args.json and os.path.isdir(args.json):
        raise UsageError(f"--json {args.json!r} is a folder. Expected a file name.")
    model, run_dir = load_model(args, kind)
    classes = model_classes(model)
    if info.get("num_classes") and info["num_classes"] > classes:
        raise UsageError(
            f"--data {args.data!r} has {info['num_classes']} classes; the model predicts "
            f"{classes}. Expected a model trained on this data."
        )
    preprocessing = resolve_preprocessing(args, model, run_dir, data=args.data)
    print(preprocessing.describe())
    dataset, _ = source_dataset(
        args.data, args.split, image_size=preprocessing.pipeline_size(),
        batch_size=args.batch_size, training=False, data_dir=args.data_dir,
        **preprocessing.options(),
    )
    results = evaluate(model, dataset)
    ips = results["images_per_second"]
    print(
        f"{model.name} on {args.data} [{args.split}], {results['examples']} images:\n"
        f"  top-1 {100 * results['top1']:.2f}%   top-5 {100 * results['top5']:.2f}%   "
        f"loss {results['loss']:.4f}   "
        f"{'n/a' if ips is None else f'{ips:.1f}'} images/s"
    )
    if args.json:
        write_json(args.json, {**results, "preprocessing": preprocessing.to_dict(),
                               "quantize": args.quantize})
    return 0
