"""The data-efficiency study (`keras_spvit.study`): subsets, statistics, resume, report.

The statistics are checked on synthetic cells against hand-computed numbers;
one real mini-study (2 models x 2 sizes x 1 seed, 1 epoch, 16 px digits) is
shared by the tests that need trained cells (`mini_study_dir`, also used by
`tests/cli/test_study.py`).
"""

import contextlib
import importlib
import io
import json
import math
import os
import shutil

import numpy as np
import pytest

from keras_spvit import study as _api_study
from keras_spvit.data.digits import split_indices
from keras_spvit.data.sources import digits_uint8
from keras_spvit.study import (
    CELL_FILE,
    balanced_subset,
    cell_dir,
    default_baseline,
    format_seed_table,
    format_table,
    plot_learning_curves,
    summarize,
    verdict,
)
from tests.conftest import BACKEND, ONE_BACKEND

PNG = b"\x89PNG\r\n\x1a\n"
MINI = dict(data="digits", models=["SPViT_Tiny", "LVViT_Tiny"], sizes=[20, 50], seeds=[0],
            epochs=1, image_size=16, jit="off")
_MINI_DIR = {}


def mini_study_dir(tmp_path_factory):
    """The one real mini-study of the suite (trained once per session): its folder."""
    if BACKEND != ONE_BACKEND:
        # The study's bookkeeping is the same on every backend; training on each
        # backend is covered by tests/training and the shared `trained_run`.
        pytest.skip(f"the real mini-study runs once, under {ONE_BACKEND} (4 trained cells)")
    if "out" not in _MINI_DIR:
        from keras_spvit.study import study

        out = tmp_path_factory.mktemp("study") / "mini"
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):  # a line at every epoch (status_every=0)
            _MINI_DIR["result"] = study(**{k: v for k, v in MINI.items() if k != "data"},
                                        data=MINI["data"], out=str(out), status_every=0)
        _MINI_DIR["printed"] = printed.getvalue()
        print(_MINI_DIR["printed"])
        _MINI_DIR["out"] = out
    return _MINI_DIR["out"]


@pytest.fixture
def mini(tmp_path_factory):
    return mini_study_dir(tmp_path_factory)


def test_public_name():
    import keras_spvit
    from keras_spvit.study import study

    assert keras_spvit.study is study and keras_spvit.run_study is study
    assert _api_study is study


# === Subsets ===


def test_balanced_subset_exact_class_counts():
    _, labels = digits_uint8("train")
    picked = balanced_subset(labels, 100, seed=0)
    assert np.bincount(labels[picked], minlength=10).tolist() == [10] * 10
    # 105: five classes (a seeded choice) get one image more.
    counts = np.bincount(labels[balanced_subset(labels, 105, seed=3)], minlength=10)
    assert sorted(counts.tolist()) == [10] * 5 + [11] * 5
    assert len(set(balanced_subset(labels, 105, seed=3).tolist())) == 105  # no repeats


def test_balanced_subset_is_fixed_by_size_and_seed_and_nested():
    _, labels = digits_uint8("train")
    a = balanced_subset(labels, 200, seed=1)
    np.testing.assert_array_equal(a, balanced_subset(labels, 200, seed=1))
    assert not np.array_equal(a, balanced_subset(labels, 200, seed=2))
    assert set(balanced_subset(labels, 50, seed=1)) <= set(a)


def test_subsets_are_disjoint_from_the_test_split():
    # The digits train split is `order[:cut]` of the 1,797 images; the test split the rest.
    train_order, test_order = split_indices(1797, 0.2, 0)
    _, labels = digits_uint8("train")
    picked = train_order[balanced_subset(labels, 1000, seed=0)]
    assert not set(picked) & set(test_order)


@pytest.mark.parametrize("size, message", [
    (9, "at least 10"), (1439, "at most 1438"), (0, "at least 10"), (True, "at least 10"),
])
def test_balanced_subset_rejects_bad_sizes(size, message):
    _, labels = digits_uint8("train")
    with pytest.raises(ValueError, match=message):
        balanced_subset(labels, size, seed=0)


def test_balanced_subset_names_a_short_class():
    labels = np.array([0] * 50 + [1] * 3)
    with pytest.raises(ValueError, match="at least 10 images of class 1 .* has 3"):
        balanced_subset(labels, 20, seed=0)


