import atexit
import gc
import json
import os
import shutil
import socket
import tempfile
from pathlib import Path

# JAX: one persistent compilation cache for the test session, set before JAX is imported
# and inherited by every subprocess it starts (resume, multi-worker, CLI runs), so an XLA
# program compiled once (eager primitives included) is not compiled again in the next
# process or for the next identical model. Safe: an entry is keyed on the program's HLO,
# the compile options, the devices and the jax/jaxlib versions, so a hit is the executable
# XLA would build anyway; the folder is new for each session and removed at its end.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _jax_cache = tempfile.mkdtemp(prefix="keras_spvit_jax_cache_")
    os.environ.update(JAX_COMPILATION_CACHE_DIR=_jax_cache,
                      JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                      JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    atexit.register(shutil.rmtree, _jax_cache, ignore_errors=True)

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures"
BACKEND = keras.backend.backend()
# Where a test whose claim no backend can change runs (tf.data-only tests run on
# TensorFlow, which they need): torch, whose eager runs of a few steps of tiny models
# take 2-9x less time than TensorFlow's or JAX's here; longer runs gain nothing
# (tests/README.md, "One backend").
ONE_BACKEND = "torch"

if BACKEND == "jax":
    from tests import jax_initializers

    jax_initializers.install()  # bit-identical initial weights, fewer compiles


def on_one_backend(why):
    """Runs the marked test on `ONE_BACKEND` only.

    Args:
        why: why the backend cannot change what the test proves, and which
            test covers the backend-dependent part on every backend.

    Example:

    >>> @on_one_backend("tuner wiring; PSViT trains on every backend in test_model_contract.py")
    ... def test_tuner(): ...
    """
    return pytest.mark.skipif(BACKEND != ONE_BACKEND, reason=f"backend-independent: {why}")


def to_numpy(x):
    return keras.ops.convert_to_numpy(x)


def free_ports(count):
    """`count` TCP ports free on localhost (for the workers of a multi-process test)."""
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def load_fixture(name):
    """A reference `.npz` of the official code: arrays, meta and state_dict."""
    with np.load(FIXTURES / f"{name}.npz") as z:
        arrays = {k: z[k] for k in z.files if k != "meta" and not k.startswith("sd/")}
        state_dict = {k[3:]: z[k] for k in z.files if k.startswith("sd/")}
        meta = json.loads(str(z["meta"]))
    return arrays, state_dict, meta


def load_benchmark(name):
    """`benchmarks/<name>.py` as a module (benchmarks/ is not a package), registered in
    `sys.modules` so that AutoGraph can read the source of its functions."""
    import importlib.util
    import sys

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{name}_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def bf16_matmul_error_factor():
    """How much more error this engine's bfloat16 matmul adds than rounding the float32
    product to bfloat16 once: mean |error| over the once-rounded mean |error|, at least 1.

    1.0 on JAX and torch, and on TensorFlow on CPUs with native bfloat16 (AVX512-BF16),
    where the bounds of the bfloat16 tests were measured; TensorFlow on CPUs without it
    (AVX2 only) gives ~2 at every depth 16-1,024 (its kernel, not ours): a test's
    bfloat16 error bound, measured on native hardware, is scaled by this factor.

    Example:

    >>> assert error <= 0.016 * bf16_matmul_error_factor()
    """
    global _BF16_FACTOR
    if _BF16_FACTOR is None:
        ops = keras.ops
        rng = np.random.default_rng(0)
        a, b = (ops.cast(rng.standard_normal(shape).astype("float32"), "bfloat16")
                for shape in ((64, 64), (64, 64)))
        exact = ops.matmul(ops.cast(a, "float32"), ops.cast(b, "float32"))
        once = ops.cast(ops.cast(exact, "bfloat16"), "float32")
        got = ops.cast(ops.matmul(a, b), "float32")
        error = lambda y: float(ops.mean(ops.abs(y - exact)))  # noqa: E731
        _BF16_FACTOR = max(1.0, error(got) / error(once))
    return _BF16_FACTOR


_BF16_FACTOR = None


def nhwc(images):
    return np.ascontiguousarray(images.transpose(0, 2, 3, 1))


@pytest.fixture(autouse=True, scope="module")
def _unfreeze_after_module():
    """Gives each module's frozen objects back to the collector when it ends (see
    `_fresh_keras_state`), so what died since is freed: one full collection per module."""
    yield
    gc.unfreeze()


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    keras.config.set_dtype_policy("float32")
    # Python's full collections walk every live object, and a long session holds
    # millions (earlier tests' traced functions, caches, session fixtures): building
    # a model late in a TensorFlow session spent 71% of its time in the collector.
    # So each test starts with what is alive frozen (`gc.freeze`, after freeing the
    # last test's garbage), and its collections walk only what it creates.
    gc.collect()
    gc.freeze()
    yield
    keras.config.set_dtype_policy("float32")
    keras.utils.clear_session(free_memory=False)


@pytest.fixture
def fast_jax_compiles():
    """JAX: this test's XLA programs compiled with most optimizations off.

    For a test that compares two runs of the same program and pays mostly for JAX's
    first compiles of its eager primitives (op by op, each a program of its own): the
    compiles cost less, the numbers of both runs move alike (float32 rounding), and
    what the test compares stays the same. Afterwards the flag is restored and JAX's
    in-memory caches cleared, so no later test runs an executable compiled here (the
    persistent cache keys on the compile options, so it keeps the two apart).
    Other backends: nothing.
    """
    if BACKEND != "jax":
        yield
        return
    import jax

    jax.config.update("jax_disable_most_optimizations", True)
    try:
        yield
    finally:
        jax.config.update("jax_disable_most_optimizations", False)
        jax.clear_caches()


@pytest.fixture
def zero_initializers(monkeypatch):
    """Every random initializer gives zeros during the test, for tests of shapes only
    (parameter counts, weight maps of full-size models): drawing SPViT_L's 150 M
    random weights took 4 of its 6.3 s build on TensorFlow."""
    from keras.src import backend

    def zeros(shape, *args, dtype=None, **kwargs):
        return keras.ops.zeros(shape, dtype or keras.config.floatx())

    for name in ("normal", "uniform", "truncated_normal"):
        monkeypatch.setattr(backend.random, name, zeros)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """The one shared tiny training run (`keras-spvit train`, SPViT 16 px on digits, 2
    epochs): its folder. Every CLI test that needs a trained model reads it."""
    from keras_spvit.cli import main
    from tests.cli.test_train import _train_args

    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(_train_args(out, epochs=2)) == 0
    return out


@pytest.fixture(scope="session")
def int8_digits_preset():
    """The `spvit_tiny_digits` preset after Keras' `model.quantize("int8")`, quantized
    once per session. Shared: tests read it (predict, save, export), never change it."""
    import keras_spvit

    model = keras_spvit.SPViTImageClassifier.from_preset("spvit_tiny_digits")
    model.quantize("int8")
    return model


def pytest_report_header(config):
    return f"keras {keras.__version__}, backend {BACKEND}, OMP threads {os.environ.get('OMP_NUM_THREADS')}"
