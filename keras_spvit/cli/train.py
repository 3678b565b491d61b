"""`keras-spvit train`: any builder, any data source, a recipe, resumable."""

import os


def add_parser(subparsers):
    from keras_spvit.cli.common import add_data_arguments
    from keras_spvit.training.hardware import PRECISIONS

    parser = subparsers.add_parser(
        "train",
        help="train a model (resumes from OUT if interrupted)",
        description="Train a model with a recipe. Rerunning the same command after an "
        "interruption resumes from OUT/backup. Writes OUT/model.keras, per-epoch "
        "checkpoints, log.csv, TensorBoard logs and summary.json.",
    )
    parser.add_argument("--model", default="SPViT_Tiny", help="builder name, e.g. SPViT_S")
    parser.add_argument("--model-args", default=None,
                        help='JSON of builder arguments, e.g. \'{"drop_path_rate": 0.1}\'')
    parser.add_argument("--weights", default=None,
                        help="initial weights: preset, preset folder, .weights.h5 or checkpoint")
    add_data_arguments(parser, split_default="train")
    parser.add_argument("--val-data", default=None,
                        help="validation source (default: --data with --val-split)")
    parser.add_argument("--val-split", default=None,
                        help="validation split (default: test for digits, validation for tfds)")
    parser.add_argument("--num-classes", type=int, default=None)
    parser.add_argument("--recipe", default="digits", help="named recipe (see keras_spvit.training.RECIPES)")
    parser.add_argument("--set", dest="overrides", action="append", metavar="FIELD=VALUE",
                        help="override a recipe field, e.g. --set mixup_alpha=0.8 (repeatable)")
    parser.add_argument("--epochs", type=int, default=None, help="default: the recipe's")
    parser.add_argument("--out", required=True, help="run directory")
    parser.add_argument("--precision", choices=["auto", *PRECISIONS], default="auto",
                        help="auto (default): bf16 on GPUs/TPUs with bfloat16 units, "
                        "float32 on CPUs")
    parser.add_argument("--jit", choices=("auto", "on", "off"), default="auto",
                        help="XLA compilation (default auto: on for TensorFlow and JAX, also "
                        "under multi-GPU strategies; off on torch)")
    parser.add_argument("--distribute", choices=("none", "auto", "mirrored", "multi_worker"),
                        default="auto", help="data parallel engine (default: auto)")
    parser.add_argument("--save-every", type=int, default=None,
                        help="also back up every N batches (default: every epoch)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", type=int, default=None, help="Keras fit verbosity")
    parser.set_defaults(run=run)
    return parser


def train_augment(recipe, seed):
    """The `TrainAugment` a recipe asks for (label smoothing stays in the loss)."""
    from keras_spvit.data.train_augment import TrainAugment

    return TrainAugment(
        scale=recipe.crop_scale,
        ratio=recipe.crop_ratio,
        hflip=0.5 if recipe.horizontal_flip else 0.0,
        randaugment=recipe.randaugment,
        random_erasing=recipe.random_erasing,
        erasing_mode=recipe.erasing_mode,
        erasing_count=recipe.erasing_count,
        mixup_alpha=recipe.mixup_alpha,
        cutmix_alpha=recipe.cutmix_alpha,
        label_smoothing=0.0,
        seed=seed,
    )


def with_mix_token(dataset, model, num_classes, image_size, seed):
    """Applies MixToken per batch; targets become `{"labels", "token_labels"}`."""
    import math

    import tensorflow as tf

    from keras_spvit.data.augment import mix_token

    tokens = model.output["aux_logits"].shape[1]
    side = math.isqrt(tokens)
    if side * side != tokens or image_size % side:
        raise ValueError(
            f"MixToken needs a square token grid dividing the image; the model has "
            f"{tokens} tokens for {image_size} px."
        )
    patch = image_size // side
    generator = tf.random.Generator.from_seed(seed)

    def mix(images, labels):
        if labels.dtype.is_integer:
            labels = tf.one_hot(labels, num_classes)
        dense = tf.broadcast_to(labels[:, None, None, :], (tf.shape(labels)[0], side, side, num_classes))
        images, labels, dense = mix_token(
            images, labels, dense, patch_size=patch, seed=generator.make_seeds(1)[:, 0],
            num_classes=num_classes,
        )
        return images, {"labels": labels, "token_labels": dense}

    # Sequential: the generator hands out seeds in batch order (reproducible).
    return dataset.map(mix)


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
    if getattr(args, "weights", None):
        kwargs["weights"] = args.weights
    return get_builder(args.model)(num_classes=num_classes, **kwargs)