# === Statistics on synthetic cells (hand-computed) ===


def _cells(model, accuracies, size=100, train=1.0):
    return [dict(model=model, size=size, seed=s, test_accuracy=a, train_accuracy=train,
                 test_count=100) for s, a in enumerate(accuracies)]


def test_summarize_means_stds_and_paired_differences():
    cells = _cells("A", [0.50, 0.60, 0.70]) + _cells("B", [0.55, 0.60, 0.80], train=0.9)
    result = summarize(cells, ["A", "B"], [100], baseline="A")
    a, b = result["rows"]
    assert (a["seeds"], a["test_mean"], a["train_mean"], a["train_std"]) == (3, 0.6, 1.0, 0.0)
    assert a["test_std"] == pytest.approx(0.1, abs=1e-12)
    assert b["test_mean"] == pytest.approx(0.65, abs=1e-12)
    assert b["test_std"] == pytest.approx(math.sqrt(0.0175), abs=1e-12)  # devs -.1, -.05, .15
    (paired,) = result["paired"]
    # Differences per seed +0.05, 0.00, +0.10: mean 0.05, sample std 0.05.
    assert paired["diff_mean"] == pytest.approx(0.05, abs=1e-12)
    assert paired["diff_std"] == pytest.approx(0.05, abs=1e-12)
    assert paired["ci95"] == pytest.approx(4.303 * 0.05 / math.sqrt(3), abs=1e-12)
    assert (paired["wins"], paired["ties"], paired["losses"]) == (2, 1, 0)
    table = format_table(result)
    assert "| B | 100 | 3 | 65.0 ± 13.2 | 90.0 ± 0.0 |" in table
    assert "| B − A | 100 | 3 | +5.0 ± 5.0 | [-7.4, +17.4] | 2 / 1 / 0 |" in table
    assert verdict(result).startswith("B and A are within error bars of each other")


def test_seed_table_lists_every_cell_and_leaves_missing_ones_blank():
    cells = _cells("A", [0.5, 0.6]) + _cells("B", [0.55], train=0.9) + \
        _cells("A", [0.8], size=300)
    assert format_seed_table(cells, ["A", "B", "C"], [300, 100], [0, 1]).splitlines() == [
        "| model | train images | seed 0 | seed 1 |",
        "|---|---:|---:|---:|",
        "| A | 100 | 50.0 / 100.0 | 60.0 / 100.0 |",
        "| B | 100 | 55.0 / 90.0 |  |",   # seed 1 has not run
        "| A | 300 | 80.0 / 100.0 |  |",   # no row for C: none of its cells ran
    ]


def test_verdict_says_better_only_beyond_the_interval_and_flags_one_seed():
    cells = (_cells("A", [0.50, 0.60, 0.70]) + _cells("SPViT_X", [0.60, 0.71, 0.82])
             + _cells("A", [0.5], size=300) + _cells("SPViT_X", [0.4], size=300))
    result = summarize(cells, ["A", "SPViT_X"], [100, 300], baseline="A")
    # +0.10, +0.11, +0.12: mean 0.11 +/- 0.01, interval 0.11 +/- 0.0248.
    sentence = verdict(result)
    assert "+11.0 ± 1.0 points with 100 images (better beyond the 95% interval, 3/0/0" in sentence
    assert "-10.0 points with 300 images (one seed only, no error bar, 0/0/1" in sentence


