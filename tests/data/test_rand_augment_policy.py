"""Policy strings and operation lists (keras_spvit/data/rand_augment_policy.py) against timm."""

import math

import keras
import pytest

from keras_spvit.data.rand_augment import (
    RAND_INCREASING_TRANSFORMS,
    RAND_TRANSFORMS,
    RandAugment,
    parse_policy,
)

# Pure TensorFlow (runs inside tf.data whatever the Keras backend): tested on TensorFlow;
# tests/data/test_train_augment.py runs RandAugment through the pipeline on every backend.
pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="pure TensorFlow, backend-independent: tested on TensorFlow",
)


@pytest.mark.parametrize(
    "policy, expected",
    [
        ("rand-m9-mstd0.5", dict(num_ops=2, magnitude=9, magnitude_std=0.5, increasing=False)),
        ("rand-m9-mstd0.5-inc1", dict(magnitude=9, magnitude_std=0.5, increasing=True)),
        ("rand-m9-n3-mstd0.5", dict(num_ops=3, magnitude=9, magnitude_std=0.5)),
        ("rand-n1-m7", dict(num_ops=1, magnitude=7, magnitude_std=0.0, magnitude_max=10.0)),
        ("rand-m15-mmax20-p0.3", dict(magnitude=15, magnitude_max=20.0, prob=0.3)),
        ("rand-mmax0", dict(magnitude=10, magnitude_max=10.0)),
        ("rand-mstd101", dict(magnitude_std=math.inf)),
        ("rand-inc0", dict(increasing=False)),
        ("rand", dict(num_ops=2, magnitude=10, magnitude_std=0.0, prob=0.5)),
    ],
)
def test_parse_policy(policy, expected):
    config = parse_policy(policy)
    for key, value in expected.items():
        assert config[key] == value, (policy, key)


@pytest.mark.parametrize(
    "policy",
    [
        "rand-x9",
        "rand-m",
        "rand-m9.5",
        "rand-mstdinf",
        "augmix-m9",
        "rand-tweights",
        "rand-w0",
        "",
        9,
    ],
)
def test_parse_policy_rejects_bad_strings(policy):
    with pytest.raises(ValueError, match="policy"):
        parse_policy(policy)


def test_increasing_policy_uses_timm_increasing_list():
    assert RandAugment("rand-m9-mstd0.5-inc1").transforms == RAND_INCREASING_TRANSFORMS
    assert RandAugment("rand-m9-mstd0.5").transforms == RAND_TRANSFORMS
    assert len(RAND_TRANSFORMS) == 15 and RAND_TRANSFORMS[0] == "AutoContrast"


# (name, magnitude, negate, timm's value), computed by hand from timm's
