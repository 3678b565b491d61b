"""Pieces the subcommands share: model builders, data, precision."""

import ast
import inspect
import json
import os

BUILDER_NAMES = None


def builders():
    """`{name: function}` of every public model builder of `keras_spvit`."""
    import keras_spvit

    global BUILDER_NAMES
    if BUILDER_NAMES is None:
        BUILDER_NAMES = {
            name: getattr(keras_spvit, name)
            for name in keras_spvit.__all__
            if inspect.isfunction(getattr(keras_spvit, name))
            and "num_classes" in inspect.signature(getattr(keras_spvit, name)).parameters
        }
    return BUILDER_NAMES


def get_builder(name):
    found = builders()
    if name not in found:
        raise SystemExit(
            f"error: unknown model {name!r}. Expected a builder: {', '.join(sorted(found))}"
        )
    return found[name]


def parse_json_dict(text, flag):
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise SystemExit(f"error: {flag} is not valid JSON ({error}). Received: {text!r}")
    if not isinstance(value, dict):
        raise SystemExit(f"error: {flag} must be a JSON object. Received: {text!r}")
    return value


def parse_overrides(pairs):
    """`["epochs=3", "mixup_alpha=0.8"]` -> `{"epochs": 3, "mixup_alpha": 0.8}`."""
    out = {}
    for pair in pairs or ():
        if "=" not in pair:
            raise SystemExit(f"error: --set expects KEY=VALUE. Received: {pair!r}")
        key, value = pair.split("=", 1)
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out




def add_data_arguments(parser, split_default):
    parser.add_argument("--data", default="digits",
                        help="digits | tfds:NAME | folder:PATH | npz:PATH (default: digits)")
    parser.add_argument("--split", default=split_default,
                        help=f"split of --data (default: {split_default})")
    parser.add_argument("--data-dir", default=None, help="TensorFlow Datasets data_dir")
    parser.add_argument("--image-size", type=int, default=None,
                        help="input side in pixels (default: the model's)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--crop-pct", type=float, default=None,
                        help="eval center-crop share (default 1.0 for digits, else 0.875)")
    parser.add_argument("--mean", type=float, nargs=3, default=None,
                        help="normalisation mean (default 0.5 for digits, else ImageNet)")
    parser.add_argument("--std", type=float, nargs=3, default=None)


def pipeline_options(args):
    options = {}
    if args.crop_pct is not None:
        options["crop_pct"] = args.crop_pct
    if args.mean is not None:
        options["mean"] = tuple(args.mean)
    if args.std is not None:
        options["std"] = tuple(args.std)
    return options


def write_json(path, value):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(value, f, indent=2, default=str)


def add_model_argument(parser):
    parser.add_argument(
        "model",
        help="a .keras file, a run directory holding model.keras, or a builder name "
        "(with --weights)",
    )
    parser.add_argument("--weights", default=None,
                        help="weights for a builder name: preset, folder, .weights.h5, checkpoint")
    parser.add_argument("--num-classes", type=int, default=None)


def load_model(args):
    """The model named by `args.model` (file, run directory or builder) and its
    run directory (or `None`)."""

    import keras_spvit  # noqa: F401  (registers the serialisable classes)

    path = args.model
    if os.path.isdir(path) and os.path.exists(os.path.join(path, "model.keras")):
        return _load_keras_file(os.path.join(path, "model.keras")), path
    if path.endswith(".keras"):
        if not os.path.exists(path):
            raise SystemExit(f"error: no such model file: {path!r}")
        return _load_keras_file(path), os.path.dirname(path)
    builder = get_builder(path)
    kwargs = {}
    if args.weights:
        kwargs["weights"] = args.weights
    if args.num_classes:
        kwargs["num_classes"] = args.num_classes
    return builder(**kwargs), None


def _load_keras_file(path):
    import warnings

    import keras

    with warnings.catch_warnings():
        # The training optimizer's state is in the file; inference does not need it.
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        return keras.saving.load_model(path, compile=False)


def logits_of(outputs):
    return outputs["logits"] if isinstance(outputs, dict) else outputs


def class_names_near(run_dir):
    if run_dir is None:
        return None
    path = os.path.join(run_dir, "class_names.json")
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    return None
