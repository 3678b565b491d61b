"""Smoke test of benchmarks/input_pipeline.py at toy size (8 tiny JPEGs, one repeat)."""

import json
import math

import keras
import pytest

from tests.conftest import load_benchmark

# The benchmark times tf.data pipelines (the Makefile runs it on TensorFlow);
# they run the same under every Keras backend.
pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="tf.data pipelines, backend-independent: run once, on TensorFlow",
)


def test_input_pipeline_benchmark_reports_every_pipeline_and_stage(tmp_path, capsys):
    bench = load_benchmark("input_pipeline")
    out_json = tmp_path / "rows.json"
    argv = ["--recipe", "spvit", "--images", "8", "--classes", "2", "--batch-size", "4",
            "--image-size", "32", "--source-size", "40x30", "--repeats", "1", "--warmup", "0",
            "--dir", str(tmp_path / "jpegs"), "--json", str(out_json), "--threads", "2"]
    rows = bench.main(argv)

    names = [r["name"] for r in rows]
    assert names == ["train", "train_batched", "train_idle", "train_off", "eval", "read file", "decode JPEG", "crop+resize",
                     "flip", "RandAugment", "erasing", "normalise", "batch"]
    for r in rows:
        pipelines = ("train", "train_batched", "train_idle", "train_off", "eval")
        assert r["kind"] == ("pipeline" if r["name"] in pipelines else "stage")
        assert len(r["times_s"]) == 1
        for key in ("images_per_s", "min", "max", "ms_per_image", "cpu_ms"):
            assert math.isfinite(r[key]) and r[key] > 0, (key, r)
        assert r["min"] <= r["images_per_s"] <= r["max"]
        assert math.isclose(r["images_per_s"], r["images"] / r["times_s"][0])
        assert math.isclose(r["ms_per_image"], 1000 / r["images_per_s"])
        assert math.isclose(r["cpu_ms"], 1000 * r["cpu_times_s"][0] / r["images"])
    by_name = {r["name"]: r for r in rows}
    # Training drops the partial batch; evaluation and the stages see every image.
    assert by_name["train"]["images"] == by_name["train_off"]["images"] == 8
    assert by_name["train_batched"]["images"] == by_name["train_idle"]["images"] == 8
    assert by_name["eval"]["images"] == by_name["decode JPEG"]["images"] == 8
    for name in ("train", "train_batched", "train_idle"):
        assert by_name[name]["ratio"] == (by_name[name]["images_per_s"]
                                          / by_name["train_off"]["images_per_s"])
        assert by_name[name]["cpu_ratio"] == (by_name["train_off"]["cpu_ms"]
                                              / by_name[name]["cpu_ms"])
    assert by_name["eval"]["cpu_ratio"] is None
    # Pipelines: start-up and steady state beside the per-epoch numbers.
    for name in ("train", "train_batched", "train_idle", "train_off", "eval"):
        r = by_name[name]
        assert r["startup_s"] > 0 and r["startup_s"] <= r["times_s"][0]
        assert math.isclose(r["steady_images_per_s"], 2 * r["images"] / r["steady_times_s"][0])
        assert math.isfinite(r["steady_cpu_ms"]) and r["steady_cpu_ms"] > 0
    for name in ("train", "train_batched", "train_idle"):
        assert by_name[name]["steady_ratio"] == (by_name[name]["steady_images_per_s"]
                                                 / by_name["train_off"]["steady_images_per_s"])
        assert by_name[name]["steady_cpu_ratio"] == (by_name["train_off"]["steady_cpu_ms"]
                                                     / by_name[name]["steady_cpu_ms"])
    assert by_name["eval"]["steady_ratio"] is None
    assert all(r["startup_s"] is None and r["steady_ratio"] is None for r in rows
               if r["kind"] == "stage")
    # Stage costs add up to the last cumulative pipeline's ms/image.
    stages = [r for r in rows if r["kind"] == "stage"]
    assert math.isclose(sum(r["stage_ms"] for r in stages), stages[-1]["ms_per_image"])

    assert (tmp_path / "jpegs" / "class_000").is_dir()
    assert len(list((tmp_path / "jpegs").glob("class_*/*.jpg"))) == 8
    saved = json.loads(out_json.read_text())
    assert [r["name"] for r in saved["rows"]] == names
    printed = capsys.readouterr().out
    assert "train / train_off, steady state" in printed and "RandAugment" in printed

    # The generated folder is reused, not regenerated.
    args = bench.parse_args(argv)
    assert bench.jpeg_folder(args)[2] is True
    assert "generating" not in capsys.readouterr().out


def test_input_pipeline_benchmark_measures_only_the_rows_asked_for(tmp_path, capsys):
    bench = load_benchmark("input_pipeline")
    argv = ["--recipe", "spvit", "--images", "4", "--classes", "2", "--batch-size", "2",
            "--image-size", "16", "--source-size", "20x15", "--repeats", "1", "--warmup", "0",
            "--dir", str(tmp_path / "jpegs"), "--only", "train_off,train"]
    rows = bench.main(argv)
    assert [r["name"] for r in rows] == ["train", "train_off"]
    assert rows[1]["ratio"] == 1.0 and rows[1]["cpu_ratio"] == 1.0
    assert "train / train_off" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="unknown rows"):
        bench.main(argv[:-1] + ["train,bogus"])


def test_read_epochs_splits_one_iterator_into_epochs():
    import tensorflow as tf

    bench = load_benchmark("input_pipeline")
    dataset = tf.data.Dataset.from_tensor_slices(tf.zeros((6, 2, 2, 3))).batch(2)
    first, epochs = bench._read_epochs(dataset, elements_per_epoch=3, epochs=3)
    assert [n for _, _, n in epochs] == [6, 6, 6]
    assert 0 < first <= epochs[0][0]
    assert bench._images_in((tf.zeros((5, 2, 2, 3)), tf.zeros((5,)))) == 5
    assert bench._images_in(tf.zeros((2, 2, 3))) == 1
