"""The README's model table, generated from the families' variant tables.

Every row of every family's variant table becomes one line: the builder that
makes it, its trainable parameters and GMACs (measured on the built model),
the paper's top-1 (from the table's `info`), and whether an official
checkpoint exists and converts. Listing the variants (`model_entries`) builds
nothing; measuring them (`model_rows`) builds each model once.

Run `python tools/model_table.py` to rewrite the README's table
between the `<!-- model-table:start -->` and `<!-- model-table:end -->`
lines, or with `--check` to fail with a diff if it is stale.
"""

import argparse
import dataclasses
import difflib
import functools
import math
import sys
from pathlib import Path

import keras

import keras_spvit
from keras_spvit.zoo.builders import build_from_table
from keras_spvit.zoo.families import FAMILIES

START_MARKER = "<!-- model-table:start -->"
END_MARKER = "<!-- model-table:end -->"
NUM_CLASSES = 1000
COMMAND = "python tools/model_table.py"


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    """One variant, listed without building it.

    Attributes:
        builder: str. Public `keras_spvit` builder making this variant, or
            e.g. `"SPViT(**SPVIT_VARIANTS['x']['arch'])"` if none is named.
        variant: str. Key in the family's variant table.
        build: callable `build(num_classes=...) -> model`.
        info: dict. The row's `info` (paper figures).
        official_weights: str. What official checkpoint exists and whether
            `load_official_weights` maps its layout.
    """

    builder: str
    variant: str
    build: object
    info: dict
    official_weights: str


def official_weights(family, variant):
    """What the family table says about a variant's official checkpoint.

    "converts": the family has a converter and the release comes from the
    code the family ports; "layout not mapped": another code wrote it.

    Example:

    >>> official_weights(FAMILIES[0], "spvit_s")
    'converts (SP-ViT release, 224, 384 px)'
    """
    release = family.releases.get(variant)
    if release is None:
        return "none published"
    sizes = ", ".join(str(size) for size in release.image_sizes)
    where = f"{release.name} release, {sizes} px"
    if family.converter is None:
        return f"no converter ({where})"
    if release.repo != family.ports:
        return f"layout not mapped ({where})"
    return f"converts ({where})"


def model_entries():
    """Every variant of every family's table, in table order, built lazily.

    Returns:
        A list of `ModelEntry`; nothing is built.

    Example:

    >>> [entry.builder for entry in model_entries()][:2]
    ['SPViT_S', 'SPViT_M']
    """
    entries = []
    for family in FAMILIES:
        generic = getattr(keras_spvit, family.generic)
        for variant, row in family.variants.items():
            builder = family.builder_of(variant)
            if builder is not None:
                build = getattr(keras_spvit, builder)
            else:
                builder = f"{family.generic}(**{family.variants_table}[{variant!r}]['arch'])"
                build = functools.partial(build_from_table, generic, family.variants, variant)
            entries.append(
                ModelEntry(
                    builder=builder,
                    variant=variant,
                    build=build,
                    info=dict(row.get("info") or {}),
                    official_weights=official_weights(family, variant),
                )
            )
    return entries


def _top1(info):
    top1 = info.get("top1")
    if top1 is None:
        return None, None
    if isinstance(top1, (int, float)):
        return float(top1), None
    return top1[0], top1[1]


def measure(entry, num_classes=NUM_CLASSES):
    """Builds one variant, its variables uninitialised, and returns its table row.

    Args:
        entry: a `ModelEntry`.
        num_classes: int. Classes of both heads.

    Returns:
        A dict with `builder`, `variant`, `image_size` (`(height, width)`
        built), `params` (trainable, both heads), `gmacs` (whole classifier,
        one image at `image_size`), `top1_224`, `top1_384` and
        `official_weights`.

    Example:

    >>> measure(model_entries()[0])["params"]
    26234468
    """
    # A row reads shapes and build configs only: the variables are left without values
    # (drawing them was ~80% of the time of a build) and no optimizer is made.
    with keras.StatelessScope(initialize_variables=False):
        model = entry.build(num_classes=num_classes, compile=False)
    try:
        image_size = tuple(int(s) for s in model.input_shape[1:3])
        params = sum(math.prod(w.shape) for w in model.trainable_weights)
        gmacs = keras_spvit.count_macs(model) / 1e9
    finally:
        del model
        keras.backend.clear_session()
    top1_224, top1_384 = _top1(entry.info)
    return {
        "builder": entry.builder,
        "variant": entry.variant,
        "image_size": image_size,
        "params": params,
        "gmacs": gmacs,
        "top1_224": top1_224,
        "top1_384": top1_384,
        "official_weights": entry.official_weights,
    }


def model_rows(entries=None, num_classes=NUM_CLASSES):
    """Measures every variant, one model in memory at a time.

    Args:
        entries: optional list of `ModelEntry`; defaults to `model_entries()`.
        num_classes: int. Classes of both heads.

    Returns:
        A list of row dicts (see `measure`), in table order.

    Example:

    >>> rows = model_rows()  # builds every variant: under a minute on a CPU
    >>> print(render_markdown(rows))
    """
    entries = model_entries() if entries is None else entries
    return [measure(entry, num_classes) for entry in entries]


