"""Recipes are data: every augmentation field of a recipe reaches `TrainAugment`."""

import pytest

from keras_spvit.cli.train import train_augment
from keras_spvit.training.recipes import RECIPES, get_recipe


def _expected(recipe):
    return {
        "scale": tuple(recipe.crop_scale),
        "ratio": tuple(recipe.crop_ratio),
        "hflip": 0.5 if recipe.horizontal_flip else 0.0,
        "randaugment": recipe.randaugment,
        "random_erasing": recipe.random_erasing,
        "erasing_mode": recipe.erasing_mode,
        "erasing_count": recipe.erasing_count,
        "mixup_alpha": recipe.mixup_alpha,
        "cutmix_alpha": recipe.cutmix_alpha,
        # Smoothing is the loss's (recipe.label_smoothing there), never smoothed twice.
        "label_smoothing": 0.0,
    }


def _actual(augment):
    config = augment.get_config()
    return {key: tuple(config[key]) if key in ("scale", "ratio") else config[key]
            for key in _expected(get_recipe("digits"))}


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_each_named_recipe_reaches_train_augment(name):
    recipe = get_recipe(name)
    assert _actual(train_augment(recipe, seed=0)) == _expected(recipe)


def test_every_field_is_carried_not_defaulted():
    # Values unlike any recipe's and any TrainAugment default: a field the mapping
    # drops or hard-codes shows here.
    recipe = get_recipe(
        "spvit", crop_scale=(0.3, 0.9), crop_ratio=(0.5, 2.0), horizontal_flip=False,
        randaugment="rand-m5-n1", random_erasing=0.6, erasing_mode="rand", erasing_count=3,
        mixup_alpha=0.3, cutmix_alpha=0.7, label_smoothing=0.2,
    )
    expected = _expected(recipe)
    assert expected["hflip"] == 0.0 and expected["erasing_count"] == 3
    assert _actual(train_augment(recipe, seed=0)) == expected
    defaults = _actual(train_augment(get_recipe("spvit"), seed=0))
    assert all(defaults[key] != value for key, value in expected.items()
               if key != "label_smoothing"), defaults

