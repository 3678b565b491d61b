"""The examples run, at toy scale."""

import importlib.util
from pathlib import Path

import pytest

from tests.conftest import BACKEND

EXAMPLES = Path(__file__).parent.parent / "examples"


def load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(BACKEND == "jax", reason="search itself is tested on every backend")
def test_psvit_search_example(tmp_path):
    best, tuner = load("psvit_search").main(
        ["--trials", "2", "--epochs", "1", "--limit", "3", "--depth", "4",
         "--directory", str(tmp_path)]
    )
    trials = list(tuner.oracle.trials.values())
    assert len(trials) == 2 and all(t.status == "COMPLETED" for t in trials)
    assert sum(best["stage_depths"]) == 4
