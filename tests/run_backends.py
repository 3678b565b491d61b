"""Runs the suite once per Keras backend, in parallel streams (what `make test` calls).

    python tests/run_backends.py "tensorflow" "jax torch" -- -m "not slow"

Each argument before `--` is a stream: its backends run one after the other,
the streams side by side (CI has 2 cores; the TensorFlow suite takes about as
long as the JAX and torch suites together). Each backend's pytest output is
printed whole when it ends, under a `=== KERAS_BACKEND=... ===` line; the exit
code is the first failing backend's, or 0.
"""

import os
import subprocess
import sys
import tempfile
import threading
import time


def run_stream(backends, pytest_args, results, lock):
    for backend in backends:
        env = dict(os.environ, KERAS_BACKEND=backend)
        start = time.perf_counter()
        with tempfile.TemporaryFile("w+") as log:
            code = subprocess.call([sys.executable, "-m", "pytest", *pytest_args],
                                   env=env, stdout=log, stderr=subprocess.STDOUT)
            log.seek(0)
            output = log.read()
        minutes = (time.perf_counter() - start) / 60
        with lock:
            print(f"=== KERAS_BACKEND={backend} (exit {code}, {minutes:.1f} min) ===", flush=True)
            print(output, flush=True)
            results[backend] = code


def main(argv):
    split = argv.index("--") if "--" in argv else len(argv)
    streams = [stream.split() for stream in argv[:split]]
    pytest_args = argv[split + 1:]
    if not streams or not all(streams):
        print("usage: run_backends.py STREAM [STREAM ...] -- PYTEST_ARGS "
              "(a stream: backends separated by spaces)", file=sys.stderr)
        return 2
    results, lock = {}, threading.Lock()
    threads = [threading.Thread(target=run_stream, args=(s, pytest_args, results, lock))
               for s in streams]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    order = [backend for stream in streams for backend in stream]
    codes = [results.get(backend, 1) for backend in order]  # a stream that died: failed
    print("Backends: " + ", ".join(f"{b} {'passed' if c == 0 else 'FAILED'}"
                                   for b, c in zip(order, codes)))
    return next((c for c in codes if c), 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
