"""Smoke test of benchmarks/train_step_pieces.py on a tiny model (TensorFlow only)."""

import importlib.util
import math
from pathlib import Path

import keras
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "train_step_pieces.py"

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="profiles the TensorFlow backend"
)


def _load_script(monkeypatch):
    # benchmarks/ is not a package; the script imports `throughput` beside it.
    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("train_step_pieces", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pieces_script_times_every_piece_with_its_count(monkeypatch, capsys):
    pieces = _load_script(monkeypatch)
    rows = pieces.main(["--model", "SPViT_Tiny", "--batch-size", "2", "--repeats", "1",
                        "--jit", "off"])
    by_name = {r["piece"]: r for r in rows}
    assert set(by_name) == {"stem", "sp_block", "sp_attn", "vit_block", "mlp", "norm",
                            "pos_cnn", "head_loss", "optimizer", "step"}
    # SPViT_Tiny: 4 blocks, the first 2 with spatial priors; a PosCNN after each.
    assert by_name["sp_block"]["count"] == 2 and by_name["vit_block"]["count"] == 2
    assert by_name["pos_cnn"]["count"] == 4 and by_name["mlp"]["count"] == 0
    for r in rows:
        assert math.isfinite(r["median_s"]) and r["median_s"] > 0, r
        assert r["share"] == pytest.approx(r["count"] * r["median_s"] / by_name["step"]["median_s"])
    # Matmul pieces have an ideal time at the measured peak; norm and optimizer do not.
    assert by_name["mlp"]["ideal_s"] > 0 and by_name["norm"]["ideal_s"] is None
    assert "sum of shares" in capsys.readouterr().out


def test_stem_pieces_run_on_the_stem_shapes(monkeypatch):
    import numpy as np
    import tensorflow as tf

    from keras_spvit.layers import ConvStem

    pieces = _load_script(monkeypatch)
    images = tf.zeros((2, 32, 48, 3))
    patch = ConvStem(8, stem="patch", patch_size=4)
    patch.build(images.shape)
    assert pieces.stem_pieces(patch, images, None) == {}
    stem = ConvStem(8, stem="4_2")
    stem.build(images.shape)
    found = pieces.stem_pieces(stem, images, np.random.default_rng(0))
    assert set(found) == {"stem_conv1", "stem_conv2", "stem_bn", "stem_proj"}
    for name, (fn, x, count, macs, takes_images) in found.items():
        assert count == 0 and takes_images == (name == "stem_conv1")
        assert (macs > 0) == (name != "stem_bn")
        out = fn(x)
        assert out.shape[:3] == ((2, 2, 3) if name == "stem_proj" else (2, 16, 24)), name
