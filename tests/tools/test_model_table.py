"""The README's model table: complete, correctly rendered, and up to date."""

import io
import math
from pathlib import Path

import pytest

import keras_spvit
from keras_spvit.zoo.families import FAMILIES
from tests.conftest import BACKEND
from tools import model_table

README = Path(__file__).parents[2] / "README.md"

ROWS = [
    {
        "builder": "SPViT_S",
        "variant": "spvit_s",
        "image_size": (224, 224),
        "params": 26234468,
        "gmacs": 6.5491,
        "top1_224": 83.9,
        "top1_384": 85.1,
        "official_weights": "converts (SP-ViT release, 224, 384 px)",
    },
    {
        "builder": "LVViT_L",
        "variant": "lvvit_l",
        "image_size": (224, 224),
        "params": 150206288,
        "gmacs": 34.66,
        "top1_224": None,
        "top1_384": 86.2,
        "official_weights": "none published",
    },
    {
        "builder": "PSViT_Tiny_CPU",
        "variant": "psvit_tiny_cpu",
        "image_size": (32, 48),
        "params": 738064,
        "gmacs": 0.015412,
        "top1_224": None,
        "top1_384": None,
        "official_weights": "none published",
    },
]


def test_render_markdown_formats_rows():
    expected = """\
| builder | variant | input px | params | GMACs | paper top-1 224 / 384 | official checkpoint |
|---|---|---:|---:|---:|---|---|
| `SPViT_S` | `spvit_s` | 224 | 26,234,468 | 6.55 | 83.9 / 85.1 | converts (SP-ViT release, 224, 384 px) |
| `LVViT_L` | `lvvit_l` | 224 | 150,206,288 | 34.7 | – / 86.2 | none published |
| `PSViT_Tiny_CPU` | `psvit_tiny_cpu` | 32x48 | 738,064 | 0.0154 | – | none published |"""
    assert model_table.render_markdown(ROWS) == expected


def test_every_variant_of_every_family_is_listed():
    # That the family table holds every variant table: tests/zoo/test_families.py.
    listed = [entry.variant for entry in model_table.model_entries()]
    expected = [variant for family in FAMILIES for variant in family.variants]
    assert listed == expected
    assert {"spvit_s", "refined_vit_l", "psvit_tiny_cpu"} <= set(listed)


def test_entries_name_the_public_builder_of_their_row():
    entries = {entry.variant: entry for entry in model_table.model_entries()}
    assert entries["spvit_s"].builder == "SPViT_S"
    assert entries["spvit_l"].builder == "SPViT_L"
    assert entries["spvit_l_released"].builder == "SPViT_L_Released"
    assert entries["psvit_tiny_cpu"].builder == "PSViT_Tiny_CPU"
    for entry in entries.values():
        assert entry.build is getattr(keras_spvit, entry.builder), entry.variant


def test_official_weights_column():
    entries = {entry.variant: entry.official_weights for entry in model_table.model_entries()}
    assert {variant for family in FAMILIES for variant in family.releases} <= set(entries)
    assert entries["spvit_s"] == "converts (SP-ViT release, 224, 384 px)"
    assert entries["spvit_l_released"] == "converts (SP-ViT release, 224, 384 px)"
    assert entries["spvit_l"] == "none published"  # the release is the released layout
    # LV-ViT's own code has no PosCNN: our mapping rejects its checkpoints.
    assert entries["lvvit_s"] == "layout not mapped (TokenLabeling release, 224, 384 px)"
    assert entries["refined_vit_l"] == "converts (Refiner_ViT release, 448 px)"
    assert entries["refined_vit_s"] == "none published"
    assert entries["psvit_2d_tiny"] == "none published"


def test_measure_builds_and_counts_one_variant():
    import keras

    entry = next(e for e in model_table.model_entries() if e.variant == "spvit_tiny")
    row = model_table.measure(entry)
    model = keras_spvit.SPViT_Tiny(num_classes=1000)
    assert row["image_size"] == (32, 32)
    assert row["params"] == sum(math.prod(w.shape) for w in model.trainable_weights)
    # Plumbing: the row reports the counter's figure (the counter itself is
    # checked against hand counts and published figures in tests/analysis/test_flops.py).
    assert row["gmacs"] == keras_spvit.count_macs(model) / 1e9
    assert (row["top1_224"], row["top1_384"], row["official_weights"]) == (
        None,
        None,
        "none published",
    )
    del model
    keras.backend.clear_session()


def write_readme(path, region):
    path.write_text(
        f"# Title\n\nBefore.\n\n{model_table.START_MARKER}\n{region}"
        f"{model_table.END_MARKER}\n\nAfter.\n"
    )


def test_update_readme_rewrites_only_the_region(tmp_path):
    readme = tmp_path / "README.md"
    write_readme(readme, "| stale |\n")
    region = model_table.render_region(ROWS)
    out = io.StringIO()
    assert not model_table.update_readme(readme, region, check=True, out=out)
    assert "-| stale |" in out.getvalue() and "+| `SPViT_S` |" in out.getvalue()
    assert "| stale |" in readme.read_text()  # --check writes nothing

    assert not model_table.update_readme(readme, region)
    text = readme.read_text()
    assert text == (
        f"# Title\n\nBefore.\n\n{model_table.START_MARKER}\n{region}"
        f"{model_table.END_MARKER}\n\nAfter.\n"
    )
    assert model_table.update_readme(readme, region, check=True)


def test_update_readme_needs_both_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"{model_table.START_MARKER}\nno end\n")
    with pytest.raises(ValueError, match="model-table:end"):
        model_table.update_readme(readme, "x\n")


def test_main_check_fails_on_a_stale_readme(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(model_table, "model_rows", lambda: ROWS)
    readme = tmp_path / "README.md"
    write_readme(readme, "| stale |\n")
    assert model_table.main(["--check", "--readme", str(readme)]) == 1
    assert "+| `LVViT_L` |" in capsys.readouterr().out
    assert model_table.main(["--readme", str(readme)]) == 0
    assert model_table.main(["--check", "--readme", str(readme)]) == 0


@pytest.mark.large
@pytest.mark.skipif(BACKEND != "tensorflow", reason="backend-independent; built once")
def test_readme_table_is_up_to_date():
    region = model_table.render_region(model_table.model_rows())
    out = io.StringIO()
    up_to_date = model_table.update_readme(README, region, check=True, out=out)
    assert up_to_date, (
        f"The README's model table is stale; run `{model_table.COMMAND}`.\n{out.getvalue()}"
    )
