"""`remat=True` (per transformer block): the same training step as without it.

The rematerialised block recomputes its activations in the backward pass; it
must draw the same dropout / drop-path masks there and update the refiner's
moving statistics and the seed generators exactly once. Two identical models,
one with remat, two SGD(1) steps each: every variable (weights = the summed
gradients, moving statistics, seed states) must agree to float32 rounding.
"""

import keras
import numpy as np
import pytest

import keras_spvit
from keras_spvit.cli.main import build_parser
from keras_spvit.cli.train import build_model
from keras_spvit.layers import MultiHeadSelfAttention, TransformerBlock
from keras_spvit.training import get_recipe

# Drop-path, both dropouts and a refiner (BatchNorms) in every block.
STOCHASTIC = dict(
    embed_dim=16, depth=2, num_heads=2, stem="patch", patch_size=4, spatial_prior_blocks=1,
    refiner_blocks=(0, 1), drop_path_rate=0.5, dropout=0.3, attention_dropout=0.2,
    image_shape=(16, 16, 3),
)


def _two_steps(remat):
    keras.utils.set_random_seed(1)
    model = keras_spvit.SPViTBackbone(remat=remat, **STOCHASTIC)
    x = np.random.default_rng(0).normal(size=(4, 16, 16, 3)).astype("float32")
    y = np.random.default_rng(1).normal(size=(4, 17, 16)).astype("float32")
    # JAX: op by op, ~500 first compiles of eager primitives (`fast_jax_compiles`
    # makes them cheaper; compiled, the step took longer still).
    model.compile(optimizer=keras.optimizers.SGD(1.0), loss="mse", jit_compile=False)
    before = [keras.ops.convert_to_numpy(v.value).copy() for v in model.variables]
    losses = [float(model.train_on_batch(x, y)) for _ in range(2)]
    after = [keras.ops.convert_to_numpy(v.value) for v in model.variables]
    return before, after, [v.path for v in model.variables], losses


@pytest.mark.usefixtures("fast_jax_compiles")
def test_remat_trains_exactly_like_no_remat():
    before, plain, paths, plain_losses = _two_steps(False)
    before_remat, remat, _, remat_losses = _two_steps(True)
    for a, b in zip(before, before_remat):
        np.testing.assert_array_equal(a, b)
    assert remat_losses == pytest.approx(plain_losses, rel=1e-6)
    assert len(remat) == len(plain)
    for path, a, b in zip(paths, remat, plain):
        # Measured: <= 1.1e-6 (JAX), 4.2e-7 (TF), 0 (torch); changes are 1e-2..1.
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5, err_msg=path)
    # The state moved, once: seeds by the draws of one forward pass per step.
    changed = [i for i, b in enumerate(before) if not np.array_equal(plain[i], b)]
    assert any("moving_mean" in paths[i] for i in changed)
    seeds = [i for i in changed if "seed_generator_state" in paths[i]]
    assert seeds
    for i in seeds:
        np.testing.assert_array_equal(remat[i], plain[i], err_msg=paths[i])


@pytest.mark.usefixtures("fast_jax_compiles")
def test_remat_config_and_keras_file_round_trip(tmp_path):
    model = keras_spvit.SPViTBackbone(remat=True, **STOCHASTIC)
    assert model.get_config()["remat"] is True
    assert all(block.remat for block in model.transformer_blocks)
    path = str(tmp_path / "remat.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.remat and all(block.remat for block in loaded.transformer_blocks)
    x = np.random.default_rng(2).normal(size=(2, 16, 16, 3)).astype("float32")
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(loaded(x)), keras.ops.convert_to_numpy(model(x))
    )
    block = TransformerBlock(MultiHeadSelfAttention(num_heads=2), remat=True)
    assert TransformerBlock.from_config(block.get_config()).remat is True


def test_remat_must_be_a_bool():
    with pytest.raises(ValueError, match="remat='yes'"):
        TransformerBlock(MultiHeadSelfAttention(num_heads=2), remat="yes")


def test_train_remat_flag_reaches_every_block():
    args = build_parser().parse_args(
        ["train", "--out", "unused", "--model", "SPViT", "--remat", "--model-args",
         '{"embed_dim": 16, "depth": 2, "num_heads": 2, "stem": "patch", "patch_size": 4}']
    )
    model = build_model(args, 3, 16, get_recipe("digits"))
    assert model.backbone.remat and all(b.remat for b in model.backbone.transformer_blocks)
    args = build_parser().parse_args(["train", "--out", "unused"])
    assert args.remat is False
