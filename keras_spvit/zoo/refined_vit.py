"""Model builders of the Refined-ViT family: a generic one and one per variant."""

import functools

from keras_spvit.zoo.builders import generic_builder, named_builder
from keras_spvit.zoo.families import REFINED_VIT


@generic_builder(REFINED_VIT)
def RefinedViT(
    embed_dim=None,
    depth=None,
    num_heads=None,
    mlp_ratio=3.0,
    num_classes=1000,
    image_shape=(224, 224, 3),
    drop_path_rate=0.0,
    name=None,
    **kwargs,
):
    """Builds a `RefinedViTImageClassifier` from hyper-parameters.

    Args:
        embed_dim: int, required. Token width, divisible by `num_heads`.
        depth: int, required. Number of blocks.
        num_heads: int, required. Attention heads.
        mlp_ratio: float. MLP expansion.
        num_classes: int. Classes of both heads.
        image_shape: `(height, width, channels)` of the inputs.
        drop_path_rate: float. Final stochastic-depth rate.
        name: optional model name (default `"refined_vit"`; the backbone is
            named `name + "_backbone"`).
        **kwargs: any other `RefinedViTBackbone` argument (`refiner_blocks`,
            `refiner_expansion_ratio`, `refiner_kernel_size`, `stem`,
            `dtype`, ...) or classifier argument (`aux_weight`,
            `return_dense`, `head_dtype`, `preprocessor`); or
            `weights`: a preset, `.weights.h5` file or official checkpoint
            loaded into exactly this architecture, `num_classes` and
            `image_shape` (new heads, resampled positions where they differ).

    Every argument is checked before anything is built; a `ValueError`
    names the argument at fault.

    Returns:
        A `RefinedViTImageClassifier`.

    Example:

    >>> model = RefinedViT(embed_dim=64, depth=4, num_heads=4, num_classes=10,
    ...                    image_shape=(64, 64, 3))
    """


_named = functools.partial(named_builder, REFINED_VIT, RefinedViT)
RefinedViT_S = _named("RefinedViT_S")
RefinedViT_M = _named("RefinedViT_M")
RefinedViT_L = _named("RefinedViT_L")
RefinedViT_Tiny = _named("RefinedViT_Tiny")
