"""`keras_spvit.explain`: attention rollout against hand-computed values, array shapes per family."""

import keras
import numpy as np
import pytest

import keras_spvit
from keras_spvit.inspection import (
    _explanation_figure,
    attention_rollout,
    infer_grid,
    plot_explanation,
)
from tests.models.test_model_contract import build, images


def test_rollout_matches_hand_computation():
    # One head, two tokens. Block 1: A = [[1, 0], [.5, .5]] -> (A + I) / rowsum
    # = [[1, 0], [.25, .75]]. Block 2: A = [[0, 1], [1, 0]] -> [[.5, .5], [.5, .5]].
    first = np.array([[[[1.0, 0.0], [0.5, 0.5]]]])
    second = np.array([[[[0.0, 1.0], [1.0, 0.0]]]])
    rollout, start = attention_rollout([first, second])
    expected = np.array([[0.5, 0.5], [0.5, 0.5]]) @ np.array([[1.0, 0.0], [0.25, 0.75]])
    np.testing.assert_allclose(rollout[0], expected, rtol=0, atol=1e-15)
    np.testing.assert_allclose(rollout[0], [[0.625, 0.375], [0.625, 0.375]], atol=1e-15)
    assert start == 0


def _reference(maps):
    # Independent: per-element loops, residual as 0.5 A + 0.5 I (equal for row-stochastic A).
    result = None
    for m in maps:
        batch, heads, n, _ = m.shape
        step = np.zeros((batch, n, n))
        for b in range(batch):
            for i in range(n):
                for j in range(n):
                    step[b, i, j] = 0.5 * sum(m[b, h, i, j] for h in range(heads)) / heads \
                        + 0.5 * (i == j)
        result = step if result is None else np.einsum("bij,bjk->bik", step, result)
    return result


def _softmax_maps(rng, batch, heads, n):
    logits = rng.normal(size=(batch, heads, n, n))
    e = np.exp(logits)
    return e / e.sum(-1, keepdims=True)


def test_rollout_matches_reference_and_handles_token_changes():
    rng = np.random.default_rng(0)
    maps = [_softmax_maps(rng, 2, 3, 5) for _ in range(3)]
    rollout, _ = attention_rollout(maps)
    np.testing.assert_allclose(rollout, _reference(maps), rtol=1e-12)
    # The class token enters at block 1 with no history: blockdiag(1, R_0).
    patches = _softmax_maps(rng, 1, 2, 4)
    with_cls = [_softmax_maps(rng, 1, 2, 5) for _ in range(2)]
    rollout, start = attention_rollout([patches] + with_cls)
    grown = np.zeros((1, 5, 5))
    grown[:, 0, 0] = 1
    grown[:, 1:, 1:] = _reference([patches])
    expected = np.einsum("bij,bjk->bik", _reference(with_cls), grown)
    np.testing.assert_allclose(rollout, expected, rtol=1e-12)
    assert start == 0
    # Pooling (6 -> 3 tokens): the rollout restarts after it.
    rollout, start = attention_rollout([_softmax_maps(rng, 1, 2, 6)] + with_cls[:1]
                                       + [_softmax_maps(rng, 1, 2, 3)])
    assert start == 2 and rollout.shape == (1, 3, 3)
    np.testing.assert_allclose(rollout.sum(-1), 1.0, rtol=1e-12)


def test_rollout_rejects_bad_maps():
    with pytest.raises(ValueError, match="maps=\\[\\]"):
        attention_rollout([])
    with pytest.raises(ValueError, match=r"maps\[0\].shape=\(2, 3\)"):
        attention_rollout([np.zeros((2, 3))])


def test_infer_grid():
    assert infer_grid(15, (24, 40, 3)) == (3, 5)
    assert infer_grid(6, (24, 40, 3)) == (2, 3)
    assert infer_grid(64, (32, 32, 3)) == (8, 8)


# family -> (heads of the last block, rollout grid, first rollout block, prior shapes)
SHAPES = {
    "spvit": (2, (3, 5), "block_0", [(2, 3, 5)]),
    "refined_vit": (2, (3, 5), "block_0", []),
    "psvit": (2, (2, 3), "block_2", [(2, 3, 5), (2, 2, 3)]),
    "spvit_refined": (2, (3, 5), "block_0", [(2, 3, 5)]),
}


@pytest.mark.parametrize("family", sorted(SHAPES))
def test_explain_shapes_per_family(family, tmp_path):
    model = build(family)
    x = images(batch=2)
    out = keras_spvit.explain(model, x, top_k=3)
    heads, grid, first, priors = SHAPES[family]
    assert out["cls_attention"].shape == (2, heads, *grid)
    assert out["rollout"].shape == (2, *grid)
    assert out["rollout_blocks"][0] == first
    assert [p.shape for p in out["priors"]] == priors
    assert np.all(out["rollout"] >= 0) and np.all(out["rollout"].sum((1, 2)) < 1)
    maps = keras_spvit.attention_maps(model, x)
    last = list(maps.values())[-1]
    np.testing.assert_array_equal(out["cls_attention"].reshape(2, heads, -1), last[:, :, 0, 1:])
    logits = keras.ops.convert_to_numpy(model(x)).astype("float64")
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    assert out["top_k_classes"].shape == (2, 3)
    np.testing.assert_array_equal(out["top_k_classes"][:, 0], probs.argmax(-1))
    np.testing.assert_allclose(out["top_k_probabilities"][:, 0], probs.max(-1), rtol=1e-5)
    path = plot_explanation(out, 1, str(tmp_path / "e.png"), title=family)
    with open(path, "rb") as f:
        assert f.read(4) == b"\x89PNG"
    with pytest.raises(ValueError, match="index=2"):
        plot_explanation(out, 2, str(tmp_path / "f.png"))
    _check_shared_colour_scales(out, index=1)


def _check_shared_colour_scales(out, index):
    """Every head of a row is drawn on one colour scale: 0..the row's max for attention."""
    import matplotlib.pyplot as plt

    figure, grid = _explanation_figure(plt, out, index, None, None)
    try:
        attention = out["cls_attention"][index]
        for head in range(attention.shape[0]):
            overlay = grid[1][head].get_images()[1]
            assert overlay.get_clim() == (0.0, pytest.approx(float(attention.max()))), head
        for row, prior in enumerate(out["priors"], start=2):
            scales = {grid[row][head].get_images()[0].get_clim() for head in range(len(prior))}
            assert len(scales) == 1, (row, scales)
            low, high = scales.pop()
            if prior.max() > prior.min():  # (matplotlib widens a constant prior's range)
                assert (low, high) == (pytest.approx(float(prior.min())),
                                       pytest.approx(float(prior.max()))), row
    finally:
        plt.close(figure)


def test_explain_rejects_bad_arguments():
    model = build("spvit")
    with pytest.raises(ValueError, match="top_k"):
        keras_spvit.explain(model, images(1), top_k=0)
    with pytest.raises(ValueError, match="preprocessor"):
        keras_spvit.explain(model, images(1), preprocess=True)
