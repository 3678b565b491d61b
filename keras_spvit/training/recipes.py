"""The papers' training recipes as named, overridable settings.

A `Recipe` holds every knob of the optimizer, schedule, loss and
augmentation; `get_recipe(name, **overrides)` returns a named one with any
field replaced. Learning rates follow the linear scaling rule: the recipe
states a rate at a reference batch size and `Recipe.learning_rate(batch)`
scales it.
"""

import dataclasses


@dataclasses.dataclass(frozen=True)
class Recipe:
    """Everything that defines how a model is trained.

    Args:
        name: str.
        base_learning_rate: float. Peak rate at `reference_batch_size`.
        reference_batch_size: int. Batch size `base_learning_rate` is for.
        weight_decay: float. Decoupled (AdamW); none on biases, norms and
            embeddings.
        epochs: int. Cosine length including warm-up (cool-down comes after).
        warmup_epochs: float. Linear warm-up from `warmup_learning_rate`.
        warmup_learning_rate: float.
        min_learning_rate: float. End of the cosine and the cool-down rate.
        cooldown_epochs: int. Extra epochs at `min_learning_rate`.
        layer_decay: optional float in (0, 1]. Layer-wise learning-rate decay
            (fine-tuning).
        label_smoothing: float.
        ema_momentum: optional float. Exponential moving average of the
            weights (validation and the saved model use it).
        clip_norm: optional float. Global gradient-norm clipping.
        drop_path_rate: optional float. Overrides the builder's default.
        token_label_weight: optional float. Train both heads with the
            token-labeling loss, the aux loss weighted by this (needs a
            classifier with `return_dense=True`); `None` trains the
            combined logits with soft-target cross-entropy.
        crop_scale, crop_ratio: random-resized-crop ranges.
        horizontal_flip: bool.
        randaugment: optional timm RandAugment policy string, e.g.
            `"rand-m9-mstd0.5-inc1"` (2 ops, magnitude 9 of 10, magnitude
            noise std 0.5, the "increasing" op list); see
            `keras_spvit.data.rand_augment.parse_policy`.
        random_erasing: float. Probability per image (timm's `--reprob`).
        erasing_mode: `"pixel"`, `"rand"` or `"const"` (timm's `--remode`).
        erasing_count: int. Up to this many boxes (timm's `--recount`).
        mixup_alpha, cutmix_alpha: floats; 0 switches each off.
        mix_token: bool. LV-ViT's MixToken (token-labeling models).

    Example:

    >>> recipe = get_recipe("spvit", epochs=30)
    >>> recipe.learning_rate(batch_size=256)
    0.0004
    """

    name: str
    base_learning_rate: float
    reference_batch_size: int = 1024
    weight_decay: float = 0.05
    epochs: int = 300
    warmup_epochs: float = 5
    warmup_learning_rate: float = 1e-6
    min_learning_rate: float = 1e-5
    cooldown_epochs: int = 10
    layer_decay: float | None = None
    label_smoothing: float = 0.1
    ema_momentum: float | None = None
    clip_norm: float | None = None
    drop_path_rate: float | None = None
    token_label_weight: float | None = None
    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    horizontal_flip: bool = True
    randaugment: str | None = "rand-m9-mstd0.5-inc1"
    random_erasing: float = 0.25
    erasing_mode: str = "pixel"
    erasing_count: int = 1
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    mix_token: bool = False

    def learning_rate(self, batch_size):
        """Peak learning rate for a global `batch_size` (linear scaling)."""
        return self.base_learning_rate * batch_size / self.reference_batch_size

    def replace(self, **overrides):
        """A copy with fields replaced; unknown names raise."""
        fields = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - fields)
        if unknown:
            raise ValueError(f"Unknown recipe fields {unknown}. Expected some of {sorted(fields)}.")
        return dataclasses.replace(self, **overrides)

    def to_dict(self):
        return dataclasses.asdict(self)


# SP-ViT / LV-ViT, ImageNet from scratch (shared/spec/SP-VIT.md): AdamW
# 1.6e-3 @ 1024, wd 0.05, 5 warm-up epochs from 1e-6, cosine to 1e-5,
# 300 + 10 epochs, EMA 0.99992, smoothing 0.1, RandAugment
# rand-m9-mstd0.5-inc1 (the release's main.py default; its L script adds
# n3), erasing 0.25 pixel mode, no MixUp/CutMix but MixToken, token-label
# weight 1.0.
_SPVIT = Recipe(
    name="spvit",
    base_learning_rate=1.6e-3,
    reference_batch_size=1024,
    ema_momentum=0.99992,
    token_label_weight=1.0,
    mix_token=True,
)
# Refiner (shared/spec/REFINER.md; DeiT's scripts): AdamW 5e-4 at batch
# 512, wd 0.05, 300 epochs, 5 warm-up, RandAugment rand-m9-mstd0.5-inc1
# (DeiT's), MixUp 0.8, CutMix 1.0, smoothing 0.1, erasing 0.25, EMA (DeiT's
# 0.99996).
_REFINER = Recipe(
    name="refiner",
    base_learning_rate=5e-4,
    reference_batch_size=512,
    ema_momentum=0.99996,
    mixup_alpha=0.8,
    cutmix_alpha=1.0,
)

RECIPES = {
    "spvit": _SPVIT,
    # SP-ViT-L: 6e-4 at batch 800, three RandAugment ops.
    "spvit_l": _SPVIT.replace(
        name="spvit_l", base_learning_rate=6e-4, reference_batch_size=800,
        randaugment="rand-n3-m9-mstd0.5-inc1",
    ),
    # Fine-tuning at 384 px from the 224 weights: lr 5e-6, wd 1e-8, no warm-up.
    "spvit_finetune_384": _SPVIT.replace(
        name="spvit_finetune_384",
        base_learning_rate=5e-6,
        weight_decay=1e-8,
        epochs=30,
        warmup_epochs=0,
        min_learning_rate=5e-6,
        cooldown_epochs=0,
    ),
    "refiner": _REFINER,
    # Fine-tuning a pretrained model on a new, smaller task (BEiT-style).
    "finetune": _REFINER.replace(
        name="finetune",
        ema_momentum=None,
        epochs=30,
        warmup_epochs=2,
        cooldown_epochs=0,
        layer_decay=0.75,
    ),
    # The bundled 8x8 digits upsampled to 32 px on a CPU: short, no
    # geometric augmentation that would cut off strokes.
    "digits": Recipe(
        name="digits",
        base_learning_rate=1e-3,
        reference_batch_size=64,
        epochs=30,
        warmup_epochs=2,
        cooldown_epochs=0,
        crop_scale=(0.7, 1.0),
        horizontal_flip=False,
        randaugment=None,
        random_erasing=0.0,
    ),
}

def get_recipe(name, **overrides):
    """A named recipe from `RECIPES`, with any field overridden.

    Args:
        name: str or a `Recipe` (returned with the overrides applied).
        **overrides: `Recipe` fields.

    Returns:
        A `Recipe`.

    Example:

    >>> get_recipe("refiner", epochs=100).epochs
    100
    """
    if isinstance(name, Recipe):
        return name.replace(**overrides)
    if name not in RECIPES:
        raise ValueError(f"Unknown recipe {name!r}. Expected one of {sorted(RECIPES)}.")
    return RECIPES[name].replace(**overrides)
