from keras_hub.models import ImageClassifierPreprocessor

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
