"""Does the prior pay off? A data-efficiency study: models x training-set sizes x seeds.

Each model trains with ONE shared recipe (nothing is tuned for one model) on
class-balanced subsets of a source's training split, and is evaluated on its
fixed test split. A cell is one `(model, size, seed)`; it is a run directory
of its own under `OUT/cells/`, finished when its `cell.json` exists, so an
interrupted study resumes where it stopped and a larger grid in the same
`OUT` reuses every finished cell. The settings that decide a cell's result
(data, recipe, epochs, image size, ...) are kept in `OUT/settings.json`; a
rerun with other settings in the same `OUT` is refused.

Outputs in `OUT`: `study.json` (every cell, the table, the paired
comparisons), `table.md` (markdown: the tables, the verdict and every cell
per seed), `learning_curves.png` (test accuracy vs
training-set size, log x, mean +/- std over seeds, one line per model) and,
when a spatial-prior model ran, `spatial_priors.png`.

Subsets: per seed, classes are filled round-robin in a seeded class order
and the images of each class are taken in a seeded order, so the subsets
are exactly class-balanced (sizes differ by at most one image between
classes) and nested: with one seed, the 100-image subset is part of the
300-image one.
"""

import collections
import glob
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import textwrap
import time

import numpy as np

SETTINGS_FILE = "settings.json"
CELL_FILE = "cell.json"
# JAX's compiled programs, shared by the cells of a study (see `use_compile_cache`).
COMPILE_CACHE = "compile_cache"
# Sources whose splits fit in memory (subsets are index arrays).
STUDY_SOURCES = "digits, fashion_mnist, idx:PATH, npz:PATH (with test_data) or tfds:NAME"
# Two-sided 95% Student t quantiles by degrees of freedom (1..10); 2.0 beyond.
_T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228)


# === Subsets ===


