"""Model builders of the PSViT family (a reconstruction; see `PSViTBackbone`)."""

from keras_spvit.models.builders import assemble, variant_builder
from keras_spvit.models.psvit.psvit_backbone import PSViTBackbone
from keras_spvit.models.psvit.psvit_image_classifier import PSViTImageClassifier
from keras_spvit.models.psvit.psvit_variants import PSVIT_VARIANTS


def PSViT(
    stage_depths=None,
    stage_dims=None,
    stage_heads=None,
    pooling_mode="2d",
    shared_layers=(),
    num_classes=1000,
    image_shape=(224, 224, 3),
    name=None,
    **kwargs,
):
    """Builds a `PSViTImageClassifier` from per-stage hyper-parameters.

    Args:
        stage_depths: required. Blocks per stage.
        stage_dims: required. Width per stage.
        stage_heads: required. Heads per stage.
        pooling_mode: `"2d"` or `"1d"` token pooling between stages.
        shared_layers: layer indices that reuse the previous layer's map.
        num_classes: int.
        image_shape: `(height, width, channels)`.
        name: optional model name (default `"psvit"`; the backbone is named
            `name + "_backbone"`).
        **kwargs: any other `PSViTBackbone` argument (`pooling`,
            `refine_shared`, `spatial_prior_layers`, `class_token_block`,
            `dtype`, ...) or classifier argument; or
            `weights`: a preset, `.weights.h5` file or official checkpoint
            loaded into exactly this architecture, `num_classes` and
            `image_shape` (new heads, resampled positions where they differ).

    Every argument is checked before anything is built; a `ValueError`
    names the argument at fault.

    Returns:
        A `PSViTImageClassifier`.

    Example:

    >>> model = PSViT((2, 2), (32, 64), (1, 2), shared_layers=[1, 3],
    ...               patch_size=8, num_classes=10, image_shape=(32, 32, 3))
    """
    return assemble(
        PSViTBackbone,
        PSViTImageClassifier,
        num_classes,
        name,
        stage_depths=stage_depths,
        stage_dims=stage_dims,
        stage_heads=stage_heads,
        pooling_mode=pooling_mode,
        shared_layers=shared_layers,
        image_shape=image_shape,
        **kwargs,
    )


def _named(variant, name, summary):
    return variant_builder(PSViT, PSVIT_VARIANTS, variant, name, summary)


PSViT_2D_Tiny = _named("psvit_2d_tiny", "PSViT_2D_Tiny", "PSViT-2D at DeiT-Tiny cost (1.26 GMACs).")
PSViT_1D_Tiny = _named("psvit_1d_tiny", "PSViT_1D_Tiny", "PSViT-1D at DeiT-Tiny cost (1.27 GMACs).")
PSViT_2D_Small = _named(
    "psvit_2d_small", "PSViT_2D_Small", "PSViT-2D at DeiT-Small cost (4.36 GMACs)."
)
PlainViT_Tiny = _named("plain_vit_tiny", "PlainViT_Tiny", "A DeiT-Tiny-shaped plain ViT.")
PlainViT_Small = _named("plain_vit_small", "PlainViT_Small", "A DeiT-Small-shaped plain ViT.")
PSViT_Tiny_CPU = _named(
    "psvit_tiny_cpu", "PSViT_Tiny_CPU", "A CPU-sized PSViT for 32 px images."
)
