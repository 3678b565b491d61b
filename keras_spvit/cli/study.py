"""`keras-spvit study`: models x training-set sizes x seeds, one shared recipe.

The work is `keras_spvit.study` (`keras_spvit/study.py`); this module only
parses the flags and turns the user's mistakes into one-line errors before
anything is trained or written.
"""

import json


def add_parser(subparsers):
    from keras_spvit.cli.common import add_run_options, positive_int, seconds

    parser = subparsers.add_parser(
        "study",
        help="data-efficiency study: models x training-set sizes x seeds (resumable)",
        description="Train every model with one shared recipe on class-balanced subsets of "
        "the training split (fixed per size and seed), evaluate on the fixed test split, and "
        "write OUT/study.json, OUT/table.md (mean +/- std of test and train accuracy, paired "
        "comparison per seed against --baseline, every cell per seed) and "
        "OUT/learning_curves.png. Each cell is a "
        "run directory under OUT/cells: rerunning resumes, reusing finished cells.",
    )
    parser.add_argument("--data", required=True,
                        help="digits | fashion_mnist | idx:PATH | tfds:NAME (held in memory) | "
                             "npz:PATH (with --test-data)")
    parser.add_argument("--test-data", default=None,
                        help="test source for npz: data (default: the test split of --data)")
    parser.add_argument("--test-split", default="test",
                        help="held-out split (default test; e.g. validation for some TFDS sets)")
    parser.add_argument("--models", nargs="+", required=True, metavar="MODEL",
                        help="builder names, e.g. SPViT_Tiny LVViT_Tiny")
    parser.add_argument("--sizes", nargs="+", type=positive_int, required=True, metavar="N",
                        help="training-set sizes (class-balanced subsets of the train split)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], metavar="S")
    parser.add_argument("--epochs", type=positive_int, default=30, help="epochs per cell")
    parser.add_argument("--min-steps", type=int, default=0, metavar="STEPS",
                        help="repeat small subsets within an epoch so that every cell trains "
                             "at least this many optimizer steps (default 0)")
    parser.add_argument("--recipe", default="digits",
                        help="named recipe shared by every model (default: digits)")
    parser.add_argument("--set", dest="overrides", action="append", metavar="FIELD=VALUE",
                        help="override a field of the shared recipe (repeatable)")
    parser.add_argument("--image-size", type=positive_int, default=32)
    parser.add_argument("--batch-size", type=positive_int, default=64)
    parser.add_argument("--test-size", type=positive_int, default=None, metavar="N",
                        help="evaluate on a fixed class-balanced N-image subset of the test "
                             "split (default: all of it)")
    parser.add_argument("--baseline", default=None,
                        help="model of the paired comparison (default: a PlainViT if present, "
                             "else an LVViT, else the first model)")
    parser.add_argument("--model-args", action="append", default=[], metavar="MODEL=JSON",
                        help="builder arguments of one model, e.g. "
                             "'PlainViT_Tiny={\"stage_depths\": [4]}' (repeatable)")
    parser.add_argument("--jobs", type=positive_int, default=1,
                        help="cells at once, in subprocesses (at most the CPU count)")
    parser.add_argument("--jit", choices=("auto", "on", "off"), default="auto",
                        help="XLA compilation (default auto, as `train` chooses it; tiny models "
                             "on a CPU may compile for longer than they train)")
    parser.add_argument("--status-every", type=seconds, default=300.0, metavar="SECONDS",
                        help="a line on the cells training (epochs done, time left) at most "
                             "this often, once per epoch logged (default 300; 0: every epoch)")
    parser.add_argument("--data-dir", default=None, help="TensorFlow Datasets data_dir")
    parser.add_argument("--out", required=True, help="study directory (resumed if it exists)")
    add_run_options(parser)
    parser.set_defaults(run=run)
    return parser


def parse_model_args(pairs):
    """`["NAME=JSON", ...]` -> `{NAME: dict}`; a `UsageError` names the bad pair.

    Example:

    >>> parse_model_args(['PlainViT_Tiny={"patch_size": 4}'])
    {'PlainViT_Tiny': {'patch_size': 4}}
    """
    from keras_spvit.cli.common import UsageError

    found = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        try:
            value = json.loads(text) if sep else None
        except json.JSONDecodeError:
            value = None
        if not name or not isinstance(value, dict):
            raise UsageError(f"--model-args {pair!r}: expected MODEL=JSON object, e.g. "
                             "'PlainViT_Tiny={\"patch_size\": 4}'.")
        found[name] = value
    return found


def run(args):
    from keras_spvit.cli.common import (
        check_recipe_overrides,
        parse_overrides,
        user_errors,
    )
    from keras_spvit.study import check_settings, check_study, study

    recipe = check_recipe_overrides(args.recipe, parse_overrides(args.overrides))
    options = dict(
        epochs=args.epochs, image_size=args.image_size, batch_size=args.batch_size,
        min_steps=args.min_steps, test_size=args.test_size, test_data=args.test_data,
        baseline=args.baseline, model_args=parse_model_args(args.model_args), jobs=args.jobs,
        recipe=recipe, data_dir=args.data_dir, jit=args.jit, test_split=args.test_split,
    )
    with user_errors("study"):
        _, _, _, settings = check_study(args.data, args.models, args.sizes, args.seeds,
                                        **options)
        check_settings(args.out, settings, write=False)
    study(args.data, args.models, args.sizes, args.seeds, out=args.out,
          status_every=args.status_every, **options)
    return 0
