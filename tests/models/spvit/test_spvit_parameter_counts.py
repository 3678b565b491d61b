"""Full-size variants have exactly the official parameter counts.

Counts come from `tests/fixtures/params.txt` (the official models, BatchNorm
running statistics excluded, aux_head included). Parameter shapes do not
depend on the backend, so these large builds run on TensorFlow only, where
building is fastest.
"""

import numpy as np
import pytest

import keras_spvit
from tests.conftest import BACKEND, FIXTURES

pytestmark = [
    pytest.mark.large,
    pytest.mark.skipif(BACKEND != "tensorflow", reason="backend-independent; built once"),
]


def official_counts():
    counts = {}
    for line in (FIXTURES / "params.txt").read_text().splitlines():
        fields = line.split()
        if fields and not line.startswith("#") and fields[0] != "variant" and fields[1].isdigit():
            counts[(fields[0], int(fields[1]))] = int(fields[2])
    return counts


OFFICIAL = official_counts()
# LV-ViT-S is SP-ViT-S without its 14 spatial-prior blocks' extra 4C + heads
# parameters each, and with a class-token row in pos_embed (params.txt notes).
OFFICIAL[("lvvit_s", 224)] = OFFICIAL[("spvit_s", 224)] - 14 * (4 * 384 + 6) + 384
OFFICIAL[("lvvit_s", 384)] = OFFICIAL[("spvit_s", 384)] - 14 * (4 * 384 + 6) + 384

BUILDERS = {
    "spvit_s": keras_spvit.SPViT_S,
    "spvit_m": keras_spvit.SPViT_M,
    "spvit_l": keras_spvit.SPViT_L_Released,
    "spvit_l_spsa": keras_spvit.SPViT_L,
    "lvvit_s": keras_spvit.LVViT_S,
}


@pytest.mark.parametrize("size", [224, 384])
@pytest.mark.parametrize("variant", sorted(BUILDERS))
def test_official_parameter_count(variant, size):
    model = BUILDERS[variant](image_shape=(size, size, 3))
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == OFFICIAL[(variant, size)]


def test_released_large_has_no_prior_but_a_late_class_token():
    model = keras_spvit.SPViT_L(released=True)
    assert model.backbone.spatial_prior_blocks == 0
    assert model.backbone.class_token_block == 22
    assert model.backbone.position_embedding.embedding.shape == (1, 196, 768)
