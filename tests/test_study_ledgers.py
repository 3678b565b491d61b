"""The study results the README and the ledgers state are what `study-report` makes of
the finished cells shipped in `docs/study_runs` (nothing is trained: the cells' own
`cell.json` files are read). A table edited by hand, or a ledger grown without its
table, fails here."""

import re
from pathlib import Path

import pytest

from keras_spvit.study import combine_studies

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "docs" / "study_runs"
MODELS = ["PlainViT_Tiny", "SPViT_Tiny", "LVViT_Tiny", "RefinedViT_Tiny", "PSViT_Tiny_CPU"]


def _section(text, heading):
    start = text.index(heading)
    end = text.find("\n### ", start + len(heading))
    return text[start:end if end >= 0 else None]


def _table_lines(text):
    return [line for line in text.splitlines() if line.startswith("|")]


def test_readme_fashion_mnist_tables_are_the_ledgers_report(tmp_path):
    section = _section((ROOT / "README.md").read_text(), "### Does the prior pay off?")
    # The ledgers the README's command reports (`study-report ... =100,300 ...`).
    sources = [f"{RUNS / 'fashion_mnist_32'}=100,300"]
    sources += [str(RUNS / f"fashion_mnist_32_n{n}") for n in (1000, 3000, 10000, 60000)]
    result = combine_studies(sources, str(tmp_path / "all"), models=MODELS, verbose=False)
    assert _table_lines(section) == _table_lines(result["table"])


def test_digits_ledger_table_is_its_report(tmp_path):
    ledger = RUNS / "digits_32"
    result = combine_studies([str(ledger)], str(tmp_path / "digits"), models=MODELS,
                             verbose=False)
    rows = {(r["model"], r["size"]): r for r in result["rows"]}
    stated = _table_lines((ledger / "README.md").read_text())[2:]
    assert [line.split(" | ")[0].strip("| ") for line in stated] == MODELS
    for line in stated:
        model, *cells = [c.strip() for c in line.strip("|").split("|")]
        for size, cell in zip((100, 300), cells):
            r = rows[model, size]
            assert cell == f"{100 * r['test_mean']:.1f} ± {100 * r['test_std']:.1f}", (model, size)


def _cells(line):
    return [c.strip() for c in line.strip().strip("|").split("|")]


@pytest.mark.parametrize("ledger", ["fashion_mnist_32_n3000", "fashion_mnist_32_n10000",
                                    "fashion_mnist_32_n60000"])
def test_ledger_seed_table_is_its_cells(ledger, tmp_path):
    # A one-size ledger's "| model | seed 0 | ..." table (test / train % per seed, blank where
    # a cell has not run yet) is `study-report`'s per-seed table of its cells, the size column
    # left out.
    stated = [_cells(line) for line in _table_lines((RUNS / ledger / "README.md").read_text())]
    start = next(i for i, row in enumerate(stated) if row[:2] == ["model", "seed 0"])
    stated = stated[start:start + 2 + len(MODELS)]
    seeds = [int(h.split()[1]) for h in stated[0][1:]]
    # `study-report` refuses a model with no finished cell: ask for those the ledger has.
    present = {path.parts[-4] for path in (RUNS / ledger).glob("cells/*/*/*/cell.json")}
    result = combine_studies([str(RUNS / ledger)], str(tmp_path / "report"),
                             models=[m for m in MODELS if m in present], verbose=False)
    found = {(c["model"], c["seed"]): c for c in result["cells"]}
    assert [row[0] for row in stated[2:]] == MODELS
    assert {seed for _, seed in found} <= set(seeds)
    for model, *values in stated[2:]:
        expected = ["" if (model, seed) not in found else
                    f"{100 * found[model, seed]['test_accuracy']:.1f} / "
                    f"{100 * found[model, seed]['train_accuracy']:.1f}" for seed in seeds]
        assert values == expected, model


@pytest.mark.parametrize("ledger", sorted(p.name for p in RUNS.iterdir() if p.is_dir()))
def test_every_ledger_says_how_it_was_run(ledger):
    # Its README gives the command that grows it: the study's with `--out`.
    text = (RUNS / ledger / "README.md").read_text()
    assert re.search(r"keras-spvit study --data \w+", text) and "--out runs/" in text
    assert (RUNS / ledger / "settings.json").exists()


def test_cell_counts_are_the_ledgers_cells():
    # "K of 25 cells" (in progress) and "Finished (DATE): all K cells" in a ledger's README,
    # and "K of its 25 cells are in the ledger [NAME]" in the README's study section, count
    # the ledger's finished cells (cell.json files).
    def finished(ledger):
        return len(list((RUNS / ledger).glob("cells/*/*/*/cell.json")))

    stated = []
    for ledger in sorted(p.name for p in RUNS.iterdir() if p.is_dir()):
        text = (RUNS / ledger / "README.md").read_text()
        stated += [(ledger, int(k)) for k in re.findall(r"\b(\d+) of \d+ cells\b", text)]
        stated += [(ledger, int(k)) for k in re.findall(r"\bFinished \([^)]*\): all (\d+) cells\b",
                                                      text)]
    section = _section((ROOT / "README.md").read_text(), "### Does the prior pay off?")
    for k, ledger in re.findall(
        r"\b(\d+) of its \d+ cells (?:are|is) in the ledger\s*\[docs/study_runs/(\w+)\]", section
    ):
        stated.append((ledger, int(k)))
    assert stated, "no ledger states its cell count"
    assert stated == [(ledger, finished(ledger)) for ledger, _ in stated]
