"""Model builders of the SP-ViT family: a generic one and one per variant."""

import functools

from keras_spvit.zoo.builders import generic_builder, named_builder
from keras_spvit.zoo.families import SPVIT


@generic_builder(SPVIT)
def SPViT(
    embed_dim=None,
    depth=None,
    num_heads=None,
    mlp_ratio=3.0,
    spatial_prior_blocks=0,
    stem="4_2",
    skip_lam=1.0,
    num_classes=1000,
    image_shape=(224, 224, 3),
    drop_path_rate=0.0,
    name=None,
    **kwargs,
):
    """Builds an `SPViTImageClassifier` from hyper-parameters.

    Args:
        embed_dim: int, required. Token width, divisible by `num_heads`.
        depth: int, required. Number of blocks.
        num_heads: int, required. Attention heads.
        mlp_ratio: float. MLP expansion.
        spatial_prior_blocks: int. Leading blocks with spatial-prior attention.
        stem: `"4_2"`, `"4_2_128"` or `"patch"`.
        skip_lam: float. Residual scaling.
        num_classes: int. Classes of both heads.
        image_shape: `(height, width, channels)` of the inputs.
        drop_path_rate: float. Final stochastic-depth rate.
        name: optional model name (default `"spvit"`; the backbone is
            named `name + "_backbone"`).
        **kwargs: any other `SPViTBackbone` argument (`class_token_block`,
            `patch_size`, `dropout`, `dtype`, ...) or `SPViTImageClassifier`
            argument (`aux_weight`, `return_dense`, `head_dtype`,
            `preprocessor`); or
            `weights`: a preset, `.weights.h5` file or official checkpoint
            loaded into exactly this architecture, `num_classes` and
            `image_shape` (new heads, resampled positions where they differ).

    Every argument is checked before anything is built; a `ValueError`
    names the argument at fault.

    Returns:
        An `SPViTImageClassifier`; its backbone is `model.backbone`.

    Example:

    >>> model = SPViT(embed_dim=64, depth=4, num_heads=2, spatial_prior_blocks=2,
    ...               num_classes=10, image_shape=(64, 64, 3))
    """


_named = functools.partial(named_builder, SPVIT, SPViT)
SPViT_S = _named("SPViT_S")
SPViT_M = _named("SPViT_M")
_SPViT_L_Paper = _named("SPViT_L")
SPViT_L_Released = _named("SPViT_L_Released")


def SPViT_L(num_classes=None, image_shape=None, released=False, weights=None, **kwargs):
    """SP-ViT-L: spatial priors in blocks 0-21, as the paper describes it.

    Args:
        num_classes: int. Classes of both heads; defaults to the weights'
            class count, or 1000.
        image_shape: `(height, width, channels)`; defaults to the weights'
            resolution, or 224 px.
        released: bool. If `True`, build L as the released code does (and as
            its checkpoint holds): no spatial-prior block, the class token
            entering before block 22 (same as `SPViT_L_Released`).
        weights: `None`, a preset name, folder or handle, a `.weights.h5`
            file or an official checkpoint (see `SPViT_S`).
        **kwargs: overrides of any `SPViT` argument.

    Returns:
        An `SPViTImageClassifier`.

    Example:

    >>> model = SPViT_L(num_classes=10, released=True)
    """
    builder = SPViT_L_Released if released else _SPViT_L_Paper
    return builder(num_classes=num_classes, image_shape=image_shape, weights=weights, **kwargs)


LVViT_S = _named("LVViT_S")
LVViT_M = _named("LVViT_M")
LVViT_L = _named("LVViT_L")
SPViT_Tiny = _named("SPViT_Tiny")
LVViT_Tiny = _named("LVViT_Tiny")
