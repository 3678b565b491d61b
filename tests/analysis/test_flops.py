"""The MAC counter against published figures, and PSViT's cost targets.

Published: LV-ViT-S 6.56 GMACs and Refiner-ViT-S 6.82 GMACs (their specs),
DeiT-Tiny 1.26 and DeiT-Small 4.6 GFLOPs (MACs) at 224 px. Our SP-ViT-S
counts fewer MACs than the released 7.16 because its prior is evaluated on
the 729 distinct offsets instead of all 38,416 token pairs.
"""

import pytest

import keras_spvit
from keras_spvit.models.psvit.psvit_backbone import PSViTBackbone
from keras_spvit.models.psvit.psvit_variants import PSVIT_VARIANTS
from keras_spvit.models.spvit.spvit_backbone import SPViTBackbone
from keras_spvit.models.spvit.spvit_variants import SPVIT_VARIANTS
from tests.conftest import BACKEND

pytestmark = [
    pytest.mark.large,
    pytest.mark.skipif(BACKEND != "tensorflow", reason="shapes only; built once"),
]


def backbone_gmacs(backbone_cls, arch):
    return keras_spvit.count_macs(backbone_cls(**arch)) / 1e9


@pytest.mark.parametrize(
    "builder, published, with_aux_head",
    [
        # LV-ViT and Refiner publish their cost with the token-labeling aux head;
        # DeiT has a class head only.
        (keras_spvit.LVViT_S, 6.56, True),
        (keras_spvit.RefinedViT_S, 6.82, True),
        (keras_spvit.PlainViT_Tiny, 1.26, False),
        (keras_spvit.PlainViT_Small, 4.6, False),
    ],
)
def test_counter_matches_published_figures(builder, published, with_aux_head):
    model = builder()
    macs = keras_spvit.count_macs(model)
    if not with_aux_head:
        macs -= keras_spvit.count_macs(model.head.aux_head)
    assert macs / 1e9 == pytest.approx(published, rel=0.01)


def test_spatial_prior_costs_almost_nothing_over_lvvit():
    spvit = backbone_gmacs(SPViTBackbone, SPVIT_VARIANTS["spvit_s"]["arch"])
    lvvit = backbone_gmacs(SPViTBackbone, SPVIT_VARIANTS["lvvit_s"]["arch"])
    assert spvit == pytest.approx(lvvit, rel=0.01)


@pytest.mark.parametrize(
    "variant, baseline",
    [
        ("psvit_2d_tiny", "plain_vit_tiny"),
        ("psvit_1d_tiny", "plain_vit_tiny"),
        ("psvit_2d_small", "plain_vit_small"),
    ],
)
def test_psvit_variants_cost_what_their_deit_baselines_cost(variant, baseline):
    # PSViT's paper gives no per-variant table we can read (only its abstract is
    # at hand: ../shared/spec/PSVIT.md), so the claim tested is the one the
    # abstract and our README make: cost comparable to DeiT-Tiny / -Small, counted
    # by the counter that reproduces DeiT's published 1.26 / 4.6 G above. The
    # first assert only keeps the README table's figure in step with the code.
    ours = backbone_gmacs(PSViTBackbone, PSVIT_VARIANTS[variant]["arch"])
    assert ours == pytest.approx(PSVIT_VARIANTS[variant]["info"]["gmacs"], abs=0.005)
    reference = backbone_gmacs(PSViTBackbone, PSVIT_VARIANTS[baseline]["arch"])
    assert 0.9 * reference <= ours <= 1.02 * reference


def test_tiny_model_macs_counted_by_hand():
    # 16 px, 4 px patches: a 4 x 4 grid, 16 patch tokens + 1 class token, width 16,
    # MLP 48, 2 blocks each followed by a PosCNN (3 x 3 depthwise on the grid),
    # class head on the class token, aux head on the 16 patch tokens, 10 classes.
    model = keras_spvit.SPViT(num_classes=10, image_shape=(16, 16, 3), embed_dim=16, depth=2,
                              num_heads=2, spatial_prior_blocks=0, stem="patch", patch_size=4)
    tokens, width, hidden, classes = 17, 16, 48, 10
    stem = 16 * (4 * 4 * 3) * width  # output pixels x kernel area x in x out
    block = (tokens * width * 3 * width  # qkv
             + 2 * tokens**2 * width  # q k^T and weights @ v
             + tokens * width * width  # proj
             + 2 * tokens * width * hidden)  # fc1 + fc2
    pos_cnn = 16 * 9 * width
    heads = 1 * width * classes + 16 * width * classes
    assert keras_spvit.count_macs(model) == stem + 2 * (block + pos_cnn) + heads == 125152
