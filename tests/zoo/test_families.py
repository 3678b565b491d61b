"""The family table is the one list of families: builders, converters, CLI and tables agree with it."""

import importlib
import pkgutil

import pytest

import keras_spvit
import keras_spvit.models
from keras_spvit.cli import common
from keras_spvit.zoo import families
from keras_spvit.zoo.convert import generic_builder
from keras_spvit.zoo.families import FAMILIES


def test_every_variant_table_under_models_is_a_family():
    tables = {}
    for family in pkgutil.iter_modules(keras_spvit.models.__path__):
        if not family.ispkg:
            continue
        package = importlib.import_module(f"keras_spvit.models.{family.name}")
        for module in pkgutil.iter_modules(package.__path__):
            if module.name.endswith("_variants"):
                loaded = importlib.import_module(f"{package.__name__}.{module.name}")
                tables.update(
                    (name, value) for name, value in vars(loaded).items()
                    if name.endswith("_VARIANTS") and isinstance(value, dict)
                )
    assert {f.variants_table: id(f.variants) for f in FAMILIES} == {
        name: id(table) for name, table in tables.items()
    }


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_named_builders_are_public_and_build_their_row(family):
    assert family.backbone_cls.family == family.name
    assert family.classifier_cls.backbone_cls is family.backbone_cls
    assert getattr(keras_spvit, family.generic) is generic_builder(family)
    for name, (variant, summary) in family.builders.items():
        assert variant in family.variants, name
        assert name in keras_spvit.__all__ and callable(getattr(keras_spvit, name)), name
        assert summary and summary.endswith("."), name
    assert set(family.releases) <= set(family.variants)


def test_a_named_builder_carries_its_rows_docstring():
    builder = keras_spvit.RefinedViT_Tiny
    assert builder.__name__ == "RefinedViT_Tiny"
    assert "the 'refined_vit_tiny' row" in builder.__doc__
    assert builder.__doc__.startswith(families.REFINED_VIT.builders["RefinedViT_Tiny"][1])


@pytest.mark.parametrize("family", [f for f in FAMILIES if f.converter], ids=lambda f: f.name)
def test_converters_name_their_family(family):
    assert family.converter.backbone_cls is family.backbone_cls
    # The rest of the converter interface `convert_state` reads.
    assert callable(family.converter.weight_map)
    hint = family.converter.architecture_hint
    assert hint is None or callable(hint)
    assert family.ports.count("/") == 1


def test_cli_model_names_are_the_tables_builders():
    assert sorted(common.builders()) == sorted(families.builder_names())
    assert {"SPViT", "SPViT_S", "SPViT_L", "RefinedViT_Tiny", "PSViT_Tiny_CPU"} <= set(
        common.builders()
    )


def test_family_lookups():
    assert families.family_of_variant("lvvit_m") is families.SPVIT
    assert families.family_of_model(keras_spvit.PSViT_Tiny_CPU(num_classes=2)) is families.PSVIT
    with pytest.raises(ValueError, match="Unknown variant 'spvit_xl'"):
        families.family_of_variant("spvit_xl")


def test_compile_false_builds_uncompiled_even_without_variable_values():
    # keras-hub's `Task(compile=False)` reaches the classifier (`assemble`, shared by every
    # family): `tools/model_table.py` builds every variant this way, its variables left
    # without values (all families: tests/tools/test_model_table.py).
    import keras

    build = keras_spvit.SPViT_Tiny
    assert build(num_classes=3).compiled
    model = build(num_classes=3, compile=False)
    assert not model.compiled
    shapes = [tuple(w.shape) for w in model.weights]
    with keras.StatelessScope(initialize_variables=False):
        deferred = build(num_classes=3, compile=False)
    assert [tuple(w.shape) for w in deferred.weights] == shapes
    with pytest.raises(ValueError, match="Unknown argument 'compiled'"):
        build(num_classes=3, compiled=False)
