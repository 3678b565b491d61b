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


@pytest.mark.parametrize("stride, padding", [(2, "valid"), (1, "same")])
def test_each_convolution_is_the_convolution_or_its_gradient(stride, padding):
    bench = load_benchmark("matmul_ceiling")
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 7, 7, 3)).astype("float32")
    w = rng.standard_normal((3, 3, 3, 4)).astype("float32")
    size = 3 if padding == "valid" else 7
    dy = rng.standard_normal((2, size, size, 4)).astype("float32")
    # The forward against a direct sum over taps.
    pad = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0))) if padding == "same" else x
    want = np.zeros_like(dy)
    for i in range(size):
        for j in range(size):
            patch = pad[:, i * stride:i * stride + 3, j * stride:j * stride + 3, :]
            want[:, i, j] = np.einsum("bhwc,hwco->bo", patch, w)
    for jit in (True, False):
        def run(gradient):
            fn = bench.compiled_convolution(keras, stride, padding, gradient, jit)
            args = [keras.ops.convert_to_tensor(t) for t in (x, w, dy)]
            return keras.ops.convert_to_numpy(fn(*args))

        np.testing.assert_allclose(run("fwd"), want, rtol=1e-4, atol=1e-4)
        # The convolution is linear in x and in w: <dy, conv(x, w)> = <dx, x> = <dw, w>.
        inner = float(np.sum(dy * want))
        assert float(np.sum(run("dx") * x)) == pytest.approx(inner, rel=1e-4)
        assert float(np.sum(run("dw") * w)) == pytest.approx(inner, rel=1e-4)


def test_a_models_ceiling_counts_its_blocks_and_its_stems_convolutions(tmp_path, capsys):
    bench = load_benchmark("matmul_ceiling")
    from keras_spvit.analysis.flops import count_macs
    from keras_spvit.layers.conv_stem import ConvStem, STEM_WIDTHS

    assert bench.STEM_WIDTHS == {k: v for k, v in STEM_WIDTHS.items() if v is not None}
    batch, size, dim, depth = 2, 32, 8, 3
    result = bench.main(["--batch-size", str(batch), "--tokens", "5", "--dim", str(dim),
                         "--heads", "2", "--depth", str(depth), "--stem", "4_2",
                         "--image-size", str(size), "--repeats", "1", "--runs", "1",
                         "--peak-size", "64"])
    products = result["products"]
    block, stem = products[:18], products[18:]
    assert all(p["count"] == depth for p in block) and all(p["count"] == 1 for p in stem)
    # The stem's forward FLOPs are twice its multiply-adds as the package counts them;
    # training adds an input gradient and a kernel gradient of each, but none for the image.
    stem_layer = ConvStem(dim, stem="4_2")
    stem_layer.build((1, size, size, 3))
    macs = count_macs(stem_layer) * batch
    forward = sum(p["flops"] for p in stem if p["name"].endswith("fwd"))
    assert forward == 2 * macs  # BN, ReLU and bias are not counted (as `count_macs`)
    conv1 = sum(p["flops"] for p in stem if p["name"].startswith("conv1"))
    assert sum(p["flops"] for p in stem) == 3 * forward - conv1 // 2
    total_s = sum(p["count"] * p["median_s"] for p in products)
    total = sum(p["count"] * p["flops"] for p in products)
    assert result["ceiling"] == pytest.approx(total / total_s / 1e9 / result["peak_gflops"])
    assert "ceiling (3 blocks' matmuls and the stem's convolutions alone" in capsys.readouterr().out


def test_stem_image_size_not_a_multiple_of_16_is_a_one_line_error(capsys):
    bench = load_benchmark("matmul_ceiling")
    with pytest.raises(SystemExit):
        bench.main(["--stem", "4_2", "--image-size", "100"])
    assert "--image-size must be a multiple of the stem's stride 16; got 100" in (
        capsys.readouterr().err)
