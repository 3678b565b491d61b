"""Model builders of the PSViT family (a reconstruction; see `PSViTBackbone`)."""

import functools

from keras_spvit.zoo.builders import generic_builder, named_builder
from keras_spvit.zoo.families import PSVIT


@generic_builder(PSVIT)
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


_named = functools.partial(named_builder, PSVIT, PSViT)
PSViT_2D_Tiny = _named("PSViT_2D_Tiny")
PSViT_1D_Tiny = _named("PSViT_1D_Tiny")
PSViT_2D_Small = _named("PSViT_2D_Small")
PlainViT_Tiny = _named("PlainViT_Tiny")
PlainViT_Small = _named("PlainViT_Small")
PSViT_Tiny_CPU = _named("PSViT_Tiny_CPU")
