import keras

from keras_spvit.models.image_classifier_preprocessor import (
    FamilyImageClassifierPreprocessor,
)
from keras_spvit.models.spvit.spvit_backbone import SPViTBackbone
from keras_spvit.models.spvit.spvit_image_converter import SPViTImageConverter


@keras.saving.register_keras_serializable(package="keras_spvit")
class SPViTImageClassifierPreprocessor(FamilyImageClassifierPreprocessor):
    """Preprocessor of `SPViTImageClassifier`: its image converter, labels passed through.

    `SPViTImageClassifier.from_preset` attaches the one saved in the preset;
    `predict`, `fit` and `evaluate` then take raw `[0, 255]` images, while
    calling the model directly still takes normalised images.

    Args:
        image_converter: a `SPViTImageConverter`, or `None`.
        **kwargs: standard `keras_hub.models.Preprocessor` arguments.

    Example:

    >>> preprocessor = SPViTImageClassifierPreprocessor(
    ...     SPViTImageConverter(image_size=(224, 224), crop_pct=0.9,
    ...                        mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    ... )
    >>> x, y = preprocessor(np.zeros((2, 256, 256, 3), "uint8"), np.array([0, 1]))
    >>> x.shape
    (2, 224, 224, 3)
    """

    backbone_cls = SPViTBackbone
    image_converter_cls = SPViTImageConverter
