"""One garbage collection for a whole `Model.quantize`, not one per layer."""

import contextlib
import gc
import threading

_lock = threading.Lock()
_depth = 0
_saved_collect = None


def _skip_collect(generation=2):
    return 0


@contextlib.contextmanager
def collect_garbage_once():
    """Defers every `gc.collect()` made inside the block to one collection at its end.

    Keras' `Dense.quantize` deletes the float kernel with `del`, and
    `Layer.__delattr__` runs a full `gc.collect()` after deleting any variable
    (so the buffer is freed promptly). A full collection walks every live
    Python object: in a process holding a TensorFlow runtime and a few models
    it takes 0.5-7 s, and quantizing our classifiers deletes one kernel per
    Dense (18 in `spvit_tiny_digits`). One collection at the end frees the
    same buffers. Collections Python starts by itself are not affected.

    Example:

    >>> with collect_garbage_once():
    ...     model.quantize("int8")
    """
    global _depth, _saved_collect
    with _lock:
        if _depth == 0:
            _saved_collect, gc.collect = gc.collect, _skip_collect
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            collect = None
            if _depth == 0:
                collect = gc.collect = _saved_collect
        if collect is not None:
            collect()
