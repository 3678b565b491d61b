"""Smoke test of benchmarks/throughput.py on tiny models (current backend)."""

import math

import keras
import pytest

import keras_spvit
from tests.conftest import load_benchmark


def test_throughput_script_runs_and_reports(capsys):
    throughput = load_benchmark("throughput")
    results = throughput.main(
        ["--model", "SPViT_Tiny", "LVViT_Tiny", "--batch-size", "2",
         "--image-size", "32", "--warmup", "1", "--repeats", "2", "--jit", "off",
         "--peak-size", "128"]
    )

    assert {(r["model"], r["mode"]) for r in results} == {
        (m, mode) for m in ("SPViT_Tiny", "LVViT_Tiny") for mode in ("infer", "train")
    }
    # Forward MACs counted independently of the script, on a fresh model.
    macs = {m: keras_spvit.count_macs(getattr(keras_spvit, m)(num_classes=1000))
            for m in ("SPViT_Tiny", "LVViT_Tiny")}
    for r in results:
        assert r["error"] is None, r
        assert r["jit"] == "off" and r["dtype"] == "float32"
        assert r["params"] > 0
        assert len(r["times_s"]) == 2
        for key in ("images_per_s", "min", "max", "ratio", "gflops", "pct_peak"):
            assert math.isfinite(r[key]) and r[key] > 0, (key, r)
        assert r["min"] <= r["images_per_s"] <= r["max"]
    # The ratio column is each row's speed over the baseline's (the first model) in
    # the same mode and run: the one speed figure that carries across machines.
    baseline = {r["mode"]: r["images_per_s"] for r in results if r["model"] == "SPViT_Tiny"}
    for r in results:
        assert r["ratio"] == pytest.approx(r["images_per_s"] / baseline[r["mode"]], rel=1e-9)
    assert any(r["ratio"] != 1.0 for r in results)  # two models never time identically
    for r in results:
        # A training step counts 3 forward passes (forward + 2 backward matmuls).
        passes = {"infer": 1, "train": 3}[r["mode"]]
        assert r["flops_per_image"] == 2 * passes * macs[r["model"]]
        assert r["gflops"] == pytest.approx(r["flops_per_image"] * r["images_per_s"] / 1e9)
        assert r["pct_peak"] == pytest.approx(100 * r["gflops"] / r["peak_gflops"])
        assert r["pct_fp32_peak"] == r["pct_peak"]  # float32 rows: the same peak
        # ... and the share of the peak of the engine the row ran on (XLA or oneDNN).
        assert r["pct_engine_peak"] == pytest.approx(100 * r["gflops"] / r["engine_peak_gflops"])
        assert r["engine_peak_gflops"] <= r["peak_gflops"]

    out = capsys.readouterr().out
    assert "backend=" in out and "SPViT_Tiny" in out and "ratio" in out
    assert "% peak" in out and "float32 matmul peak (128^2)" in out


def test_bfloat16_rows_use_the_bfloat16_peak():
    throughput = load_benchmark("throughput")
    peaks = {"float32": 100.0, "bfloat16": 400.0}
    row = throughput._row("M", "train", "off", 10, first_call=1.0, times=[2.0, 4.0, 1.0],
                          steps=1, batch_size=8, dtype="mixed_bfloat16", macs=10**9,
                          peaks=peaks)
    # 8 images per 2 s (median) = 4 img/s; 6 GFLOP per image in training.
    assert row["images_per_s"] == 4.0
    assert row["gflops"] == pytest.approx(24.0)
    assert row["peak_gflops"] == 400.0
    assert row["pct_peak"] == pytest.approx(6.0)
    assert row["pct_fp32_peak"] == pytest.approx(24.0)
    assert throughput._row("M", "infer", "on", 10, times=[1.0], batch_size=1,
                           macs=10**9, peaks=peaks)["gflops"] == pytest.approx(2.0)


def test_keras_hub_vit_macs_formula():
    throughput = load_benchmark("throughput")
    # DeiT-S at 224 px: 4.6 GMACs (fvcore, as DeiT reports), here by the rules
    # of count_macs: patch conv, 12 blocks (qkv, proj, MLP, 2 attention products), head.
    tokens, dim = 197, 384
    block = tokens * dim * 3 * dim + tokens * dim * dim + 2 * tokens * dim * 1536
    block += 2 * tokens * tokens * dim
    expected = 196 * 16 * 16 * 3 * dim + 12 * block + dim * 1000
    assert throughput.vit_macs(1000, (224, 224, 3), **throughput.VIT_S) == expected
    assert round(expected / 1e9, 1) == 4.6


def test_peak_meter_takes_the_best_engine_of_the_samples_since_reset():
    throughput = load_benchmark("throughput")
    values = {("float32", "xla"): iter([50.0, 10.0, 60.0, 55.0, 1.0, 1.0, 1.0]),
              ("float32", "graph"): iter([40.0, 45.0, 42.0, 90.0, 90.0, 90.0]),
              ("bfloat16", "xla"): iter([20.0, 30.0, 25.0, 7.0, 7.0, 7.0])}
    timers = {key: (lambda it=it: next(it)) for key, it in values.items()}
    meter = throughput.PeakMeter(timers, runs=3)
    assert meter.peaks() == {}  # nothing sampled yet: no ceiling, not zero
    meter.sample()
    # Medians of the 3 runs: xla 50, graph 42 -> float32 50; bfloat16 25.
    assert meter.peaks() == {"float32": 50.0, "bfloat16": 25.0}
    meter.reset()
    meter.sample()  # the next repeat only: xla 1 (55, 1, 1), graph 90
    assert meter.peaks() == {"float32": 90.0, "bfloat16": 7.0}


def test_rows_also_give_the_share_of_their_own_engines_peak():
    throughput = load_benchmark("throughput")
    meter = throughput.PeakMeter({("float32", "xla"): lambda: 100.0,
                                  ("float32", "graph"): lambda: 200.0}, runs=2)
    meter.sample()
    assert meter.peaks() == {"float32": 200.0}
    assert meter.engine_peaks() == {("float32", "xla"): 100.0, ("float32", "graph"): 200.0}
    # 4 img/s x 6 GFLOP = 24 GFLOP/s: 12% of the best engine, 24% of XLA's own peak.
    row = throughput._row("M", "train", "on", 10, first_call=1.0, times=[2.0], steps=1,
                          batch_size=8, macs=10**9, peaks=meter.peaks(),
                          engine_peak=meter.engine_peaks()["float32", "xla"])
    assert row["pct_peak"] == pytest.approx(12.0)
    assert row["pct_engine_peak"] == pytest.approx(24.0)
    assert throughput.engine_of(keras, "on") == (
        "xla" if keras.backend.backend() == "tensorflow" else "")
