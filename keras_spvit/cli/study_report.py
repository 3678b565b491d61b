"""`keras-spvit study-report`: several study directories reported as one study.

The work is `keras_spvit.study.combine_studies`; this module parses the
flags and turns the user's mistakes into one-line errors.
"""


def add_parser(subparsers):
    from keras_spvit.cli.common import add_run_options

    parser = subparsers.add_parser(
        "study-report",
        help="one table and learning curve from several study directories (trains nothing)",
        description="Report the finished cells of several `keras-spvit study` directories as "
        "one study: OUT/study.json, OUT/table.md and OUT/learning_curves.png. The studies "
        "must share every setting but --min-steps and the backend (a grid whose larger "
        "sizes ran with a larger step budget, or on another engine: each size's budget and "
        "backend are stated in the table). Each size comes "
        "from one directory; DIR=SIZE,SIZE takes only those sizes of DIR.",
    )
    parser.add_argument("sources", nargs="+", metavar="DIR[=SIZES]",
                        help="study directories, e.g. runs/fmnist32=100,300 runs/fmnist32_n1000")
    parser.add_argument("--models", nargs="+", default=None, metavar="MODEL",
                        help="models to report, in table order (default: every model that ran)")
    parser.add_argument("--baseline", default=None,
                        help="model of the paired comparison (default: a PlainViT if present, "
                             "else an LVViT, else the first model)")
    parser.add_argument("--out", required=True, help="directory of the combined report")
    add_run_options(parser)
    parser.set_defaults(run=run)
    return parser


def run(args):
    from keras_spvit.cli.common import user_errors
    from keras_spvit.study import combine_studies

    with user_errors("study-report"):
        combine_studies(args.sources, args.out, models=args.models, baseline=args.baseline)
    return 0
