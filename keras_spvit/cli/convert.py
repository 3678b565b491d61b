"""`keras-spvit convert`: an official checkpoint to a checked keras-hub preset folder.

    keras-spvit convert spvit_s_224.pth spvit_s_imagenet --variant spvit_s \
        --reference spvit_s_224_logits.npz
    keras-spvit convert lvvit_m_448.pth lvvit_m_384 --variant lvvit_m --image-size 384

The folder is always reloaded and compared with the converted model (round
trip). Only `--reference` (the official code's logits on the same checkpoint)
checks the conversion itself; without it the report says so.

No torch is needed. The logic is `keras_spvit.zoo.convert.convert_checkpoint`.
"""

import argparse
import json
import sys


def _image_size(text):
    try:
        sides = [int(side) for side in text.lower().split("x")]
    except ValueError:
        sides = []
    if len(sides) not in (1, 2) or min(sides) <= 0:
        raise argparse.ArgumentTypeError(f"expected SIZE or HEIGHTxWIDTH, got {text!r}")
    return sides[0] if len(sides) == 1 else tuple(sides)


def _override(text):
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value  # a bare string, e.g. stem=4_2


def add_parser(subparsers):
    from keras_spvit.cli.common import add_run_options, fraction, positive_int

    parser = subparsers.add_parser(
        "convert",
        help="convert an official checkpoint to a keras-hub preset folder",
        description=(
            "Convert an official PyTorch checkpoint (or a .weights.h5 file or preset) into a "
            "keras-hub preset folder with its evaluation preprocessing, then reload the folder "
            "and check it reproduces the converted model's logits on a random input (round "
            "trip). With --reference, also check it reproduces the official code's logits on "
            "the same checkpoint: only that verifies the conversion. Publish the "
            'folder with keras_hub.upload_preset("hf://user/name", OUT_DIR).'
        ),
    )
    parser.add_argument("checkpoint", help="official checkpoint (.pth, .pth.tar), .weights.h5 or preset")
    parser.add_argument("out_dir", help="preset folder to write")
    parser.add_argument("--variant", required=True, metavar="VARIANT",
                        help="architecture of the checkpoint, a key of the variant tables "
                        "(keras_spvit.zoo.families.variant_names()), e.g. spvit_s, lvvit_m, "
                        "refined_vit_s, psvit_2d_tiny")
    parser.add_argument("--num-classes", type=positive_int, default=None,
                        help="classes of the heads (default: the checkpoint's; another count "
                             "keeps the backbone and starts fresh heads)")
    parser.add_argument("--image-size", type=_image_size, default=None, metavar="SIZE",
                        help="input size, SIZE or HEIGHTxWIDTH (default: the checkpoint's; "
                             "another one resamples the position embedding)")
    parser.add_argument("--crop-pct", type=fraction, default=None,
                        help="center-crop fraction of the preprocessing (default: the variant's)")
    parser.add_argument("--prefer-ema", action="store_true",
                        help="convert the checkpoint's EMA weights when it has them")
    parser.add_argument("--set", dest="overrides", type=_override, action="append", default=[],
                        metavar="KEY=VALUE",
                        help="override an architecture argument of the variant (JSON value), "
                             "e.g. --set stem=4_2 --set patch_size=16")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing preset")
    parser.add_argument("--seed", type=int, default=0, help="seed of the verification input")
    parser.add_argument("--tolerance", type=float, default=None,
                        help="largest round-trip logit difference accepted (default: "
                        "keras_spvit.zoo.convert.DEFAULT_TOLERANCE, 1e-5)")
    parser.add_argument("--reference", default=None, metavar="NPZ",
                        help="the official PyTorch model's eval output on this checkpoint: an "
                        ".npz with 'input' (N,3,H,W, normalized) and 'logits' (N,classes)")
    parser.add_argument("--reference-tolerance", type=float, default=None,
                        help="largest difference from the reference logits accepted (default: "
                        "keras_spvit.zoo.convert.DEFAULT_REFERENCE_TOLERANCE, 1e-4)")
    add_run_options(parser)
    parser.set_defaults(run=run)
    return parser


def run(args):
    import os

    from keras_spvit.cli.common import UsageError, one_line
    from keras_spvit.models.presets import is_registered
    from keras_spvit.zoo.convert import (
        DEFAULT_REFERENCE_TOLERANCE,
        DEFAULT_TOLERANCE,
        VerificationError,
        convert_checkpoint,
    )
    from keras_spvit.zoo.families import variant_names

    if args.variant not in variant_names():
        raise UsageError(
            f"--variant: unknown variant {args.variant!r}. Expected one of "
            f"{', '.join(variant_names())}."
        )
    checkpoint = args.checkpoint
    if not (os.path.exists(checkpoint) or is_registered(checkpoint) or "://" in checkpoint):
        raise UsageError(
            f"no such checkpoint: {checkpoint!r}. Expected an official checkpoint file "
            "(.pth, .pth.tar), a .weights.h5 file or a preset."
        )
    if args.reference is not None and not os.path.isfile(args.reference):
        raise UsageError(
            f"--reference: no such file: {args.reference!r}. Expected an .npz with 'input' "
            "and 'logits'."
        )
    if os.path.isfile(args.out_dir):
        raise UsageError(f"out_dir {args.out_dir!r} is a file. Expected a folder to write.")
    try:
        report = convert_checkpoint(
            checkpoint,
            args.out_dir,
            args.variant,
            num_classes=args.num_classes,
            image_size=args.image_size,
            crop_pct=args.crop_pct,
            prefer_ema=args.prefer_ema,
            overrides=dict(args.overrides),
            overwrite=args.overwrite,
            seed=args.seed,
            tolerance=DEFAULT_TOLERANCE if args.tolerance is None else args.tolerance,
            reference=args.reference,
            reference_tolerance=(DEFAULT_REFERENCE_TOLERANCE if args.reference_tolerance is None
                                 else args.reference_tolerance),
        )
    except VerificationError as error:
        print(f"keras-spvit convert: verification failed:\n{error}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as error:
        raise UsageError(f"cannot convert {checkpoint!r}: {one_line(error)}") from error
    print(report)
    return 0
