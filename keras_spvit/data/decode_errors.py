"""Decoding that survives corrupt images: each failure becomes a flagged placeholder.

`safe_decode` turns a dataset of `(path_or_bytes, label, *rest)` into one of
`(image, label, *rest, ok)` with the same elements in the same order: a file
that cannot be read or decoded (corrupt, truncated, empty, not an image,
missing) yields a small placeholder image and `ok=False` instead of an error
that stops the input pipeline (and with it `fit`, mid-epoch, without naming
the file). Callers keep batch count and order unchanged and give `ok=False`
examples a zero sample weight. The failing file's name is recorded in a
`DecodeErrors` registry, so a trainer can warn at the end of the run and list
the files in its summary; `strict=True` fails on the first bad file instead,
with an error naming it.

Mechanism (no Python per element on the good path): every element is decoded
in its own one-element dataset, `from_tensors(element).map(decode)
.ignore_errors()`, followed by a one-element fallback and cut with `take(1)`:
the fallback is reached only when decoding raised. A parallel, deterministic
`interleave` (`block_length=1`, each inner dataset yields exactly one element)
runs them, so decoding stays parallel and in order. Only the fallback calls
Python (`tf.py_function`), to record the name.

`chunk_size > 1` amortises that per-element structure, for small images whose
decoding is cheap: chunks of `chunk_size` elements are decoded in one
numbered `map(decode).ignore_errors()` pass each (chunks in a parallel
interleave); a `scan` keeps the in-order prefix and, from the first gap, the
rest of the chunk takes the per-element path. `take(chunk_size)` ends a clean
chunk before that path is built; a chunk with a bad file is decoded up to
twice. Measured on 2 loaded cores: about 80 us of CPU per element for the
per-element path, 25 us with chunks of 16 (8x8 JPEGs); but on 500x375 JPEGs
(about 1.8 ms to decode) chunks were not cheaper (up to `cycle_length *
chunk_size` decoded images wait in buffers), hence the default of 1.

A `py_function` makes the dataset unserialisable: no `Dataset.save`,
tf.data service or snapshot of the decoded stream.
"""

import hashlib
import re
import threading

import tensorflow as tf

_MAX_NAME_CHARS = 512
_FUNCTION_NODE = re.compile(r"\{\{function_node [^}]*\}\}\s*")
_OP_SUFFIX = re.compile(r"\s*\[Op:\w+\].*$")


class DecodeErrors:
    """A thread-safe record of the elements `safe_decode` could not decode.

    Every failure is counted (`count`, so the same file failing in two epochs
    counts twice); `paths` lists each distinct name once. Names are the
    element's path or the caller's name field (see `safe_decode`); a name that
    is not short text (raw encoded bytes) is recorded as
    `"<N bytes, sha1 HEX>"`. `reasons` keeps the first decode error message of
    each name (the first line of TensorFlow's message).

    Example:

    >>> errors = DecodeErrors()
    >>> images = safe_decode(paths_and_labels, read_image, errors=errors)
    >>> for _ in images: pass
    >>> errors.paths, errors.count
    (['/data/cat/broken.jpg'], 1)
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._reasons = {}
        self._count = 0

    def add(self, name, reason=""):
        """Records one failure of `name` (`str` or `bytes`) with an optional reason."""
        name = _display_name(name)
        with self._lock:
            self._count += 1
            self._reasons.setdefault(name, reason)

    def clear(self):
        """Forgets every recorded failure."""
        with self._lock:
            self._reasons.clear()
            self._count = 0

    @property
    def paths(self):
        """Sorted list of the distinct names that failed."""
        with self._lock:
            return sorted(self._reasons)

    @property
    def count(self):
        """Number of failures recorded (repeats over epochs included)."""
        with self._lock:
            return self._count

    @property
    def reasons(self):
        """`{name: first error message}` for every name that failed."""
        with self._lock:
            return dict(self._reasons)

    def summary(self):
        """JSON-ready `{"bad_files": [...], "bad_file_count": n, "decode_failures": k}`."""
        with self._lock:
            return {
                "bad_files": sorted(self._reasons),
                "bad_file_count": len(self._reasons),
                "decode_failures": self._count,
            }

    def state(self):
        """JSON-ready `{"reasons": {name: message}, "count": k}`, what `merge` takes.

        Example:

        >>> errors.state()
        {'reasons': {'/data/cat/broken.jpg': 'Unknown image file format...'}, 'count': 1}
        """
        with self._lock:
            return {"reasons": dict(self._reasons), "count": self._count}

    def merge(self, state):
        """Adds another registry's `state()` (another worker's share of a run).

        Names already recorded keep their first reason; counts add up.

        Args:
            state: a dict as returned by `state()`.

        Example:

        >>> merged = DecodeErrors()
        >>> for share in (chief.state(), other_worker.state()):
        ...     merged.merge(share)
        """
        if not isinstance(state, dict) or not {"reasons", "count"} <= set(state):
            raise ValueError(
                f"Expected a dict with keys 'reasons' and 'count' (from `state()`). "
                f"Received: state={state!r}"
            )
        with self._lock:
            for name, reason in state["reasons"].items():
                self._reasons.setdefault(name, reason)
            self._count += int(state["count"])

    def __len__(self):
        with self._lock:
            return len(self._reasons)

    def __repr__(self):
        return f"DecodeErrors(paths={self.paths!r}, count={self.count})"


def _display_name(name):
    if isinstance(name, str):
        return name
    name = bytes(name)
    if len(name) <= _MAX_NAME_CHARS:
        try:
            text = name.decode("utf-8")
            if text.isprintable():
                return text
        except UnicodeDecodeError:
            pass
    return f"<{len(name)} bytes, sha1 {hashlib.sha1(name).hexdigest()}>"


def _reason(error):
    """The first line of an error message, without TensorFlow's op decorations."""
    message = getattr(error, "message", None) or str(error)
    message = _FUNCTION_NODE.sub("", message.strip())
    message = _OP_SUFFIX.sub("", message.splitlines()[0] if message else "")
    return message.strip() or type(error).__name__


