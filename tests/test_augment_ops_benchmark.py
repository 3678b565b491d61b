"""Smoke test of benchmarks/augment_ops.py at toy size (32 px, one call, one repeat)."""

import json
import math

import keras
import pytest

from keras_spvit.data.rand_augment_policy import RAND_TRANSFORMS
from tests.conftest import load_benchmark

# TensorFlow ops (the data pipeline's), backend-independent: run once, on TensorFlow.
pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="tf.data operations, backend-independent: run once, on TensorFlow",
)


def test_augment_ops_benchmark_reports_every_operation(tmp_path):
    bench = load_benchmark("augment_ops")
    out_json = tmp_path / "ops.json"
    rows = bench.main(["--image-size", "32", "--source-size", "40x30", "--calls", "1",
                       "--repeats", "2", "--json", str(out_json)])

    names = [r["name"] for r in rows]
    assert names == ["identity", *RAND_TRANSFORMS, "erasing", "erasing idle", "RandAugment",
                     "RandAugment idle", "flip", "crop"]
    base = rows[0]["cpu_ms"]
    for r in rows:
        assert len(r["cpu_ms_repeats"]) == 2
        assert math.isfinite(r["cpu_ms"]) and r["cpu_ms"] >= 0, r
        assert math.isfinite(r["wall_ms"]) and r["wall_ms"] > 0, r
        assert math.isclose(r["net_cpu_ms"], 0.0 if r["name"] == "identity" else r["cpu_ms"] - base)
    saved = json.loads(out_json.read_text())
    assert saved["meta"]["image_size"] == 32
    assert saved["meta"]["one_thread"] in (True, False)  # False once pytest started TensorFlow
    assert [r["name"] for r in saved["rows"]] == names


def test_augment_ops_benchmark_only_keeps_identity(tmp_path):
    bench = load_benchmark("augment_ops")
    rows = bench.main(["--image-size", "16", "--calls", "1", "--repeats", "1",
                       "--only", "Rotate,erasing"])
    assert [r["name"] for r in rows] == ["identity", "Rotate", "erasing"]
    with pytest.raises(SystemExit, match="unknown operations"):
        bench.main(["--image-size", "16", "--only", "Nope"])


def test_pipeline_mode_times_inside_tf_data_and_adds_up_the_expected_cost(tmp_path):
    bench = load_benchmark("augment_ops")
    out_json = tmp_path / "ops.json"
    picked = ["Rotate", "Equalize", "erasing", "erasing idle", "RandAugment idle", "crop"]
    rows = bench.main(["--pipeline", "--image-size", "16", "--source-size", "20x16",
                       "--calls", "8", "--repeats", "2", "--erasing", "0.5",
                       "--only", ",".join(picked), "--json", str(out_json)])
    by_name = {r["name"]: r for r in rows}
    assert sorted(by_name) == sorted(["identity", *picked])
    for r in rows:
        assert len(r["cpu_ms_repeats"]) == 2 and math.isfinite(r["cpu_ms"]), r
    # rand-m9-mstd0.5: two rounds, each applies one of the 15 operations with probability 0.5.
    for name in ("Rotate", "Equalize"):
        assert by_name[name]["share"] == pytest.approx(2 * 0.5 / len(RAND_TRANSFORMS))
    assert by_name["erasing"]["share"] == 0.5 and by_name["crop"]["share"] == 1.0
    net = {name: r["net_cpu_ms"] for name, r in by_name.items()}
    want = (net["RandAugment idle"] + (net["Rotate"] + net["Equalize"]) / len(RAND_TRANSFORMS)
            + net["erasing idle"] + 0.5 * (net["erasing"] - net["erasing idle"]))
    meta = json.loads(out_json.read_text())["meta"]
    assert meta["pipeline"] is True and meta["expected_ms"] == pytest.approx(want)


def test_shares_of_the_increasing_policy_name_the_timed_operations():
    # `inc1` lists PosterizeIncreasing, ...: their runs count for the kernels the
    # rows time (RAND_TRANSFORMS' names), each 2 x 0.5 / 15 per image.
    bench = load_benchmark("augment_ops")
    for policy in ("rand-m9-mstd0.5", "rand-m9-mstd0.5-inc1"):
        args = bench.parse_args(["--policy", policy, "--erasing", "0.25"])
        share = bench.shares(args)
        assert {n: share[n] for n in RAND_TRANSFORMS} == {
            n: pytest.approx(2 * 0.5 / len(RAND_TRANSFORMS)) for n in RAND_TRANSFORMS}
        assert share["erasing"] == 0.25

