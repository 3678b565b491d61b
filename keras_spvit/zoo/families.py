"""The family table: every model family declared once.

Each `Family` names its backbone, classifier and preprocessor classes, its
variant table, its generic and named builders (`builder name -> (variant,
summary)`), its official-weights converter (a `keras_spvit.conversion`
module, or `None`), the repository whose code it ports, and the official
checkpoint releases. The builders (`keras_spvit.zoo.<family>`), weights
resolution, `convert_checkpoint`, the CLI's model names, the README table
generator (`tools/model_table.py`) and the tests all read this table.
"""

import dataclasses

from keras_spvit.conversion import refined_vit as refined_vit_conversion
from keras_spvit.conversion import spvit as spvit_conversion
from keras_spvit.models.psvit.psvit_backbone import PSViTBackbone
from keras_spvit.models.psvit.psvit_image_classifier import PSViTImageClassifier
from keras_spvit.models.psvit.psvit_variants import PSVIT_VARIANTS
from keras_spvit.models.refined_vit.refined_vit_backbone import RefinedViTBackbone
from keras_spvit.models.refined_vit.refined_vit_image_classifier import (
    RefinedViTImageClassifier,
)
from keras_spvit.models.refined_vit.refined_vit_variants import REFINED_VIT_VARIANTS
from keras_spvit.models.spvit.spvit_backbone import SPViTBackbone
from keras_spvit.models.spvit.spvit_image_classifier import SPViTImageClassifier
from keras_spvit.models.spvit.spvit_variants import SPVIT_VARIANTS


@dataclasses.dataclass(frozen=True)
class Release:
    """An official checkpoint release: the repository whose code wrote it.

    Attributes:
        repo: `owner/name` on GitHub.
        image_sizes: the resolutions released.
    """

    repo: str
    image_sizes: tuple

    @property
    def name(self):
        return self.repo.split("/")[-1]


@dataclasses.dataclass(frozen=True)
class Family:
    """One model family, as every part of the package sees it.

    Attributes:
        name: the family's short name (`backbone_cls.family`).
        backbone_cls: the `ResizableBackbone` subclass.
        classifier_cls: the image classifier class.
        variants: the variant table (`variant -> {"arch": ..., "info": ...}`).
        variants_table: the table's name in its module, e.g. `"SPVIT_VARIANTS"`.
        generic: name of the generic builder (`keras_spvit.SPViT`).
        builders: `builder name -> (variant, one-line summary)`, in table order.
        converter: the `keras_spvit.conversion` module that maps official
            checkpoints onto the family, or `None`.
        ports: `owner/name` of the code the family ports (`None` if none).
        releases: `variant -> Release` of the official checkpoints.
    """

    name: str
    backbone_cls: type
    classifier_cls: type
    variants: dict
    variants_table: str
    generic: str
    builders: dict
    converter: object = None
    ports: str = None
    releases: dict = dataclasses.field(default_factory=dict)

    @property
    def preprocessor_cls(self):
        return self.classifier_cls.preprocessor_cls

    def builder_of(self, variant):
        """The first named builder of `variant`, or `None`."""
        for name, (row, _) in self.builders.items():
            if row == variant:
                return name
        return None


# Checkpoints the authors publish: a fact about the world, read off each
# repository's README, not derivable from our code.
# - ZhouYuxuanYX/SP-ViT: SP-ViT-S/M/L at 224 and 384 px (GitHub release
#   "download"). Its L was trained with the released code, which builds no
#   spatial-prior block: the layout of `spvit_l_released`, not the paper's L.
# - zihangJiang/TokenLabeling: LV-ViT-S/M at 224 and 384 px, LV-ViT-L at
#   448 px (Google Drive). Written by LV-ViT's own code, whose blocks have no
#   `pos_block` (PosCNN); our LV-ViT is SP-ViT's code at K = 0, which has one
#   after every block, so `load_official_weights` rejects these checkpoints.
# - zhoudaquan/Refiner_ViT: only Refiner-ViT-L at 448 px (Google Drive).
_SPVIT_RELEASE = Release("ZhouYuxuanYX/SP-ViT", (224, 384))
_LVVIT_RELEASE = Release("zihangJiang/TokenLabeling", (224, 384))

