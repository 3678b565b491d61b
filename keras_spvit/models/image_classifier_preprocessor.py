from keras_hub.models import ImageClassifierPreprocessor

from keras_spvit.utils.preprocessing import IMAGENET_MEAN, IMAGENET_STD
from keras_spvit.models.naming import default_name


class FamilyImageClassifierPreprocessor(ImageClassifierPreprocessor):
    """keras-hub's `ImageClassifierPreprocessor`, named after its family.

    Each family subclasses it naming its backbone and converter classes
    (`SPViTImageClassifierPreprocessor`, ...); `name` defaults to e.g.
    `"spvit_image_classifier_preprocessor"`. The image converter checks the
    shape of the images it receives.

    Args:
        image_converter: the family's image converter, or `None`.
        **kwargs: standard `keras_hub.models.Preprocessor` arguments.

    Example:

    >>> preprocessor = SPViTImageClassifierPreprocessor(SPViTImageConverter(image_size=(32, 32)))
    >>> preprocessor.name
    'spvit_image_classifier_preprocessor'
    """

    def __init__(self, image_converter=None, **kwargs):
        family = getattr(type(self).backbone_cls, "family", None)
        kwargs["name"] = default_name(kwargs.get("name"), family, "image_classifier_preprocessor")
        super().__init__(image_converter=image_converter, **kwargs)

    def __call__(self, x, *args, **kwargs):
        # Checked before Keras' call machinery, which would wrap the message.
        check = getattr(self.image_converter, "check_images", None)
        if check is not None and not isinstance(x, tuple):
            check(x)
        return super().__call__(x, *args, **kwargs)


DEFAULT_CROP_PCT = 0.9  # timm's default


def default_preprocessor(model, crop_pct=None, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """The released models' evaluation preprocessing for a classifier.

    Bicubic resize to `image_size / crop_pct`, center crop, ImageNet
    mean / std. `None` for a model class without a preprocessor class.

    Args:
        model: a keras_spvit classifier.
        crop_pct: optional float, the center-crop fraction (default 0.9).
        mean: per-channel mean of the normalization.
        std: per-channel standard deviation of the normalization.

    Returns:
        The family's `ImageClassifierPreprocessor`, or `None`.

    Example:

    >>> default_preprocessor(SPViT_S(), crop_pct=0.9).image_converter.crop_pct
    0.9
    """
    preprocessor_cls = getattr(type(model), "preprocessor_cls", None)
    if preprocessor_cls is None:
        return None
    converter = preprocessor_cls.image_converter_cls(
        image_size=tuple(model.backbone.image_shape[:2]),
        crop_pct=DEFAULT_CROP_PCT if crop_pct is None else crop_pct,
        mean=mean,
        std=std,
    )
    return preprocessor_cls(image_converter=converter)
