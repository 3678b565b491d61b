"""`tests/run_backends.py`: how a stream part selects its tests."""

import os
import shutil

import pytest

from tests.conftest import on_one_backend
from tests.run_backends import check_parts, main, parse_part, with_shared_jax_cache

pytestmark = on_one_backend("the runner is plain Python around pytest")


def test_a_part_selects_folders_or_all_but_them():
    assert parse_part("tensorflow") == ("tensorflow", [])
    assert parse_part("jax:tests/cli") == ("jax", ["tests/cli"])
    assert parse_part("jax:!tests/cli,tests/training") == (
        "jax", ["--ignore=tests/cli", "--ignore=tests/training"])


@pytest.mark.parametrize("parts", [
    ["tensorflow", "jax:tests/cli", "jax:!tests/cli", "torch"],
    ["tensorflow", "jax", "torch"],
])
def test_every_backend_runs_its_suite_once(parts):
    check_parts(parts)


@pytest.mark.parametrize("parts", [
    ["jax:tests/cli"],                        # the rest of JAX never runs
    ["jax:tests/cli", "jax:!tests/data"],     # different folders: some run twice, some never
    ["jax", "jax:tests/cli"],                 # tests/cli twice
    ["jax:!tests/cli", "jax:!tests/cli"],
])
def test_a_suite_run_twice_or_left_out_is_refused(parts, capsys):
    with pytest.raises(ValueError, match="exactly once"):
        check_parts(parts)
    assert main([" ".join(parts), "--", "-q"]) == 2
    assert "exactly once" in capsys.readouterr().err


def test_the_jax_parts_share_one_compilation_cache(tmp_path):
    env, folder = with_shared_jax_cache({"PATH": "/bin"})
    try:
        assert env["JAX_COMPILATION_CACHE_DIR"] == folder and env["PATH"] == "/bin"
        assert env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] == "0"
        assert os.path.isdir(folder)
    finally:
        shutil.rmtree(folder)
    # A cache the caller chose is kept, and nothing is created.
    env, folder = with_shared_jax_cache({"JAX_COMPILATION_CACHE_DIR": str(tmp_path)})
    assert folder is None and env == {"JAX_COMPILATION_CACHE_DIR": str(tmp_path)}
