"""Pieces the subcommands share: argument checks, model loading, preprocessing.

Importing this module imports nothing heavy: `keras-spvit --help` must not
start TensorFlow. Everything that needs Keras imports it inside a function.

A subcommand checks its arguments and data first and raises `UsageError`
for a user's mistake; `keras_spvit.cli.main` prints it as one line
`error: ...` and exits with code 2. Only then does it build or write
anything.
"""

import argparse
import ast
import contextlib
import dataclasses
import json
import math
import os
import sys
import tempfile


class UsageError(ValueError):
    """A mistake in the command line or its data: printed as one line, exit code 2.

    Args:
        message: str. Names the bad value and what was expected.

    Example:

    >>> raise UsageError("--batch-size: expected a positive integer. Received: '0'")
    """


@contextlib.contextmanager
def user_errors(what, kinds=(ValueError, OSError)):
    """Turns the `kinds` of exceptions raised inside into `UsageError`s about `what`.

    For calls whose failures are caused by what the user passed (a file, a
    name): the library's own message, which names the value, follows `what`.

    Args:
        what: str. The flag or value at fault, e.g. `"--weights '/nope'"`.
        kinds: exception classes that mean a user error here.

    Example:

    >>> with user_errors("--recipe 'nope'"):
    ...     get_recipe("nope")
    Traceback (most recent call last):
    UsageError: --recipe 'nope': Unknown recipe 'nope'. Expected one of [...]
    """
    try:
        yield
    except UsageError:
        raise
    except kinds as error:
        raise UsageError(f"{what}: {one_line(error)}") from error


@contextlib.contextmanager
def native_logs_held(keep=False):
    """Holds what native code writes to file descriptor 2 inside the block.

    TensorFlow's and the LiteRT converter's C++ libraries log to stderr below
    Python (TF_CPP_MIN_LOG_LEVEL does not reach all of them). The held text is
    dropped when the block succeeds and replayed when it raises, so a failure
    still shows everything.

    Args:
        keep: bool. True (the user's `--verbose`) leaves stderr alone.

    Example:

    >>> with native_logs_held():
    ...     import tensorflow
    """
    if keep:
        yield
        return
    with tempfile.TemporaryFile() as held:
        try:
            with _stderr_to(held):
                yield
        except BaseException:
            held.seek(0)
            sys.stderr.write(held.read().decode(errors="replace"))
            raise


