"""Several study directories reported as one (`combine_studies`, `keras-spvit study-report`).

The studies are written by hand (settings and finished cells with known
accuracies), so the combined table is checked against numbers computed here;
nothing trains.
"""

import importlib
import json
import os

import pytest

from keras_spvit.cli import main
from keras_spvit.study import CELL_FILE, SETTINGS_FILE, cell_dir, combine_studies

PNG = b"\x89PNG\r\n\x1a\n"
SETTINGS = {"data": "digits", "image_size": 16, "epochs": 2, "min_steps": 10,
            "recipe": {"name": "digits"}, "model_args": {}, "backend": "jax"}
# (model, size, seed) -> (test accuracy, train accuracy)
SMALL = {("PlainViT_Tiny", 20, 0): (0.50, 1.0), ("PlainViT_Tiny", 20, 1): (0.60, 1.0),
         ("SPViT_Tiny", 20, 0): (0.55, 1.0), ("SPViT_Tiny", 20, 1): (0.70, 1.0),
         ("PlainViT_Tiny", 50, 0): (0.40, 0.8), ("SPViT_Tiny", 50, 0): (0.45, 0.85)}
LARGE = {("PlainViT_Tiny", 50, 0): (0.80, 0.95), ("PlainViT_Tiny", 50, 1): (0.70, 0.97),
         ("SPViT_Tiny", 50, 0): (0.90, 0.99), ("SPViT_Tiny", 50, 1): (0.75, 0.98)}


def _study(path, cells, min_steps, **changes):
    os.makedirs(path)
    with open(os.path.join(path, SETTINGS_FILE), "w") as f:
        json.dump({**SETTINGS, "min_steps": min_steps, **changes}, f)
    for (model, size, seed), (test, train) in cells.items():
        directory = cell_dir(str(path), model, size, seed)
        os.makedirs(directory)
        cell = {"model": model, "size": size, "seed": seed, "test_accuracy": test,
                "train_accuracy": train, "test_count": 100, "steps": 2 * min_steps}
        if model.startswith("SPViT"):
            # Written where the cell first ran: the copied study keeps the PNG in
            # the cell's own directory only.
            cell["priors_png"] = f"/elsewhere/{model}/{size}/spatial_priors.png"
            with open(os.path.join(directory, "spatial_priors.png"), "wb") as f:
                f.write(PNG + f"{size}".encode())
        with open(os.path.join(directory, CELL_FILE), "w") as f:
            json.dump(cell, f)
    return str(path)


@pytest.fixture
def studies(tmp_path):
    return _study(tmp_path / "small", SMALL, 10), _study(tmp_path / "large", LARGE, 30)


def test_public_name():
    import keras_spvit

    assert keras_spvit.combine_studies is combine_studies


def test_each_size_from_its_study_with_its_budget_stated(studies, tmp_path):
    small, large = studies
    out = tmp_path / "all"
    result = combine_studies([f"{small}=20", large], str(out), verbose=False)
    rows = {(r["model"], r["size"]): r for r in result["rows"]}
    assert sorted(rows) == [("PlainViT_Tiny", 20), ("PlainViT_Tiny", 50), ("SPViT_Tiny", 20),
                            ("SPViT_Tiny", 50)]
    # Size 50 comes from the large study only (its 2 seeds), not the small one's seed 0.
    assert rows["SPViT_Tiny", 50]["seeds"] == 2
    assert rows["SPViT_Tiny", 50]["test_mean"] == pytest.approx(0.825)
    assert rows["PlainViT_Tiny", 20]["test_mean"] == pytest.approx(0.55)
    paired = {p["size"]: p for p in result["paired"]}
    assert result["baseline"] == "PlainViT_Tiny"
    assert paired[20]["diff_mean"] == pytest.approx(0.075)   # +0.05, +0.10
    assert paired[50]["diff_mean"] == pytest.approx(0.075)   # +0.10, +0.05
    assert paired[50]["wins"] == 2
    engine = {"backend": "jax", "jit": None}
    assert result["sources"] == [{"directory": small, "sizes": [20], "min_steps": 10, **engine},
                                 {"directory": large, "sizes": [50], "min_steps": 30, **engine}]
    assert "min_steps" not in result["settings"]
    table = (out / "table.md").read_text()
    assert f"20: 20 (min_steps 10, jax, {small}); 50: 60 (min_steps 30, jax, {large})" in table
    assert (out / "learning_curves.png").read_bytes()[:8] == PNG
    # The priors of the largest size, found in the copied cell's own directory.
    assert (out / "spatial_priors.png").read_bytes() == PNG + b"50"
    assert json.loads((out / "study.json").read_text())["sources"] == result["sources"]