def balanced_subset(labels, size, seed, num_classes=None):
    """Indices of a class-balanced subset of `labels`, fixed by `(size, seed)`.

    Every class gets `size // num_classes` images and the first
    `size % num_classes` classes of a seeded class order one more; within a
    class the images come in a seeded order. With one seed the subsets of
    growing sizes are nested.

    Args:
        labels: int array `(n,)` of class ids in `[0, num_classes)`.
        size: int. Images to pick, at least `num_classes`.
        seed: int.
        num_classes: optional int (default `labels.max() + 1`).

    Returns:
        Sorted int64 indices into `labels`.

    Example:

    >>> labels = np.repeat(np.arange(10), 50)
    >>> np.bincount(labels[balanced_subset(labels, 100, seed=0)]).tolist()
    [10, 10, 10, 10, 10, 10, 10, 10, 10, 10]
    """
    labels = np.asarray(labels)
    num_classes = int(num_classes or labels.max() + 1)
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < num_classes:
        raise ValueError(f"Expected a training-set size of at least {num_classes} (one image "
                         f"per class). Received: size={size!r}")
    if size > len(labels):
        raise ValueError(f"Expected a training-set size of at most {len(labels)} (the train "
                         f"split). Received: size={size}")
    order = np.random.default_rng(seed).permutation(num_classes)
    counts = np.full(num_classes, size // num_classes)
    counts[order[: size % num_classes]] += 1
    picked = []
    for c in range(num_classes):
        members = np.flatnonzero(labels == c)
        if len(members) < counts[c]:
            raise ValueError(
                f"Expected at least {counts[c]} images of class {c} for size={size}; the train "
                f"split has {len(members)}."
            )
        shuffled = np.random.default_rng([seed, c]).permutation(members)
        picked.append(shuffled[: counts[c]])
    return np.sort(np.concatenate(picked)).astype("int64")


def study_arrays(data, split, data_dir=None):
    """`(images, labels)` of a source's split held in memory (uint8, int32).

    Args:
        data: `digits`, `fashion_mnist`, `idx:PATH`, `npz:PATH` or `tfds:NAME`
            (loaded whole: for datasets that fit in memory, e.g. cifar10).
        split: `train`, `test` (or any TFDS split).
        data_dir: TFDS data directory.

    Example:

    >>> images, labels = study_arrays("digits", "test")
    >>> images.shape
    (359, 8, 8)
    """
    from keras_spvit.data.sources import parse_source, source_arrays

    kind, value = parse_source(data)
    if kind == "tfds":
        import tensorflow_datasets as tfds

        arrays = tfds.as_numpy(tfds.load(value, split=split, batch_size=-1, data_dir=data_dir,
                                         as_supervised=True))
        return np.asarray(arrays[0]), np.asarray(arrays[1]).astype("int32")
    if kind == "folder":
        raise ValueError(f"Expected a source held in memory ({STUDY_SOURCES}). Received: "
                         f"data={data!r} (an image folder: save it as an .npz first).")
    images, labels, _ = source_arrays(data, split, data_dir)
    return images, labels


# === Statistics ===


# A model whose mean train accuracy is below this has not fitted its training images: the
# verdict says so (a comparison of underfit models measures the budget, not the prior).
UNDERFIT_BELOW = 0.90


def _std(values):
    return statistics.stdev(values) if len(values) > 1 else None


def t95(dof):
    """The two-sided 95% Student t quantile for `dof` degrees of freedom."""
    return _T95[dof - 1] if dof <= len(_T95) else 2.0


def summarize(cells, models, sizes, baseline=None):
    """Mean +/- std per model and size, and paired differences against a baseline.

    Args:
        cells: list of dicts with `model`, `size`, `seed`, `test_accuracy`,
            `train_accuracy` and `test_count` (test images, for ties).
        models: model labels in table order.
        sizes: sizes in table order.
        baseline: optional model label; its paired comparison is left out.

    Returns:
        `{"rows": [...], "paired": [...]}`. A row: `model`, `size`, `seeds`,
        `test_mean`, `test_std`, `train_mean`, `train_std` (std `None` for
        one seed; sample std otherwise). A paired entry (one per other model
        and size with common seeds): `model`, `baseline`, `size`, `seeds`,
        `diff_mean`, `diff_std`, `ci95` (half-width of the t interval of the
        mean, `None` for one seed), `wins`, `ties`, `losses` (test accuracy,
        per seed; a tie is the same number of test images right).

    Example:

    >>> cells = [dict(model="A", size=100, seed=s, test_accuracy=a, train_accuracy=1.0,
    ...               test_count=100) for s, a in ((0, 0.5), (1, 0.7))]
    >>> summarize(cells, ["A"], [100])["rows"][0]["test_mean"]
    0.6
    """
    by_key = {(c["model"], c["size"], c["seed"]): c for c in cells}
    rows, paired = [], []
    for size in sizes:
        for model in models:
            mine = [c for c in cells if c["model"] == model and c["size"] == size]
            if not mine:
                continue
            test = [c["test_accuracy"] for c in mine]
            train = [c["train_accuracy"] for c in mine]
            rows.append({"model": model, "size": size, "seeds": len(mine),
                         "test_mean": statistics.mean(test), "test_std": _std(test),
                         "train_mean": statistics.mean(train), "train_std": _std(train)})
            if baseline is None or model == baseline:
                continue
            pairs = [(c, by_key[(baseline, size, c["seed"])]) for c in mine
                     if (baseline, size, c["seed"]) in by_key]
            if not pairs:
                continue
            diffs = [a["test_accuracy"] - b["test_accuracy"] for a, b in pairs]
            tie = 0.5 / max(a.get("test_count") or 1 for a, _ in pairs)
            std = _std(diffs)
            paired.append({
                "model": model, "baseline": baseline, "size": size, "seeds": len(pairs),
                "diff_mean": statistics.mean(diffs), "diff_std": std,
                "ci95": None if std is None else t95(len(diffs) - 1) * std / math.sqrt(len(diffs)),
                "wins": sum(d > tie for d in diffs), "ties": sum(abs(d) <= tie for d in diffs),
                "losses": sum(d < -tie for d in diffs),
            })
    return {"rows": rows, "paired": paired}


def _pm(mean, std, points=True):
    scale = 100 if points else 1
    text = f"{scale * mean:.1f}"
    return text + ("" if std is None else f" ± {scale * std:.1f}")


def format_table(summary):
    """Markdown tables of `summarize`'s result: accuracies, then the paired comparison.

    Example:

    >>> print(format_table(summarize(cells, ["A", "B"], [100], baseline="A")))
    """
    lines = ["| model | train images | seeds | test accuracy % | train accuracy % |",
             "|---|---:|---:|---:|---:|"]
    for r in summary["rows"]:
        lines.append(f"| {r['model']} | {r['size']:,} | {r['seeds']} | "
                     f"{_pm(r['test_mean'], r['test_std'])} | "
                     f"{_pm(r['train_mean'], r['train_std'])} |")
    if summary["paired"]:
        lines += ["", "| model − baseline | train images | seeds | test accuracy difference "
                  "(points, mean ± std) | 95% interval of the mean | wins / ties / losses |",
                  "|---|---:|---:|---:|---:|---:|"]
        for p in summary["paired"]:
            interval = ("n/a (one seed)" if p["ci95"] is None else
                        f"[{100 * (p['diff_mean'] - p['ci95']):+.1f}, "
                        f"{100 * (p['diff_mean'] + p['ci95']):+.1f}]")
            spread = "" if p["diff_std"] is None else f" ± {100 * p['diff_std']:.1f}"
            lines.append(f"| {p['model']} − {p['baseline']} | {p['size']:,} | {p['seeds']} | "
                         f"{100 * p['diff_mean']:+.1f}{spread} | {interval} | "
                         f"{p['wins']} / {p['ties']} / {p['losses']} |")
    return "\n".join(lines)


def format_seed_table(cells, models, sizes, seeds):
    """A markdown table of every cell: test / train accuracy % per seed (a
    blank where a cell has not run), rows by size then model, as in
    `format_table`. What the paired comparison summarises, seed by seed.

    Example:

    >>> print(format_seed_table(cells, ["A", "B"], [100], [0, 1]))
    | model | train images | seed 0 | seed 1 |
    |---|---:|---:|---:|
    | A | 100 | 50.0 / 100.0 | 60.0 / 100.0 |
    ...
    """
    found = {(c["model"], c["size"], c["seed"]): c for c in cells}
    lines = ["| model | train images | " + " | ".join(f"seed {s}" for s in seeds) + " |",
             "|---|---:|" + "---:|" * len(seeds)]
    for size in sorted(sizes):
        for model in models:
            row = [found.get((model, size, seed)) for seed in seeds]
            if not any(row):
                continue
            values = ["" if c is None else
                      f"{100 * c['test_accuracy']:.1f} / {100 * c['train_accuracy']:.1f}"
                      for c in row]
            lines.append(f"| {model} | {size:,} | " + " | ".join(values) + " |")
    return "\n".join(lines)


def verdict(summary, model=None):
    """One sentence on what the numbers show for `model` against the baseline.

    "Better" or "worse" only where the 95% interval of the mean paired
    difference excludes zero; otherwise "within error bars" (one seed: "one
    seed only, no error bar").

    Args:
        summary: `summarize`'s result.
        model: the model to speak of (default: the first spatial-prior model,
            `SPViT*`, else the first compared model).

    Example:

    >>> verdict(summarize(cells, ["A", "B"], [100], baseline="A"))
    'B vs A: ...'
    """
    paired = summary["paired"]
    if not paired:
        return "No paired comparison: the study ran a single model (or no common seeds)."
    names = [p["model"] for p in paired]
    if model is None:
        model = next((n for n in names if n.startswith("SPViT")), names[0])
    parts, judgements = [], set()
    for p in (p for p in paired if p["model"] == model):
        if p["ci95"] is None:
            judgement = "one seed only, no error bar"
        elif p["diff_mean"] - p["ci95"] > 0:
            judgement = "better beyond the 95% interval"
        elif p["diff_mean"] + p["ci95"] < 0:
            judgement = "worse beyond the 95% interval"
        else:
            judgement = "within error bars"
        judgements.add(judgement)
        spread = "" if p["diff_std"] is None else f" ± {100 * p['diff_std']:.1f}"
        parts.append(f"{100 * p['diff_mean']:+.1f}{spread} points with {p['size']:,} images "
                     f"({judgement}, {p['wins']}/{p['ties']}/{p['losses']} wins/ties/losses)")
    baseline = paired[0]["baseline"]
    if judgements == {"within error bars"}:
        lead = f"{model} and {baseline} are within error bars of each other at every size"
    else:
        lead = f"{model} against {baseline}"
    return f"{lead}: " + "; ".join(parts) + "." + _underfit_warning(summary, (model, baseline))


def _percent_below(value, limit):
    """`value` (< `limit`) in percent as the table prints it (one decimal), or
    with two decimals rounded down where one would read as `limit` itself
    (0.8996 -> "89.96", not "90.0"; 0.4835 -> "48.4" as in the table)."""
    text = f"{100 * value:.1f}"
    if float(text) >= 100 * limit:
        text = f"{math.floor(10000 * value) / 100:.2f}"
    return text


def _underfit_warning(summary, models):
    """" Caution: ..." naming the compared rows whose mean train accuracy is below
    `UNDERFIT_BELOW`, or "" when every compared model fits its training images."""
    low = [r for r in summary["rows"]
           if r["model"] in models and r["train_mean"] < UNDERFIT_BELOW]
    if not low:
        return ""
    rows = ", ".join(f"{r['model']} {_percent_below(r['train_mean'], UNDERFIT_BELOW)}% at "
                     f"{r['size']:,}" for r in low)
    return (f" Caution: underfit (train accuracy {rows}; below {100 * UNDERFIT_BELOW:.0f}%): "
            "the difference reflects the training budget as much as the models; train longer "
            "(--epochs / --min-steps) before reading it as an effect of the prior.")


def plot_learning_curves(summary, path, title=None, size_notes=None):
    """Writes a PNG: test accuracy vs training-set size (log x), mean +/- std, a line per model.

    Args:
        summary: `summarize`'s result.
        path: str. The `.png` to write.
        title: optional title (wrapped to the figure's width).
        size_notes: optional `{size: str}`, printed under that size's tick
            (e.g. its step budget).

    Returns:
        `path`.

    Example:

    >>> plot_learning_curves(summarize(cells, ["A"], [100, 300]), "curves.png")
    'curves.png'
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6.4, 4.4))
    models = list(dict.fromkeys(r["model"] for r in summary["rows"]))
    for i, model in enumerate(models):
        rows = sorted((r for r in summary["rows"] if r["model"] == model), key=lambda r: r["size"])
        sizes = [r["size"] for r in rows]
        # Small horizontal offsets keep overlapping error bars readable.
        shift = 1 + 0.025 * (i - (len(models) - 1) / 2)
        axis.errorbar([s * shift for s in sizes], [100 * r["test_mean"] for r in rows],
                      yerr=[100 * (r["test_std"] or 0) for r in rows], marker="o",
                      markersize=4, capsize=3, label=model)
    axis.set_xscale("log")
    sizes = sorted({r["size"] for r in summary["rows"]})
    axis.set_xlim(min(sizes) / 1.6, max(sizes) * 1.6)  # one size too: offsets stay small
    axis.set_xticks(sizes)
    notes = size_notes or {}
    axis.set_xticklabels([f"{s:,}" + (f"\n{notes[s]}" if s in notes else "") for s in sizes])
    axis.minorticks_off()
    axis.set_xlabel("training images (class-balanced subset, log scale)")
    axis.set_ylabel("test accuracy (%)")
    axis.grid(True, alpha=0.3)
    axis.legend(fontsize=8)
    _widen_for_tick_labels(figure, axis)
    _set_title_within(figure, axis, title or "Test accuracy vs training-set size (mean ± std "
                      "over seeds)", fontsize=9)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def _widen_for_tick_labels(figure, axis, gap=10, max_width=16.0):
    """Widens `figure` until neighbouring x tick labels are at least `gap` pixels apart
    (measured as drawn: a log axis puts 1,000 and 3,000 as close as 100 and 300, and six
    sizes with their step notes ran into each other at the default width), up to
    `max_width` inches."""
    renderer = figure.canvas.get_renderer()
    for _ in range(5):
        figure.tight_layout()
        boxes = sorted((label.get_window_extent(renderer) for label in axis.get_xticklabels()
                        if label.get_text()), key=lambda box: box.x0)
        # The spacing each pair of centres needs over what it has; the axes stretch with
        # the figure, its margins do not, so this undershoots and the loop measures again.
        need = max([((a.width + b.width) / 2 + gap) / max((b.x0 + b.x1 - a.x0 - a.x1) / 2, 1)
                    for a, b in zip(boxes, boxes[1:])], default=1)
        width = figure.get_figwidth()
        if need <= 1 or width >= max_width:
            return
        figure.set_figwidth(min(max_width, width * need * 1.02))


def _set_title_within(figure, axis, title, fontsize):
    """Sets `title` on `axis` and lays the figure out (`tight_layout`), the title
    wrapped so that, centred over the axes, it stays inside the figure (a fixed
    character count misjudges proportional fonts and the axes' offset), its lines
    balanced (no last line of one word). Returns the title's `Text`."""
    renderer = figure.canvas.get_renderer()
    width = max(len(title), 1)
    kept = title.replace(" ± ", "\u00a0±\u00a0")  # "mean ± std" is not split across lines

    def wrap(width):
        return textwrap.fill(kept, width, break_on_hyphens=False)

    while True:
        text = axis.set_title(wrap(width), fontsize=fontsize)
        figure.tight_layout()
        box = text.get_window_extent(renderer)
        centre = (box.x0 + box.x1) / 2
        room = 2 * min(centre, figure.bbox.width - centre)
        if box.width <= room or width <= 10:
            break
        width = max(10, min(width - 1, int(width * room / box.width)))
    # The narrowest wrap with as many lines: no wider than the one that fit.
    lines = wrap(width).count("\n")
    while width > 10 and wrap(width - 1).count("\n") == lines:
        width -= 1
    text = axis.set_title(wrap(width), fontsize=fontsize)
    figure.tight_layout()
    return text


# === Models and settings ===


def study_builders():
    """`{name: builder}` of every model builder (the family table's names).

    Example:

    >>> study_builders()["SPViT_Tiny"](num_classes=10)
    """
    from keras_spvit.zoo import psvit, refined_vit, spvit
    from keras_spvit.zoo.families import builder_names

    modules = (spvit, refined_vit, psvit)
    return {name: next(getattr(m, name) for m in modules if hasattr(m, name))
            for name in builder_names()}


def default_baseline(models):
    """The baseline of the paired comparison: a plain ViT if present, else an
    LV-ViT (SP-ViT without priors), else the first model.

    Example:

    >>> default_baseline(["SPViT_Tiny", "PlainViT_Tiny"])
    'PlainViT_Tiny'
    """
    for prefix in ("PlainViT", "LVViT"):
        found = [m for m in models if m.startswith(prefix)]
        if found:
            return found[0]
    return models[0]


def _positive(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"Expected a positive int. Received: {name}={value!r}")


def _check_list(name, values, kind=int):
    values = list(values or ())
    if not values:
        raise ValueError(f"Expected at least one value. Received: {name}={values!r}")
    if len(set(values)) != len(values):
        raise ValueError(f"Expected distinct values. Received: {name}={values!r}")
    for v in values:
        if kind is int and (isinstance(v, bool) or not isinstance(v, (int, np.integer))):
            raise ValueError(f"Expected ints. Received: {name}={values!r}")
    return values


def cell_dir(out, model, size, seed):
    """`OUT/cells/<model>/n<size>/seed<seed>`: one cell's run directory."""
    return os.path.join(out, "cells", model, f"n{size}", f"seed{seed}")


def _read_json(path):
    with open(path) as f:
        return json.load(f)


def _write_json(path, value):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(value, f, indent=2)
    os.replace(tmp, path)


# === One cell ===


def _limit_threads(threads):
    """Caps the backends' thread pools (a subprocess cell under `jobs > 1`)."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    elif backend == "torch":
        import torch

        torch.set_num_threads(threads)


def _accuracies(model, settings, *splits):
    """Top-1 accuracy of `model` on each `(images, labels)` of `splits`, un-augmented (the
    evaluation transform), in one `predict` (one compiled function)."""
    from keras_spvit.data.datasets import array_dataset
    from keras_spvit.data.sources import source_preprocessing

    images = np.concatenate([_as_nhwc(x) for x, _ in splits])
    labels = np.concatenate([y for _, y in splits])
    dataset = array_dataset(images, labels, image_size=settings["image_size"], batch_size=500,
                            training=False, num_classes=settings["num_classes"],
                            **source_preprocessing(settings["data"]))
    preprocessor = getattr(model, "preprocessor", None)
    model.preprocessor = None  # the pipeline preprocessed the images already
    try:
        logits = model.predict(dataset.map(lambda x, y: x), verbose=0)
    finally:
        model.preprocessor = preprocessor
    if isinstance(logits, dict):
        logits = logits["logits"]
    right = np.argmax(logits, axis=-1) == labels
    ends = np.cumsum([len(y) for _, y in splits])
    return [float(part.mean()) for part in np.split(right, ends[:-1])]


def _as_nhwc(images):
    # Grey (n, h, w) and (n, h, w, 1) images join RGB ones as (n, h, w, 3).
    if images.ndim == 3:
        images = images[..., None]
    return np.repeat(images, 3, axis=-1) if images.shape[-1] == 1 else images


_ARRAYS = {}  # (data, split, data_dir) -> (images, labels): a process reads a source once


def _arrays(data, split, data_dir=None):
    key = (data, split, data_dir)
    if key not in _ARRAYS:
        _ARRAYS[key] = study_arrays(data, split, data_dir)
    return _ARRAYS[key]


def test_arrays(settings):
    """The fixed test images of a study: the test split, or its balanced `test_size` subset
    (seed 0, the same for every cell)."""
    images, labels = _arrays(settings["test_data"], settings["test_split"], settings["data_dir"])
    if settings["test_size"]:
        keep = balanced_subset(labels, settings["test_size"], 0, settings["num_classes"])
        images, labels = images[keep], labels[keep]
    return images, labels


def _recipe(settings):
    from keras_spvit.training.recipes import Recipe

    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in settings["recipe"].items()}
    return Recipe(**fields)


def cell_schedule(settings, size):
    """`(batch_size, repeats, steps_per_epoch)` of a cell.

    The batch is the study's batch size (at most `size`). A small subset is
    repeated `repeats` times per epoch (each copy augmented afresh), so that
    every cell gets at least `min_steps` optimizer steps in its `epochs`
    epochs without hundreds of tiny epochs.
    """
    batch = min(settings["batch_size"], size)
    repeats = max(1, math.ceil(settings["min_steps"] * batch / (settings["epochs"] * size)))
    return batch, repeats, size * repeats // batch


def code_version():
    """What ran a cell: `{"keras_spvit", "commit", "keras", "engine"}`; `commit` is
    the git commit of the package's checkout (`+dirty` with uncommitted changes),
    `None` outside one. A ledger's cells then say which code drew them.

    Example:

    >>> code_version()
    {'keras_spvit': '0.1.0', 'commit': '06b8622...', 'keras': '3.15.1',
     'engine': 'torch 2.13.0+cpu: cpu (2 cores)'}
    """
    import keras

    from keras_spvit.training.hardware import describe_devices
    from keras_spvit.version import __version__

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    commit = None
    try:
        def git(*args):
            return subprocess.run(["git", "-C", root, *args], capture_output=True, text=True,
                                  timeout=10, check=True).stdout.strip()

        commit = git("rev-parse", "HEAD") or None
        if commit and git("status", "--porcelain", "--untracked-files=no"):
            commit += "+dirty"
    except (OSError, subprocess.SubprocessError):
        pass
    return {"keras_spvit": __version__, "commit": commit, "keras": keras.__version__,
            "engine": describe_devices()}


def run_cell(settings, model_name, size, seed, directory, callbacks=()):
    """Trains and evaluates one cell; writes and returns its `cell.json` dict.

    Args:
        settings: the study's settings (`OUT/settings.json`).
        model_name: a builder name.
        size: int. Training images (class-balanced subset).
        seed: int. Seeds the subset, the initialisation and the augmentation.
        directory: the cell's run directory (resumes an interrupted run).
        callbacks: extra Keras callbacks for its training.

    Returns:
        `{"model", "size", "seed", "train_accuracy", "test_accuracy",
        "test_count", "epochs", "steps", "seconds", "cpu_seconds", ...}`: accuracies of the
        final weights on the un-augmented training subset and on the test set.

    Example:

    >>> run_cell(settings, "SPViT_Tiny", 100, 0, "runs/study/cells/SPViT_Tiny/n100/seed0")
    """
    import keras

    from keras_spvit.analysis.plots import plot_spatial_priors, spatial_prior_layers
    from keras_spvit.data.datasets import array_dataset
    from keras_spvit.data.sources import source_preprocessing
    from keras_spvit.data.train_augment import TrainAugment
    from keras_spvit.training import fit
    from keras_spvit.training.hardware import resolve_jit

    start, cpu_start = time.perf_counter(), time.process_time()
    num_classes, image_size = settings["num_classes"], settings["image_size"]
    images, labels = _arrays(settings["data"], settings["train_split"], settings["data_dir"])
    keep = balanced_subset(labels, size, seed, num_classes)
    images, labels = images[keep], labels[keep]
    test_images, test_labels = test_arrays(settings)
    recipe = _recipe(settings)
    batch, repeats, steps = cell_schedule(settings, size)
    epochs = settings["epochs"]
    if os.path.exists(os.path.join(directory, "summary.json")):
        shutil.rmtree(directory)  # trained but not evaluated: train again
    keras.utils.set_random_seed(seed)
    kwargs = dict(settings["model_args"].get(model_name, {}))
    kwargs.setdefault("image_shape", (image_size, image_size, 3))
    if recipe.drop_path_rate is not None:
        kwargs.setdefault("drop_path_rate", recipe.drop_path_rate)
    model = study_builders()[model_name](num_classes=num_classes, **kwargs)
    train = array_dataset(np.tile(images, (repeats,) + (1,) * (images.ndim - 1)),
                          np.tile(labels, repeats), image_size=image_size, batch_size=batch,
                          training=True, augment=TrainAugment.from_recipe(recipe, seed),
                          num_classes=num_classes,
                          seed=seed, cache=True, **source_preprocessing(settings["data"]))
    summary = fit(model, train, None, recipe=recipe, batch_size=batch, out_dir=directory,
                  epochs=epochs, steps_per_epoch=steps, jit_compile=resolve_jit(settings["jit"]),
                  verbose=0, callbacks=callbacks)
    train_accuracy, test_accuracy = _accuracies(model, settings, (images, labels),
                                                (test_images, test_labels))
    result = {
        "model": model_name, "size": size, "seed": seed,
        "train_accuracy": train_accuracy, "test_accuracy": test_accuracy,
        "test_count": int(len(test_labels)),
        "augmented_train_accuracy": summary["train_accuracy"],
        "epochs": epochs, "repeats": repeats, "steps": epochs * steps, "batch_size": batch,
        "parameters": int(model.count_params()),
        "train_seconds": summary["seconds"], "seconds": time.perf_counter() - start,
        "resumed_at_step": summary["resumed_at_step"],  # the seconds count the rest
        # The process's CPU seconds (all its threads): on a shared machine the steadier
        # measure of what a cell costs (wall seconds count the waits for a core).
        "cpu_seconds": time.process_time() - cpu_start,
        "class_counts": np.bincount(labels, minlength=num_classes).tolist(),
        "code": code_version(),
    }
    if spatial_prior_layers(model):
        result["priors_png"] = plot_spatial_priors(
            model, os.path.join(directory, "spatial_priors.png"),
            title=f"{model_name}, {size:,} {settings['data']} images, seed {seed}:\n"
                  "learned prior around the centre token (+)")
    for bulky in ("checkpoints", "tensorboard"):  # epochs of weights x many cells
        shutil.rmtree(os.path.join(directory, bulky), ignore_errors=True)
    _write_json(os.path.join(directory, CELL_FILE), result)
    return result


def use_compile_cache(path):
    """Keeps the programs JAX compiles in `path`, for the next cells to load.

    The cells of one model and size differ only in their seeds (the initial
    weights and random draws are inputs of the compiled programs, not part
    of them): their training and prediction programs are the same, compiled
    by the first cell and loaded from `path` by the others, which saves each
    of them the compile time. A loaded program is the executable the first
    cell ran: the numbers are the same. Call before anything compiles (a
    cell's subprocess does); no-op on other backends.

    Args:
        path: str. The cache directory (JAX's persistent compilation cache).

    Returns:
        `path` on JAX, else `None`.

    Example:

    >>> use_compile_cache("runs/study/compile_cache")
    """
    import keras

    if keras.backend.backend() != "jax":
        return None
    import jax

    jax.config.update("jax_compilation_cache_dir", path)
    return path


def _cell_main(argv):
    """`python -m keras_spvit.study SPEC.json`: one cell in a subprocess (`jobs > 1`)."""
    spec = _read_json(argv[0])
    _limit_threads(spec["threads"])
    if spec.get("compile_cache"):
        use_compile_cache(spec["compile_cache"])
    run_cell(spec["settings"], spec["model"], spec["size"], spec["seed"], spec["directory"])


def _subprocess_env(threads):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), TF_NUM_INTRAOP_THREADS=str(threads),
               TF_NUM_INTEROP_THREADS=str(threads), TF_CPP_MIN_LOG_LEVEL="3",
               KERAS_SPVIT_LAZY_IMPORT="1")
    if threads == 1:
        flags = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + flags).strip()
    # The worker imports this package as the parent does.
    env["PYTHONPATH"] = os.pathsep.join(
        [os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
         *filter(None, [env.get("PYTHONPATH")])])
    return env


# === The study ===


def time_left(finished, remaining_steps, jobs, step_seconds=None, started=0):
    """Seconds until the cells of `remaining_steps` are done, `jobs` at a time.

    Counted from the cells' own seconds, not from the elapsed time (when the
    first of J parallel cells finishes, elapsed time / cells done is J times a
    cell's share of the wall clock): each cell takes its steps left times its
    seconds per optimizer step, and the cells are laid out as the study runs
    them: the first `started` (training now) on slots of their own, each
    other one, in order, on the first of the `jobs` slots to come free, after
    the finished cells' mean seconds outside training (start-up, loading,
    evaluation). So a slow cell that starts last ends last, alone, rather than
    its work being spread over the jobs. The seconds per step are
    `step_seconds` when given (the study passes each cell's model's:
    `logged_progress`), else the finished cells' training seconds per step
    they trained (a resumed cell's seconds cover only the steps it trained
    after resuming).

    Args:
        finished: list of `(training seconds, steps trained, other seconds)`
            of the cells finished so far.
        remaining_steps: list of the optimizer steps left of each cell not
            finished, in the order they run (those training now first).
        jobs: int. Cells run at once.
        step_seconds: optional seconds per optimizer step of one cell now: a
            float for every cell, or a list, one per cell of `remaining_steps`.
        started: int. Cells of `remaining_steps` already training (their
            start-up is behind them).

    Returns:
        Seconds, or `None` until a cell has measured its seconds per step.

    Example:

    >>> time_left([(600.0, 1000, 30.0)], remaining_steps=[1000] * 9, jobs=2)
    3150.0
    """
    if not remaining_steps:
        return 0.0
    if step_seconds is None:
        seconds, steps = sum(s for s, _, _ in finished), sum(n for _, n, _ in finished)
        if steps <= 0:
            return None
        step_seconds = seconds / steps
    if not isinstance(step_seconds, (list, tuple)):
        step_seconds = [step_seconds] * len(remaining_steps)
    work = [steps * seconds for steps, seconds in zip(remaining_steps, step_seconds)]
    other = statistics.mean(o for _, _, o in finished) if finished else 0.0
    slots = work[:started] + [0.0] * max(0, jobs - started)
    for seconds in work[started:]:
        free = min(range(len(slots)), key=slots.__getitem__)
        slots[free] += other + seconds
    return max(slots)


def log_step_seconds(directory, batch_size):
    """`(seconds per optimizer step of each epoch logged, epochs logged)` of the
    run in `directory`, from its `log.csv` (`images_per_second`, kept across
    resumes): `([], 0)` before its first epoch ends.

    Example:

    >>> log_step_seconds("runs/study/cells/SPViT_Tiny/n1000/seed0", 64)
    ([0.233, 0.231], 2)
    """
    from keras_spvit.training.trainer import logged_epochs

    rows = logged_epochs(directory)
    seconds = []
    for row in rows:
        try:
            rate = float(row.get("images_per_second"))
        except (TypeError, ValueError):
            continue
        if rate > 0:
            seconds.append(batch_size / rate)
    return seconds, len(rows)


def earlier_step_seconds(out, cells):
    """`{model: median seconds per optimizer step}` of finished `cells` of the
    study in `out`, from their `cell.json` (training seconds over the steps
    trained in their last run: a resumed cell's count only those); models
    with no such cell are left out.

    Example:

    >>> earlier_step_seconds("runs/study", [("SPViT_Tiny", 1000, 0)])
    {'SPViT_Tiny': 0.2}
    """
    by_model = {}
    for cell in cells:
        path = os.path.join(cell_dir(out, *cell), CELL_FILE)
        try:
            result = _read_json(path)
            steps = result["steps"] - result.get("resumed_at_step", 0)
            seconds = float(result["train_seconds"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if steps > 0 and seconds > 0:
            by_model.setdefault(cell[0], []).append(seconds / steps)
    return {model: statistics.median(s) for model, s in by_model.items()}


def logged_progress(out, settings, cells, total_steps, earlier=None):
    """`(seconds per step of each cell left, steps left of each)` of a study,
    from its cells' `log.csv`.

    Seconds per step: the median over every epoch logged by the cells of
    `cells` (this run's finished and training cells, a resumed one's earlier
    epochs included) of the same model; `None` before any epoch. Medians, so
    that a stretch of epochs slowed by other work on the machine does not
    decide them; this run's cells only, not an earlier run's on another
    machine. A model not seen in this run yet is priced by `earlier`, the
    seconds per step of cells finished before this run, which tell
    how much slower or faster it is than the models seen, not how fast this
    machine is: its earlier seconds per step times the median ratio, over
    the models seen both now and earlier, of their seconds per step now to
    earlier. With no such model, the median of all the epochs logged. Steps
    left: each cell of `total_steps` less the steps of the epochs it has
    logged (a running or resumed cell's).

    Args:
        out: the study directory.
        settings: the study's settings.
        cells: `(model, size, seed)` cells whose epochs measure the speed.
        total_steps: `{cell: optimizer steps of the whole cell}` of the cells
            not finished.
        earlier: optional `{model: seconds per step}` of the cells finished
            before this run (`earlier_step_seconds`).

    Example:

    >>> logged_progress("runs/study", settings, [("SPViT_Tiny", 1000, 0)],
    ...                 {("SPViT_Tiny", 1000, 1): 3120})
    ({('SPViT_Tiny', 1000, 1): 0.233}, {('SPViT_Tiny', 1000, 1): 3120})
    """
    by_model, left = {}, {}
    for cell in dict.fromkeys(list(cells) + list(total_steps)):
        batch, _, per_epoch = cell_schedule(settings, cell[1])
        logged_seconds, logged = log_step_seconds(cell_dir(out, *cell), batch)
        if cell in cells:
            by_model.setdefault(cell[0], []).extend(logged_seconds)
        if cell in total_steps:
            left[cell] = max(0, total_steps[cell] - logged * per_epoch)
    every = [s for seconds in by_model.values() for s in seconds]
    if not every:
        return None, left
    medians = {model: statistics.median(s) for model, s in by_model.items() if s}
    before = earlier or {}
    ratios = [medians[m] / before[m] for m in medians if m in before]
    if ratios:
        machine = statistics.median(ratios)
        medians.update({m: s * machine for m, s in before.items() if m not in medians})
    overall = statistics.median(every)
    return {cell: medians.get(cell[0], overall) for cell in left}, left


def _clock(seconds):
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def check_study(data, models, sizes, seeds, *, epochs, image_size, batch_size, min_steps,
                test_size, test_data, baseline, model_args, jobs, recipe, data_dir, jit="auto",
                test_split="test"):
    """Checks every argument of `study` and returns the settings dict; one-line `ValueError`s."""
    import keras

    from keras_spvit.data.sources import check_source, parse_source
    from keras_spvit.training import get_recipe

    models = _check_list("models", models, kind=str)
    sizes = _check_list("sizes", sizes)
    seeds = _check_list("seeds", seeds)
    known = study_builders()
    for model in models:
        if model not in known:
            raise ValueError(f"Unknown model {model!r}. Expected builder names: "
                             f"{', '.join(sorted(known))}.")
    for name, value in (("epochs", epochs), ("image_size", image_size),
                        ("batch_size", batch_size), ("jobs", jobs)):
        _positive(name, value)
    if isinstance(min_steps, bool) or not isinstance(min_steps, int) or min_steps < 0:
        raise ValueError(f"Expected an int >= 0. Received: min_steps={min_steps!r}")
    if jit not in ("auto", "on", "off"):
        raise ValueError(f"Expected jit in ['auto', 'on', 'off']. Received: jit={jit!r}")
    if baseline is not None and baseline not in models:
        raise ValueError(f"Expected a baseline among the models {models}. "
                         f"Received: baseline={baseline!r}")
    model_args = dict(model_args or {})
    for name, value in model_args.items():
        if name not in models or not isinstance(value, dict):
            raise ValueError(f"Expected model_args as {{model in {models}: dict of builder "
                             f"arguments}}. Received: {name!r}: {value!r}")
    recipe = get_recipe(recipe)
    kind, _ = parse_source(data)
    if kind == "npz" and test_data is None:
        raise ValueError(f"Expected test_data (a second npz:PATH) with data={data!r}: an .npz "
                         "holds one split.")
    info = check_source(data, "train" if kind != "npz" else None, data_dir)
    test_data = test_data or data
    num_classes = info["num_classes"]
    _, labels = _arrays(data, "train", data_dir)
    for size in sizes:
        for seed in seeds:
            balanced_subset(labels, size, seed, num_classes)  # raises naming the size
    settings = {
        "data": data, "train_split": "train", "test_data": test_data, "test_split": test_split,
        "data_dir": data_dir, "test_size": test_size, "num_classes": num_classes,
        "class_names": info.get("class_names"), "image_size": image_size,
        "batch_size": batch_size, "epochs": epochs, "min_steps": min_steps,
        "recipe": recipe.to_dict(), "model_args": model_args,
        "backend": keras.backend.backend(), "jit": jit,
    }
    if test_size is not None:
        _positive("test_size", test_size)
    test_arrays(settings)  # the test split exists and holds test_size images
    return models, sizes, seeds, settings


def check_settings(out, settings, write=True):
    """Refuses a study directory that holds a study with other settings; writes
    `settings.json` into a new one (unless `write=False`).

    Example:

    >>> check_settings("runs/study", settings, write=False)
    """
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"Expected a study directory. Received: out={out!r} (a file)")
    path = os.path.join(out, SETTINGS_FILE)
    if not os.path.exists(path):
        if write:
            os.makedirs(out, exist_ok=True)
            _write_json(path, settings)
        return
    old = _read_json(path)
    new = json.loads(json.dumps(settings))  # lists for tuples, as stored
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            raise ValueError(
                f"{out!r} holds a study with other settings ({key}: {old.get(key)!r} there, "
                f"{new.get(key)!r} now). Expected the same settings, or another out directory."
            )


def study(data, models, sizes, seeds=(0,), *, out, epochs=30, recipe="digits", image_size=32,
          batch_size=64, min_steps=0, test_size=None, test_data=None, baseline=None,
          model_args=None, jobs=1, data_dir=None, jit="auto", test_split="test", status_every=300.0,
          verbose=True):
    """Runs (or resumes) a data-efficiency study and writes its report.

    Every `(model, size, seed)` cell trains `model` with the one shared
    `recipe` on a class-balanced `size`-image subset of the training split
    (fixed by `(size, seed)`) and is evaluated on the fixed test split.
    Finished cells in `out` are reused; other settings in the same `out`
    raise.

    Args:
        data: `digits`, `fashion_mnist`, `idx:PATH`, `tfds:NAME` (loaded into
            memory) or `npz:PATH` (with `test_data`).
        models: builder names, e.g. `["SPViT_Tiny", "LVViT_Tiny"]`.
        sizes: training-set sizes (each at least the class count, at most the
            train split).
        seeds: ints; each seeds the subset, the initialisation and the
            augmentation of its cells.
        out: str. The study directory.
        epochs: int. Epochs per cell (the recipe's schedule fits itself).
        recipe: a recipe name or `Recipe`, shared by every model.
        image_size: int. Images are resized to this side.
        batch_size: int. At most the cell's size.
        min_steps: int. Small subsets are repeated within an epoch, so that
            every cell gets at least this many optimizer steps.
        test_size: optional int: evaluate on a fixed class-balanced subset of
            the test split (default: all of it).
        test_data: the test source for `npz:` data (default: `data`).
        test_split: the held-out split (default `test`; e.g. `validation`
            for a TFDS dataset without a test split).
        baseline: the model others are compared with per seed (default: a
            `PlainViT*` if present, else an `LVViT*`, else the first model).
        model_args: optional `{model: {builder argument: value}}`.
        jobs: int. Cells run in this many subprocesses at once (at most the
            CPU count; each limits its threads to its share of the cores).
        data_dir: TFDS data directory.
        jit: `"auto"` (XLA as `keras-spvit train` chooses it), `"on"` or
            `"off"` (tiny models on a CPU: compiling can take longer than
            training).
        status_every: seconds between lines on the cells training (their
            epochs and the time left), at most one per epoch logged; `0`: at
            every epoch, `None`: only when a cell finishes.
        verbose: bool. Print progress, the table and the verdict.

    Returns:
        The `study.json` dict: `settings`, `cells`, `rows`, `paired`,
        `baseline`, `verdict`, `table`, file paths, `seconds`.

    Example:

    >>> result = study("digits", ["SPViT_Tiny", "LVViT_Tiny"], [100, 300], seeds=[0, 1],
    ...                out="runs/study", epochs=10)
    >>> print(result["table"])
    """
    def say(text):
        if verbose:
            print(text, flush=True)

    models, sizes, seeds, settings = check_study(
        data, models, sizes, seeds, epochs=epochs, image_size=image_size,
        batch_size=batch_size, min_steps=min_steps, test_size=test_size, test_data=test_data,
        baseline=baseline, model_args=model_args, jobs=jobs, recipe=recipe, data_dir=data_dir,
        jit=jit, test_split=test_split)
    if status_every is not None and (isinstance(status_every, bool) or not isinstance(
            status_every, (int, float)) or not 0 <= status_every < math.inf):
        raise ValueError("Expected status_every as seconds >= 0, or None. Received: "
                         f"status_every={status_every!r}")
    baseline = baseline or default_baseline(models)
    check_settings(out, settings)
    grid = [(m, n, s) for n in sorted(sizes) for s in seeds for m in models]
    pending = [c for c in grid if not os.path.exists(os.path.join(cell_dir(out, *c), CELL_FILE))]
    cores = os.cpu_count() or 1
    if jobs > cores:
        say(f"jobs={jobs} > {cores} CPU cores: running {cores} at once.")
        jobs = cores
    say(f"Study in {out}: {len(models)} models x {len(sizes)} sizes x {len(seeds)} seeds = "
        f"{len(grid)} cells on {data} ({settings['backend']}, recipe {settings['recipe']['name']}, "
        f"{epochs} epochs, {image_size} px); reusing {len(grid) - len(pending)} finished "
        f"cell(s), {len(pending)} to run" + (f", {jobs} at a time." if jobs > 1 else "."))
    start = time.perf_counter()
    progress = _Progress(out, settings, len(grid), pending, jobs, say, status_every,
                         earlier=[c for c in grid if c not in pending])
    if jobs == 1:
        import keras

        for cell in pending:
            keras.backend.clear_session()
            began = time.perf_counter()
            watch = keras.callbacks.LambdaCallback(
                on_epoch_end=lambda epoch, logs, cell=cell: progress.training([cell]))
            result = run_cell(settings, *cell, cell_dir(out, *cell), callbacks=[watch])
            progress.finished(result, time.perf_counter() - began)
    else:
        _run_parallel(settings, pending, out, jobs, max(1, cores // jobs), progress)
    return report(out, models, sizes, seeds, baseline, seconds=time.perf_counter() - start,
                  verbose=verbose)


class _Progress:
    """The study's progress lines: one per finished cell, and one on the cells
    training every `every` seconds (at most one per epoch logged; `None`:
    never), each with the cells done, the elapsed time and the time left."""

    def __init__(self, out, settings, cells, pending, jobs, say, every, earlier=()):
        self.out, self.settings, self.cells, self.jobs = out, settings, cells, jobs
        self.earlier = earlier_step_seconds(out, earlier)  # they do not change in a run
        self.say, self.every = say, every
        self.start = self.last = time.perf_counter()
        self.done = cells - len(pending)
        self.total_steps = {cell: cell_schedule(settings, cell[1])[2] * settings["epochs"]
                            for cell in pending}
        self.this_run, self.costs, self.epochs_seen = [], [], {}

    def _status(self, running):
        # `running`: the cells training now (their logged epochs are steps done).
        step_seconds, steps_left = logged_progress(self.out, self.settings,
                                                   self.this_run + list(running),
                                                   self.total_steps, earlier=self.earlier)
        left = time_left(self.costs, list(steps_left.values()), self.jobs,
                         step_seconds=step_seconds and [step_seconds[c] for c in steps_left],
                         started=len(running))
        return (f"elapsed {_clock(time.perf_counter() - self.start)}, "
                + ("time left known after an epoch" if left is None
                   else f"about {_clock(left)} left"))

    def finished(self, result, wall, running=()):
        """A cell's line; `wall`: its seconds from its start (its process's, imports too)."""
        self.done += 1
        self.last = time.perf_counter()
        cell = (result["model"], result["size"], result["seed"])
        self.total_steps.pop(cell, None)
        self.this_run.append(cell)
        trained = result["train_seconds"]
        self.costs.append((trained, result["steps"] - result["resumed_at_step"],
                           wall - trained))
        self.say(f"[{self.done}/{self.cells} cells] {result['model']} n={result['size']:,} "
                 f"seed {result['seed']}: test {100 * result['test_accuracy']:.1f}%, train "
                 f"{100 * result['train_accuracy']:.1f}% ({result['seconds']:.0f} s) | "
                 + self._status(running))

    def training(self, running):
        """The line on the `running` cells, if `every` seconds have passed since
        the last line and one of them has logged an epoch since."""
        if self.every is None or time.perf_counter() - self.last < self.every:
            return
        from keras_spvit.training.trainer import logged_epochs

        epochs = {cell: len(logged_epochs(cell_dir(self.out, *cell))) for cell in running}
        if all(self.epochs_seen.get(cell, 0) >= n for cell, n in epochs.items()):
            return
        self.epochs_seen.update(epochs)
        self.last = time.perf_counter()
        each = ", ".join(f"{model} n={size:,} seed {seed} epoch {epochs[(model, size, seed)]}/"
                         f"{self.settings['epochs']}" for model, size, seed in running)
        self.say(f"[{self.done}/{self.cells} cells] training {each} | " + self._status(running))


def _run_parallel(settings, pending, out, jobs, threads, progress):
    queue, running = list(pending), {}
    env = _subprocess_env(threads)
    try:
        while queue or running:
            while queue and len(running) < jobs:
                cell = queue.pop(0)
                directory = cell_dir(out, *cell)
                os.makedirs(directory, exist_ok=True)
                spec = os.path.join(directory, "cell_spec.json")
                _write_json(spec, {"settings": settings, "model": cell[0], "size": cell[1],
                                   "seed": cell[2], "directory": directory, "threads": threads,
                                   "compile_cache": os.path.join(out, COMPILE_CACHE)})
                log = open(os.path.join(directory, "cell.log"), "w")
                process = subprocess.Popen([sys.executable, "-m", "keras_spvit.study", spec],
                                           stdout=log, stderr=subprocess.STDOUT, env=env)
                running[process] = (cell, directory, log, time.perf_counter())
            time.sleep(0.2)
            progress.training([c for c, *_ in running.values()])
            for process in [p for p in running if p.poll() is not None]:
                cell, directory, log, began = running.pop(process)
                log.close()
                if process.returncode:
                    raise RuntimeError(
                        f"Cell {cell} failed (exit code {process.returncode}); see "
                        f"{os.path.join(directory, 'cell.log')}.")
                progress.finished(_read_json(os.path.join(directory, CELL_FILE)),
                                  time.perf_counter() - began,
                                  running=[c for c, *_ in running.values()])
    finally:
        for process, (_, _, log, _) in running.items():  # only our own children
            process.terminate()
            process.wait()
            log.close()


def report(out, models, sizes, seeds, baseline, seconds=None, verbose=True):
    """Reads the finished cells of a grid in `out`; writes `study.json`, `table.md`,
    `learning_curves.png` (and `spatial_priors.png`); returns the `study.json` dict.

    Example:

    >>> report("runs/study", ["SPViT_Tiny", "LVViT_Tiny"], [100, 300], [0], "LVViT_Tiny")
    """
    settings = _read_json(os.path.join(out, SETTINGS_FILE))
    cells = [cell for cell in _finished_cells(out) if cell["model"] in models
             and cell["size"] in sizes and cell["seed"] in seeds]
    # Reported while the grid runs (or after it stopped): some points lack seeds.
    counts = collections.Counter((c["model"], c["size"]) for c in cells).values()
    per_point = (f"{len(seeds)} seed(s)" if min(counts, default=len(seeds)) == len(seeds) else
                 f"{_count_range(counts)} of {len(seeds)} seeds per point")
    title = (f"{settings['data']}, {settings['image_size']} px, recipe "
             f"{settings['recipe']['name']}, {per_point}: test accuracy (mean ± std)")
    return _write_report(out, settings, cells, models, sizes, seeds, baseline, title,
                         seconds=seconds, verbose=verbose)


def _finished_cells(out):
    """Every finished cell of the study in `out`, each with its `directory`,
    whatever grid its last run asked for (sorted by size, seed, model)."""
    cells = []
    for path in glob.glob(os.path.join(cell_dir(out, "*", "*", "*"), CELL_FILE)):
        cells.append({**_read_json(path), "directory": os.path.dirname(path)})
    return sorted(cells, key=lambda c: (c["size"], c["seed"], c["model"]))


def _write_report(out, settings, cells, models, sizes, seeds, baseline, title, seconds=None,
                  verbose=True, notes="", extra=None, size_notes=None):
    summary = summarize(cells, models, sorted(sizes), baseline)
    table = format_table(summary)
    sentence = verdict(summary)
    curves = plot_learning_curves(summary, os.path.join(out, "learning_curves.png"),
                                  title=title, size_notes=size_notes)
    # The priors of the largest size's spatial-prior cell (its directory first: a
    # copied study keeps them there, not at the path the cell was written with).
    found = [path for cell in sorted(cells, key=lambda c: -c["size"]) if cell.get("priors_png")
             for path in (os.path.join(cell["directory"], "spatial_priors.png"),
                          cell["priors_png"]) if os.path.exists(path)]
    priors = shutil.copyfile(found[0], os.path.join(out, "spatial_priors.png")) if found else None
    seeds_table = format_seed_table(cells, models, sizes, sorted(seeds))
    with open(os.path.join(out, "table.md"), "w") as f:
        f.write(table + "\n\n" + notes + sentence + "\n\nPer seed, test / train accuracy %:"
                "\n\n" + seeds_table + "\n")
    cells = [{k: v for k, v in c.items() if k != "directory"} for c in cells]
    result = {"settings": settings, "models": models, "sizes": sorted(sizes), "seeds": seeds,
              "baseline": baseline, "cells": cells, **summary, "table": table,
              "verdict": sentence, "seed_table": seeds_table, "learning_curves_png": curves,
              "spatial_priors_png": priors,
              "seconds": seconds, **(extra or {})}
    _write_json(os.path.join(out, "study.json"), result)
    if verbose:
        print(f"\n{table}\n\n{notes}{sentence}\n"
              f"Every cell, per seed: {os.path.join(out, 'table.md')}"
              f"\nLearning curves: {curves}"
              + (f"\nSpatial priors: {priors}" if priors else ""), flush=True)
    return result


# === Combining studies ===

# The settings studies may differ in to be reported together, each stated per size in
# the report: the step budget, which a larger training set may need raised, and the
# engine that ran the cells (the same layers to float32 rounding on every backend, with
# or without XLA; only the random draws differ, as between seeds).
_MAY_DIFFER = ("min_steps", "backend", "jit")


def _engine(settings):
    """`"jax"`, `"tensorflow, no XLA"`, ...: the backend a study's cells ran on."""
    return str(settings.get("backend")) + (", no XLA" if settings.get("jit") is False else "")


def _seed_list(seeds):
    """`[0, 1, 2, 4]` -> `"0-2, 4"`: sorted seeds, runs of consecutive ones as ranges."""
    runs = []
    for seed in seeds:
        if runs and seed == runs[-1][1] + 1:
            runs[-1][1] = seed
        else:
            runs.append([seed, seed])
    return ", ".join(f"{a}" if a == b else f"{a}, {b}" if b == a + 1 else f"{a}-{b}"
                     for a, b in runs)


def _count_range(counts):
    """`[1, 2, 2]` -> `"1-2"`, `[2, 2]` -> `"2"`."""
    low, high = min(counts), max(counts)
    return f"{low}" if low == high else f"{low}-{high}"


def _seeds_label(cells):
    """The seeds of one size's cells: `"0-4"`, or `"0-2 (1-3 per model)"` while
    some model lacks some of them (a row still running)."""
    union = sorted({c["seed"] for c in cells})
    counts = collections.Counter(c["model"] for c in cells).values()
    return _seed_list(union) + ("" if min(counts) == len(union) else
                                f" ({_count_range(counts)} per model)")


def parse_study_source(text):
    """`"DIR"` or `"DIR=SIZE,SIZE"` -> `(DIR, sizes or None)`.

    Example:

    >>> parse_study_source("runs/fmnist32=100,300")
    ('runs/fmnist32', [100, 300])
    """
    if os.path.isdir(text) or "=" not in text:
        return text, None
    directory, _, listed = text.rpartition("=")
    try:
        sizes = [int(s) for s in listed.split(",")]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) <= 0:
        raise ValueError(f"Expected DIR or DIR=SIZE,SIZE (positive integers). "
                         f"Received: {text!r}")
    return directory, sizes


def combine_studies(sources, out, models=None, baseline=None, verbose=True):
    """Reports the finished cells of several study directories as one study.

    For a grid grown in parts: e.g. the larger training sets run in their own
    directory with a larger `min_steps`, or on another backend (the settings
    that may differ; each size keeps the budget and backend it ran with,
    stated per size in `table.md`, `study.json` and under the PNG's ticks).
    Each size is taken from one directory: a size with finished
    cells in two sources is refused unless the sources name their sizes
    (`"DIR=100,300"`). Nothing is trained; `out` gets `study.json`,
    `table.md`, `learning_curves.png` (and `spatial_priors.png`).

    Args:
        sources: list of `"DIR"` or `"DIR=SIZE,SIZE"` (only those sizes of
            DIR), or `(DIR, sizes or None)` pairs.
        out: str. The directory of the combined report (not one of the
            sources).
        models: optional list: the models to report, in table order
            (default: every model with a finished cell, in the sources'
            order).
        baseline: the model others are compared with per seed (default as in
            `study`).
        verbose: bool. Print the table and the verdict.

    Returns:
        The `study.json` dict, with `sources`: a list of `{"directory",
        "sizes", "min_steps", "backend", "jit"}`.

    Example:

    >>> result = combine_studies(["runs/fmnist32=100,300", "runs/fmnist32_n1000"],
    ...                          out="runs/fmnist32_all")
    >>> print(result["table"])
    """
    if isinstance(sources, (str, os.PathLike)) or not sources:
        raise ValueError(f"Expected a list of study directories. Received: sources={sources!r}")
    parsed = [parse_study_source(os.fspath(s)) if isinstance(s, (str, os.PathLike)) else
              (os.fspath(s[0]), None if s[1] is None else [int(n) for n in s[1]])
              for s in sources]
    if os.path.exists(os.path.join(out, SETTINGS_FILE)):
        is_source = any(os.path.abspath(d) == os.path.abspath(out) for d, _ in parsed)
        raise ValueError(
            ("Expected an out directory other than the sources. " if is_source else
             f"Expected an out directory without a study of its own ({SETTINGS_FILE}): its "
             "report would be replaced. ") + f"Received: out={out!r}")
    first = settings = None
    owner, cells, parts = {}, [], []  # owner: size -> the part it comes from
    for directory, wanted in parsed:
        path = os.path.join(directory, SETTINGS_FILE)
        if not os.path.exists(path):
            raise ValueError(f"{directory!r} is not a study directory (no {SETTINGS_FILE}). "
                             "Expected the --out directory of `keras-spvit study`.")
        mine = _read_json(path)
        if first is None:
            first, settings = directory, mine
        for key in sorted(set(settings) | set(mine)):
            if key not in _MAY_DIFFER and settings.get(key) != mine.get(key):
                raise ValueError(
                    f"{directory!r} holds a study with other settings than {first!r} ({key}: "
                    f"{mine.get(key)!r} there, {settings.get(key)!r} in {first!r}). Expected "
                    f"studies that differ in {', '.join(_MAY_DIFFER)} only.")
        found = [c for c in _finished_cells(directory)
                 if wanted is None or c["size"] in wanted]
        missing = sorted(set(wanted or ()) - {c["size"] for c in found})
        if missing:
            raise ValueError(f"{directory!r} has no finished cell of size "
                             f"{', '.join(map(str, missing))}. Expected sizes it ran.")
        part = {"directory": directory, "sizes": sorted({c["size"] for c in found}),
                **{key: mine.get(key) for key in _MAY_DIFFER}}
        for size in part["sizes"]:
            if size in owner:
                other = owner[size]["directory"]
                raise ValueError(
                    f"Size {size} has finished cells in {other!r} and {directory!r}. "
                    f"Expected each size from one study: name the sizes to take, e.g. "
                    f"{other}={size} or {directory}={size}.")
            owner[size] = part
        cells += found
        parts.append(part)
    if not cells:
        raise ValueError(f"No finished cells in {[d for d, _ in parsed]}. Expected studies "
                         "with at least one finished cell.")
    reports = [os.path.join(d, "study.json") for d, _ in parsed]
    ran = list(dict.fromkeys(m for path in reports if os.path.exists(path)
                             for m in _read_json(path).get("models", [])))
    ran += sorted({c["model"] for c in cells} - set(ran))
    ran = [m for m in ran if any(c["model"] == m for c in cells)]
    if models is None:
        models = ran
    else:
        models = _check_list("models", models, kind=str)
        unknown = [m for m in models if m not in ran]
        if unknown:
            raise ValueError(f"No finished cell of model {unknown[0]!r} in the sources. "
                             f"Expected models among {ran}.")
        cells = [c for c in cells if c["model"] in models]
    if baseline is not None and baseline not in models:
        raise ValueError(f"Expected a baseline among the models {models}. "
                         f"Received: baseline={baseline!r}")
    baseline = baseline or default_baseline(models)
    sizes = sorted(owner)
    seeds = sorted({c["seed"] for c in cells})
    seeds_of = {size: _seeds_label([c for c in cells if c["size"] == size]) for size in sizes}
    steps = {size: "-".join(f"{n:,}" for n in sorted({c["steps"] for c in cells
                                                      if c["size"] == size}))
             for size in sizes}
    engines = {size: _engine(owner[size]) for size in sizes}
    notes = "Optimizer steps per cell, by training-set size: " + "; ".join(
        f"{size:,}: {steps[size]} (min_steps {owner[size]['min_steps']:,}, {engines[size]}, "
        f"{owner[size]['directory']})" for size in sizes) + ".\n\n"
    budgets_differ = len({p["min_steps"] for p in parts}) > 1
    engines_differ = len(set(engines.values())) > 1
    seeds_differ = len(set(seeds_of.values())) > 1
    os.makedirs(out, exist_ok=True)
    under = [what for what, differ in (("seeds", seeds_differ),
                                       ("optimizer steps per cell", budgets_differ),
                                       ("backend", engines_differ)) if differ]
    title = (f"{settings['data']}, {settings['image_size']} px, recipe "
             f"{settings['recipe']['name']}"
             + ("" if seeds_differ else f", seeds {seeds_of[sizes[0]]}")
             + ": test accuracy (mean ± std)"
             + (f"; {', '.join(under[:-1])}{' and ' if len(under) > 1 else ''}{under[-1]} "
                "under each size" if under else ""))
    size_notes = {size: "\n".join(([f"seeds {seeds_of[size]}"] if seeds_differ else [])
                                  + ([f"{steps[size]} steps"] if budgets_differ else [])
                                  + ([engines[size]] if engines_differ else []))
                  for size in sizes} if under else None
    return _write_report(out, {k: v for k, v in settings.items() if k not in _MAY_DIFFER},
                         cells, models, sizes, seeds, baseline, title, verbose=verbose,
                         notes=notes, extra={"sources": parts}, size_notes=size_notes)


if __name__ == "__main__":
    _cell_main(sys.argv[1:])