def safe_decode(
    dataset,
    decode,
    *,
    name=None,
    errors=None,
    strict=False,
    placeholder_size=8,
    chunk_size=1,
    cycle_length=None,
    num_parallel_calls=tf.data.AUTOTUNE,
):
    """Decodes `x` of every `(x, label, *rest)`; a failure gives a placeholder and `ok=False`.

    The result has exactly the elements of `dataset`, in the same order:
    `(decode(x), label, *rest, True)`, or `(placeholder, label, *rest, False)`
    when `decode` raised (corrupt, truncated, empty or missing file, random
    bytes). The placeholder is zeros of shape `(placeholder_size,
    placeholder_size, channels)` in `decode`'s dtype: crop and resize it like
    any image and give the example a zero weight. Good elements never leave
    TensorFlow; bad ones call Python once each to record their name.

    Args:
        dataset: a `tf.data.Dataset` of tuples `(x, label, *rest)`: `x` a path
            or encoded image bytes (anything `decode` takes).
        decode: function `x -> image` (`(height, width, channels)` tensor), as
            `lambda path: tf.io.decode_image(tf.io.read_file(path), 3,
            expand_animations=False)`. Traced once.
        name: optional function `(x, label, *rest) -> scalar tensor` (string or
            integer) naming the element in the registry and in strict errors:
            give a key or index field when `x` holds encoded bytes (TFDS
            records). Default: `x` itself (a path).
        errors: the `DecodeErrors` to record failures in. Default: a new one,
            available as the returned dataset's `decode_errors` attribute
            (attributes do not survive further transformations: keep a
            reference).
        strict: bool. Fail on the first element that does not decode, with an
            `InvalidArgumentError` whose message is
            `"cannot decode NAME: REASON"`, instead of a placeholder.
        placeholder_size: int >= 1. Height and width of the placeholder.
        chunk_size: int >= 1. Elements decoded per pass (see the module
            docstring): 1 (default) tries every element on its own; 16 or 32
            pay off for small images. Sources whose elements cannot be
            batched (a component without a fixed shape) use 1.
        cycle_length: int >= 1 or `None`: chunks decoded concurrently.
            Default: `tf.data.AUTOTUNE`'s choice (the number of cores).
        num_parallel_calls: parallelism of the decoding (`tf.data.AUTOTUNE`
            or an int >= 1).

    Returns:
        A `tf.data.Dataset` of `(image, label, *rest, ok)`, `ok` a scalar
        `tf.bool`, with attribute `decode_errors` (the registry).

    Example:

    >>> paths = tf.data.Dataset.from_tensor_slices((["a.jpg", "broken.png"], [0, 1]))
    >>> read = lambda p: tf.io.decode_image(tf.io.read_file(p), 3, expand_animations=False)
    >>> decoded = safe_decode(paths, read)
    >>> [bool(ok) for _, _, ok in decoded]
    [True, False]
    >>> decoded.decode_errors.paths
    ['broken.png']
    """
    if not isinstance(dataset, tf.data.Dataset):
        raise ValueError(
            f"Expected `dataset` to be a tf.data.Dataset. Received: dataset={dataset!r}"
        )
    if not callable(decode):
        raise ValueError(f"Expected `decode` to be callable. Received: decode={decode!r}")
    if name is not None and not callable(name):
        raise ValueError(f"Expected `name` to be callable or None. Received: name={name!r}")
    if errors is None:
        errors = DecodeErrors()
    elif not isinstance(errors, DecodeErrors):
        raise ValueError(
            f"Expected `errors` to be a DecodeErrors or None. Received: errors={errors!r}"
        )
    if not isinstance(strict, bool):
        raise ValueError(f"Expected `strict` to be a bool. Received: strict={strict!r}")
    if not _positive_int(placeholder_size):
        raise ValueError(
            "Expected `placeholder_size` to be a positive int. "
            f"Received: placeholder_size={placeholder_size!r}"
        )
    if not _positive_int(chunk_size):
        raise ValueError(
            f"Expected `chunk_size` to be a positive int. Received: chunk_size={chunk_size!r}"
        )
    if cycle_length is not None and not _positive_int(cycle_length):
        raise ValueError(
            "Expected `cycle_length` to be a positive int or None. "
            f"Received: cycle_length={cycle_length!r}"
        )
    if num_parallel_calls != tf.data.AUTOTUNE and not _positive_int(num_parallel_calls):
        raise ValueError(
            "Expected `num_parallel_calls` to be tf.data.AUTOTUNE or a positive int. "
            f"Received: num_parallel_calls={num_parallel_calls!r}"
        )
    spec = dataset.element_spec
    if not isinstance(spec, tuple) or len(spec) < 2:
        raise ValueError(
            "Expected `dataset` elements to be tuples (x, label, ...). "
            f"Received: element_spec={spec!r}"
        )

    def decoded(x, *rest):
        return (tf.convert_to_tensor(decode(x)), *rest, tf.constant(True))

    image_spec = dataset.map(decoded).element_spec[0]
    if image_spec.shape.rank != 3:
        raise ValueError(
            "Expected `decode` to return an image (height, width, channels). "
            f"Received: {image_spec}"
        )
    channels = image_spec.shape[-1] if image_spec.shape[-1] is not None else 3
    placeholder_shape = (placeholder_size, placeholder_size, channels)

    def element_name(*element):
        key = name(*element) if name is not None else element[0]
        key = tf.convert_to_tensor(key)
        if key.dtype != tf.string:
            key = tf.strings.as_string(key)
        return tf.reshape(key, [])

    x_structure = spec[0]

    def record(key, *x_parts):
        x = tf.nest.pack_sequence_as(x_structure, list(x_parts))
        reason = ""
        try:
            decode(x)
        except Exception as error:  # noqa: BLE001 - any decode error is what we report
            reason = _reason(error)
        key = key.numpy()
        if strict:
            detail = f": {reason}" if reason else ""
            raise ValueError(f"cannot decode {_display_name(key)}{detail}")
        errors.add(key, reason)
        return tf.constant(False)

    def fallback(*element):
        ok = tf.py_function(
            record, [element_name(*element), *tf.nest.flatten(element[0])], tf.bool
        )
        ok = tf.ensure_shape(ok, [])
        image = tf.zeros(placeholder_shape, image_spec.dtype)
        return (image, *element[1:], ok)

    def attempt(*element):
        # One element: its decoding if that succeeds, else the fallback.
        single = tf.data.Dataset.from_tensors(element)
        good = single.map(decoded).ignore_errors()
        return good.concatenate(single.map(fallback)).take(1)

    cycle_length = tf.data.AUTOTUNE if cycle_length is None else cycle_length
    batchable = all(spec.shape.is_fully_defined() for spec in tf.nest.flatten(spec))
    if chunk_size == 1 or not batchable:
        result = dataset.interleave(
            attempt,
            cycle_length=cycle_length,
            block_length=1,
            num_parallel_calls=num_parallel_calls,
            deterministic=True,
        )
    else:

        def numbered_decode(position, *element):
            return (position, *decoded(*element))

        def numbered_attempt(position, *element):
            return attempt(*element).map(lambda *out: (position, *out))

        def in_order(expected, numbered):
            keep = tf.equal(numbered[0], expected)
            return expected + tf.cast(keep, expected.dtype), (keep, numbered)

        def chunk_of(*chunk):
            # Decode the chunk in one pass; errors drop elements. Keep its in-order
            # prefix; from the first gap on, the per-element path (`attempt`) gives
            # the remaining positions. `take` stops before that path is ever built
            # when nothing failed.
            size = tf.shape(chunk[0], out_type=tf.int64)[0]
            numbered = tf.data.Dataset.from_tensor_slices((tf.range(size), *chunk))
            fast = numbered.map(numbered_decode).ignore_errors()
            slow = numbered.flat_map(numbered_attempt)
            return (
                fast.concatenate(slow)
                .scan(tf.constant(0, tf.int64), in_order)
                .filter(lambda keep, numbered: keep)
                .take(size)
            )

        result = dataset.batch(chunk_size).interleave(
            chunk_of,
            cycle_length=cycle_length,
            block_length=chunk_size,
            num_parallel_calls=num_parallel_calls,
            deterministic=True,
        )
        result = result.map(lambda keep, numbered: numbered[1:])
    result.decode_errors = errors
    return result


def _positive_int(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1
