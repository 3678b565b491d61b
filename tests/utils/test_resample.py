"""Tests for keras_spvit.utils.resample (PyTorch-compatible bicubic)."""

import os

import numpy as np
import pytest

from keras_spvit.utils.resample import bicubic_resize
from keras_spvit.utils.resample import resample_position_embedding

FIXTURE = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    "fixtures",
    "spvit_tiny_k2_res96.npz",
)


@pytest.fixture(scope="module")
def reference():
    with np.load(FIXTURE) as data:
        return {
            "src": data["pos_embed_src"],
            "resized": data["sd/pos_embed"],
        }


def _torch_bicubic(x, size):
    """PyTorch's bicubic on a channels-last numpy array, for comparison."""
    torch = pytest.importorskip("torch")
    squeeze = x.ndim == 2
    if squeeze:
        x = x[:, :, None]
    t = torch.from_numpy(np.ascontiguousarray(x)).permute(2, 0, 1)[None]
    out = torch.nn.functional.interpolate(
        t, size=size, mode="bicubic", align_corners=False
    )
    out = out[0].permute(1, 2, 0).numpy()
    return out[:, :, 0] if squeeze else out


# --- Parity with the official loader's output -------------------------------


def test_matches_official_loader_fixture(reference):
    src, expected = reference["src"], reference["resized"]
    assert src.shape == (1, 16, 64)
    assert expected.shape == (1, 36, 64)
    out = resample_position_embedding(src, (4, 4), (6, 6))
    assert out.shape == (1, 36, 64)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-6)


def test_keys_kernel_does_not_match_fixture(reference):
    # Guards the test above: the fixture must be able to tell a=-0.75 (torch)
    # from a=-0.5 (TF/JAX), or the parity check proves nothing.
    src, expected = reference["src"], reference["resized"]
    grid = src[0].reshape(4, 4, 64)
    wrong = bicubic_resize(grid, (6, 6), a=-0.5).reshape(1, 36, 64)
    assert np.abs(wrong - expected).max() > 1e-4


# --- Parity with torch.nn.functional.interpolate ----------------------------


@pytest.mark.parametrize(
    "in_hw, out_hw",
    [
        ((4, 4), (6, 6)),
        ((14, 14), (24, 24)),
        ((24, 24), (14, 14)),
        ((7, 7), (5, 5)),
        ((14, 7), (24, 5)),
        ((5, 24), (9, 14)),
        ((1, 6), (4, 3)),
        ((6, 1), (1, 5)),
        ((1, 1), (3, 2)),
        ((8, 8), (1, 1)),
        ((2, 3), (17, 11)),
        ((9, 9), (9, 9)),
    ],
)
def test_matches_torch_interpolate(in_hw, out_hw):
    rng = np.random.default_rng(sum(in_hw) * 100 + sum(out_hw))
    x = rng.standard_normal(in_hw + (5,)).astype(np.float32)
    expected = _torch_bicubic(x, out_hw)
    out = bicubic_resize(x, out_hw)
    assert out.shape == out_hw + (5,)
    assert out.dtype == np.float32
    scale = max(np.abs(expected).max(), 1.0)
    assert np.abs(out - expected).max() <= 1e-5 * scale


def test_2d_input_matches_torch():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((7, 5)).astype(np.float32)
    out = bicubic_resize(x, (5, 7))
    assert out.shape == (5, 7)
    expected = _torch_bicubic(x, (5, 7))
    assert np.abs(out - expected).max() <= 1e-5 * np.abs(expected).max()


def test_float64_matches_torch_float64():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((14, 14, 3))
    out = bicubic_resize(x, (24, 24), dtype="float64")
    assert out.dtype == np.float64
    np.testing.assert_allclose(
        out, _torch_bicubic(x, (24, 24)), rtol=0, atol=1e-12
    )


# --- Behaviour of bicubic_resize ----------------------------------------------


def test_constant_image_stays_constant():
    # Weights of every output sample sum to 1, also at clamped borders.
    x = np.full((5, 3, 2), 0.25, dtype=np.float32)
    out = bicubic_resize(x, (11, 2))
    np.testing.assert_allclose(out, 0.25, rtol=0, atol=1e-7)


def test_same_size_is_identity():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((6, 4, 3)).astype(np.float32)
    np.testing.assert_array_equal(bicubic_resize(x, (6, 4)), x)


def test_does_not_modify_input():
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    before = x.copy()
    bicubic_resize(x, (5, 5))
    np.testing.assert_array_equal(x, before)


@pytest.mark.parametrize("shape", [(4,), (1, 4, 4, 2)])
def test_resize_rejects_bad_rank(shape):
    with pytest.raises(ValueError, match=r"\(H, W, C\) or \(H, W\)"):
        bicubic_resize(np.zeros(shape), (2, 2))