def test_verdict_cautions_when_the_compared_models_underfit():
    fitted = _cells("A", [0.5, 0.6, 0.7]) + _cells("SPViT_X", [0.6, 0.71, 0.82])
    assert "Caution" not in verdict(summarize(fitted, ["A", "SPViT_X"], [100], baseline="A"))
    # 0.90 is fitted (the threshold itself); 0.899 is not, nor is the baseline's 0.62.
    edge = _cells("A", [0.5, 0.6, 0.7], train=0.90) + _cells("SPViT_X", [0.6, 0.7, 0.8], train=0.9)
    assert "Caution" not in verdict(summarize(edge, ["A", "SPViT_X"], [100], baseline="A"))
    cells = (_cells("A", [0.5, 0.6, 0.7], train=0.62) + _cells("SPViT_X", [0.6, 0.7, 0.8])
             + _cells("A", [0.7, 0.8, 0.9], size=300) + _cells("SPViT_X", [0.7, 0.8, 0.9], size=300)
             + _cells("C", [0.1, 0.1, 0.1], train=0.1))  # not compared in the sentence
    sentence = verdict(summarize(cells, ["A", "SPViT_X", "C"], [100, 300], baseline="A"))
    # The table's figure (one decimal, 0.4835 -> 48.4 in both), but a mean of 89.96% is
    # not printed as "90.0%; below 90%": two decimals, rounded down, there.
    near = (_cells("A", [0.5, 0.6, 0.7], train=0.8996) + _cells("SPViT_X", [0.6, 0.7, 0.8]))
    assert "A 89.96% at 100" in verdict(summarize(near, ["A", "SPViT_X"], [100], baseline="A"))
    low = (_cells("A", [0.5, 0.6, 0.7], train=0.4835) + _cells("SPViT_X", [0.6, 0.7, 0.8]))
    summary = summarize(low, ["A", "SPViT_X"], [100], baseline="A")
    assert "| A | 100 | 3 | 60.0 ± 10.0 | 48.4 ± 0.0 |" in format_table(summary)
    assert "A 48.4% at 100" in verdict(summary)
    assert sentence.endswith("Caution: underfit (train accuracy A 62.0% at 100; below 90%): the "
                             "difference reflects the training budget as much as the models; "
                             "train longer (--epochs / --min-steps) before reading it as an "
                             "effect of the prior.")


def test_only_common_seeds_are_paired():
    cells = _cells("A", [0.5, 0.6]) + _cells("B", [0.7])
    (paired,) = summarize(cells, ["A", "B"], [100], baseline="A")["paired"]
    assert (paired["seeds"], paired["diff_std"], paired["ci95"]) == (1, None, None)
    assert paired["diff_mean"] == pytest.approx(0.2, abs=1e-12)


def test_time_left_counts_parallel_cells_from_their_own_seconds_per_step():
    from keras_spvit.study import time_left

    # Two cells at a time, 10 min per 1,000 steps: after the first finishes (10 min
    # elapsed, 1 done), 9 are left: 5 rounds of 10 min (the last cell alone), not the
    # 90 min elapsed / done would say.
    assert time_left([(600.0, 1000, 0.0)], [1000] * 9, jobs=2) == 3000.0
    assert time_left([(600.0, 1000, 0.0), (300.0, 500, 0.0)], [1000] * 3, jobs=1) == 1800.0
    assert time_left([(600.0, 1000, 0.0)], [1000], jobs=2) == 600.0   # the last cell, alone
    # A larger size's cells take longer by their steps; the largest bounds the rest.
    assert time_left([(600.0, 1000, 0.0)], [3000, 1000], jobs=2) == 1800.0
    # A resumed cell's training seconds cover its last 100 steps only: 1 min is 10 min
    # per 1,000 steps, not a 1-min cell; its loading and evaluation (40 s) count once
    # per round of cells, not per step.
    assert time_left([(60.0, 100, 40.0)], [1000] * 4, jobs=2) == 2 * 600.0 + 2 * 40.0
    # Two of them training already: their start-up is behind them (one round left).
    assert time_left([(60.0, 100, 40.0)], [1000] * 4, jobs=2, started=2) == 2 * 600.0 + 40.0
    # In the order they run: a slow cell that starts last ends last, alone (spreading its
    # work over the jobs would say 600 s), and a cell waits for the first slot free.
    assert time_left([], [100, 100, 1000], 2, step_seconds=1.0) == 1100.0
    assert time_left([], [1000, 100, 100], 2, step_seconds=1.0) == 1000.0
    assert time_left([], [50, 300, 100], 2, step_seconds=1.0, started=2) == 300.0
    assert time_left([], [50, 300, 400], 2, step_seconds=1.0, started=2) == 450.0
    assert time_left([(600.0, 1000, 5.0)], [], jobs=2) == 0.0
    assert time_left([], [1000], 2) is None and time_left([(5.0, 0, 1.0)], [1000], 2) is None


