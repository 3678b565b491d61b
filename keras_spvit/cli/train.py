"""`keras-spvit train`: any builder, any data source, a recipe, resumable."""

import contextlib
import functools
import os
import re
import sys


def add_parser(subparsers):
    from keras_spvit.cli.common import (
        add_data_arguments,
        add_run_options,
        positive_int,
    )

    parser = subparsers.add_parser(
        "train",
        help="train a model (resumes from OUT if interrupted)",
        description="Train a model with a recipe. Rerunning the same command after an "
        "interruption resumes from OUT/backup. Writes OUT/model.keras, per-epoch "
        "checkpoints, log.csv, TensorBoard logs and summary.json. Arguments and data are "
        "checked before OUT is created.",
    )
    parser.add_argument("--model", default="SPViT_Tiny", help="builder name, e.g. SPViT_S")
    parser.add_argument("--model-args", default=None,
                        help='JSON of builder arguments, e.g. \'{"drop_path_rate": 0.1}\'')
    parser.add_argument("--weights", default=None,
                        help="initial weights: preset, preset folder, .weights.h5 or checkpoint")
    add_data_arguments(parser, split_default="train", training=True)
    parser.add_argument("--val-data", default=None,
                        help="validation source (default: --data with --val-split)")
    parser.add_argument("--val-split", default=None,
                        help="validation split (default: test for digits, fashion_mnist and "
                             "idx:, validation for tfds)")
    parser.add_argument("--num-classes", type=positive_int, default=None)
    parser.add_argument("--recipe", default="digits",
                        help="named recipe (see keras_spvit.training.RECIPES)")
    parser.add_argument("--set", dest="overrides", action="append", metavar="FIELD=VALUE",
                        help="override a recipe field, e.g. --set mixup_alpha=0.8 (repeatable)")
    parser.add_argument("--epochs", type=positive_int, default=None, help="default: the recipe's")
    parser.add_argument("--out", required=True, help="run directory")
    parser.add_argument("--precision", default="auto",
                        help="auto (default: bf16 on GPUs/TPUs with bfloat16 units, float32 on "
                        "CPUs) or a name of keras_spvit.training.hardware.PRECISIONS "
                        "(float32, bf16, fp16)")
    parser.add_argument("--jit", choices=("auto", "on", "off"), default="auto",
                        help="XLA compilation (default auto: on for TensorFlow and JAX, also "
                        "under multi-GPU strategies; off on torch)")
    parser.add_argument("--distribute", choices=("none", "auto", "mirrored", "multi_worker"),
                        default="auto", help="data parallel engine (default: auto)")
    parser.add_argument("--device", choices=("auto", "cpu", "gpu", "tpu"), default="auto",
                        help="auto (default: the accelerators the backend sees, else the CPU); "
                        "gpu / tpu fail at start when the backend sees none; cpu hides them")
    parser.add_argument("--steps-per-execution", default="auto", metavar="N",
                        help="training steps per compiled call (fewer host round trips on "
                        "accelerators; must divide the steps per epoch and --save-every). "
                        "Default auto: 1 on CPUs and torch, else the largest divisor <= 32")
    parser.add_argument("--remat", action="store_true",
                        help="rematerialise every transformer block in training: activation "
                        "memory of about one block instead of all (large images or batches), "
                        "about one more forward pass per step; same gradients")
    parser.add_argument("--lora", type=positive_int, default=None, metavar="RANK",
                        help="fine-tune with LoRA adapters of this rank on the attention "
                        "projections (qk, v, qkv, proj): only the adapters and the head train; "
                        "model.keras holds the merged weights")
    parser.add_argument("--token-labels", default=None, metavar="LABELS",
                        help="dense teacher labels (made by `keras-spvit label`): train the aux "
                        "head on them (token labeling; needs a recipe with token_label_weight, "
                        "e.g. spvit, or --set token_label_weight=1.0)")
    parser.add_argument("--allow-missing-token-labels", action="store_true",
                        help="train images without a teacher label on their image label "
                        "(default: fail naming the first one); they are counted in summary.json")
    parser.add_argument("--token-label-box", choices=("release", "consistent"), default="release",
                        help="how the crop box reads the label map: release (the papers' code, "
                        "which reads it transposed; default) or consistent (the crop's region)")
    parser.add_argument("--save-every", type=positive_int, default=None,
                        help="also back up every N batches (default: every epoch)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--strict-data", action="store_true",
                        help="fail on the first image that does not decode, naming it (default: "
                        "skip it, list it in summary.json and warn at the end)")
    parser.add_argument("--verbose", type=int, nargs="?", const=1, default=None, metavar="N",
                        help="Keras fit verbosity (0, 1, 2); --verbose (N > 0) also keeps "
                        "TensorFlow's C++ logs")
    add_run_options(parser, verbose=False)
    parser.set_defaults(run=run)
    return parser


