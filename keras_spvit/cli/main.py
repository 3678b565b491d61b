"""Entry point of the `keras-spvit` console script.

Each subcommand lives in its own module of this package and exposes
`add_parser(subparsers)`, which registers its `argparse` parser and sets
`run=<function(args) -> int>` as the parser's default. Registering a parser
imports nothing heavy: `keras-spvit --help` does not start TensorFlow.

A user's mistake (a bad flag value, a missing file, an unusable data source)
raises `UsageError`, printed here as one line `error: ...` on stderr with
exit code 2, before anything is built or written. Other exceptions are bugs
and keep their traceback. `--debug` (or `KERAS_SPVIT_DEBUG=1`) shows the
traceback of every error.

TensorFlow's C++ start-up logs are silenced (`TF_CPP_MIN_LOG_LEVEL=3`, and
the lines TensorFlow writes before its logging starts are held back) unless
`TF_CPP_MIN_LOG_LEVEL` is set or `--verbose` is given.
"""

import argparse
import importlib
import os
import sys

from keras_spvit.cli.common import UsageError, native_logs_held, one_line

SUBCOMMANDS = (
    "train", "evaluate", "predict", "convert", "label", "export", "explain", "study",
    "study-report",
)


class ArgumentParser(argparse.ArgumentParser):
    """argparse, with errors raised as `UsageError` (one line, exit code 2 in `main`)."""

    def error(self, message):
        raise UsageError(message)


def build_parser():
    """The `keras-spvit` parser with every subcommand registered.

    Example:

    >>> args = build_parser().parse_args(["evaluate", "runs/digits"])
    """
    parser = ArgumentParser(
        prog="keras-spvit",
        description="Train, evaluate, run and convert keras_spvit models, and make token labels.",
    )
    parser.add_argument("--debug", dest="debug_all", action="store_true",
                        help="show Python tracebacks for every error (also KERAS_SPVIT_DEBUG=1)")
    parser.add_argument("--verbose", dest="verbose_all", action="store_true",
                        help="keep TensorFlow's C++ logs (off by default)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                                       parser_class=ArgumentParser)
    for name in SUBCOMMANDS:
        module = importlib.import_module(f"keras_spvit.cli.{name.replace('-', '_')}")
        module.add_parser(subparsers)
    return parser


def _debug(argv):
    return "--debug" in argv or os.environ.get("KERAS_SPVIT_DEBUG", "") not in ("", "0")


def _quiet_tensorflow(verbose):
    """Starts TensorFlow without its C++ logs, unless the user asked for them."""
    if verbose or "TF_CPP_MIN_LOG_LEVEL" in os.environ:
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    if "tensorflow" in sys.modules:
        return
    # TensorFlow's native libraries log a few lines before absl's logging
    # starts, ignoring TF_CPP_MIN_LOG_LEVEL.
    with native_logs_held():
        import tensorflow  # noqa: F401


def main(argv=None):
    """Runs `keras-spvit ARGS...`; returns the exit code.

    A user error prints one line `error: ...` on stderr and raises
    `SystemExit(2)`.

    Args:
        argv: list of str. Defaults to `sys.argv[1:]`.

    Example:

    >>> main(["evaluate", "runs/digits", "--data", "digits"])
    0
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = _debug(argv)
    try:
        args = build_parser().parse_args(argv)
        verbose = args.verbose_all or getattr(args, "verbose", None) not in (None, 0, False)
        _quiet_tensorflow(verbose)
        return args.run(args)
    except UsageError as error:
        if debug:
            raise
        print(f"error: {one_line(error)}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    sys.exit(main())