def test_time_left_runs_each_model_at_its_median_logged_epoch_with_the_running_cells_epochs(
        tmp_path):
    from keras_spvit.study import cell_dir, log_step_seconds, logged_progress, time_left

    settings = {"batch_size": 64, "epochs": 10, "min_steps": 0}  # 640 images: 10 steps/epoch

    def log(cell, rates):
        os.makedirs(cell_dir(str(tmp_path), *cell), exist_ok=True)
        rows = "".join(f"{i},0.5,{r},1.0,NA\n" for i, r in enumerate(rates))
        with open(os.path.join(cell_dir(str(tmp_path), *cell), "log.csv"), "w") as f:
            f.write("epoch,accuracy,images_per_second,loss,val_accuracy\n" + rows)

    done, running = ("A", 640, 0), ("B", 640, 0)
    fresh, resumed, unseen = ("A", 640, 1), ("B", 640, 1), ("C", 640, 0)
    log(done, [640, 640, 64])        # 0.1 s per step, one epoch slowed to 1 s by other work
    log(running, [320, 320, 320, 160])   # 4 epochs done; model B runs at 0.2 s per step
    log(resumed, [6.4] * 6)          # an earlier run's 6 epochs, on a slower machine
    assert log_step_seconds(cell_dir(str(tmp_path), *done), 64) == ([0.1, 0.1, 1.0], 3)
    assert log_step_seconds(cell_dir(str(tmp_path), *fresh), 64) == ([], 0)
    step, left = logged_progress(str(tmp_path), settings, [done, running],
                                 {running: 100, fresh: 100, resumed: 100, unseen: 100})
    # Each model's median (neither the slow epoch nor the old run); a model not seen
    # yet runs at the median of all: 0.1, 0.1, 0.1, 0.2, 0.2, 0.2, 0.4.
    assert step == pytest.approx({running: 0.2, fresh: 0.1, resumed: 0.2, unseen: 0.2})
    assert left == {running: 60, fresh: 100, resumed: 40, unseen: 100}
    # 12, 10, 8 and 20 s of training, each after 10 s outside training, in order on the
    # first of 2 slots free: 22 | 20, then 20 + 18 = 38, then 22 + 30 = 52; the finished
    # cell's own average (1.5 s per step, its slow epoch included) would say 320 s.
    finished = [(150.0, 100, 10.0)]
    per_cell = [step[c] for c in left]
    assert time_left(finished, list(left.values()), 2, step_seconds=per_cell) == pytest.approx(52.0)
    assert time_left(finished, list(left.values()), 2) == pytest.approx(320.0)
    # The longest cell bounds the rest: one slow model's cell alone.
    assert time_left(finished, [10, 100], 2, step_seconds=[0.1, 1.0]) == pytest.approx(110.0)
    assert logged_progress(str(tmp_path), settings, [], {fresh: 100}) == (None, {fresh: 100})


