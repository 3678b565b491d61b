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
    pytest.mark.usefixtures("zero_initializers"),  # shapes only
]


def official_counts():
    counts = {}
    for line in (FIXTURES / "params.txt").read_text().splitlines():
        fields = line.split()
        if fields and not line.startswith("#") and fields[0] != "variant" and fields[1].isdigit():
            counts[(fields[0], int(fields[1]))] = int(fields[2])
    return counts


def lvvit_s_release_count(size, classes=1000):
    """LV-ViT-S's trainable parameters counted by hand from the TokenLabeling release's
    shapes (`lvvit_s`: 4-conv stem '4_2', dim 384, depth 16, 6 heads, MLP ratio 3,
    qkv without bias, class token, head and aux head); not from this package."""
    dim, hidden, depth = 384, 3 * 384, 16
    stem = (7 * 7 * 3 * 64 + 2 * 64) + 2 * (3 * 3 * 64 * 64 + 2 * 64) + (8 * 8 * 64 * dim + dim)
    tokens = 1 + (size // 16) ** 2
    block = (2 * dim) + dim * 3 * dim + (dim * dim + dim) + (2 * dim) + (
        dim * hidden + hidden) + (hidden * dim + dim)
    heads = 2 * (dim * classes + classes)
    return stem + dim + tokens * dim + depth * block + 2 * dim + heads


# The paper (Jiang et al. 2021, table 1 / the release's README) gives 26M.
assert round(lvvit_s_release_count(224) / 1e6) == 26
OFFICIAL = official_counts()
# Ours is LV-ViT as SP-ViT's code builds it (README: SP-ViT at K = 0): the release's
# network plus a PosCNN (3 x 3 depthwise conv with bias) after each of the 16 blocks.
POS_CNN = 16 * (3 * 3 * 384 + 384)
OFFICIAL[("lvvit_s", 224)] = lvvit_s_release_count(224) + POS_CNN  # 26,213,264
OFFICIAL[("lvvit_s", 384)] = lvvit_s_release_count(384) + POS_CNN

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