def train_augment(recipe, seed):
    """The `TrainAugment` a recipe asks for (`TrainAugment.from_recipe`)."""
    from keras_spvit.data.train_augment import TrainAugment

    return TrainAugment.from_recipe(recipe, seed)


def with_mix_token(dataset, model, num_classes, image_size, seed, first_batch=0):
    """Applies MixToken per batch; targets become `{"labels", "token_labels"}`.

    Batch `k` of `dataset` is batch `first_batch + k` of the run and its box
    is drawn from `(seed, first_batch + k)`: the same box after a resume.
    """
    import tensorflow as tf

    from keras_spvit.data.mix_token import mix_token, token_targets

    side = _token_side(model, image_size)
    patch = image_size // side
    key = tf.constant([seed, 0x70CE2], tf.int64)

    def mix(images, labels, position):
        # Token targets without a class axis: int32 ids (B, g, g), or for MixUp /
        # CutMix labels (two classes each: smoothing stays in the loss) their
        # top 2 packed (B, g, g, 2, 2); the loss equals the dense one exactly.
        if isinstance(labels, dict):  # a token-labeled pipeline: the teacher's targets
            labels, dense = labels["labels"], labels["token_labels"]
        else:
            dense = token_targets(labels, (side, side))
        images, labels, dense = mix_token(
            images, labels, dense, patch_size=patch, num_classes=num_classes,
            seed=tf.random.experimental.stateless_fold_in(key, position),
        )
        return images, {"labels": labels, "token_labels": dense}

    positions = tf.data.Dataset.range(first_batch, 2**62)
    return tf.data.Dataset.zip(dataset, positions).map(
        lambda batch, position: mix(*batch, position), num_parallel_calls=tf.data.AUTOTUNE
    )


def _token_side(model, image_size):
    """The side of the model's square token grid (what MixToken and token labels need)."""
    import math

    tokens = model.output["aux_logits"].shape[1]
    side = math.isqrt(tokens)
    if side * side != tokens or image_size % side:
        raise ValueError(
            f"Token labels and MixToken need a square token grid dividing the image; the "
            f"model has {tokens} tokens for {image_size} px."
        )
    return side


def _enable_lora(model, rank, chief):
    """LoRA adapters on the backbone's attention projections; says what trains."""
    import numpy as np

    model.backbone.enable_lora(rank)
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    total = sum(int(np.prod(w.shape)) for w in model.weights)
    if chief:
        print(f"LoRA rank {rank} on {len(model.backbone._lora_enabled_layers)} attention "
              f"projections: {trainable:,} of {total:,} parameters train (adapters and head)")


def build_model(args, num_classes, image_size, recipe, dtype="float32"):
    from keras_spvit.cli.common import get_builder, parse_json_dict

    kwargs = parse_json_dict(args.model_args, "--model-args")
    if image_size is not None:
        kwargs.setdefault("image_shape", (image_size, image_size, 3))
    if recipe.drop_path_rate is not None:
        kwargs.setdefault("drop_path_rate", recipe.drop_path_rate)
    if recipe.token_label_weight is not None:
        kwargs.setdefault("return_dense", True)
    if dtype != "float32":
        kwargs.setdefault("dtype", dtype)
    if getattr(args, "remat", False):
        kwargs["remat"] = True
    if getattr(args, "weights", None):
        kwargs["weights"] = args.weights
    return get_builder(args.model)(num_classes=num_classes, **kwargs)


