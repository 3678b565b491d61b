"""LoRA through keras-hub's Backbone API: what is adapted, what trains, saving."""

import keras
import numpy as np
import pytest

import keras_spvit
from keras_spvit.data import digits_split
from tests.conftest import to_numpy


def _parity_task():
    """A new 2-class task on the digits: odd or even."""
    (train_x, train_y), (test_x, test_y) = digits_split("train"), digits_split("test")
    return (train_x, train_y % 2), (test_x, test_y % 2)


def _accuracy(model, x, y):
    return float(np.mean(to_numpy(model.predict(x, batch_size=256, verbose=0)).argmax(-1) == y))


@pytest.fixture(scope="module")
def adapted():
    model = keras_spvit.SPViTImageClassifier.from_preset("spvit_tiny_digits", num_classes=2)
    frozen = {w.path: to_numpy(w).copy() for w in model.backbone.weights}  # before LoRA
    model.backbone.enable_lora(4)
    (train_x, train_y), (test_x, test_y) = _parity_task()
    before = _accuracy(model, test_x, test_y)
    model.compile(optimizer=keras.optimizers.Adam(3e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    # Held-out accuracy after 1 / 2 / 3 epochs, measured: TensorFlow 0.94 / 0.98 / 0.98,
    # JAX 0.94 / 0.97 / 0.97, torch 0.93 / 0.97 / 0.97 (asserted: >= 0.9).
    model.fit(train_x, train_y, batch_size=64, epochs=2, verbose=0)
    return model, frozen, before, _accuracy(model, test_x, test_y)


def test_adapters_reach_the_attention_projections_only():
    model = keras_spvit.SPViTImageClassifier.from_preset("spvit_tiny_digits", num_classes=2)
    model.backbone.enable_lora(4)
    adapted = {layer.path for layer in model.backbone._flatten_layers()
               if getattr(layer, "lora_enabled", False)}
    # 2 SP-SA blocks (qk, v, proj) and 2 vanilla blocks (qkv, proj); not the stem's conv.
    expected = {f"block_{i}/attn/{n}" for i in (0, 1) for n in ("qk", "v", "proj")} | \
        {f"block_{i}/attn/{n}" for i in (2, 3) for n in ("qkv", "proj")}
    assert {p.split("/", 1)[1] if not p.startswith("block") else p for p in adapted} == expected
    # Trainable: the adapters (rank 4: (in + out) x 4 each) and the new head only
    # (Keras' Dense.enable_lora leaves the bias trainable; ours freezes it).
    lora = sum(int(np.prod(w.shape)) for w in model.trainable_weights if "lora" in w.path)
    dense = {layer.path: layer for layer in model.backbone._flatten_layers()
             if getattr(layer, "lora_enabled", False)}
    assert lora == sum((l.kernel.shape[0] + l.kernel.shape[1]) * 4 for l in dense.values())
    others = [w.path for w in model.trainable_weights if "lora" not in w.path]
    assert others and all("token_labeling_head" in p for p in others), others
    with pytest.raises(ValueError, match="Expected an int >= 1 for `rank`"):
        model.backbone.enable_lora(0)


def test_fine_tuning_the_adapters_learns_a_new_task(adapted):
    model, frozen, before, after = adapted
    # A fresh 2-class head guesses (measured 0.50-0.55); adapters + head learn parity.
    assert after >= 0.9 and after > before + 0.2, (before, after)
    # The adapters trained (B starts at zero): a new head on the frozen backbone alone
    # also clears the bar above (measured on torch, adapters made untrainable).
    adapters = [w for w in model.backbone.weights if "lora_kernel_b" in w.path]
    assert len(adapters) == 10 and all(np.any(to_numpy(w) != 0) for w in adapters)
    for w in model.backbone.weights:  # the backbone's own weights did not move
        if w.path in frozen:
            np.testing.assert_array_equal(to_numpy(w), frozen[w.path])


def test_lora_weights_save_load_and_merge(adapted, tmp_path):
    model, _, _, _ = adapted
    x = digits_split("test")[0][:16]
    expected = to_numpy(model.predict(x, verbose=0))
    # keras-hub's adapter file: a fresh model from the preset + adapters + head.
    model.backbone.save_lora_weights(str(tmp_path / "a.lora.h5"))
    fresh = keras_spvit.SPViTImageClassifier.from_preset("spvit_tiny_digits", num_classes=2)
    fresh.backbone.load_lora_weights(str(tmp_path / "a.lora.h5"))
    fresh.head.set_weights(model.head.get_weights())
    np.testing.assert_allclose(to_numpy(fresh.predict(x, verbose=0)), expected, atol=1e-5)
    # merge_lora folds the adapters into the kernels in float32: a plain model,
    # same outputs (Keras' own save would store bf16-rounded kernels under
    # mixed precision: test_merge_keeps_float32_kernels).
    model.backbone.merge_lora()
    np.testing.assert_allclose(to_numpy(model.predict(x, verbose=0)), expected, atol=1e-5)
    model.save(tmp_path / "merged.keras")
    merged = keras.saving.load_model(tmp_path / "merged.keras")
    assert not any(getattr(layer, "lora_enabled", False) for layer in merged._flatten_layers())
    np.testing.assert_allclose(to_numpy(merged.predict(x, verbose=0)), expected, atol=1e-5)


def test_merge_keeps_float32_kernels_under_mixed_precision():
    model = keras_spvit.SPViT(num_classes=2, image_shape=(16, 16, 3), embed_dim=16, depth=1,
                              num_heads=2, spatial_prior_blocks=0, stem="patch", patch_size=4,
                              dtype="mixed_bfloat16")
    model.backbone.enable_lora(2)
    layer = next(layer for layer in model.backbone._flatten_layers()
                 if getattr(layer, "lora_enabled", False))
    rng = np.random.default_rng(0)
    layer.lora_kernel_b.assign(rng.normal(size=layer.lora_kernel_b.shape).astype("float32"))
    expected = to_numpy(layer._kernel) + (layer.lora_alpha / layer.lora_rank) * (
        to_numpy(layer.lora_kernel_a) @ to_numpy(layer.lora_kernel_b))
    model.backbone.merge_lora()
    store = {}
    layer.save_own_variables(store)
    kernel = np.asarray(store["0"])
    assert kernel.dtype == np.float32  # Keras' merge alone stores bfloat16 (error ~1e-3)
    np.testing.assert_allclose(kernel, expected, rtol=1e-6, atol=1e-7)
