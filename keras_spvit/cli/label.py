"""`keras-spvit label`: dense token labels from any Keras teacher.

The teacher's classifier runs at every location of its last feature map
over every image of `--data`, un-augmented, and the top-k logits per
location are written to a sharded labels directory (`--out`), which
`keras-spvit train --token-labels` reads. Rerunning with the same `--out`
continues a killed run. The work is `keras_spvit.make_token_labels`.
"""

import argparse
import os


def add_parser(subparsers):
    from keras_spvit.cli.common import (
        add_data_arguments,
        add_preprocessing_arguments,
        add_run_options,
        positive_int,
    )

    parser = subparsers.add_parser(
        "label", help="make dense token labels with a teacher classifier",
        description="Apply a teacher's classifier at every location of its last feature map "
        "(the token-labeling trick) over every image of --data, un-augmented (evaluation "
        "transform, crop_pct 1.0 unless given, the teacher's own normalisation), and store "
        "the top-k logits per location in sharded files under --out. Rerun with the same "
        "--out to continue a killed run. --released ROOT converts the released per-image "
        ".pt labels instead.",
    )
    parser.add_argument(
        "--teacher", default=None,
        help="a keras-hub preset or handle (any image classifier with a spatial feature "
        "map), a keras_spvit preset, a builder name with --weights, a run directory or a "
        ".keras file")
    parser.add_argument("--weights", default=None,
                        help="weights for a builder name: preset, folder, .weights.h5, checkpoint")
    add_data_arguments(parser, split_default="train")
    parser.add_argument("--out", required=True, help="labels directory to write (or continue)")
    add_preprocessing_arguments(parser)
    parser._option_string_actions["--crop-pct"].help = (
        "center-crop share in (0, 1] (default: 1.0, the whole image, as the release)")
    parser._option_string_actions["--image-size"].help = (
        "teacher input side in pixels (default: the teacher's own)")
    parser.add_argument("--top-k", type=positive_int, default=5,
                        help="logits kept per location (default: 5, as the release)")
    parser.add_argument("--released", default=None, metavar="ROOT",
                        help="instead of a teacher: convert the released LV-ViT / SP-ViT labels "
                        "(ROOT/<class>/<stem>.pt, read without torch)")
    parser.add_argument("--num-classes", type=positive_int, default=1000,
                        help="class count of --released labels (default: 1000, ImageNet)")
    parser.add_argument("--shard-size", type=positive_int, default=4096,
                        help="images per shard file (default: 4096)")
    add_run_options(parser)
    parser.set_defaults(run=run)
    return parser


def load_teacher(teacher, weights=None):
    """The teacher named on the command line, its description and its run directory.

    Args:
        teacher: str. A run directory, a .keras file, a builder name (with
            `weights`), or a keras-hub / keras_spvit preset name, folder or handle.
        weights: optional weights for a builder name.

    Returns:
        `(model, description, run_dir)`; a `UsageError` names what is wrong.

    Example:

    >>> model, description, run_dir = load_teacher("spvit_tiny_digits")
    """
    from keras_spvit.cli.common import (
        UsageError,
        builders,
        load_model,
        resolve_model,
        user_errors,
    )

    local = (os.path.isdir(teacher) or teacher.endswith(".keras")
             or teacher in builders())
    if local:
        kind, _ = resolve_model(teacher, weights)
        model, run_dir = load_model(
            argparse.Namespace(model=teacher, weights=weights, num_classes=None), kind)
        name = os.path.abspath(teacher) if kind in ("run", "file") else teacher
        description = name + (f" --weights {weights}" if weights else "")
        return model, description, run_dir
    if weights:
        raise UsageError(
            f"--weights is for a builder name; --teacher {teacher!r} is not one. Expected a "
            "builder name with --weights, or a preset alone.")
    if os.sep in teacher and not teacher.startswith(("hf://", "kaggle://", "gs://")) \
            and not os.path.exists(teacher):
        raise UsageError(f"--teacher {teacher!r}: no such run directory, file or preset folder.")
    import keras_hub

    with user_errors(f"--teacher {teacher!r}", (ValueError, OSError, TypeError, KeyError)):
        model = keras_hub.models.ImageClassifier.from_preset(teacher)
    return model, teacher, None


def _check_out(out):
    from keras_spvit.cli.common import UsageError, user_errors
    from keras_spvit.data.token_labels import INDEX, read_index

    if os.path.isfile(out):
        raise UsageError(f"--out {out!r} is a file. Expected a labels folder.")
    if os.path.isdir(out) and os.listdir(out):
        if not os.path.exists(os.path.join(out, INDEX)):
            raise UsageError(
                f"--out {out!r} is a folder that holds no token labels. Expected a new "
                "folder or one written by `keras-spvit label`.")
        with user_errors(f"--out {out!r}"):
            read_index(out)


def _convert_released(args):
    from keras_spvit.cli.common import UsageError, user_errors
    from keras_spvit.data.token_labels import convert_released_labels

    if not os.path.isdir(args.released):
        raise UsageError(f"--released {args.released!r}: no such folder. Expected the released "
                         "labels' root (ROOT/<class>/<stem>.pt).")
    size = (args.image_size, args.image_size) if args.image_size else None
    with user_errors(f"--released {args.released!r}"):
        written = convert_released_labels(
            args.released, args.out, num_classes=args.num_classes, image_size=size,
            crop_pct=1.0 if args.crop_pct is None else args.crop_pct,
            shard_size=args.shard_size)
    print(f"{written} released labels converted into {args.out}")
    return 0


def run(args):
    from keras_spvit.cli.common import (
        UsageError,
        read_run_preprocessing,
        user_errors,
    )
    from keras_spvit.data.sources import SourceError, check_source
    from keras_spvit.token_labeling import make_token_labels, teacher_preprocessing

    if (args.teacher is None) == (args.released is None):
        raise UsageError("expected exactly one of --teacher T (make labels) and --released ROOT "
                         "(convert the released ones).")
    _check_out(args.out)
    if args.released is not None:
        return _convert_released(args)
    try:
        check_source(args.data, args.split, args.data_dir)
    except SourceError as error:
        raise UsageError(str(error)) from None
    model, description, run_dir = load_teacher(args.teacher, args.weights)

    recorded = read_run_preprocessing(run_dir) if run_dir else None
    options = dict(image_size=args.image_size, crop_pct=args.crop_pct, mean=args.mean,
                   std=args.std, recorded=recorded)
    try:
        prep = teacher_preprocessing(model, args.data, **options)
    except ValueError as error:  # its message names the value (image size, crop_pct)
        raise UsageError(str(error)) from None
    print(
        f"preprocessing: {prep['image_size'][0]}x{prep['image_size'][1]}, crop_pct "
        f"{prep['crop_pct']:g}, mean ({', '.join(f'{v:g}' for v in prep['mean'])}), std "
        f"({', '.join(f'{v:g}' for v in prep['std'])}), {prep['interpolation']}"
    )
    with user_errors(f"--out {args.out!r}"):
        result = make_token_labels(
            model, args.data, args.out, split=args.split, top_k=args.top_k,
            batch_size=args.batch_size, data_dir=args.data_dir, teacher_name=description,
            shard_size=args.shard_size, **options,
        )
    ips = result["images_per_second"]
    grid = result["grid"]
    print(
        f"{result['written']} images labelled ({result['total']} in {args.out}), grid "
        f"{grid[0]}x{grid[1]}, top-{args.top_k}, "
        f"{'n/a' if ips is None else f'{ips:.1f}'} images/s"
    )
    return 0