def test_studies_run_on_other_backends_combine_with_each_sizes_backend_stated(
        tmp_path, monkeypatch):
    # The same layers on every backend: a row grown on another engine is one study,
    # the engine named per size in the table, study.json and under the PNG's ticks.
    study_module = importlib.import_module("keras_spvit.study")  # the function shadows it
    small = _study(tmp_path / "small", SMALL, 10)
    large = _study(tmp_path / "large", LARGE, 10, backend="torch", jit=False)
    ticks = {}
    plot = study_module.plot_learning_curves
    monkeypatch.setattr(study_module, "plot_learning_curves",
                        lambda *a, **k: ticks.update(k) or plot(*a, **k))
    out = tmp_path / "all"
    result = combine_studies([f"{small}=20", large], str(out), verbose=False)
    assert [(p["backend"], p["jit"]) for p in result["sources"]] == [("jax", None),
                                                                     ("torch", False)]
    assert "backend" not in result["settings"] and "jit" not in result["settings"]
    table = (out / "table.md").read_text()
    assert (f"20: 20 (min_steps 10, jax, {small}); 50: 20 (min_steps 10, torch, no XLA, "
            f"{large})") in table
    # One budget: only the engine goes under the ticks.
    assert ticks["size_notes"] == {20: "jax", 50: "torch, no XLA"}
    assert ticks["title"].endswith("; backend under each size")


def test_a_size_with_other_seeds_states_each_sizes_seeds(tmp_path, monkeypatch):
    # The 50 row has seeds 0 and 1, the 20 row seed 0 only: the title may not claim
    # seeds 0-1 for every size.
    study_module = importlib.import_module("keras_spvit.study")
    small = _study(tmp_path / "small", {k: v for k, v in SMALL.items() if k[2] == 0}, 10)
    large = _study(tmp_path / "large", LARGE, 10)
    ticks = {}
    plot = study_module.plot_learning_curves
    monkeypatch.setattr(study_module, "plot_learning_curves",
                        lambda *a, **k: ticks.update(k) or plot(*a, **k))
    combine_studies([f"{small}=20", large], str(tmp_path / "all"), verbose=False)
    assert ticks["size_notes"] == {20: "seeds 0", 50: "seeds 0, 1"}
    assert "seeds 0" not in ticks["title"].split(":")[0]
    assert ticks["title"].endswith("; seeds under each size")
    # The same seeds everywhere: in the title, as a range, nothing under the ticks.
    combine_studies([f"{large}"], str(tmp_path / "one"), verbose=False)
    assert ", seeds 0, 1: test accuracy" in ticks["title"] and ticks["size_notes"] is None
    # Two settings differ: one line each under the tick (a comma-joined line overlaps
    # its neighbours').
    other = _study(tmp_path / "other", LARGE, 30, backend="torch")
    combine_studies([f"{small}=20", other], str(tmp_path / "two"), verbose=False)
    assert ticks["size_notes"] == {20: "seeds 0\n20 steps\njax",
                                   50: "seeds 0, 1\n60 steps\ntorch"}
    # A row still running: the seeds found, and how many each model has so far.
    running = {k: v for k, v in LARGE.items() if k != ("PlainViT_Tiny", 50, 1)}
    combine_studies([_study(tmp_path / "running", running, 30)], str(tmp_path / "run"),
                    verbose=False)
    assert ", seeds 0, 1 (1-2 per model): test accuracy" in ticks["title"]
    half = {k: v for k, v in running.items() if k != ("SPViT_Tiny", 50, 0)}
    combine_studies([_study(tmp_path / "half", half, 30)], str(tmp_path / "h"), verbose=False)
    assert ", seeds 0, 1 (1 per model): test accuracy" in ticks["title"]
    # The study's own report, asked for while its grid runs.
    study_module.report(str(tmp_path / "running"), ["PlainViT_Tiny", "SPViT_Tiny"], [50],
                        [0, 1], "PlainViT_Tiny", verbose=False)
    assert ", 1-2 of 2 seeds per point: test accuracy" in ticks["title"]
    study_module.report(str(tmp_path / "large"), ["PlainViT_Tiny", "SPViT_Tiny"], [50],
                        [0, 1], "PlainViT_Tiny", verbose=False)
    assert ", 2 seed(s): test accuracy" in ticks["title"]
    assert study_module._seed_list([0, 1, 2, 3, 4]) == "0-4"
    assert study_module._seed_list([0, 2, 3, 5, 6, 7]) == "0, 2, 3, 5-7"


