"""safe_decode: corrupt, truncated, empty, missing files keep their slot, flagged and named."""

import hashlib
import io
import re
import threading

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_spvit.data.decode_errors import DecodeErrors, safe_decode

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="pure tf.data, backend-independent: tested on TensorFlow; the pipeline and CLI "
    "tests (test_position_stream.py, cli/test_train.py) run it on every backend",
)


def _read(path):
    return tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)


def _png(image):
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def _jpeg(image):
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Paths in order, which are good, and the reference pixels of the good PNGs."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (10 + i, 14 + 2 * i, 3), dtype=np.uint8) for i in range(3)]
    jpeg = _jpeg(images[0])
    contents = {
        "good_0.png": _png(images[0]),
        "random_bytes.png": rng.integers(0, 256, 300, dtype=np.uint8).tobytes(),
        "good_1.png": _png(images[1]),
        "empty.jpg": b"",
        "good.jpg": jpeg,
        "truncated.jpg": jpeg[: len(jpeg) // 2],
        "notes.png": b"this is a text file, not an image\n",
        "good_2.png": _png(images[2]),
    }
    for name, data in contents.items():
        (root / name).write_bytes(data)
    names = list(contents) + ["missing.png"]  # listed, never written: unreadable
    paths = [str(root / name) for name in names]
    good = [name.startswith("good") for name in names]
    reference = {str(root / f"good_{i}.png"): image for i, image in enumerate(images)}
    return paths, good, reference


def _source(paths):
    return tf.data.Dataset.from_tensor_slices((paths, np.arange(len(paths), dtype=np.int32)))


def test_order_count_flags_and_placeholders(files):
    paths, good, reference = files
    errors = DecodeErrors()
    decoded = list(safe_decode(_source(paths), _read, errors=errors))
    assert len(decoded) == len(paths)
    assert [int(label) for _, label, _ in decoded] == list(range(len(paths)))
    assert [bool(ok) for _, _, ok in decoded] == good
    for path, (image, _, ok) in zip(paths, decoded):
        assert image.dtype == tf.uint8 and ok.dtype == tf.bool and ok.shape == ()
        if path in reference:
            np.testing.assert_array_equal(image.numpy(), reference[path])  # PIL's pixels
        elif not ok:
            np.testing.assert_array_equal(image.numpy(), np.zeros((8, 8, 3), np.uint8))
    assert decoded[4][0].shape == (10, 14, 3)  # good.jpg


def test_registry_lists_each_bad_path_once_over_epochs(files):
    paths, good, _ = files
    bad = sorted(p for p, g in zip(paths, good) if not g)
    errors = DecodeErrors()
    decoded = safe_decode(_source(paths), _read, errors=errors)
    assert decoded.decode_errors is errors
    for _ in range(2):
        for _ in decoded:
            pass
    assert errors.paths == bad and len(errors) == len(bad)
    assert errors.count == 2 * len(bad)
    assert errors.summary() == {
        "bad_files": bad,
        "bad_file_count": len(bad),
        "decode_failures": 2 * len(bad),
    }
    reasons = errors.reasons
    assert reasons[next(p for p in bad if p.endswith("empty.jpg"))] == "Input is empty."
    assert "No such file" in reasons[next(p for p in bad if p.endswith("missing.png"))]
    assert not any("function_node" in reason for reason in reasons.values())
    errors.clear()
    assert errors.paths == [] and errors.count == 0


def test_default_registry_is_attached_and_private(files):
    paths, _, _ = files
    first = safe_decode(_source(paths[:2]), _read)
    second = safe_decode(_source(paths[:4]), _read)
    list(first)
    assert first.decode_errors.paths == [paths[1]]
    assert second.decode_errors.paths == []  # not iterated: nothing shared


def test_strict_mode_names_the_file(files):
    paths, good, _ = files
    first_bad = paths[good.index(False)]
    decoded = safe_decode(_source(paths), _read, strict=True)
    expected = re.escape(f"cannot decode {first_bad}")
    with pytest.raises(tf.errors.InvalidArgumentError, match=expected):
        for _ in decoded:
            pass
    # Good files alone go through strict mode untouched.
    good_paths = [p for p, g in zip(paths, good) if g]
    assert [bool(ok) for *_, ok in safe_decode(_source(good_paths), _read, strict=True)] == [
        True
    ] * len(good_paths)


@pytest.mark.parametrize("chunk_size", [1, 7, 16])
def test_order_kept_under_parallel_decoding_and_a_parallel_map_after(files, chunk_size):
    paths, good, _ = files
    # 60 elements, a bad one every few, decoded 4 at a time, then a parallel resize.
    order = np.random.default_rng(1).integers(0, len(paths), 60)
    many = [paths[i] for i in order]
    errors = DecodeErrors()
    decoded = safe_decode(
        _source(many), _read, errors=errors, cycle_length=4, chunk_size=chunk_size
    )
    resized = decoded.map(
        lambda image, label, ok: (tf.image.resize(image, (6, 6)), label, ok),
        num_parallel_calls=tf.data.AUTOTUNE,
    ).batch(16)
    images, labels, oks = (np.concatenate(parts) for parts in zip(*resized))
    assert images.shape == (60, 6, 6, 3)
    np.testing.assert_array_equal(labels, np.arange(60))
    np.testing.assert_array_equal(oks, [good[i] for i in order])
    assert errors.paths == sorted({paths[i] for i in order if not good[i]})
    assert errors.count == sum(not good[i] for i in order)


@pytest.mark.parametrize(
    "pattern",
    [
        "bggg" "gggg" "gg",  # first of a chunk; partial last chunk
        "gggb" "gggg" "gb",  # last of a chunk; last element of all
        "gbbg" "bbbb" "bg",  # consecutive, a whole bad chunk, across chunk borders
        "gggg" "gggg" "gg",
        "bbbb" "bbbb" "bb",
    ],
)
def test_every_failure_pattern_within_chunks(files, pattern):
    paths, good, _ = files
    good_path = paths[good.index(True)]
    bad_paths = [p for p, g in zip(paths, good) if not g]
    sequence = [
        good_path if c == "g" else bad_paths[i % len(bad_paths)] for i, c in enumerate(pattern)
    ]
    errors = DecodeErrors()
    decoded = list(safe_decode(_source(sequence), _read, errors=errors, chunk_size=4))
    assert [int(label) for _, label, _ in decoded] == list(range(len(pattern)))
    assert "".join("g" if ok else "b" for *_, ok in decoded) == pattern
    assert errors.count == pattern.count("b")
    assert errors.paths == sorted({p for p, c in zip(sequence, pattern) if c == "b"})


def test_unbatchable_rest_fields_use_the_per_element_path(files):
    paths, good, _ = files
    # A variable-length rest field cannot be cut into chunks.
    ragged = [tf.range(i + 1) for i in range(len(paths))]
    source = tf.data.Dataset.from_generator(
        lambda: ((p, i, r) for i, (p, r) in enumerate(zip(paths, ragged))),
        output_signature=(
            tf.TensorSpec([], tf.string),
            tf.TensorSpec([], tf.int32),
            tf.TensorSpec([None], tf.int32),
        ),
    )
    decoded = list(safe_decode(source, _read, chunk_size=4))
    assert [bool(ok) for *_, ok in decoded] == good
    assert [len(rest) for _, _, rest, _ in decoded] == list(range(1, len(paths) + 1))


def test_bad_file_in_the_dropped_last_batch_is_still_recorded(files):
    paths, good, _ = files
    good_paths = [p for p, g in zip(paths, good) if g]
    bad = paths[good.index(False)]
    sequence = good_paths * 2 + [bad]  # 9 elements, batches of 4: the bad one is dropped
    errors = DecodeErrors()
    batches = safe_decode(_source(sequence), _read, errors=errors).map(
        lambda image, label, ok: (tf.image.resize(image, (4, 4)), label, ok)
    ).batch(4, drop_remainder=True)
    assert len(list(batches)) == 2
    assert errors.paths == [bad]


def test_encoded_bytes_named_by_a_key_field(files):
    paths, good, _ = files
    contents = [open(p, "rb").read() if g else b"\x89PNG broken" for p, g in zip(paths, good)]
    keys = [f"record-{i}" for i in range(len(contents))]
    records = tf.data.Dataset.from_tensor_slices(
        (contents, np.arange(len(contents), dtype=np.int32), keys)
    )
    def decode(data):
        return tf.io.decode_image(data, channels=3, expand_animations=False)

    errors = DecodeErrors()
    decoded = list(
        safe_decode(records, decode, name=lambda data, label, key: key, errors=errors)
    )
    assert [bool(ok) for *_, ok in decoded] == good
    assert [k.numpy().decode() for _, _, k, _ in decoded] == keys  # rest fields pass through
    assert errors.paths == sorted(k for k, g in zip(keys, good) if not g)
    # An integer name (the label here) is recorded as its decimal text.
    by_index = DecodeErrors()
    list(safe_decode(records, decode, name=lambda data, label, key: label, errors=by_index))
    assert by_index.paths == sorted(str(i) for i, g in enumerate(good) if not g)
    with pytest.raises(tf.errors.InvalidArgumentError, match="cannot decode record-1"):
        list(safe_decode(records, decode, name=lambda data, label, key: key, strict=True))


def test_unnamed_bytes_are_recorded_by_digest():
    data = b"\x00\xffnot an image" * 100
    records = tf.data.Dataset.from_tensor_slices(([data], [0]))
    def decode(x):
        return tf.io.decode_png(x, channels=3)

    errors = DecodeErrors()
    ((image, _, ok),) = list(safe_decode(records, decode, errors=errors, placeholder_size=3))
    assert not bool(ok) and image.shape == (3, 3, 3)
    assert errors.paths == [f"<{len(data)} bytes, sha1 {hashlib.sha1(data).hexdigest()}>"]


def test_placeholder_follows_decode_dtype_and_channels(files):
    paths, _, _ = files

    def grey_float(path):
        return tf.image.convert_image_dtype(
            tf.io.decode_png(tf.io.read_file(path), channels=1), tf.float32
        )

    (_, (image, _, ok)) = list(safe_decode(_source(paths[:2]), grey_float))
    assert not bool(ok) and image.dtype == tf.float32 and image.shape == (8, 8, 1)


def test_registry_is_thread_safe():
    errors = DecodeErrors()

    def add(worker):
        for i in range(500):
            errors.add(f"file-{i % 50}".encode(), "reason")

    threads = [threading.Thread(target=add, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors.count == 4000
    assert errors.paths == sorted(f"file-{i}" for i in range(50))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"decode": "decode"}, "decode='decode'"),
        ({"name": "key"}, "name='key'"),
        ({"errors": []}, "errors=[]"),
        ({"strict": 1}, "strict=1"),
        ({"placeholder_size": 0}, "placeholder_size=0"),
        ({"chunk_size": True}, "chunk_size=True"),
        ({"cycle_length": 2.0}, "cycle_length=2.0"),
        ({"num_parallel_calls": 0}, "num_parallel_calls=0"),
    ],
)
def test_bad_arguments_name_the_value(kwargs, message):
    arguments = {"decode": _read, **kwargs}
    with pytest.raises(ValueError, match=re.escape(message)):
        safe_decode(_source(["a.png"]), **arguments)


def test_elements_must_be_tuples_and_decode_must_give_an_image():
    with pytest.raises(ValueError, match="element_spec"):
        safe_decode(tf.data.Dataset.from_tensor_slices(["a.png"]), _read)
    with pytest.raises(ValueError, match="height, width, channels"):
        safe_decode(_source(["a.png"]), lambda path: tf.strings.length(path))


def test_state_and_merge_add_another_workers_share():
    from keras_spvit.data.decode_errors import DecodeErrors

    chief, other = DecodeErrors(), DecodeErrors()
    chief.add("a.jpg", "bad a")
    other.add("b.jpg", "bad b")
    other.add("a.jpg", "other reason")
    chief.merge(other.state())
    assert chief.paths == ["a.jpg", "b.jpg"] and chief.count == 3
    assert chief.reasons == {"a.jpg": "bad a", "b.jpg": "bad b"}
    with pytest.raises(ValueError, match="state="):
        chief.merge(["b.jpg"])
