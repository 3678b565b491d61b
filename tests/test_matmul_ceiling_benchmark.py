"""Smoke test of benchmarks/matmul_ceiling.py at toy size, on every backend."""

import json
from pathlib import Path

import keras
import numpy as np
import pytest

from tests.conftest import load_benchmark


@pytest.fixture(autouse=True)
def _benchmarks_on_path(monkeypatch):
    # The script imports `throughput` beside it, as when it runs from benchmarks/.
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))


@pytest.mark.parametrize("transpose_a", [False, True])
@pytest.mark.parametrize("transpose_b", [False, True])
def test_each_product_is_the_transposed_matmul(transpose_a, transpose_b):
    bench = load_benchmark("matmul_ceiling")
    rng = np.random.default_rng(0)
    a = rng.standard_normal((2, 3, 4)).astype("float32")
    b = rng.standard_normal((2, 4, 5) if not transpose_b else (2, 5, 4)).astype("float32")
    a = a if not transpose_a else np.swapaxes(a, 1, 2).copy()
    op = lambda x, t: np.swapaxes(x, 1, 2) if t else x  # noqa: E731
    want = op(a, transpose_a) @ op(b, transpose_b)
    for jit in (True, False):
        product = bench.compiled_product(keras, transpose_a, transpose_b, jit)
        got = keras.ops.convert_to_numpy(product(keras.ops.convert_to_tensor(a),
                                                 keras.ops.convert_to_tensor(b)))
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert bench.product_flops(a.shape, b.shape, transpose_a, transpose_b) == 2 * want.size * 4


def test_ceiling_counts_a_blocks_training_flops_and_weights_by_them(tmp_path, capsys):
    bench = load_benchmark("matmul_ceiling")
    batch, tokens, dim, heads, ratio = 2, 5, 8, 2, 2.0
    out = tmp_path / "ceiling.json"
    result = bench.main(["--batch-size", str(batch), "--tokens", str(tokens), "--dim", str(dim),
                         "--heads", str(heads), "--mlp-ratio", str(ratio), "--repeats", "2",
                         "--runs", "1", "--peak-size", "64", "--json", str(out)])
    products = result["products"]
    assert len(products) == 18
    # A block's forward multiply-adds (Dense layers, then q k^T and weights v); training is
    # the forward and two backward products of each: 3 x 2 x MACs.
    hidden = int(dim * ratio)
    macs = batch * tokens * (dim * 3 * dim + dim * dim + 2 * dim * hidden)
    macs += 2 * batch * tokens * tokens * dim
    assert sum(p["flops"] for p in products) == 6 * macs
    for p in products:
        assert len(p["times_s"]) == 2 and p["median_s"] > 0
        assert p["share"] == pytest.approx(p["gflops"] / result["peak_gflops"])
    total_s = sum(p["median_s"] for p in products)
    assert result["ceiling"] == pytest.approx(6 * macs / total_s / 1e9 / result["peak_gflops"])
    assert json.loads(out.read_text())["ceiling"] == pytest.approx(result["ceiling"])
    printed = capsys.readouterr().out
    assert "ceiling (the block's matmuls alone, FLOP-weighted)" in printed and "fc2 dw" in printed


def test_dim_not_divisible_by_heads_is_a_one_line_error(capsys):
    bench = load_benchmark("matmul_ceiling")
    with pytest.raises(SystemExit):
        bench.main(["--dim", "10", "--heads", "3"])
    assert "--dim must be divisible by --heads; got --dim 10 --heads 3" in capsys.readouterr().err