def check_arguments(args):
    """Checks the arguments and the data of a run before anything is built or written.

    Args:
        args: the parsed `train` arguments.

    Returns:
        A dict: `recipe`, `num_classes`, `class_names`, `val_source`,
        `val_split`.

    Raises:
        UsageError: naming the bad value and what was expected.

    Example:

    >>> plan = check_arguments(build_parser().parse_args(["train", "--out", "runs/x"]))
    """
    from keras_spvit.cli.common import (
        UsageError,
        check_recipe_overrides,
        check_weights,
        get_builder,
        parse_json_dict,
        parse_overrides,
        user_errors,
    )
    from keras_spvit.data.sources import SPLIT_KINDS, SourceError, check_source, parse_source
    from keras_spvit.training.hardware import PRECISIONS

    if args.precision != "auto" and args.precision not in PRECISIONS:
        raise UsageError(
            f"--precision: unknown precision {args.precision!r}. Expected one of "
            f"{['auto', *PRECISIONS]}."
        )
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise UsageError(f"--out {args.out!r} is a file. Expected a run directory.")
    finished = os.path.join(args.out, "summary.json")
    if os.path.exists(finished):
        raise UsageError(
            f"--out {args.out!r}: {finished} exists: a finished run is there. Delete it or "
            "choose another --out."
        )
    recipe = check_recipe_overrides(args.recipe, parse_overrides(args.overrides))
    with user_errors(f"--recipe {args.recipe} with --set {' '.join(args.overrides or [])}"):
        train_augment(recipe, args.seed)  # checks the augmentation values (built again below)
    get_builder(args.model)
    parse_json_dict(args.model_args, "--model-args")
    check_weights(args.weights)
    try:
        info = check_source(args.data, args.split, args.data_dir)
        kind, _ = parse_source(args.data)
        val_source = args.val_data or (args.data if kind in SPLIT_KINDS else None)
        val_split = args.val_split or SPLIT_KINDS.get(kind, args.split)
        if val_source:
            check_source(val_source, val_split, args.data_dir, flag="--val-data",
                         split_flag="--val-split")
    except SourceError as error:
        raise UsageError(str(error)) from None
    num_classes = args.num_classes or info["num_classes"]
    if info.get("num_classes") and num_classes < info["num_classes"]:
        raise UsageError(
            f"--num-classes {num_classes}: {args.data!r} has {info['num_classes']} classes. "
            f"Expected at least {info['num_classes']}."
        )
    token_labels = None
    if args.token_labels is not None:
        token_labels = _open_token_labels(args, recipe, num_classes)
        _check_label_coverage(args, token_labels)
    return {"recipe": recipe, "num_classes": num_classes,
            "class_names": info.get("class_names"), "val_source": val_source,
            "val_split": val_split, "token_labels": token_labels}


def _check_label_coverage(args, labels):
    """Names the training images without a teacher label, before anything is built."""
    from keras_spvit.cli.common import UsageError
    from keras_spvit.data.sources import source_keys

    keys = source_keys(args.data, args.split)
    if keys is None:  # TFDS: counted while training (summary.json)
        return
    missing = [key for key in keys if key not in labels]
    if not missing:
        return
    listed = ", ".join(repr(k) for k in missing[:3]) + (", ..." if len(missing) > 3 else "")
    what = (f"--token-labels {args.token_labels!r}: no label for {len(missing)} of {len(keys)} "
            f"training images ({listed})")
    if not args.allow_missing_token_labels:
        raise UsageError(f"{what}. Expected labels for every image (keras-spvit label "
                         "continues an unfinished store), or --allow-missing-token-labels.")
    print(f"Warning: {what}: they train on their image labels.", file=sys.stderr)


def _open_token_labels(args, recipe, num_classes):
    """The `--token-labels` store, checked against the run (a `UsageError` otherwise)."""
    from keras_spvit.cli.common import UsageError, user_errors
    from keras_spvit.data.token_labels import TokenLabels

    flag = f"--token-labels {args.token_labels!r}"
    with user_errors(flag):
        labels = TokenLabels.open(args.token_labels)
    if recipe.token_label_weight is None:
        raise UsageError(
            f"{flag}: the recipe {recipe.name!r} trains no aux head. Expected a token-labeling "
            "recipe (spvit, spvit_l) or --set token_label_weight=1.0."
        )
    if labels.num_classes != num_classes:
        raise UsageError(
            f"{flag}: the labels have {labels.num_classes} classes; the run has {num_classes}. "
            "Expected labels made for this data."
        )
    if not len(labels):
        raise UsageError(f"{flag}: the store holds no label yet. Expected a finished "
                         "`keras-spvit label` run.")
    return labels


