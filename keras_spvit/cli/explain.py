"""`keras-spvit explain`: one PNG per image of what the model looks at.

Each PNG shows the model's input (preprocessed as for `predict`), the
attention rollout across blocks and the last block's class-token attention
per head over it, the spatial priors (models with spatial-prior blocks) and
the top-k prediction. The arrays come from `keras_spvit.explain`.
"""

import os


def add_parser(subparsers):
    from keras_spvit.cli.common import (
        add_model_argument,
        add_preprocessing_arguments,
        add_run_options,
        positive_int,
    )

    parser = subparsers.add_parser(
        "explain", help="PNGs of attention overlays, priors and top-k for image files",
        description="Writes DIR/<image name>.png per image: the model's input with the "
        "attention rollout and the last block's class-token attention per head over it, the "
        "spatial priors (spatial-prior models) and the top-k prediction.",
    )
    add_model_argument(parser)
    parser.add_argument("images", nargs="+", help="image files (jpg, png, bmp, gif)")
    parser.add_argument("--out", required=True, help="folder for the PNGs (created)")
    parser.add_argument("--top-k", type=positive_int, default=3)
    add_preprocessing_arguments(parser)
    parser.add_argument("--class-names", default=None,
                        help="JSON list of class names (default: class_names.json of the run)")
    add_run_options(parser)
    parser.set_defaults(run=run)
    return parser


def output_paths(images, out):
    """`out/<image stem>.png` per image; repeated stems get `-2`, `-3`, ...

    Example:

    >>> output_paths(["a/x.jpg", "b/x.png"], "out")
    ['out/x.png', 'out/x-2.png']
    """
    paths, seen = [], {}
    for image in images:
        stem = os.path.splitext(os.path.basename(image))[0] or "image"
        seen[stem] = seen.get(stem, 0) + 1
        suffix = "" if seen[stem] == 1 else f"-{seen[stem]}"
        paths.append(os.path.join(out, f"{stem}{suffix}.png"))
    return paths


def run(args):
    import numpy as np

    from keras_spvit.inspection import explain, plot_explanation
    from keras_spvit.cli.common import (
        UsageError,
        load_model,
        model_class_names,
        read_class_names,
        resolve_model,
        resolve_preprocessing,
    )
    from keras_spvit.cli.predict import preprocessed_batches, read_images

    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise UsageError(f"--out {args.out!r} is a file. Expected a folder for the PNGs.")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UsageError("explain needs matplotlib: pip install 'keras-spvit[plot]'") from None
    kind, _ = resolve_model(args.model, args.weights)
    names = read_class_names(args.class_names) if args.class_names else None
    images = read_images(args.images)
    model, run_dir = load_model(args, kind)
    if getattr(model, "backbone", None) is None:
        raise UsageError(f"{args.model!r} is not an image classifier: explain needs one.")
    names = model_class_names(names, args, model, run_dir)
    preprocessing = resolve_preprocessing(args, model, run_dir)
    print(preprocessing.describe())
    os.makedirs(args.out, exist_ok=True)
    paths = iter(zip(args.images, output_paths(args.images, args.out)))
    for batch in preprocessed_batches(images, preprocessing, 8):
        result = explain(model, np.asarray(batch), top_k=args.top_k)
        for index in range(result["rollout"].shape[0]):
            image, path = next(paths)
            plot_explanation(result, index, path, title=os.path.basename(image),
                             class_names=names)
            print(f"{image} -> {path}")
    return 0
