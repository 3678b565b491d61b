"""Runs the suite once per Keras backend, in parallel streams (what `make test` calls).

    python tests/run_backends.py "tensorflow jax:tests/training" "jax:!tests/training torch" \
        -- -m "not slow"

Each argument before `--` is a stream: its parts run one after the other, the
streams side by side (CI has 2 cores). A part is a backend (`jax`: the whole
suite), or a backend and test folders, to balance the streams:
`jax:tests/training` runs only that folder on JAX, `jax:!tests/training` all
but it (comma-separated folders). Each part's pytest output is printed whole
when it ends, under a `=== KERAS_BACKEND=... ===` line; the exit code is the
first failing part's, or 0. The parts on JAX share one persistent compilation cache
(tests/conftest.py explains why it is safe), so a part that starts after another
finished reuses its compiled programs. Every backend must run every test once: a part
list that leaves a folder out, or runs one twice, is refused.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time


def parse_part(part):
    """`(backend, pytest arguments selecting its tests)` of a stream part.

    Example:

    >>> parse_part("jax:!tests/training,tests/cli")
    ('jax', ['--ignore=tests/training', '--ignore=tests/cli'])
    """
    backend, _, folders = part.partition(":")
    if not folders:
        return backend, []
    if folders.startswith("!"):
        return backend, [f"--ignore={f}" for f in folders[1:].split(",")]
    return backend, folders.split(",")


def check_parts(parts):
    """Raises `ValueError` unless each backend's parts select its suite exactly once:
    the whole suite alone, or `B:F` and `B:!F` with the same folders `F`."""
    by_backend = {}
    for part in parts:
        backend, _, folders = part.partition(":")
        by_backend.setdefault(backend, []).append(folders)
    for backend, selections in by_backend.items():
        whole = selections == [""]
        split = (len(selections) == 2 and {s.startswith("!") for s in selections} == {True, False}
                 and len({s.lstrip("!") for s in selections}) == 1)
        if not (whole or split):
            raise ValueError(f"Backend {backend!r} must run its suite exactly once: the whole "
                             f"suite, or 'B:F' and 'B:!F'. Received: {selections}")


def with_shared_jax_cache(environ):
    """`(environment, new cache folder or None)`: `environ` with one persistent JAX
    compilation cache for every part, unless it names one already.

    Example:

    >>> env, folder = with_shared_jax_cache({})
    >>> env["JAX_COMPILATION_CACHE_DIR"] == folder
    True
    """
    if "JAX_COMPILATION_CACHE_DIR" in environ:
        return dict(environ), None
    folder = tempfile.mkdtemp(prefix="keras_spvit_jax_cache_")
    return dict(environ, JAX_COMPILATION_CACHE_DIR=folder,
                JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0"), folder


def run_stream(parts, pytest_args, results, lock, environ):
    for part in parts:
        backend, selection = parse_part(part)
        env = dict(environ, KERAS_BACKEND=backend)
        start = time.perf_counter()
        with tempfile.TemporaryFile("w+") as log:
            code = subprocess.call([sys.executable, "-m", "pytest", *pytest_args, *selection],
                                   env=env, stdout=log, stderr=subprocess.STDOUT)
            log.seek(0)
            output = log.read()
        minutes = (time.perf_counter() - start) / 60
        with lock:
            print(f"=== KERAS_BACKEND={part} (exit {code}, {minutes:.1f} min) ===", flush=True)
            print(output, flush=True)
            results[part] = code


def main(argv):
    split = argv.index("--") if "--" in argv else len(argv)
    streams = [stream.split() for stream in argv[:split]]
    pytest_args = argv[split + 1:]
    if not streams or not all(streams):
        print("usage: run_backends.py STREAM [STREAM ...] -- PYTEST_ARGS "
              "(a stream: backends separated by spaces)", file=sys.stderr)
        return 2
    try:
        check_parts([part for stream in streams for part in stream])
    except ValueError as e:
        print(f"run_backends.py: {e}", file=sys.stderr)
        return 2
    env, jax_cache = with_shared_jax_cache(os.environ)
    results, lock = {}, threading.Lock()
    threads = [threading.Thread(target=run_stream, args=(s, pytest_args, results, lock, env))
               for s in streams]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        if jax_cache:
            shutil.rmtree(jax_cache, ignore_errors=True)
    order = [backend for stream in streams for backend in stream]
    codes = [results.get(backend, 1) for backend in order]  # a stream that died: failed
    print("Backends: " + ", ".join(f"{b} {'passed' if c == 0 else 'FAILED'}"
                                   for b, c in zip(order, codes)))
    return next((c for c in codes if c), 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