SPVIT = Family(
    name="spvit",
    backbone_cls=SPViTBackbone,
    classifier_cls=SPViTImageClassifier,
    variants=SPVIT_VARIANTS,
    variants_table="SPVIT_VARIANTS",
    generic="SPViT",
    builders={
        "SPViT_S": ("spvit_s", "SP-ViT-S: 26.2M parameters, 14 spatial-prior blocks."),
        "SPViT_M": ("spvit_m", "SP-ViT-M: 56.0M parameters, 10 spatial-prior blocks."),
        "SPViT_L": (
            "spvit_l", "SP-ViT-L as the paper describes it: spatial priors in blocks 0-21."
        ),
        "SPViT_L_Released": (
            "spvit_l_released",
            "SP-ViT-L as the released code builds it: no spatial-prior block, class "
            "token entering before block 22.",
        ),
        "LVViT_S": ("lvvit_s", "LV-ViT-S: the K = 0 baseline of SP-ViT-S."),
        "LVViT_M": ("lvvit_m", "LV-ViT-M: the K = 0 baseline of SP-ViT-M."),
        "LVViT_L": ("lvvit_l", "LV-ViT-L: the K = 0 baseline of SP-ViT-L."),
        "SPViT_Tiny": (
            "spvit_tiny", "A CPU-sized SP-ViT (dim 64, 4 blocks, 2 priors) for 32 px images."
        ),
        "LVViT_Tiny": (
            "lvvit_tiny",
            "SPViT_Tiny without spatial priors: the vanilla-attention baseline.",
        ),
    },
    converter=spvit_conversion,
    ports="ZhouYuxuanYX/SP-ViT",
    releases={
        "spvit_s": _SPVIT_RELEASE,
        "spvit_m": _SPVIT_RELEASE,
        "spvit_l_released": _SPVIT_RELEASE,
        "lvvit_s": _LVVIT_RELEASE,
        "lvvit_m": _LVVIT_RELEASE,
        "lvvit_l": Release("zihangJiang/TokenLabeling", (448,)),
    },
)

REFINED_VIT = Family(
    name="refined_vit",
    backbone_cls=RefinedViTBackbone,
    classifier_cls=RefinedViTImageClassifier,
    variants=REFINED_VIT_VARIANTS,
    variants_table="REFINED_VIT_VARIANTS",
    generic="RefinedViT",
    builders={
        "RefinedViT_S": ("refined_vit_s", "Refined-ViT-S: 25.4M parameters."),
        "RefinedViT_M": ("refined_vit_m", "Refined-ViT-M: 55.5M parameters."),
        "RefinedViT_L": ("refined_vit_l", "Refined-ViT-L: 81.2M parameters."),
        "RefinedViT_Tiny": (
            "refined_vit_tiny",
            "A CPU-sized Refined-ViT (dim 64, 4 blocks, 2 refiners) for 32 px images.",
        ),
    },
    converter=refined_vit_conversion,
    ports="zhoudaquan/Refiner_ViT",
    releases={"refined_vit_l": Release("zhoudaquan/Refiner_ViT", (448,))},
)

PSVIT = Family(
    name="psvit",
    backbone_cls=PSViTBackbone,
    classifier_cls=PSViTImageClassifier,
    variants=PSVIT_VARIANTS,
    variants_table="PSVIT_VARIANTS",
    generic="PSViT",
    builders={
        "PSViT_2D_Tiny": ("psvit_2d_tiny", "PSViT-2D at DeiT-Tiny cost (1.26 GMACs)."),
        "PSViT_1D_Tiny": ("psvit_1d_tiny", "PSViT-1D at DeiT-Tiny cost (1.27 GMACs)."),
        "PSViT_2D_Small": ("psvit_2d_small", "PSViT-2D at DeiT-Small cost (4.36 GMACs)."),
        "PlainViT_Tiny": ("plain_vit_tiny", "A DeiT-Tiny-shaped plain ViT."),
        "PlainViT_Small": ("plain_vit_small", "A DeiT-Small-shaped plain ViT."),
        "PSViT_Tiny_CPU": ("psvit_tiny_cpu", "A CPU-sized PSViT for 32 px images."),
    },
)

FAMILIES = (SPVIT, REFINED_VIT, PSVIT)


def variant_names():
    """Every variant name of every family, sorted.

    Example:

    >>> variant_names()[:2]
    ['lvvit_l', 'lvvit_m']
    """
    return sorted(name for family in FAMILIES for name in family.variants)


def family_of_variant(variant):
    """The family whose table holds `variant`.

    Args:
        variant: str, e.g. `"spvit_s"`.

    Returns:
        The `Family`.

    Example:

    >>> family_of_variant("lvvit_s").generic
    'SPViT'
    """
    for family in FAMILIES:
        if variant in family.variants:
            return family
    raise ValueError(f"Unknown variant {variant!r}. Expected one of {variant_names()}.")


def family_of_model(model):
    """The family of a keras_spvit backbone or classifier, or `None`.

    Example:

    >>> family_of_model(keras_spvit.SPViT_Tiny()).name
    'spvit'
    """
    backbone = getattr(model, "backbone", None) or model
    for family in FAMILIES:
        if isinstance(backbone, family.backbone_cls):
            return family
    return None


def builder_names():
    """Every public builder: each family's generic builder, then its named ones.

    Example:

    >>> builder_names()[:3]
    ['SPViT', 'SPViT_S', 'SPViT_M']
    """
    return [name for family in FAMILIES for name in (family.generic, *family.builders)]