def _format_top1(value):
    return "–" if value is None else f"{value:.1f}"


def _format_size(image_size):
    height, width = image_size
    return str(height) if height == width else f"{height}x{width}"


HEADER = (
    "| builder | variant | input px | params | GMACs | paper top-1 224 / 384 "
    "| official checkpoint |"
)


def render_markdown(rows):
    """The model table as GitHub markdown.

    Args:
        rows: row dicts as `model_rows` returns them.

    Returns:
        str, one header, one separator and one line per row, no trailing
        newline.

    Example:

    >>> print(render_markdown(model_rows(model_entries()[:1])))
    | builder | variant | input px | params | GMACs | paper top-1 224 / 384 | official checkpoint |
    |---|---|---:|---:|---:|---|---|
    | `SPViT_S` | `spvit_s` | 224 | 26,234,468 | 6.55 | 83.9 / 85.1 | converts (SP-ViT release, 224, 384 px) |
    """
    lines = [HEADER, "|---|---|---:|---:|---:|---|---|"]
    for row in rows:
        top1 = (
            "–"
            if row["top1_224"] is None and row["top1_384"] is None
            else f"{_format_top1(row['top1_224'])} / {_format_top1(row['top1_384'])}"
        )
        lines.append(
            f"| `{row['builder']}` | `{row['variant']}` | {_format_size(row['image_size'])} "
            f"| {row['params']:,} | {row['gmacs']:.3g} | {top1} | {row['official_weights']} |"
        )
    return "\n".join(lines)


NOTE = f"""\
Generated by `{COMMAND}` from the variant tables; do not edit by hand
(`--check` fails if it is stale). Params: trainable, `num_classes={NUM_CLASSES}`, both heads
(class and token-labeling aux). GMACs: `keras_spvit.count_macs` of the whole classifier on
one image at the input size shown: the builder's default, 224 px, or the CPU-sized models'.
Top-1: ImageNet-1k as each paper reports it (`PlainViT_*`: DeiT's). Official checkpoint:
"converts" means `load_official_weights` maps that release's layout (build the model at the
checkpoint's size); no weights ship with the package. "Layout not mapped": the release was
written by other code than the one the family ports (LV-ViT's own code has no PosCNN; our
LV-ViT is SP-ViT's at K = 0). Releases: [SP-ViT](https://github.com/ZhouYuxuanYX/SP-ViT),
[TokenLabeling](https://github.com/zihangJiang/TokenLabeling),
[Refiner_ViT](https://github.com/zhoudaquan/Refiner_ViT)."""


def render_region(rows):
    """What goes between the README markers: the table and how it is made."""
    return f"{render_markdown(rows)}\n\n{NOTE}\n"


def _split(text, path):
    start, end = text.find(START_MARKER), text.find(END_MARKER)
    if start < 0 or end < start:
        raise ValueError(
            f"{path} needs a line {START_MARKER!r} followed by a line {END_MARKER!r}."
        )
    body_start = text.find("\n", start) + 1
    if not 0 < body_start <= end:
        raise ValueError(f"{path}: {END_MARKER!r} must be on a line after {START_MARKER!r}.")
    return text[:body_start], text[body_start:end], text[end:]


def update_readme(path, region, check=False, out=None):
    """Writes `region` between the README's markers, or checks it is there.

    Only the text between the marker lines changes; the file is read just
    before it is written, so edits elsewhere in it are kept.

    Args:
        path: the README.
        region: the new text between the markers (see `render_region`).
        check: bool. Write nothing; print a diff if the README differs.
        out: file the diff goes to (default `sys.stdout`).

    Returns:
        `True` if the README was already up to date.

    Example:

    >>> update_readme("README.md", render_region(model_rows()))
    """
    path = Path(path)
    head, body, tail = _split(path.read_text(), path)
    if body == region:
        return True
    if check:
        (out or sys.stdout).writelines(
            difflib.unified_diff(
                body.splitlines(keepends=True),
                region.splitlines(keepends=True),
                f"{path} (model table)",
                "generated",
            )
        )
    else:
        path.write_text(head + region + tail)
    return False


def main(argv=None):
    """`python tools/model_table.py [--check] [--readme README.md]`.

    Args:
        argv: command-line arguments (default `sys.argv[1:]`).

    Returns:
        int exit code: 1 if `--check` found the README stale, else 0.

    Example:

    >>> main(["--check", "--readme", "README.md"])
    """
    parser = argparse.ArgumentParser(
        prog=COMMAND, description="Regenerate the README's model table."
    )
    parser.add_argument("--readme", default="README.md", help="README to update (default: %(default)s)")
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 with a diff if stale"
    )
    args = parser.parse_args(argv)
    up_to_date = update_readme(args.readme, render_region(model_rows()), check=args.check)
    if args.check and not up_to_date:
        print(f"\n{args.readme} is stale: run `{COMMAND}`.", file=sys.stderr)
        return 1
    print(f"{args.readme}: model table {'unchanged' if up_to_date else 'rewritten'}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
