"""`keras-spvit export`: a serving artifact taking raw uint8 images.

The artifact holds the model's evaluation preprocessing (resize, center crop,
normalisation: the run's recorded one, the model's keras-hub preprocessor, or
the flags) and returns class probabilities, the top-k classes and their names
when known. SavedModel, LiteRT (`.tflite`) or ONNX (`.onnx`, needs
`pip install "keras_spvit[export]"`). Runs under the TensorFlow backend.
"""



def add_parser(subparsers):
    from keras_spvit.cli.common import (
        add_model_argument,
        add_preprocessing_arguments,
        add_run_options,
        positive_int,
    )
    from keras_spvit.serving import FORMATS, QUANTIZE_ROUTES

    parser = subparsers.add_parser(
        "export", help="a serving artifact (SavedModel, LiteRT, ONNX) taking raw images",
        description="Write MODEL with its preprocessing as a serving artifact: uint8 images of "
        "any size in, class probabilities, top-k classes and names out.",
    )
    routes = " | ".join(f"{name}: {route}" for name, route in QUANTIZE_ROUTES.items())
    add_model_argument(parser, quantize=True, quantize_help="write an int8 artifact, "
                       f"quantized by the format's own route ({routes}); the model you "
                       "pass stays float")
    parser.add_argument("out", help="output: a directory (saved_model), a .tflite file "
                        "(litert) or an .onnx file (onnx)")
    parser.add_argument("--format", choices=FORMATS, default="saved_model")
    parser.add_argument("--top-k", type=positive_int, default=5)
    add_preprocessing_arguments(parser)
    parser.add_argument("--class-names", default=None,
                        help="JSON list of class names (default: class_names.json of the run)")
    add_run_options(parser)
    parser.set_defaults(run=run)
    return parser


def run(args):
    import keras

    from keras_spvit.cli.common import (
        UsageError,
        load_model,
        model_class_names,
        native_logs_held,
        read_class_names,
        resolve_model,
        resolve_preprocessing,
    )
    from keras_spvit.serving import QUANTIZE_ROUTES, export

    if keras.backend.backend() != "tensorflow":
        raise UsageError(
            f"export runs under the TensorFlow backend; KERAS_BACKEND is "
            f"{keras.backend.backend()!r}. Run it with KERAS_BACKEND=tensorflow (the weights "
            "are the same on every backend)."
        )
    kind, _ = resolve_model(args.model, args.weights)
    names = read_class_names(args.class_names) if args.class_names else None
    model, run_dir = load_model(args, kind, quantize=False)  # export quantizes per format
    names = model_class_names(names, args, model, run_dir)
    preprocessing = resolve_preprocessing(args, model, run_dir)
    try:
        # The LiteRT / ONNX converters' C++ code logs to stderr (shown on failure).
        with native_logs_held(keep=getattr(args, "verbose_all", False) or args.verbose):
            export(
                model, args.out, args.format,
                image_size=tuple(preprocessing.image_size), crop_pct=preprocessing.crop_pct,
                mean=preprocessing.mean, std=preprocessing.std,
                interpolation=preprocessing.interpolation, class_names=names,
                top_k=args.top_k, quantize=args.quantize,
            )
    except ValueError as error:
        raise UsageError(str(error)) from None
    print(preprocessing.describe())
    if args.quantize:
        print(f"quantized: {args.quantize} ({QUANTIZE_ROUTES[args.format]})")
    print(f"Wrote {args.out} ({args.format}): serve(images: uint8 (batch, height, width, "
          f"{model.input_shape[-1]})) -> probabilities, top_classes, top_probabilities"
          + (", top_names" if names else ""))
    return 0
