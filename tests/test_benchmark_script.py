"""Smoke test of benchmarks/throughput.py on tiny models (current backend)."""

import importlib.util
import math
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "throughput.py"


def _load_script():
    # benchmarks/ is not a package: load the script from its path.
    spec = importlib.util.spec_from_file_location("throughput", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_throughput_script_runs_and_reports(capsys):
    throughput = _load_script()
    results = throughput.main(
        ["--model", "SPViT_Tiny", "LVViT_Tiny", "--batch-size", "2",
         "--image-size", "32", "--warmup", "1", "--repeats", "2", "--jit", "off"]
    )

    assert {(r["model"], r["mode"]) for r in results} == {
        (m, mode) for m in ("SPViT_Tiny", "LVViT_Tiny") for mode in ("infer", "train")
    }
    for r in results:
        assert r["error"] is None, r
        assert r["jit"] == "off"
        assert r["params"] > 0
        assert len(r["times_s"]) == 2
        for key in ("images_per_s", "min", "max", "ratio"):
            assert math.isfinite(r[key]) and r[key] > 0, (key, r)
        assert r["min"] <= r["images_per_s"] <= r["max"]
        if r["model"] == "SPViT_Tiny":
            assert r["ratio"] == 1.0

    out = capsys.readouterr().out
    assert "backend=" in out and "SPViT_Tiny" in out and "ratio" in out
