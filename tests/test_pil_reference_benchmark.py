"""Smoke test of benchmarks/pil_reference.py at toy size, and of its PIL operations."""

import json
import math

import keras
import numpy as np
import pytest

from keras_spvit.data.rand_augment_policy import RAND_INCREASING_TRANSFORMS
from tests.conftest import load_benchmark

PIL = pytest.importorskip("PIL")

# tf.data and PIL work, backend-independent: run once, on TensorFlow.
pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="tf.data and PIL, backend-independent: run once, on TensorFlow",
)


def test_every_timm_operation_has_its_pil_call_and_changes_the_image():
    from PIL import Image

    bench = load_benchmark("pil_reference")
    ops = bench.pil_operations()
    assert set(ops) == set(RAND_INCREASING_TRANSFORMS)
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(40, 200, (24, 32, 3), dtype=np.uint8))
    args = {"Rotate": 20.0, "ShearX": 0.25, "ShearY": 0.25, "TranslateXRel": 0.3,
            "TranslateYRel": 0.3, "PosterizeIncreasing": 2.0, "SolarizeIncreasing": 100.0,
            "SolarizeAdd": 90.0}
    for name, op in ops.items():
        out = op(image, args.get(name, 1.7))
        assert out.size == image.size and out.mode == "RGB", name
        assert not np.array_equal(np.asarray(out), np.asarray(image)), name
    black = ops["PosterizeIncreasing"](image, 0.0)  # magnitude 10: 0 bits
    assert not np.asarray(black).any()


def test_pil_reference_benchmark_reports_every_row(tmp_path):
    bench = load_benchmark("pil_reference")
    out_json = tmp_path / "rows.json"
    rows = bench.main(["--images", "6", "--folder-images", "8", "--image-size", "32",
                       "--source-size", "48x40", "--repeats", "2", "--dir", str(tmp_path / "jpegs"),
                       "--json", str(out_json)])
    assert [r["name"] for r in rows] == list(bench.ROWS)
    for r in rows:
        assert len(r["cpu_ms_repeats"]) == 2 and math.isfinite(r["cpu_ms"]) and r["cpu_ms"] > 0, r
    saved = json.loads(out_json.read_text())
    assert saved["meta"]["images"] == 6 and set(saved["ratios"]) >= {"spvit full / pil cpu full"}


def test_pil_loader_outputs_what_timm_hands_on(tmp_path):
    from PIL import Image

    bench = load_benchmark("pil_reference")
    path = tmp_path / "image.jpg"
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(path)
    normalised = bench.PILLoader(16, augment=True, to_uint8=False)(path)
    assert normalised.shape == (3, 16, 16) and normalised.dtype == np.float32
    pixels = bench.PILLoader(16, augment=True, to_uint8=True)(path)
    assert pixels.shape == (3, 16, 16) and pixels.dtype == np.uint8