def test_a_model_not_seen_in_this_run_is_priced_by_the_earlier_cells_relative_speed(
        tmp_path):
    import json

    from keras_spvit.study import cell_dir, earlier_step_seconds, logged_progress

    settings = {"batch_size": 64, "epochs": 10, "min_steps": 0}  # 640 images: 10 steps/epoch

    def finished(cell, seconds, steps, resumed_at_step=0):
        os.makedirs(cell_dir(str(tmp_path), *cell), exist_ok=True)
        with open(os.path.join(cell_dir(str(tmp_path), *cell), "cell.json"), "w") as f:
            json.dump({"train_seconds": seconds, "steps": steps,
                       "resumed_at_step": resumed_at_step}, f)

    # An earlier run, on a machine twice as slow: A 0.2 s per step, B 0.8, C 0.4
    # (C's resumed cell trained its last 50 steps in 20 s: 0.4 too; the broken
    # cell.json is skipped).
    earlier = [("A", 640, 0), ("B", 640, 0), ("C", 640, 0), ("C", 640, 1), ("D", 640, 0)]
    finished(earlier[0], 20.0, 100)
    finished(earlier[1], 80.0, 100)
    finished(earlier[2], 40.0, 100)
    finished(earlier[3], 20.0, 100, resumed_at_step=50)
    os.makedirs(cell_dir(str(tmp_path), *earlier[4]), exist_ok=True)
    with open(os.path.join(cell_dir(str(tmp_path), *earlier[4]), "cell.json"), "w") as f:
        f.write("{")
    assert earlier_step_seconds(str(tmp_path), earlier) == pytest.approx(
        {"A": 0.2, "B": 0.8, "C": 0.4})
    assert earlier_step_seconds(str(tmp_path), []) == {}
    # This run has logged B only, at 0.4 s per step: the machine is twice as fast,
    # so C runs at 0.2 and A at 0.1, not at B's 0.4 (the median of all epochs).
    running, c, a, new = ("B", 640, 1), ("C", 640, 2), ("A", 640, 2), ("E", 640, 0)
    os.makedirs(cell_dir(str(tmp_path), *running), exist_ok=True)
    with open(os.path.join(cell_dir(str(tmp_path), *running), "log.csv"), "w") as f:
        f.write("epoch,accuracy,images_per_second,loss,val_accuracy\n"
                + "".join(f"{i},0.5,160,1.0,NA\n" for i in range(3)))
    total = {running: 100, c: 100, a: 100, new: 100}
    before = earlier_step_seconds(str(tmp_path), earlier)
    step, left = logged_progress(str(tmp_path), settings, [running], total, earlier=before)
    assert step == pytest.approx({running: 0.4, c: 0.2, a: 0.1, new: 0.4})
    assert left == {running: 70, c: 100, a: 100, new: 100}
    # Without earlier cells (or none of the models seen now among them), as before.
    step, _ = logged_progress(str(tmp_path), settings, [running], total)
    assert step == pytest.approx({running: 0.4, c: 0.4, a: 0.4, new: 0.4})
    step, _ = logged_progress(str(tmp_path), settings, [running], total,
                              earlier=earlier_step_seconds(str(tmp_path), [earlier[2]]))
    assert step == pytest.approx({running: 0.4, c: 0.4, a: 0.4, new: 0.4})


def test_status_lines_on_training_cells_come_once_per_epoch_and_at_most_every_interval(
        tmp_path):
    from keras_spvit.study import _Progress

    settings = {"batch_size": 64, "epochs": 10, "min_steps": 0}  # 640 images: 10 steps/epoch
    a, b, c = ("A", 640, 0), ("B", 640, 0), ("A", 640, 1)

    def log(cell, rates):
        os.makedirs(cell_dir(str(tmp_path), *cell), exist_ok=True)
        rows = "".join(f"{i},0.5,{r},1.0,NA\n" for i, r in enumerate(rates))
        with open(os.path.join(cell_dir(str(tmp_path), *cell), "log.csv"), "w") as f:
            f.write("epoch,accuracy,images_per_second,loss,val_accuracy\n" + rows)

    lines = []  # 4 cells, one finished before
    progress = _Progress(str(tmp_path), settings, 4, [a, b, c], 2, lines.append, every=0)
    progress.training([a, b])
    assert lines == []  # no epoch logged yet
    log(a, [640] * 4)  # 4 epochs at 0.1 s per step
    progress.training([a, b])
    # A: 60 steps left, B and C (A's and the study's speed): 100 each; 2 jobs: C starts
    # when A ends (6 s), and ends 10 s later.
    assert lines == ["[1/4 cells] training A n=640 seed 0 epoch 4/10, B n=640 seed 0 "
                     "epoch 0/10 | elapsed 0:00:00, about 0:00:16 left"]
    progress.training([a, b])
    assert len(lines) == 1  # nothing new logged
    log(b, [320])
    progress.training([a, b])
    assert lines[-1].startswith("[1/4 cells] training A n=640 seed 0 epoch 4/10, B n=640 "
                                "seed 0 epoch 1/10 |")
    progress.every = 3600.0  # an epoch logged, but the last line is not an hour old
    log(a, [640] * 5)
    progress.training([a, b])
    assert len(lines) == 2
    progress.every = None
    progress.last -= 7200
    progress.training([a, b])
    assert len(lines) == 2


def test_status_every_must_be_seconds(tmp_path):
    from keras_spvit.study import study

    for bad in (-1, "5", True, math.inf):
        with pytest.raises(ValueError, match="Expected status_every as seconds >= 0, or None. "
                                             f"Received: status_every={bad!r}"):
            study(**MINI, out=str(tmp_path / "s"), status_every=bad)
    assert not (tmp_path / "s").exists()


