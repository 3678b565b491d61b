"""keras_spvit: vision transformers with learned spatial structure, in Keras 3."""

from keras_spvit import layers
from keras_spvit.models.official_weights import load_official_weights
from keras_spvit.models.spvit.spvit_backbone import SPViTBackbone
from keras_spvit.models.spvit.spvit_builders import (
    LVViT_L,
    LVViT_M,
    LVViT_S,
    LVViT_Tiny,
    SPViT,
    SPViT_L,
    SPViT_L_Released,
    SPViT_M,
    SPViT_S,
    SPViT_Tiny,
)
from keras_spvit.models.spvit.spvit_image_classifier import SPViTImageClassifier
from keras_spvit.search import search
from keras_spvit.version import __version__
from keras_spvit.models.refined_vit.refined_vit_backbone import RefinedViTBackbone
from keras_spvit.models.refined_vit.refined_vit_builders import (
    RefinedViT,
    RefinedViT_L,
    RefinedViT_M,
    RefinedViT_S,
    RefinedViT_Tiny,
)
from keras_spvit.models.refined_vit.refined_vit_image_classifier import (
    RefinedViTImageClassifier,
)
from keras_spvit.models.token_labeling_image_classifier import TokenLabelingImageClassifier
from keras_spvit.models.psvit.psvit_backbone import PSViTBackbone
from keras_spvit.models.psvit.psvit_builders import (
    PSViT,
    PSViT_1D_Tiny,
    PSViT_2D_Small,
    PSViT_2D_Tiny,
    PSViT_Tiny_CPU,
    PlainViT_Small,
    PlainViT_Tiny,
)
from keras_spvit.models.psvit.psvit_image_classifier import PSViTImageClassifier
from keras_spvit.utils.flops import count_macs

__all__ = [
    "LVViT_L",
    "LVViT_M",
    "LVViT_S",
    "LVViT_Tiny",
    "PSViT",
    "PSViTBackbone",
    "PSViTImageClassifier",
    "PSViT_1D_Tiny",
    "PSViT_2D_Small",
    "PSViT_2D_Tiny",
    "PSViT_Tiny_CPU",
    "PlainViT_Small",
    "PlainViT_Tiny",
    "RefinedViT",
    "RefinedViTBackbone",
    "RefinedViTImageClassifier",
    "RefinedViT_L",
    "RefinedViT_M",
    "RefinedViT_S",
    "RefinedViT_Tiny",
    "SPViT",
    "SPViTBackbone",
    "SPViTImageClassifier",
    "SPViT_L",
    "SPViT_L_Released",
    "SPViT_M",
    "SPViT_S",
    "SPViT_Tiny",
    "TokenLabelingImageClassifier",
    "__version__",
    "count_macs",
    "layers",
    "load_official_weights",
    "search",
]
