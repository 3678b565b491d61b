"""`keras-spvit explain`: one PNG per image on the built-in preset; one-line errors."""

import struct

import numpy as np
import pytest

from keras_spvit.cli import main
from keras_spvit.cli.explain import output_paths


def _png(path, seed):
    import tensorflow as tf

    digit = np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype="uint8")
    path.write_bytes(tf.io.encode_png(np.kron(digit, np.ones((4, 4, 1), "uint8"))).numpy())


def _png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    assert data[-8:-4] == b"IEND"
    return struct.unpack(">II", data[16:24])


def test_explain_writes_one_png_per_image(tmp_path, capsys):
    for i in range(2):
        _png(tmp_path / f"d{i}.png", i)
    (tmp_path / "sub").mkdir()
    _png(tmp_path / "sub" / "d0.png", 2)
    images = [str(tmp_path / "d0.png"), str(tmp_path / "d1.png"), str(tmp_path / "sub" / "d0.png")]
    code = main(["explain", "SPViT_Tiny", "--weights", "spvit_tiny_digits", *images,
                      "--out", str(tmp_path / "out"), "--top-k", "2"])
    assert code == 0
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["d0-2.png", "d0.png", "d1.png"]
    for name in written:
        width, height = _png_size(tmp_path / "out" / name)
        # 3 columns x 4 rows of panels (input/rollout/top-k, 2 heads, 2 prior layers).
        assert 400 <= width <= 1200 and 600 <= height <= 1400, (width, height)
    assert "preprocessing: 32x32" in capsys.readouterr().out


def test_output_paths():
    assert output_paths(["a/x.jpg", "b/x.png", "y"], "o") == ["o/x.png", "o/x-2.png", "o/y.png"]


@pytest.mark.parametrize("argv, text", [
    (["explain", "SPViT_Tiny", "good.png"], "--out"),
    (["explain", "SPViT_Tiny", "good.png", "--out", "a_file"], "'a_file'"),
    (["explain", "SPViT_Tiny", "missing.png", "--out", "o"], "'missing.png'"),
    (["explain", "SPViT_Tiny", "bad.png", "--out", "o"], "'bad.png'"),
    (["explain", "SPViT_Tiny", "good.png", "--out", "o", "--top-k", "0"], "'0'"),
    (["explain", "SPViT_Nope", "good.png", "--out", "o"], "'SPViT_Nope'"),
])
def test_bad_input_is_one_line(tmp_path, monkeypatch, capsys, argv, text):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KERAS_SPVIT_DEBUG", raising=False)
    _png(tmp_path / "good.png", 0)
    (tmp_path / "bad.png").write_bytes(b"not a png")
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and text in lines[0], lines
    assert not (tmp_path / "o").exists()