def test_default_baseline():
    assert default_baseline(["SPViT_Tiny", "LVViT_Tiny", "PlainViT_Tiny"]) == "PlainViT_Tiny"
    assert default_baseline(["SPViT_Tiny", "LVViT_Tiny"]) == "LVViT_Tiny"
    assert default_baseline(["SPViT_Tiny", "RefinedViT_Tiny"]) == "SPViT_Tiny"


def test_learning_curve_png(tmp_path):
    cells = _cells("A", [0.5, 0.6]) + _cells("A", [0.7, 0.8], size=1000)
    path = plot_learning_curves(summarize(cells, ["A"], [100, 1000]), str(tmp_path / "c.png"))
    assert open(path, "rb").read(8) == PNG


@pytest.fixture
def laid_out(monkeypatch):
    """The learning-curve figure as laid out, before its PNG is saved: the title's text and
    box, the x tick labels' boxes (left to right) and the figure's width, in pixels."""
    study_module = importlib.import_module("keras_spvit.study")
    drawn = {}
    set_title = study_module._set_title_within

    def measured(figure, axis, *args, **kwargs):
        text = set_title(figure, axis, *args, **kwargs)
        renderer = figure.canvas.get_renderer()
        drawn.update(text=text.get_text(), box=text.get_window_extent(renderer),
                     width=figure.bbox.width,
                     ticks=sorted((label.get_window_extent(renderer)
                                   for label in axis.get_xticklabels()), key=lambda b: b.x0))
        return text

    monkeypatch.setattr(study_module, "_set_title_within", measured)
    return drawn


@pytest.mark.parametrize("title", [
    # 89 characters: one line at the old fixed width of 90, it ran off the report's figure.
    "fashion_mnist, 32 px, recipe digits, seeds 0-2 (2-3 per model): test accuracy (mean ± std)",
    "short title", " ".join(["word"] * 60),
    # study-report's title while seeds differ by size: it wrapped "... under each" / "size".
    "fashion_mnist, 32 px, recipe digits: test accuracy (mean ± std); seeds, optimizer steps per "
    "cell and backend under each size"])
def test_learning_curve_title_fits_the_figure(title, tmp_path, laid_out):
    # The 60,000-image ledger's points: 5 models, ticks like "90.75" beside the axes.
    cells = [cell for i, model in enumerate(["LV", "PS", "Plain", "Ref", "SP"])
             for cell in _cells(model, [0.9 + i / 500, 0.903 - i / 400], size=60000)]
    models = ["LV", "PS", "Plain", "Ref", "SP"]
    plot_learning_curves(summarize(cells, models, [60000]), str(tmp_path / "c.png"), title)
    assert 0 <= laid_out["box"].x0 and laid_out["box"].x1 <= laid_out["width"]
    text = laid_out["text"]
    assert text.replace("\n", " ").replace("\u00a0", " ") == title  # every word kept
    assert "±\n" not in text and "\n±" not in text  # "mean ± std" kept whole
    assert ("\n" in text) != (title == "short title")  # a short one stays whole
    lines = text.split("\n")
    assert len(lines[-1]) >= 0.6 * max(map(len, lines)), lines  # balanced, no orphan word


def test_learning_curve_size_labels_do_not_touch(tmp_path, laid_out):
    # Six sizes from 100 to 60,000 with their step budgets and backends under each tick (the
    # README's figure): 1,000 and 3,000 sit as close on the log axis as 100 and 300, and at the
    # default width "3,120 steps" ran into "6,090 steps" (1-2 pixels apart).
    sizes = [100, 300, 1000, 3000, 10000, 60000]
    steps = [1000, 1030, 3120, 6090, 12500, 18750]
    cells = [cell for size in sizes for cell in _cells("A", [0.6, 0.7], size=size)]
    notes = {size: f"{n:,} steps\n{'jax' if size <= 1000 else 'torch'}"
             for size, n in zip(sizes, steps)}
    plot_learning_curves(summarize(cells, ["A"], sizes), str(tmp_path / "c.png"),
                         size_notes=notes)
    ticks = laid_out["ticks"]
    assert len(ticks) == len(sizes)
    gaps = [b.x0 - a.x1 for a, b in zip(ticks, ticks[1:])]  # pixels at the PNG's 100 dpi
    assert min(gaps) >= 8, gaps  # at least a space between two sizes' labels (1-2 px before)
    assert 0 <= ticks[0].x0 and ticks[-1].x1 <= laid_out["width"]