def test_resize_rejects_empty_input():
    with pytest.raises(ValueError, match="non-empty"):
        bicubic_resize(np.zeros((0, 4, 1)), (2, 2))


@pytest.mark.parametrize("size", [(0, 4), (4,), (4, 4, 4), (2.0, 3), 5, None])
def test_resize_rejects_bad_size(size):
    with pytest.raises(ValueError, match="`size` must be a pair of positive"):
        bicubic_resize(np.zeros((4, 4, 1)), size)


def test_resize_rejects_integer_dtype():
    with pytest.raises(ValueError, match="floating dtype"):
        bicubic_resize(np.zeros((4, 4, 1)), (2, 2), dtype="int32")


# --- resample_position_embedding ------------------------------------------------


def test_prefix_tokens_untouched_and_grid_resized():
    rng = np.random.default_rng(3)
    prefix = rng.standard_normal((1, 2, 8)).astype(np.float32)
    grid = rng.standard_normal((3, 5, 8)).astype(np.float32)
    pos_embed = np.concatenate([prefix, grid.reshape(1, 15, 8)], axis=1)

    out = resample_position_embedding(
        pos_embed, (3, 5), (4, 2), num_prefix_tokens=2
    )

    assert out.shape == (1, 2 + 4 * 2, 8)
    np.testing.assert_array_equal(out[:, :2], prefix)
    # Row-major flatten of the resized grid (non-square in and out).
    expected_grid = bicubic_resize(grid, (4, 2)).reshape(1, 8, 8)
    np.testing.assert_array_equal(out[:, 2:], expected_grid)


def test_non_square_grids_match_torch():
    rng = np.random.default_rng(4)
    grid = rng.standard_normal((6, 4, 16)).astype(np.float32)
    pos_embed = np.concatenate(
        [np.ones((1, 1, 16), np.float32), grid.reshape(1, 24, 16)], axis=1
    )
    out = resample_position_embedding(
        pos_embed, (6, 4), (3, 7), num_prefix_tokens=1
    )
    expected = _torch_bicubic(grid, (3, 7)).reshape(1, 21, 16)
    np.testing.assert_array_equal(out[:, :1], 1.0)
    assert np.abs(out[:, 1:] - expected).max() <= 1e-5 * np.abs(expected).max()


def test_same_grid_returns_unchanged_copy():
    pos_embed = np.arange(1 * 5 * 3, dtype=np.float32).reshape(1, 5, 3)
    out = resample_position_embedding(
        pos_embed, (2, 2), (2, 2), num_prefix_tokens=1
    )
    np.testing.assert_array_equal(out, pos_embed)
    assert out is not pos_embed
    out[0, 0, 0] = -1.0
    assert pos_embed[0, 0, 0] == 0.0


def test_keeps_dtype():
    pos_embed = np.zeros((1, 4, 2), dtype=np.float64)
    out = resample_position_embedding(pos_embed, (2, 2), (3, 3))
    assert out.dtype == np.float64
    out16 = resample_position_embedding(
        pos_embed.astype(np.float16), (2, 2), (3, 3)
    )
    assert out16.dtype == np.float16


def test_length_mismatch_message():
    pos_embed = np.zeros((1, 196, 384), dtype=np.float32)
    expected = (
        "Expected pos_embed of length 1 + 14*14 = 197 for "
        "source_grid=(14, 14) and num_prefix_tokens=1. "
        "Received shape (1, 196, 384)"
    )
    with pytest.raises(ValueError) as info:
        resample_position_embedding(
            pos_embed, (14, 14), (24, 24), num_prefix_tokens=1
        )
    assert expected in str(info.value)


@pytest.mark.parametrize("shape", [(196, 384), (2, 196, 384), (1, 1, 196, 384)])
def test_rejects_bad_pos_embed_rank(shape):
    with pytest.raises(ValueError, match=r"Received shape \(.*\)"):
        resample_position_embedding(np.zeros(shape), (14, 14), (24, 24))


@pytest.mark.parametrize(
    "source_grid, target_grid, name",
    [
        ((0, 4), (4, 4), "source_grid"),
        ((4,), (4, 4), "source_grid"),
        ((4, 4), (4, -1), "target_grid"),
        ((4, 4), (4.5, 4), "target_grid"),
        ((4, 4), (True, 4), "target_grid"),
    ],
)
def test_rejects_bad_grids(source_grid, target_grid, name):
    with pytest.raises(ValueError, match=f"`{name}` must be a pair of positive"):
        resample_position_embedding(
            np.zeros((1, 16, 2)), source_grid, target_grid
        )


@pytest.mark.parametrize("num_prefix_tokens", [-1, 1.0, None])
def test_rejects_bad_prefix_count(num_prefix_tokens):
    with pytest.raises(ValueError, match="`num_prefix_tokens` must be"):
        resample_position_embedding(
            np.zeros((1, 17, 2)), (4, 4), (5, 5), num_prefix_tokens
        )