@contextlib.contextmanager
def _stderr_to(file):
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no file descriptor 2 (an embedded interpreter)
        yield
        return
    os.dup2(file.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def one_line(error):
    """An exception's message on one line (`FileNotFoundError` strerror included).

    Example:

    >>> one_line(ValueError("a\\n  b"))
    'a; b'
    """
    text = str(error)
    if isinstance(error, OSError) and error.filename and error.strerror:
        text = f"{error.strerror}: {error.filename!r}"
    parts = [part.strip() for part in text.splitlines() if part.strip()]
    return "; ".join(parts) or type(error).__name__


# === argparse value types (their errors name the flag and the value) ===


def positive_int(text):
    """argparse type: an integer > 0.

    Example:

    >>> parser.add_argument("--batch-size", type=positive_int)
    """
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer. Received: {text!r}")
    return value


def _number_type(name, accepts, expected, doc):
    """An argparse type parsing a float that `accepts`, else saying `expected`."""

    def parse(text):
        try:
            value = float(text)
        except ValueError:
            value = math.nan  # fails every check below
        if not accepts(value):
            raise argparse.ArgumentTypeError(f"expected {expected}. Received: {text!r}")
        return value

    parse.__name__ = parse.__qualname__ = name
    parse.__doc__ = doc
    return parse


fraction = _number_type(
    "fraction", lambda v: 0.0 < v <= 1.0, "a number in (0, 1]",
    "argparse type: a float in (0, 1] (a center-crop share), e.g. `type=fraction`.",
)
unit_float = _number_type(
    "unit_float", lambda v: 0.0 <= v <= 1.0, "a number in [0, 1]",
    "argparse type: a float in [0, 1] (a per-channel mean of [0, 1] pixels).",
)
positive_float = _number_type(
    "positive_float", lambda v: 0.0 < v < math.inf, "a positive number",
    "argparse type: a finite float > 0 (a per-channel standard deviation).",
)
seconds = _number_type(
    "seconds", lambda v: 0.0 <= v < math.inf, "seconds >= 0",
    "argparse type: a finite float >= 0 (an interval in seconds).",
)


def add_run_options(parser, verbose=True):
    """`--debug` (and `--verbose`) on a subcommand; see `keras_spvit.cli.main`."""
    parser.add_argument("--debug", action="store_true",
                        help="show Python tracebacks, also for mistakes in the arguments "
                        "(also KERAS_SPVIT_DEBUG=1)")
    if verbose:
        parser.add_argument("--verbose", action="store_true",
                            help="keep TensorFlow's C++ logs (off by default)")


# === Models ===

BUILDER_NAMES = None


def builders():
    """`{name: function}` of every public model builder of `keras_spvit`.

    The names are the family table's (`keras_spvit.zoo.families.builder_names`).

    Example:

    >>> sorted(builders())[:2]
    ['LVViT_L', 'LVViT_M']
    """
    import keras_spvit
    from keras_spvit.zoo.families import builder_names

    global BUILDER_NAMES
    if BUILDER_NAMES is None:
        BUILDER_NAMES = {name: getattr(keras_spvit, name) for name in builder_names()}
    return BUILDER_NAMES


def get_builder(name, flag="--model"):
    """The builder function named `name`, or a `UsageError` listing the builders.

    Example:

    >>> get_builder("SPViT_Tiny")(num_classes=10)
    """
    found = builders()
    if name not in found:
        raise UsageError(
            f"{flag}: unknown model {name!r}. Expected a builder name: {', '.join(sorted(found))}"
        )
    return found[name]


def parse_json_dict(text, flag):
    """A JSON object given on the command line, as a dict (`{}` for none).

    Example:

    >>> parse_json_dict('{"drop_path_rate": 0.1}', "--model-args")
    {'drop_path_rate': 0.1}
    """
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise UsageError(f"{flag} is not valid JSON ({error}). Received: {text!r}") from None
    if not isinstance(value, dict):
        raise UsageError(f"{flag} must be a JSON object. Received: {text!r}")
    return value


def check_weights(weights, flag="--weights"):
    """Raises a `UsageError` unless `weights` names a preset, folder or file.

    Example:

    >>> check_weights("spvit_tiny_digits")
    """
    if not weights:
        return
    from keras_spvit.zoo.weights import resolve_weights

    with user_errors(f"{flag} {weights!r}", (ValueError, OSError, TypeError)):
        resolve_weights(weights)


def resolve_model(model, weights=None):
    """What the `model` argument names: `("run", dir)`, `("file", path)` or
    `("builder", name)`, checked (a `UsageError` otherwise).

    Example:

    >>> resolve_model("runs/digits")
    ('run', 'runs/digits')
    """
    if os.path.isdir(model):
        if not os.path.exists(os.path.join(model, "model.keras")):
            raise UsageError(
                f"{model!r} is not a finished run directory: it has no model.keras. Expected "
                "a run directory written by `keras-spvit train`, a .keras file or a builder name."
            )
        return "run", model
    if model.endswith(".keras"):
        if not os.path.isfile(model):
            raise UsageError(f"no such model file: {model!r}. Expected an existing .keras file.")
        return "file", model
    if os.sep in model or "/" in model or model.startswith("."):
        raise UsageError(
            f"no such run directory: {model!r}. Expected a run directory written by "
            "`keras-spvit train`, a .keras file or a builder name."
        )
    get_builder(model, flag="model")
    check_weights(weights)
    return "builder", model


def add_model_argument(parser, quantize=False, quantize_help=None):
    """The `MODEL [--weights W] [--num-classes N]` arguments of evaluate / predict /
    export / explain; with `quantize`, also `--quantize MODE` (see `load_model`),
    described by `quantize_help` when the command quantizes its own way."""
    parser.add_argument(
        "model",
        help="a run directory holding model.keras, a .keras file, or a builder name "
        "(with --weights)",
    )
    parser.add_argument("--weights", default=None,
                        help="weights for a builder name: preset, folder, .weights.h5, checkpoint")
    parser.add_argument("--num-classes", type=positive_int, default=None)
    if quantize:
        from keras_spvit.serving import KERAS_QUANTIZE_KEEPS, QUANTIZE_MODES

        parser.add_argument("--quantize", choices=QUANTIZE_MODES, default=None,
                            help=quantize_help or "quantize the loaded model first (Keras' "
                            "model.quantize: int8 weights, activations quantized per call; "
                            f"the {KERAS_QUANTIZE_KEEPS})")


def load_model(args, kind=None, quantize=True):
    """The model named by `args.model` (run directory, file or builder) and its
    run directory (or `None`), quantized when `quantize` and `args.quantize`
    names a mode (a line says so). Loading errors of the user's files are
    `UsageError`s.

    Example:

    >>> model, run_dir = load_model(argparse.Namespace(model="runs/digits"))
    """
    model, run_dir = _load_model(args, kind)
    mode = getattr(args, "quantize", None) if quantize else None
    if mode:
        from keras_spvit.serving import KERAS_QUANTIZE_KEEPS

        model.quantize(mode)
        print(f"quantized: {mode} (Keras' model.quantize; {KERAS_QUANTIZE_KEEPS})")
    return model, run_dir


def _load_model(args, kind):
    builders()  # imports the public API: registers the serialisable classes

    path = args.model
    kind = kind or resolve_model(path, getattr(args, "weights", None))[0]
    if kind == "run":
        with user_errors(f"cannot load {os.path.join(path, 'model.keras')!r}"):
            return _load_keras_file(os.path.join(path, "model.keras")), path
    if kind == "file":
        with user_errors(f"cannot load {path!r}"):
            model = _load_keras_file(path)
        folder = os.path.dirname(path) or "."
        has_config = os.path.exists(os.path.join(folder, "train_config.json"))
        return model, folder if has_config else None
    kwargs = {}
    if args.weights:
        kwargs["weights"] = args.weights
    if args.num_classes:
        kwargs["num_classes"] = args.num_classes
    what = f"--weights {args.weights!r}" if args.weights else f"model {path!r}"
    with user_errors(what):
        return builders()[path](**kwargs), None


def _load_keras_file(path):
    import warnings

    import keras

    with warnings.catch_warnings():
        # The training optimizer's state is in the file; inference does not need it.
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        return keras.saving.load_model(path, compile=False)


def logits_of(outputs):
    return outputs["logits"] if isinstance(outputs, dict) else outputs


def model_classes(model):
    """Number of classes a classifier predicts (its logits' width)."""
    return int(logits_of(model.output).shape[-1])


def model_image_size(model):
    """`(height, width)` the model takes."""
    shape = model.input_shape
    return int(shape[1]), int(shape[2])


def class_names_near(run_dir):
    """The `class_names.json` of a run directory, or `None`."""
    if run_dir is None:
        return None
    path = os.path.join(run_dir, "class_names.json")
    if os.path.exists(path):
        return read_class_names(path)
    return None


def model_class_names(names, args, model, run_dir):
    """The class names a command shows: `names` (read from `--class-names`),
    else the run directory's `class_names.json`, else `None`; a `UsageError`
    if their count is not the model's class count.

    Example:

    >>> model_class_names(None, args, model, "runs/digits")
    ['0', '1', ...]
    """
    names = names or class_names_near(run_dir)
    classes = model_classes(model)
    if names is not None and len(names) != classes:
        source = args.class_names or os.path.join(run_dir, "class_names.json")
        raise UsageError(f"{source!r} names {len(names)} classes; the model predicts {classes}.")
    return names


def read_class_names(path, flag="--class-names"):
    """A JSON list of class names from `path` (a `UsageError` if it is not one).

    Example:

    >>> read_class_names("runs/digits/class_names.json")
    ['0', '1', ...]
    """
    if not os.path.isfile(path):
        raise UsageError(f"{flag}: no such file: {path!r}. Expected a JSON list of class names.")
    try:
        with open(path) as f:
            names = json.load(f)
    except (OSError, ValueError) as error:
        raise UsageError(f"{flag} {path!r} is not valid JSON: {one_line(error)}") from None
    if not isinstance(names, list) or not all(isinstance(n, (str, int)) for n in names):
        raise UsageError(f"{flag} {path!r} must hold a JSON list of class names.")
    return [str(n) for n in names]


# === Recipes ===


def parse_overrides(pairs):
    """`["epochs=3", "mixup_alpha=0.8"]` -> `{"epochs": 3, "mixup_alpha": 0.8}`.

    Example:

    >>> parse_overrides(["epochs=3", "randaugment=None"])
    {'epochs': 3, 'randaugment': None}
    """
    out = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--set expects FIELD=VALUE. Received: {pair!r}")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


def _field_type(field):
    return field.type if isinstance(field.type, str) else getattr(
        field.type, "__name__", str(field.type))


def check_recipe_overrides(recipe_name, overrides):
    """The recipe `recipe_name` with `--set` overrides, each checked against its
    field's type (a `UsageError` names the field, the value and the type).

    Example:

    >>> check_recipe_overrides("digits", {"mixup_alpha": 0.2}).mixup_alpha
    0.2
    """
    from keras_spvit.training.recipes import RECIPES, Recipe

    if recipe_name not in RECIPES:
        raise UsageError(
            f"--recipe: unknown recipe {recipe_name!r}. Expected one of {sorted(RECIPES)}."
        )
    fields = {f.name: f for f in dataclasses.fields(Recipe)}
    unknown = sorted(set(overrides) - set(fields) - {"name"})
    if unknown:
        raise UsageError(
            f"--set: unknown recipe field(s) {unknown}. Expected some of "
            f"{sorted(set(fields) - {'name'})}."
        )
    checked = {}
    for key, value in overrides.items():
        kind = _field_type(fields[key])
        checked[key] = _check_field(key, value, kind)
    return RECIPES[recipe_name].replace(**checked)


def _check_field(key, value, kind):
    def bad(expected):
        return UsageError(f"--set {key}={value!r}: expected {expected}.")

    if value is None:
        if "None" in kind:
            return None
        raise bad(f"a {kind.split('|')[0].strip()}, not None")
    base = kind.replace("| None", "").replace("Optional", "").strip()
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if base == "bool":
        if isinstance(value, str) and value.lower() in ("true", "false"):
            value = value.lower() == "true"  # --set mix_token=true, as YAML and JSON write it
        if not isinstance(value, bool):
            raise bad("True or False")
        return value
    if base == "int":
        if not number or float(value) != int(value):
            raise bad("an integer")
        return int(value)
    if base == "float":
        if not number or not math.isfinite(value):
            raise bad("a number")
        return float(value)
    if base == "str":
        if not isinstance(value, str):
            raise bad("a string")
        return value
    if base.startswith("tuple"):
        if (not isinstance(value, (tuple, list)) or len(value) != 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
            raise bad("two numbers, e.g. (0.08,1.0)")
        return tuple(float(v) for v in value)
    return value


# === Preprocessing ===


@dataclasses.dataclass
class Preprocessing:
    """The evaluation preprocessing a command uses, and where it comes from.

    Args:
        image_size: `(height, width)`.
        crop_pct: float in (0, 1].
        mean, std: per-channel, for pixels in [0, 1].
        interpolation: resize method.
        origin: str. Where these values come from, e.g. `"run directory runs/x"`.
        preprocessor: the model's keras-hub preprocessor when it is used as is
            (no flag overrides it), else `None`.

    Example:

    >>> Preprocessing((32, 32), 1.0, (0.5,) * 3, (0.5,) * 3).describe()
    'preprocessing: 32x32, crop_pct 1, mean (0.5, 0.5, 0.5), std (0.5, 0.5, 0.5), bicubic (from defaults)'
    """

    image_size: tuple
    crop_pct: float
    mean: tuple
    std: tuple
    interpolation: str = "bicubic"
    origin: str = "defaults"
    preprocessor: object = None

    def options(self):
        """Keyword arguments of the data pipelines."""
        return {"crop_pct": self.crop_pct, "mean": tuple(self.mean), "std": tuple(self.std),
                "interpolation": self.interpolation}

    def pipeline_size(self):
        """`image_size` as the data pipelines take it (an int when square)."""
        height, width = self.image_size
        return height if height == width else (height, width)

    def to_dict(self):
        return {"image_size": list(self.image_size), "crop_pct": self.crop_pct,
                "mean": list(self.mean), "std": list(self.std),
                "interpolation": self.interpolation, "from": self.origin}

    def describe(self):
        def numbers(values):
            return "(" + ", ".join(f"{v:g}" for v in values) + ")"

        return (
            f"preprocessing: {self.image_size[0]}x{self.image_size[1]}, crop_pct "
            f"{self.crop_pct:g}, mean {numbers(self.mean)}, std {numbers(self.std)}, "
            f"{self.interpolation} (from {self.origin})"
        )


def add_preprocessing_arguments(parser, training=False):
    """`--image-size`, `--crop-pct`, `--mean`, `--std`.

    For `train` they set the run's preprocessing (default: the data source's);
    for `evaluate` and `predict` they override the loaded model's.
    """
    if training:
        small = "for digits, fashion_mnist and idx:"
        defaults = {"crop": f"the data source's: 1.0 {small}, else 0.875",
                    "mean": f"the data source's: 0.5 0.5 0.5 {small}, else ImageNet's",
                    "std": f"the data source's: 0.5 0.5 0.5 {small}, else ImageNet's"}
    else:
        defaults = dict.fromkeys(("crop", "mean", "std"), "the model's preprocessing")
    parser.add_argument("--image-size", type=positive_int, default=None,
                        help="input side in pixels (default: the model's)")
    parser.add_argument("--crop-pct", type=fraction, default=None,
                        help=f"evaluation center-crop share in (0, 1] (default: {defaults['crop']})")
    parser.add_argument("--mean", type=unit_float, nargs=3, default=None, metavar="M",
                        help=f"normalisation mean of [0, 1] pixels (default: {defaults['mean']})")
    parser.add_argument("--std", type=positive_float, nargs=3, default=None, metavar="S",
                        help=f"normalisation std of [0, 1] pixels (default: {defaults['std']})")


def add_data_arguments(parser, split_default, training=False):
    """`--data`, `--split`, `--data-dir`, `--batch-size`, and for `train` the
    preprocessing flags (`add_preprocessing_arguments`)."""
    parser.add_argument("--data", default="digits",
                        help="digits | fashion_mnist | tfds:NAME | folder:PATH | npz:PATH | "
                             "idx:PATH (default: digits)")
    parser.add_argument("--split", default=split_default,
                        help=f"split of --data (default: {split_default})")
    parser.add_argument("--data-dir", default=None, help="TensorFlow Datasets data_dir")
    parser.add_argument("--batch-size", type=positive_int, default=64)
    if training:
        add_preprocessing_arguments(parser, training=True)


def pipeline_options(args):
    """The data pipeline's keyword arguments set by `--crop-pct`, `--mean`, `--std`."""
    options = {}
    if args.crop_pct is not None:
        options["crop_pct"] = args.crop_pct
    if args.mean is not None:
        options["mean"] = tuple(args.mean)
    if args.std is not None:
        options["std"] = tuple(args.std)
    return options


def read_run_preprocessing(run_dir):
    """The preprocessing a run directory's `train_config.json` records, or `None`.

    Runs written before the config held a `preprocessing` entry get it from
    their data source and flags, as the training pipeline did.
    """
    path = os.path.join(run_dir, "train_config.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        config = json.load(f)
    recorded = config.get("preprocessing")
    if recorded is None:
        from keras_spvit.data.sources import source_preprocessing

        flags = {k: config[k] for k in ("crop_pct", "mean", "std") if config.get(k) is not None}
        recorded = source_preprocessing(config.get("data", "digits"), **flags)
        size = config.get("image_size")
        recorded["image_size"] = [size, size] if isinstance(size, int) else size
    return recorded


def resolve_preprocessing(args, model, run_dir, data=None):
    """The preprocessing for `model`: the run's recorded one, else the model's
    keras-hub preprocessor, else the data source's defaults; flags override.

    Args:
        args: parsed arguments with `image_size`, `crop_pct`, `mean`, `std`.
        model: the loaded model.
        run_dir: its run directory, or `None`.
        data: optional data source string (evaluate), whose defaults apply when
            the model records nothing.

    Returns:
        A `Preprocessing`.

    Example:

    >>> resolve_preprocessing(args, model, "runs/digits").describe()
    """
    size = model_image_size(model)
    if args.image_size is not None and (args.image_size, args.image_size) != size:
        raise UsageError(
            f"--image-size {args.image_size}: the model takes {size[0]}x{size[1]} images. "
            "Drop --image-size, or train / convert a model at that size."
        )
    recorded = read_run_preprocessing(run_dir) if run_dir else None
    converter = getattr(getattr(model, "preprocessor", None), "image_converter", None)
    if recorded is not None:
        base = dict(recorded)
        origin = f"the run's train_config.json in {run_dir}"
        preprocessor = None
    elif converter is not None and getattr(converter, "mean", None) is not None:
        base = {"crop_pct": converter.crop_pct or 1.0, "mean": converter.mean,
                "std": converter.std, "interpolation": converter.interpolation}
        origin = "the model's preprocessor" + (
            f" (--weights {args.weights})" if getattr(args, "weights", None) else "")
        preprocessor = model.preprocessor
    else:
        from keras_spvit.data.sources import source_preprocessing

        base = source_preprocessing(data)
        origin = (f"the defaults of --data {data}" if data
                  else "ImageNet defaults (the model records no preprocessing)")
        preprocessor = None
    flags = {"crop_pct": args.crop_pct, "mean": args.mean, "std": args.std}
    overridden = [f"--{k.replace('_', '-')}" for k, v in flags.items() if v is not None]
    base.update({k: v for k, v in flags.items() if v is not None})
    if overridden:
        origin += "; " + ", ".join(overridden) + " from the command line"
        preprocessor = None
    return Preprocessing(
        image_size=size,
        crop_pct=float(base["crop_pct"]),
        mean=tuple(float(v) for v in base["mean"]),
        std=tuple(float(v) for v in base["std"]),
        interpolation=base.get("interpolation", "bicubic"),
        origin=origin,
        preprocessor=preprocessor,
    )


def write_json(path, value):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(value, f, indent=2, default=str)