def run(args):
    if args.device == "cpu":
        from keras_spvit.training.hardware import hide_accelerators

        hide_accelerators()  # before the backend starts
    plan = check_arguments(args)  # nothing is built or written before this passes

    import keras

    from keras_spvit.cli.common import pipeline_options, user_errors, write_json
    from keras_spvit.data.sources import SPLIT_KINDS, source_dataset, source_preprocessing
    from keras_spvit.training import data_parallel, distribute_input, fit
    from keras_spvit.training.distribution import gather_from_workers, resolve_mode, worker
    from keras_spvit.training.hardware import (
        check_device,
        describe_devices,
        keep_tensorflow_off_gpus,
        resolve_jit,
        resolve_precision,
        resolve_steps_per_execution,
    )
    from keras_spvit.training.trainer import for_model, steps_in

    recipe, num_classes = plan["recipe"], plan["num_classes"]
    val_source, val_split = plan["val_source"], plan["val_split"]
    keras.utils.set_random_seed(args.seed)
    options = pipeline_options(args)
    from keras_spvit.data.decode_errors import DecodeErrors

    bad_files = DecodeErrors()  # shared by every pipeline of the run
    checking = {"strict_data": args.strict_data, "decode_errors": bad_files}
    asked = " ".join(
        f"{flag} {value}" for flag, value in (
            ("--model", args.model), ("--model-args", args.model_args),
            ("--weights", args.weights), ("--image-size", args.image_size))
        if value is not None
    )
    keep_tensorflow_off_gpus()  # JAX / torch: TensorFlow only feeds data
    with user_errors(f"--distribute {args.distribute}"):
        mode, why = resolve_mode(args.distribute)
    # Multi-worker TensorFlow configures its collectives before the runtime
    # starts: enter the engine before anything lists devices.
    with data_parallel(mode) as replicas:
        index, count = worker()
        chief = index == 0  # the other workers write nothing under --out and print nothing
        with user_errors(f"--device {args.device}"):
            check_device(args.device)
        if chief:
            print(f"Devices: {describe_devices()}")
            print(f"Data parallel: {mode} ({why}), {replicas} replica"
                  f"{'s' if replicas != 1 else ''}" + (f", {count} workers" if count > 1 else ""))
        dtype = resolve_precision(args.precision)
        jit = resolve_jit(args.jit, replicas, dtype)
        # The builders check their arguments before building anything.
        with user_errors(asked, (ValueError, TypeError) if args.model_args else (ValueError,)):
            model = build_model(args, num_classes, args.image_size, recipe, dtype)
        if args.lora:
            _enable_lora(model, args.lora, chief)
        image_size = args.image_size or model.input_shape[1]
        augment = train_augment(recipe, args.seed)
        token_options, missing = {}, None
        if plan["token_labels"] is not None:
            from keras_spvit.data.pipelines import MissingTokenLabels

            missing = MissingTokenLabels()  # shared by the run's pipelines
            # The pipeline makes the release's targets, smoothing included.
            token_options = {
                "token_labels": plan["token_labels"], "token_grid": _token_side(model, image_size),
                "token_label_smoothing": recipe.label_smoothing,
                "box_order": args.token_label_box,
                "allow_missing_labels": args.allow_missing_token_labels,
                "missing_token_labels": missing,
            }

        def train_fn(input_context=None, start=None):
            # Called once per worker under multi-worker training: each worker
            # reads and decodes only its share of the shuffled file list.
            train, _ = source_dataset(
                args.data, args.split, image_size=image_size, batch_size=args.batch_size,
                training=True, augment=augment, num_classes=num_classes, seed=args.seed,
                data_dir=args.data_dir, input_context=input_context, start=start, **options,
                **checking, **token_options,
            )
            if recipe.mix_token and getattr(model, "return_dense", False):
                first = 0
                if start is not None:  # batches per step: one per replica of this worker
                    per_step = 1 if input_context is None else (
                        input_context.num_replicas_in_sync // input_context.num_input_pipelines)
                    first = (start[0] * steps_per_epoch + start[1]) * per_step
                train = with_mix_token(train, model, num_classes, image_size, args.seed,
                                       first_batch=first)
            return for_model(train, model)

        # The number of batches per epoch, from the one-pass pipeline.
        steps_per_epoch = steps_in(distribute_input(train_fn))
        with user_errors(f"--steps-per-execution {args.steps_per_execution}"):
            steps_per_execution = resolve_steps_per_execution(
                args.steps_per_execution, steps_per_epoch, args.save_every or "epoch")
        if parse_kind(args.data) == "tfds":
            # TFDS shuffles its files itself, per pass: a resumed run gets the
            # right step count on a fresh pass, not the same batches.
            train = distribute_input(train_fn)
        else:
            # A stream addressed by position: a resumed run sees the batches an
            # uninterrupted one would have.
            def train(epoch, batch):
                return distribute_input(functools.partial(train_fn, start=(epoch, batch)))
        # What `evaluate` and `predict` read back to preprocess like the run did.
        preprocessing = {"image_size": [image_size, image_size],
                         **source_preprocessing(args.data, **options)}
        val = None
        if val_source:
            # Validated as trained: the training source's normalisation, also when
            # --val-data is another kind of source (its defaults may differ).
            val, _ = source_dataset(
                val_source, val_split, image_size=image_size, batch_size=args.batch_size,
                training=False, num_classes=num_classes, data_dir=args.data_dir,
                **source_preprocessing(args.data, **options), **checking,
            )
        if chief:
            write_json(os.path.join(args.out, "train_config.json"),
                       {**vars(args), "run": None, "recipe": recipe.to_dict(),
                        "num_classes": num_classes, "image_size": image_size,
                        "preprocessing": preprocessing, "val_data": val_source,
                        "val_split": val_split if val_source else None,
                        "replicas": replicas, "backend": keras.backend.backend(),
                        "dtype_policy": dtype, "jit_compile": jit,
                        "steps_per_execution": steps_per_execution})
        if plan["class_names"] and chief:
            write_json(os.path.join(args.out, "class_names.json"), plan["class_names"])
        with _naming_bad_files():
            summary = fit(
                model, train, val, recipe=recipe, batch_size=args.batch_size, out_dir=args.out,
                epochs=args.epochs, steps_per_epoch=steps_per_epoch,
                save_freq=args.save_every or "epoch", jit_compile=jit,
                steps_per_execution=steps_per_execution,
                label_smoothing=0.0 if plan["token_labels"] is not None else None,
                verbose="auto" if args.verbose is None else args.verbose,
            )
        # Each worker decoded only its share of the files: the chief reports them all.
        shares = gather_from_workers(
            args.out, "worker_records",
            {"bad_files": bad_files.state(),
             "missing": None if missing is None else missing.state()},
            tag=summary.get("optimizer_steps"),
        )
        for share in shares[1:] if shares else ():
            bad_files.merge(share["bad_files"])
            if missing is not None:
                missing.merge(share["missing"])
        summary.update(bad_files.summary())
        if missing is not None:
            summary.update(missing.summary())
        if chief:
            write_json(os.path.join(args.out, "summary.json"), summary)
    if not chief:
        return 0
    print_summary(summary, replicas, dtype, jit,
                  data=f"{args.data} [{args.split}]" if parse_kind(args.data) in SPLIT_KINDS
                  else args.data)
    return 0


@contextlib.contextmanager
def _naming_bad_files():
    # `--strict-data`: the pipeline's error names the file; say it in one line.
    import tensorflow as tf

    from keras_spvit.cli.common import UsageError

    try:
        yield
    except tf.errors.InvalidArgumentError as error:
        found = re.search(r"cannot decode [^\n]*", str(error))
        if found is None:
            raise
        raise UsageError(f"{found.group(0).strip()} (--strict-data)") from error


def parse_kind(source):
    from keras_spvit.data.sources import parse_source

    return parse_source(source)[0]


def print_summary(summary, replicas=1, dtype="float32", jit=False, data=None):
    """Prints the end of a run: model, data, recipe, accuracies, where the files are.

    Example:

    >>> print_summary(json.load(open("runs/digits/summary.json")), data="digits [train]")
    """
    def pct(value):
        return "n/a" if value is None else f"{100 * value:.2f}%"

    ips = summary.get("images_per_second")
    on = f" on {data}" if data else ""
    print(
        f"\nDone: {summary['model']}{on} (recipe {summary['recipe']}, {summary['epochs']} "
        f"epochs, {replicas} device{'s' if replicas != 1 else ''}, {dtype}, "
        f"XLA {'on' if jit else 'off'}) in {summary['seconds']:.0f} s\n"
        f"  train accuracy  {pct(summary['train_accuracy'])}\n"
        f"  val accuracy    {pct(summary['val_accuracy'])}\n"
        f"  images/s        {'n/a' if ips is None else f'{ips:.1f}'} (training)\n"
        f"  model           {summary['model_path']}\n"
        f"  checkpoints     {summary['checkpoint_dir']}\n"
        f"  logs            {summary['log_path']}, {summary['tensorboard_dir']}"
    )
    if summary.get("bad_file_count"):
        bad = summary["bad_files"]
        shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        print(f"warning: {len(bad)} image file(s) did not decode and were replaced by other "
              f"images of their batches: {shown} (listed in summary.json; --strict-data "
              "fails on them instead)", file=sys.stderr)