def test_models_choose_and_order_the_rows(studies, tmp_path):
    small, large = studies
    result = combine_studies([f"{small}=20", large], str(tmp_path / "all"),
                             models=["SPViT_Tiny", "PlainViT_Tiny"], baseline="SPViT_Tiny",
                             verbose=False)
    assert [r["model"] for r in result["rows"][:2]] == ["SPViT_Tiny", "PlainViT_Tiny"]
    assert result["paired"][0]["diff_mean"] == pytest.approx(-0.075)
    only = combine_studies([large], str(tmp_path / "one"), models=["SPViT_Tiny"], verbose=False)
    assert {c["model"] for c in only["cells"]} == {"SPViT_Tiny"} and not only["paired"]


def test_a_size_in_two_studies_is_refused_naming_both(studies, tmp_path):
    small, large = studies
    with pytest.raises(ValueError, match=r"Size 50 has finished cells in .*small.* and "
                       r".*large.*name the sizes to take, e.g. .*small=50") as error:
        combine_studies([small, large], str(tmp_path / "all"), verbose=False)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "all").exists()


@pytest.mark.parametrize("sources, out, message", [
    (lambda s, l, t: [s, _study(t / "other", LARGE, 30, image_size=32)], "x",
     r"other settings than .* \(image_size: 32 there, 16 in .*Expected studies that differ "
     r"in min_steps, backend, jit only\."),
    (lambda s, l, t: [f"{s}=20,300"], "x", r"no finished cell of size 300"),
    (lambda s, l, t: [f"{s}=x"], "x", r"Expected DIR or DIR=SIZE,SIZE.*Received: '.*=x'"),
    (lambda s, l, t: [str(t / "nope")], "x", r"is not a study directory"),
    (lambda s, l, t: s, "x", r"Expected a list of study directories"),
    # A study directory as out: its own report would be overwritten.
    (lambda s, l, t: [s, l], "small", r"out directory other than the sources"),
    (lambda s, l, t: [s], "large", r"out directory without a study of its own \(settings"),
])
def test_bad_sources_raise_one_line(studies, tmp_path, sources, out, message):
    small, large = studies
    before = sorted(p.name for p in (tmp_path / out).iterdir()) if out != "x" else None
    with pytest.raises(ValueError, match=message) as error:
        combine_studies(sources(small, large, tmp_path), str(tmp_path / out), verbose=False)
    assert "\n" not in str(error.value)
    if out == "x":
        assert not (tmp_path / "x").exists()
    else:
        assert sorted(p.name for p in (tmp_path / out).iterdir()) == before


def test_bad_models_and_baseline(studies, tmp_path):
    small, large = studies
    with pytest.raises(ValueError, match=r"No finished cell of model 'LVViT_Tiny'"):
        combine_studies([large], str(tmp_path / "x"), models=["LVViT_Tiny"], verbose=False)
    with pytest.raises(ValueError, match=r"baseline among"):
        combine_studies([large], str(tmp_path / "x"), baseline="LVViT_Tiny", verbose=False)


def test_command_prints_the_table_and_errors_in_one_line(studies, tmp_path, capsys):
    small, large = studies
    out = tmp_path / "cli"
    assert main(["study-report", f"{small}=20", large, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| SPViT_Tiny − PlainViT_Tiny | 50 | 2 |" in printed
    assert "min_steps 30" in printed and (out / "learning_curves.png").exists()
    with pytest.raises(SystemExit) as exit_:
        main(["study-report", small, large, "--out", str(tmp_path / "bad")])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.startswith("error: study-report: Size 50 ")
    assert err.count("\n") == 1