def run(args):
    import keras

    from keras_spvit.cli.common import parse_overrides, pipeline_options, write_json
    from keras_spvit.data.sources import parse_source, source_dataset, source_info
    from keras_spvit.training import data_parallel, distribute_input, fit, get_recipe
    from keras_spvit.training.trainer import for_model
    from keras_spvit.training.hardware import resolve_jit, resolve_precision

    recipe = get_recipe(args.recipe, **parse_overrides(args.overrides))
    finished = os.path.join(args.out, "summary.json")
    if os.path.exists(finished):
        raise SystemExit(
            f"error: {finished} exists: a finished run is in {args.out!r}. Delete it or "
            "choose another --out."
        )
    keras.utils.set_random_seed(args.seed)
    kind, _ = parse_source(args.data)
    val_source = args.val_data or (args.data if kind in ("digits", "tfds") else None)
    val_split = args.val_split or {"digits": "test", "tfds": "validation"}.get(kind, args.split)

    info = source_info(args.data, args.data_dir)
    num_classes = args.num_classes or info["num_classes"]
    options = pipeline_options(args)
    dtype = resolve_precision(args.precision)
    with data_parallel(args.distribute) as replicas:
        jit = resolve_jit(args.jit, replicas, dtype)
        model = build_model(args, num_classes, args.image_size, recipe, dtype)
        image_size = args.image_size or model.input_shape[1]
        augment = train_augment(recipe, args.seed)

        def train_fn(input_context=None):
            # Called once per worker under multi-worker training: each worker
            # reads and decodes only its share of the shuffled file list.
            train, _ = source_dataset(
                args.data, args.split, image_size=image_size, batch_size=args.batch_size,
                training=True, augment=augment, num_classes=num_classes, seed=args.seed,
                data_dir=args.data_dir, input_context=input_context, **options,
            )
            if recipe.mix_token and getattr(model, "return_dense", False):
                train = with_mix_token(train, model, num_classes, image_size, args.seed)
            return for_model(train, model)

        train = distribute_input(train_fn)
        val = None
        if val_source:
            val, _ = source_dataset(
                val_source, val_split, image_size=image_size, batch_size=args.batch_size,
                training=False, num_classes=num_classes, data_dir=args.data_dir, **options,
            )
        write_json(os.path.join(args.out, "train_config.json"),
                   {**vars(args), "run": None, "recipe": recipe.to_dict(),
                    "num_classes": num_classes, "image_size": image_size,
                    "replicas": replicas, "backend": keras.backend.backend(),
                    "dtype_policy": dtype, "jit_compile": jit})
        if info.get("class_names"):
            write_json(os.path.join(args.out, "class_names.json"), info["class_names"])
        summary = fit(
            model, train, val, recipe=recipe, batch_size=args.batch_size, out_dir=args.out,
            epochs=args.epochs, save_freq=args.save_every or "epoch", jit_compile=jit,
            verbose="auto" if args.verbose is None else args.verbose,
        )
    print_summary(summary, replicas, dtype, jit)
    return 0


def print_summary(summary, replicas=1, dtype="float32", jit=False):
    def pct(value):
        return "n/a" if value is None else f"{100 * value:.2f}%"

    ips = summary.get("images_per_second")
    print(
        f"\nDone: {summary['model']} ({summary['recipe']}, {summary['epochs']} epochs, "
        f"{replicas} device{'s' if replicas != 1 else ''}, {dtype}, XLA {'on' if jit else 'off'}) "
        f"in {summary['seconds']:.0f} s\n"
        f"  train accuracy  {pct(summary['train_accuracy'])}\n"
        f"  val accuracy    {pct(summary['val_accuracy'])}\n"
        f"  images/s        {'n/a' if ips is None else f'{ips:.1f}'} (training)\n"
        f"  model           {summary['model_path']}\n"
        f"  checkpoints     {summary['checkpoint_dir']}\n"
        f"  logs            {summary['log_path']}, {summary['tensorboard_dir']}"
    )
