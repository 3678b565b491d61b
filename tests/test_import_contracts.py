"""The package's import direction (pyproject.toml `[tool.importlinter]`) holds.

utils <- layers <- models <- conversion <- zoo <- workflows <- cli; data/
and training/ never import models, conversion or zoo; analysis/ imports only
layers and utils. The second test shows the check fails on a bad import.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("importlinter")

ROOT = Path(__file__).parents[1]


def lint_imports(root):
    """`lint-imports` on the package under `root`: `(exit code, output)`."""
    script = (
        "import sys; from importlinter.cli import lint_imports; "
        f"sys.exit(lint_imports(config_filenames=({str(root / 'pyproject.toml')!r},), "
        "no_cache=True, no_logo=True))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    return result.returncode, result.stdout + result.stderr


def test_import_contracts_are_kept():
    code, output = lint_imports(ROOT)
    assert code == 0, output
    assert "0 broken" in output


@pytest.mark.parametrize(
    "module, bad_import, contract",
    [
        ("keras_spvit/data/sources.py", "import keras_spvit.models.presets", "data/ and training/"),
        ("keras_spvit/models/naming.py", "import keras_spvit.zoo.families", "One-way layers"),
        ("keras_spvit/analysis/flops.py", "import keras_spvit.models.naming", "analysis/"),
    ],
)
def test_a_bad_import_breaks_a_contract(tmp_path, module, bad_import, contract):
    shutil.copytree(ROOT / "keras_spvit", tmp_path / "keras_spvit",
                    ignore=shutil.ignore_patterns("__pycache__", "presets", "*.npz"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    path = tmp_path / module
    path.write_text(path.read_text() + f"\n\ndef _bad():\n    {bad_import}\n")
    code, output = lint_imports(tmp_path)
    assert code != 0, output
    assert "1 broken" in output and "BROKEN" in output
    assert contract in output
