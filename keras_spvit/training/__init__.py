"""Training: recipes, optimizer, schedules, losses, callbacks, data parallelism."""

from keras_spvit.training.callbacks import Throughput
from keras_spvit.training.distribution import data_parallel, distribute_input
from keras_spvit.training.losses import (
    SoftTargetCrossEntropy,
    TokenLabelCrossEntropy,
    pack_top_k,
)
from keras_spvit.training.optimizers import (
    ParamGroupAdamW,
    layer_decay_multipliers,
    no_weight_decay_paths,
)
from keras_spvit.training.recipes import RECIPES, Recipe, get_recipe
from keras_spvit.training.schedules import warmup_cosine
from keras_spvit.training.trainer import compile_for_training, fit

__all__ = [
    "RECIPES",
    "ParamGroupAdamW",
    "Recipe",
    "SoftTargetCrossEntropy",
    "Throughput",
    "TokenLabelCrossEntropy",
    "compile_for_training",
    "data_parallel",
    "distribute_input",
    "fit",
    "get_recipe",
    "layer_decay_multipliers",
    "no_weight_decay_paths",
    "pack_top_k",
    "warmup_cosine",
]
