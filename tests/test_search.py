"""keras_spvit.search: a real (tiny) KerasTuner search over the compact set."""

import numpy as np
import pytest
import tensorflow as tf

import keras_spvit
from keras_spvit.search import shared_layers_for, stage_splits
from tests.conftest import on_one_backend

# KerasTuner drives `fit` on built PSViTs: the search (space, trials, best config)
# is the same on every backend.
SEARCH_IS_BACKEND_INDEPENDENT = on_one_backend("search wiring; PSViT trains on every backend "
                                               "in tests/models/test_model_contract.py")


def test_stage_splits_and_sharing_rules():
    assert stage_splits(4, 2) == ["1-3", "2-2", "3-1"]
    assert shared_layers_for((3, 4), ["alternate", "all"]) == [1, 4, 5, 6]
    assert shared_layers_for((2, 2), ["none", "none"]) == []
    with pytest.raises(ValueError, match="depth=2 into num_stages=3"):
        stage_splits(2, 3)


def dataset(n, seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    images = rng.normal(size=(n, 16, 16, 3)).astype("float32")
    images[labels == 1, :8] += 1.5  # a learnable signal in the top half
    return tf.data.Dataset.from_tensor_slices((images, labels)).batch(16)


@SEARCH_IS_BACKEND_INDEPENDENT
def test_search_returns_a_builder_ready_config(tmp_path):
    best, tuner = keras_spvit.search(
        dataset(64, 0), dataset(32, 1), num_classes=2, depth=4, num_stages=2,
        stage_dims=(16, 24), stage_heads=(2, 2), image_shape=(16, 16, 3), patch_size=4,
        max_trials=2, epochs=1, directory=str(tmp_path), seed=1,
        jit_compile=False,
    )
    trials = list(tuner.oracle.trials.values())
    assert len(trials) == 2
    assert all(t.status == "COMPLETED" and 0.0 <= t.score <= 1.0 for t in trials)
    assert sum(best["stage_depths"]) == 4 and len(best["stage_depths"]) == 2
    model = keras_spvit.PSViT(**best, num_classes=2)
    assert model(np.zeros((1, 16, 16, 3), "float32")).shape == (1, 2)
    first_of_stage = {0, best["stage_depths"][0]}
    assert not first_of_stage & set(best["shared_layers"])


def test_search_needs_per_stage_widths():
    with pytest.raises(ValueError, match="stage_dims"):
        keras_spvit.search(None, None, num_classes=2, stage_heads=(1, 1, 1))


@SEARCH_IS_BACKEND_INDEPENDENT
def test_search_that_only_fails_says_why(tmp_path):
    bad = tf.data.Dataset.from_tensor_slices(
        (np.zeros((4, 16, 16, 1), "float32"), np.zeros(4, "int64"))
    ).batch(2)
    with pytest.raises(RuntimeError, match="All 1 search trials failed"):
        keras_spvit.search(
            bad, bad, num_classes=2, depth=2, num_stages=1, stage_dims=(16,),
            stage_heads=(2,), image_shape=(16, 16, 3), patch_size=4, max_trials=1,
            directory=str(tmp_path),
        )
