from keras_hub.models import Backbone

from keras_spvit.models.image_inputs import check_model_images, refuse_attention_scores
from keras_spvit.models.preset_loading import backbone_from_preset


class ResizableBackbone(Backbone):
    """Base of the keras_spvit backbones: a keras-hub `Backbone` whose presets
    load at any resolution.

    `from_preset(preset, image_shape=...)` builds the backbone for the new
    image shape and fills it with the preset's weights, the learned position
    embedding resampled to the new patch grid with PyTorch's bicubic kernel
    (in numpy, so identical on every backend). Spatial priors and PosCNNs
    carry over unchanged. Everything else is keras-hub's: `save_to_preset`,
    registered preset names, `hf://` and `kaggle://` handles, local folders.

    Subclasses need `image_shape`, `patch_size` and a `position_embedding`
    layer.

    Calling a backbone checks the images' shape (one line naming it) and
    refuses `return_attention_scores` (a `TypeError` pointing to
    `keras_spvit.attention_maps`, which returns every block's map).

    Example:

    >>> backbone = SPViTBackbone.from_preset("./spvit_s_224", image_shape=(384, 384, 3))
    """

    def __call__(self, *args, **kwargs):
        refuse_attention_scores(kwargs, f"Calling the backbone {self.name!r}")
        image_shape = getattr(self, "image_shape", None)
        if args and image_shape is not None:
            check_model_images(args[0], image_shape, f"The backbone {self.name!r}")
        return super().__call__(*args, **kwargs)

    @classmethod
    def from_preset(cls, preset, load_weights=True, **kwargs):
        """Instantiates the backbone from a preset, at any resolution.

        Args:
            preset: a registered preset name, a hub handle (`"hf://..."`,
                `"kaggle://..."`) or a local preset folder.
            load_weights: bool. Load the saved weights (`True`) or keep a
                random initialization.
            **kwargs: backbone arguments to override, e.g. `image_shape`
                (the position embedding is resampled) or `dtype`.

        Returns:
            The backbone.

        Example:

        >>> backbone = SPViTBackbone.from_preset("./spvit_tiny_digits")
        """
        return backbone_from_preset(super().from_preset, preset, load_weights, **kwargs)
