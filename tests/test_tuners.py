"""`keras_spvit.search` with KerasTuner's Bayesian optimisation and Hyperband (the
random search is tests/test_search.py): a tiny space, a real search."""

import keras_tuner
import numpy as np
import pytest

import keras_spvit
from keras_spvit.search import config_from_hyperparameters
from tests.conftest import on_one_backend
from tests.test_search import dataset

SPACE = dict(num_classes=2, depth=2, num_stages=1, stage_dims=(16,), stage_heads=(2,),
             image_shape=(16, 16, 3), patch_size=4)
# Which tuner drives the search does not depend on the backend (KerasTuner runs
# `fit` on built models; random search trains on every backend in test_search.py).
pytestmark = on_one_backend("tuner wiring")


def _search(tuner, tmp_path, **kwargs):
    return keras_spvit.search(
        dataset(16, 0), dataset(16, 1), tuner=tuner, directory=str(tmp_path), seed=3,
        **SPACE, **kwargs)


def _check_best(best, engine):
    trials = [t for t in engine.oracle.trials.values() if t.status == "COMPLETED"]
    top = max(trials, key=lambda t: t.score)
    # The returned config is the best-scoring trial's point of the space.
    fixed = {k: v for k, v in SPACE.items() if k not in ("num_classes", "depth", "num_stages")}
    assert best == config_from_hyperparameters(top.hyperparameters, 2, 1, 1, fixed)
    assert best["stage_depths"] == (2,)
    model = keras_spvit.PSViT(**best, num_classes=2)
    assert model(np.zeros((1, 16, 16, 3), "float32")).shape == (1, 2)
    return trials


def test_bayesian_search_runs_its_trials(tmp_path):
    best, engine = _search("bayesian", tmp_path, max_trials=2, epochs=1)
    assert isinstance(engine, keras_tuner.BayesianOptimization)
    trials = _check_best(best, engine)
    assert len(trials) == 2 and len(engine.oracle.trials) == 2
    # Two different points of the space (the oracle does not repeat one).
    assert trials[0].hyperparameters.values != trials[1].hyperparameters.values


def test_hyperband_search_trains_to_its_epoch_budget(tmp_path):
    best, engine = _search("hyperband", tmp_path, epochs=2)
    assert isinstance(engine, keras_tuner.Hyperband)
    trials = _check_best(best, engine)
    assert len(trials) >= 2
    budgets = {t.hyperparameters.values["tuner/epochs"] for t in trials}
    assert max(budgets) == 2  # Hyperband's max_epochs is `epochs`


def test_unknown_tuner_is_named():
    with pytest.raises(ValueError, match="tuner='grid'"):
        keras_spvit.search(None, None, tuner="grid", **SPACE)
