"""What every model family keeps, on every backend: round trips, fit, jit, bf16.

Small configurations on a non-square grid; `spvit_refined` is SP-ViT with
Refiner's attention refinement switched on (beyond both releases).
"""

import keras
import numpy as np
import pytest

import keras_spvit
from tests.conftest import BACKEND, to_numpy

COMMON = dict(stem="patch", patch_size=8, num_classes=5, image_shape=(24, 40, 3))
FAMILIES = {
    "spvit": lambda **kw: keras_spvit.SPViT(
        embed_dim=32, depth=3, num_heads=2, spatial_prior_blocks=1, skip_lam=2.0,
        **{**COMMON, **kw},
    ),
    "refined_vit": lambda **kw: keras_spvit.RefinedViT(
        embed_dim=32, depth=4, num_heads=2, **{**COMMON, **kw}
    ),
    # Pooling after a spatial-prior block (whose successor in the next stage
    # sees the 2 x 3 grid), refined sharing within stages.
    "psvit": lambda **kw: keras_spvit.PSViT(
        (2, 3), (32, 48), (2, 2), shared_layers=[1, 4], refine_shared=True,
        spatial_prior_layers=[0, 2], class_token_block=3, **{**COMMON, **kw},
    ),
    "spvit_refined": lambda **kw: keras_spvit.SPViT(
        embed_dim=32, depth=3, num_heads=2, spatial_prior_blocks=1, refiner_blocks=[0, 2],
        **{**COMMON, **kw},
    ),
}


def build(family, **overrides):
    keras.utils.set_random_seed(0)
    return FAMILIES[family](**overrides)


def images(batch=2, seed=0):
    shape = (batch,) + COMMON["image_shape"]
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def count_calls(model, method):
    """A list that grows by one at each call of `model.<method>` from now on."""
    calls, original = [], getattr(model, method)

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    setattr(model, method, counted)
    return calls


def perturb_batch_norms(model):
    """Non-trivial running statistics, so folded and unfolded paths differ if wrong."""
    rng = np.random.default_rng(1)
    for variable in model.non_trainable_weights:
        if "moving_variance" in variable.path:
            variable.assign(rng.uniform(0.5, 1.5, variable.shape).astype("float32"))
        elif "moving_mean" in variable.path:
            variable.assign(rng.normal(0, 0.1, variable.shape).astype("float32"))


@pytest.fixture(params=sorted(FAMILIES))
def family(request):
    return request.param


def test_variable_batch_size(family):
    model = build(family)
    # Batch 2 is the other tests' batch: on JAX, whose eager ops compile once per
    # shape, they then reuse this test's programs (config round trip: 12 s -> 0.5 s).
    for batch in (1, 2):
        assert model(images(batch)).shape == (batch, 5)


def test_config_round_trip(family):
    model = build(family)
    perturb_batch_norms(model)
    clone = type(model).from_config(model.get_config())
    clone.set_weights(model.get_weights())
    x = images()
    np.testing.assert_array_equal(to_numpy(clone(x)), to_numpy(model(x)))
    assert clone.backbone.get_config() == model.backbone.get_config()


def test_keras_file_round_trip(family, tmp_path):
    model = build(family, return_dense=True)
    perturb_batch_norms(model)
    model.save(tmp_path / "model.keras")
    restored = keras.saving.load_model(tmp_path / "model.keras")
    assert type(restored) is type(model)
    x = images()
    expected, actual = model(x), restored(x)
    for key in expected:
        np.testing.assert_array_equal(to_numpy(actual[key]), to_numpy(expected[key]))


def test_fit_learns_and_compiles_with_xla(family):
    # One compiled model serves two claims: `fit` lowers the loss and, on TensorFlow
    # and JAX, the XLA program (`jit_compile=True`) predicts what the eager call does.
    # TensorFlow's default CPU `fit` (graph, no XLA) trains every family in keras-hub's
    # `test_task` (test_keras_hub_contract.py); torch has no XLA.
    jit_compile = BACKEND != "torch"
    model = build(family, drop_path_rate=0.1)
    perturb_batch_norms(model)
    x, y = images(8), np.arange(8) % 5
    model.compile(optimizer=keras.optimizers.AdamW(3e-3), jit_compile=jit_compile)
    if jit_compile:
        eager = to_numpy(model(x[:2]))
        np.testing.assert_allclose(
            model.predict(x[:2], verbose=0), eager, atol=1e-5 * max(1.0, np.abs(eager).max())
        )
    traces = count_calls(model, "train_step")
    losses = model.fit(x, y, batch_size=4, epochs=4, verbose=0).history["loss"]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]
    # TensorFlow and JAX trace the step once (TensorFlow traced it twice when the
    # optimizer's variables were created inside its first trace); torch runs it eagerly.
    assert len(traces) == (8 if BACKEND == "torch" else 1)


def test_mixed_bfloat16(family):
    reference = build(family)
    model = build(family, dtype="mixed_bfloat16")
    model.set_weights(reference.get_weights())
    assert all(w.dtype == "float32" for w in model.weights)
    layers = list(model._flatten_layers())
    # LayerNorm computes in float32 (no autocast); BatchNorm casts inside.
    norms = [l for l in layers if isinstance(l, keras.layers.LayerNormalization)]
    assert norms and all(not n.autocast for n in norms)
    refiners = [l for l in layers if isinstance(l, keras_spvit.layers.AttentionRefiner)]
    assert all(r.compute_dtype == "float32" for r in refiners)
    x = images()
    logits = model(x)
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"
    expected = to_numpy(reference(x))
    # Measured max |error| / max |logit| against float32: 0.0031-0.0124 (JAX),
    # 0.0038-0.0092 (TF), 0.0039-0.0099 (torch) over the four families; bound
    # 2x the largest.
    error = np.abs(to_numpy(logits) - expected).max() / np.abs(expected).max()
    assert error < 0.025, error
    # Every block's attention map (softmax, prior, refiner output) is float32.
    maps = keras.tree.flatten(keras_spvit.attention_maps(model, x))
    assert maps and all(keras.backend.standardize_dtype(m.dtype) == "float32" for m in maps)
    model.compile(optimizer="adam")
    assert np.all(np.isfinite(model.train_on_batch(x, np.arange(2))))


def test_attention_maps_in_float32_under_bfloat16(family):
    model = build(family, dtype="mixed_bfloat16")
    block = model.backbone.transformer_blocks[1]
    tokens = keras.ops.zeros((1, 16, 32), "bfloat16")
    if family == "psvit":
        tokens = keras.ops.zeros((1, 15, 32), "bfloat16")
    extra = {}
    if getattr(block.attention, "requires_attention_map", False) or getattr(
        block.attention, "previous_map_scale", None
    ) is not None:
        n = tokens.shape[1]
        extra["attention_map"] = keras.ops.full((1, 2, n, n), 1 / n, "float32")
    *_, weights = block.attention(tokens, return_attention_scores=True, **extra)
    assert keras.backend.standardize_dtype(weights.dtype) == "float32"