# === The real mini-study ===


def test_mini_study_cells_report_and_files(mini):
    import keras

    import keras_spvit
    from keras_spvit.data.sources import source_dataset

    result = json.loads((mini / "study.json").read_text())
    assert len(result["cells"]) == 4 and result["baseline"] == "LVViT_Tiny"
    for cell in result["cells"]:
        assert cell["class_counts"] == [cell["size"] // 10] * 10
        assert cell["test_count"] == 359 and cell["steps"] == 1 and cell["epochs"] == 1
        assert 0 < cell["cpu_seconds"]
        code = cell["code"]  # what drew the cell: a ledger's provenance
        assert code["keras_spvit"] == keras_spvit.__version__
        assert code["engine"].startswith(BACKEND + " ") and code["keras"] == keras.__version__
        assert code["commit"] is None or len(code["commit"].split("+")[0]) == 40
    # The reported test accuracy is the saved model's on the 359 held-out digits,
    # recomputed here from its logits through the ordinary evaluation pipeline.
    cell = result["cells"][0]
    model = keras.saving.load_model(
        cell_dir(mini, cell["model"], cell["size"], cell["seed"]) + "/model.keras",
        compile=False)
    held_out, _ = source_dataset("digits", "test", image_size=16, batch_size=359,
                                 training=False)
    images, labels = next(iter(held_out))
    logits = keras.ops.convert_to_numpy(model(images, training=False))
    top2 = np.sort(logits, -1)[:, -2:]
    ties = int((top2[:, 1] - top2[:, 0] < 1e-4).sum())  # may go either way between kernels
    correct = int((logits.argmax(-1) == np.asarray(labels)).sum())
    assert abs(round(cell["test_accuracy"] * 359) - correct) <= ties, (correct, ties)
    for name in ("learning_curves.png", "spatial_priors.png"):
        assert (mini / name).read_bytes()[:8] == PNG
    table = (mini / "table.md").read_text()
    assert "| SPViT_Tiny − LVViT_Tiny | 20 | 1 |" in table and result["verdict"] in table
    spvit = next(c for c in result["cells"] if c["model"] == "SPViT_Tiny" and c["size"] == 50)
    row = (f"| SPViT_Tiny | 50 | {100 * spvit['test_accuracy']:.1f} / "
           f"{100 * spvit['train_accuracy']:.1f} |")
    assert row in table.split("Per seed")[1] and result["seed_table"] in table
    # status_every=0: a line on the training cell at its (only) epoch, before its result.
    printed = _MINI_DIR["printed"]
    status = "[0/4 cells] training SPViT_Tiny n=20 seed 0 epoch 1/1 | elapsed "
    assert status in printed
    assert printed.index(status) < printed.index("[1/4 cells] SPViT_Tiny n=20 seed 0: test ")
    assert printed.count(" cells] training ") == 4


def test_rerun_reuses_every_cell(mini, tmp_path, monkeypatch, capsys):
    module = importlib.import_module("keras_spvit.study")  # (keras_spvit.study is the function)

    out = tmp_path / "again"
    shutil.copytree(mini, out)
    monkeypatch.setattr(module, "run_cell", _must_not_train)
    result = module.study(**MINI, out=str(out))
    assert "reusing 4 finished cell(s), 0 to run" in capsys.readouterr().out
    assert result["rows"] == json.loads((mini / "study.json").read_text())["rows"]


def _must_not_train(*args):
    raise AssertionError(f"a finished cell trained again: {args[1:4]}")


def test_an_interrupted_study_keeps_its_finished_cells(mini, tmp_path, monkeypatch, capsys):
    module = importlib.import_module("keras_spvit.study")  # (keras_spvit.study is the function)

    out = tmp_path / "killed"
    shutil.copytree(mini, out)
    # The first cell finished; the run was killed in the second (grid order: sizes,
    # seeds, models).
    for model, size in (("LVViT_Tiny", 20), ("SPViT_Tiny", 50), ("LVViT_Tiny", 50)):
        (out / "cells" / model / f"n{size}" / "seed0" / CELL_FILE).unlink()
    calls = []

    def killed(settings, model, size, seed, directory, callbacks=()):
        calls.append((model, size, seed))
        raise KeyboardInterrupt

    monkeypatch.setattr(module, "run_cell", killed)
    with pytest.raises(KeyboardInterrupt):
        module.study(**MINI, out=str(out))
    assert calls == [("LVViT_Tiny", 20, 0)]
    assert (out / "cells" / "SPViT_Tiny" / "n20" / "seed0" / CELL_FILE).exists()

    def fake(settings, model, size, seed, directory, callbacks=()):
        calls.append((model, size, seed))
        cell = json.loads((mini / "cells" / model / f"n{size}" / f"seed{seed}" /
                           CELL_FILE).read_text())
        (out / "cells" / model / f"n{size}" / f"seed{seed}" / CELL_FILE).write_text(
            json.dumps(cell))
        return cell

    monkeypatch.setattr(module, "run_cell", fake)
    capsys.readouterr()
    module.study(**MINI, out=str(out))
    assert "reusing 1 finished cell(s), 3 to run" in capsys.readouterr().out
    assert calls[1:] == [("LVViT_Tiny", 20, 0), ("SPViT_Tiny", 50, 0), ("LVViT_Tiny", 50, 0)]


def test_other_settings_in_the_same_directory_are_refused(mini, tmp_path):
    from keras_spvit.study import study

    out = tmp_path / "changed"
    shutil.copytree(mini, out)
    with pytest.raises(ValueError, match=r"other settings \(epochs: 1 there, 2 now\)") as error:
        study(**{**MINI, "epochs": 2}, out=str(out))
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("change, message", [
    (dict(models=["SPViT_Tiny", "Nope"]), "Unknown model 'Nope'"),
    (dict(sizes=[5000]), "at most 1438"),
    (dict(sizes=[5]), "at least 10"),
    (dict(sizes=[20, 20]), "distinct"),
    (dict(seeds=[]), "at least one"),
    (dict(baseline="PlainViT_Tiny"), "baseline among"),
    (dict(jobs=0), "jobs=0"),
    (dict(data="nope"), "Unknown data source 'nope'"),
    (dict(model_args={"Nope": {}}), "model_args"),
    (dict(test_size=400), "at most 359"),
])
def test_bad_arguments_raise_one_line(tmp_path, change, message):
    from keras_spvit.study import study

    with pytest.raises(ValueError, match=message) as error:
        study(**{**MINI, **change}, out=str(tmp_path / "x"))
    assert "\n" not in str(error.value)
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
@pytest.mark.skipif(BACKEND != "tensorflow", reason="the subprocesses run one backend's cells")
def test_parallel_cells_in_subprocesses(tmp_path, capsys):
    from keras_spvit.study import study

    result = study(**{**MINI, "models": ["SPViT_Tiny"], "sizes": [20], "seeds": [0, 1]},
                   out=str(tmp_path / "jobs"), jobs=2)
    assert [c["seed"] for c in result["cells"]] == [0, 1]
    assert (tmp_path / "jobs" / "cells" / "SPViT_Tiny" / "n20" / "seed1" / "cell.log").exists()
    assert "2 at a time" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.skipif(BACKEND != "jax", reason="JAX's persistent compilation cache")
def test_parallel_cells_share_compiled_programs_with_the_same_numbers(tmp_path):
    from keras_spvit.study import COMPILE_CACHE, study

    args = {**MINI, "models": ["SPViT_Tiny"], "sizes": [20], "seeds": [0, 1], "jit": "on",
            "out": str(tmp_path / "jobs"), "jobs": 2, "verbose": False}
    first = study(**args)
    assert any((tmp_path / "jobs" / COMPILE_CACHE).iterdir())
    # Seed 0 again: its programs now come from the cache, its numbers must not change.
    shutil.rmtree(cell_dir(args["out"], "SPViT_Tiny", 20, 0))
    again = study(**args)
    keys = ("train_accuracy", "test_accuracy", "augmented_train_accuracy")
    assert [{k: c[k] for k in keys} for c in again["cells"]] == \
        [{k: c[k] for k in keys} for c in first["cells"]]
