"""The public API of keras_spvit (imported by `keras_spvit/__init__.py`)."""
# ruff: noqa: F401  (re-exports: every name here is public API)


from keras_hub import upload_preset

from keras_spvit import layers
from keras_spvit import training  # noqa: F401  registers the recipes' optimizer and losses
from keras_spvit.inspection import explain
from keras_spvit.analysis.flops import count_macs
from keras_spvit.models.attention_maps import attention_maps
from keras_spvit.models.center_crop_image_converter import CenterCropImageConverter
from keras_spvit.models.dense_teacher import dense_teacher
from keras_spvit.models.features import FeatureExtractor, feature_extractor
from keras_spvit.models.psvit.psvit_backbone import PSViTBackbone
from keras_spvit.models.psvit.psvit_image_classifier import PSViTImageClassifier
from keras_spvit.models.psvit.psvit_image_classifier_preprocessor import (
    PSViTImageClassifierPreprocessor,
)
from keras_spvit.models.psvit.psvit_image_converter import PSViTImageConverter
from keras_spvit.models.refined_vit.refined_vit_backbone import RefinedViTBackbone
from keras_spvit.models.refined_vit.refined_vit_image_classifier import (
    RefinedViTImageClassifier,
)
from keras_spvit.models.refined_vit.refined_vit_image_classifier_preprocessor import (
    RefinedViTImageClassifierPreprocessor,
)
from keras_spvit.models.refined_vit.refined_vit_image_converter import (
    RefinedViTImageConverter,
)
from keras_spvit.models.spvit.spvit_backbone import SPViTBackbone
from keras_spvit.models.spvit.spvit_image_classifier import SPViTImageClassifier
from keras_spvit.models.spvit.spvit_image_classifier_preprocessor import (
    SPViTImageClassifierPreprocessor,
)
from keras_spvit.models.spvit.spvit_image_converter import SPViTImageConverter
from keras_spvit.models.token_labeling_image_classifier import (
    TokenLabelingImageClassifier,
)
from keras_spvit.search import search
from keras_spvit.serving import export
from keras_spvit.study import combine_studies, study
from keras_spvit.study import study as run_study
from keras_spvit.token_labeling import make_token_labels
from keras_spvit.zoo.convert import convert_checkpoint
from keras_spvit.zoo.psvit import (
    PlainViT_Small,
    PlainViT_Tiny,
    PSViT,
    PSViT_1D_Tiny,
    PSViT_2D_Small,
    PSViT_2D_Tiny,
    PSViT_Tiny_CPU,
)
from keras_spvit.zoo.refined_vit import (
    RefinedViT,
    RefinedViT_L,
    RefinedViT_M,
    RefinedViT_S,
    RefinedViT_Tiny,
)
from keras_spvit.zoo.spvit import (
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
from keras_spvit.zoo.weights import load_official_weights
