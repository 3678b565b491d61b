"""Dense token labels on disk: a sharded store that scales to ImageNet.

A *label record* is a teacher's top-k logits at every location of its
feature grid for one un-augmented image: `scores (h, w, k)` float32 and
`ids (h, w, k)` int32 class indices, channels-last. A *label key* names the
image (see `keras-spvit label`): an image folder's relative path without
extension (`n01440764/n01440764_10026`), an array source's index (`"1437"`),
a TFDS record's `tfds_id`.

Layout of a labels directory:

    LABELS/index.json         format, version, teacher, image size, crop_pct,
                              grid, k, num_classes, class names, the complete
                              shards and their key counts
    LABELS/scores-00000.npy   float16 (n, h, w, k)
    LABELS/ids-00000.npy      int16 (n, h, w, k) (int32 above 32767 classes)
    LABELS/keys-00000.json    the n keys, in row order

Every file is written to a temporary name and renamed; a shard counts once
`index.json` lists it, so a killed writer loses at most the shard it had
open and a rerun continues after the last complete one. The reader
memory-maps the shards and keeps only a `key -> (shard, row)` dict.

The released LV-ViT / SP-ViT labels (one torch file per image,
`(2, k, h, w)` float16) are read by `read_released_label` and converted by
`convert_released_labels`, without torch.
"""

import json
import os
import threading

import keras
import numpy as np
import tensorflow as tf

from keras_spvit.utils.torch_checkpoint import read_torch_checkpoint

FORMAT = "keras_spvit.token_labels"
VERSION = 1
INDEX = "index.json"
DEFAULT_SHARD_SIZE = 4096
# Settings a rerun must repeat to continue an existing directory.
_SETTINGS = ("teacher", "image_size", "crop_pct", "grid", "k", "num_classes")


def _shard_names(shard):
    return (f"scores-{shard:05d}.npy", f"ids-{shard:05d}.npy", f"keys-{shard:05d}.json")


def _ids_dtype(num_classes):
    return np.int16 if num_classes <= np.iinfo(np.int16).max else np.int32


def _atomic_write(path, write):
    """Calls `write(file)` on a temporary file in `path`'s folder, then renames it to `path`."""
    temp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(temp, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    finally:
        if os.path.exists(temp):
            os.remove(temp)


def _write_json(path, value):
    _atomic_write(path, lambda f: f.write(json.dumps(value, indent=1).encode()))


def _normalise_setting(name, value):
    """JSON-comparable form of a setting (tuples become lists, numbers floats)."""
    if value is None:
        return None
    if name in ("grid", "image_size"):
        return [int(v) for v in value]
    if name in ("k", "num_classes"):
        return int(value)
    if name == "crop_pct":
        return float(value)
    return value


def read_index(path):
    """The `index.json` of a labels directory, checked (format and version).

    Args:
        path: the labels directory.

    Returns:
        The index as a dict.

    Example:

    >>> read_index("labels/digits")["grid"]
    [8, 8]
    """
    path = os.fspath(path)
    index_path = os.path.join(path, INDEX)
    if not os.path.isfile(index_path):
        what = "no such folder" if not os.path.isdir(path) else f"it has no {INDEX}"
        raise ValueError(
            f"{path!r} is not a token labels directory ({what}). Expected a folder written "
            "by `keras-spvit label` or `convert_released_labels`."
        )
    try:
        with open(index_path) as f:
            index = json.load(f)
    except ValueError as error:
        raise ValueError(f"{index_path!r} is not valid JSON ({error}).") from None
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise ValueError(f"{index_path!r} is not a token labels index (no format {FORMAT!r}).")
    if index.get("version") != VERSION:
        raise ValueError(
            f"{path!r} holds token labels format version {index.get('version')!r}; this "
            f"keras_spvit reads version {VERSION}. Regenerate the labels with this version."
        )
    return index


def _check_key(key):
    if not isinstance(key, str) or not key or "\n" in key:
        raise ValueError(f"Expected a label key: a non-empty one-line string. Received: {key!r}")
    return key


class TokenLabelWriter:
    """Appends label records to a labels directory, shard by shard; resumable.

    Opening an existing directory checks that its settings (teacher, image
    size, crop_pct, grid, k, num_classes) are the ones given and continues
    it: `done_keys()` lists the keys of its complete shards, which `add`
    skips, so a rerun over the same data writes only what is missing.
    Writing a key twice in one run raises a `ValueError` (duplicate key).

    Args:
        path: the labels directory (created if needed).
        grid: `(h, w)` of the teacher's feature grid.
        k: int. Top-k kept per location.
        num_classes: int. The teacher's class count.
        teacher: str describing the teacher (recorded, compared on resume).
        image_size: optional `(height, width)` the teacher saw.
        crop_pct: optional float, the eval transform's center-crop share.
        class_names: optional list of str.
        shard_size: int. Records per shard (4096: about 13 MB at 14x14x5).
        extra: optional dict of JSON values recorded in the index.

    Example:

    >>> with TokenLabelWriter("labels", grid=(14, 14), k=5, num_classes=1000) as writer:
    ...     writer.add(["cat/1", "cat/2"], scores, ids)  # (2, 14, 14, 5) each
    """

    def __init__(self, path, *, grid, k, num_classes, teacher=None, image_size=None,
                 crop_pct=None, class_names=None, shard_size=DEFAULT_SHARD_SIZE, extra=None):
        grid = tuple(int(v) for v in grid)
        if len(grid) != 2 or min(grid) < 1:
            raise ValueError(f"Expected grid=(h, w) of positive ints. Received: grid={grid!r}")
        if int(k) < 1:
            raise ValueError(f"Expected k >= 1. Received: k={k!r}")
        if int(num_classes) < int(k):
            raise ValueError(
                f"Expected num_classes >= k. Received: num_classes={num_classes!r}, k={k!r}")
        if int(shard_size) < 1:
            raise ValueError(f"Expected shard_size >= 1. Received: shard_size={shard_size!r}")
        self.path = os.fspath(path)
        self.grid, self.k, self.num_classes = grid, int(k), int(num_classes)
        self.shard_size = int(shard_size)
        settings = {"teacher": teacher, "image_size": image_size, "crop_pct": crop_pct,
                    "grid": grid, "k": k, "num_classes": num_classes}
        settings = {name: _normalise_setting(name, v) for name, v in settings.items()}
        if os.path.exists(os.path.join(self.path, INDEX)):
            self.index = read_index(self.path)
            for name in _SETTINGS:
                if self.index.get(name) != settings[name]:
                    raise ValueError(
                        f"{self.path!r} holds labels with {name}={self.index.get(name)!r}; "
                        f"this run has {name}={settings[name]!r}. Expected the same settings to "
                        "continue it, or a new output folder."
                    )
        else:
            if os.path.isfile(self.path):
                raise ValueError(f"{self.path!r} is a file. Expected a labels folder.")
            os.makedirs(self.path, exist_ok=True)
            self.index = {"format": FORMAT, "version": VERSION, **settings,
                          "class_names": None if class_names is None else list(class_names),
                          "ids_dtype": np.dtype(_ids_dtype(self.num_classes)).name,
                          "shard_size": self.shard_size, "shards": [], **(extra or {})}
            _write_json(os.path.join(self.path, INDEX), self.index)
        self._done = set()
        for shard in self.index["shards"]:
            with open(os.path.join(self.path, shard["keys"])) as f:
                self._done.update(json.load(f))
        self._seen = set()
        self._keys, self._scores, self._ids = [], [], []

    @property
    def resumed(self):
        """Whether the directory already held complete shards when opened."""
        return bool(self._done)

    def done_keys(self):
        """The keys stored in complete shards when the writer was opened (a frozenset).

        Example:

        >>> todo = [key for key in all_keys if key not in writer.done_keys()]
        """
        return frozenset(self._done)

    def __len__(self):
        """Records stored and buffered."""
        return sum(s["count"] for s in self.index["shards"]) + len(self._keys)

    def add(self, keys, scores, ids):
        """Appends records; keys of complete shards are skipped, repeats refused.

        Args:
            keys: sequence of n label keys (str).
            scores: `(n, h, w, k)` top-k logits.
            ids: `(n, h, w, k)` class indices in `[0, num_classes)`.

        Returns:
            The number of records added (the others were already stored).
        """
        keys = [_check_key(key.decode() if isinstance(key, bytes) else key) for key in keys]
        scores = np.asarray(scores)
        ids = np.asarray(ids)
        expected = (len(keys),) + self.grid + (self.k,)
        if scores.shape != expected or ids.shape != expected:
            raise ValueError(
                f"Expected scores and ids shaped {expected} (n, h, w, k). Received: "
                f"scores.shape={scores.shape}, ids.shape={ids.shape}"
            )
        if not np.issubdtype(ids.dtype, np.integer):
            if not np.array_equal(ids, np.round(ids)):
                raise ValueError(f"Expected integer class ids. Received: ids.dtype={ids.dtype}")
        if ids.size and (ids.min() < 0 or ids.max() >= self.num_classes):
            raise ValueError(
                f"Expected class ids in [0, {self.num_classes}). Received: ids in "
                f"[{ids.min()}, {ids.max()}]"
            )
        rows, batch = [], set()
        for row, key in enumerate(keys):
            if key in self._done:
                continue
            if key in self._seen or key in batch:
                raise ValueError(f"Duplicate label key {key!r}: each key is written once.")
            batch.add(key)
            rows.append(row)
        for row in rows:
            key = keys[row]
            self._seen.add(key)
            self._keys.append(key)
            self._scores.append(scores[row].astype(np.float16))
            self._ids.append(ids[row].astype(_ids_dtype(self.num_classes)))
            if len(self._keys) == self.shard_size:
                self._flush()
        return len(rows)

    def _flush(self):
        if not self._keys:
            return
        shard = len(self.index["shards"])
        names = _shard_names(shard)
        paths = [os.path.join(self.path, n) for n in names]
        _atomic_write(paths[0], lambda f: np.save(f, np.stack(self._scores)))
        _atomic_write(paths[1], lambda f: np.save(f, np.stack(self._ids)))
        _atomic_write(paths[2], lambda f: f.write(json.dumps(self._keys).encode()))
        self.index["shards"].append(
            {"scores": names[0], "ids": names[1], "keys": names[2], "count": len(self._keys)})
        _write_json(os.path.join(self.path, INDEX), self.index)
        self._keys, self._scores, self._ids = [], [], []

    def close(self):
        """Writes the open shard (if any) and the index."""
        self._flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class TokenLabels:
    """Reads a labels directory: memory-mapped shards and a key index.

    Attributes: `grid` `(h, w)`, `k`, `num_classes`, `teacher`,
    `image_size`, `crop_pct`, `class_names`, `path`.

    Use `TokenLabels.open(path)`; `get(key)` returns numpy arrays and
    `lookup(key)` works inside `tf.data.Dataset.map`.

    Args:
        path: a labels directory (see `TokenLabels.open`).

    Example:

    >>> labels = TokenLabels.open("labels/digits")
    >>> scores, ids = labels.get("0")   # (8, 8, 5) float32, int32
    """

    def __init__(self, path):
        self.path = os.fspath(path)
        self.index = read_index(self.path)
        self.grid = tuple(self.index["grid"])
        self.k = int(self.index["k"])
        self.num_classes = int(self.index["num_classes"])
        self.teacher = self.index.get("teacher")
        self.image_size = self.index.get("image_size")
        self.crop_pct = self.index.get("crop_pct")
        self.class_names = self.index.get("class_names")
        self._rows = {}
        self._keys = []
        for number, shard in enumerate(self.index["shards"]):
            with open(os.path.join(self.path, shard["keys"])) as f:
                keys = json.load(f)
            if len(keys) != shard["count"]:
                raise ValueError(f"{shard['keys']!r} in {self.path!r} lists {len(keys)} keys; "
                                 f"the index says {shard['count']}. The directory is damaged.")
            for row, key in enumerate(keys):
                if key in self._rows:
                    raise ValueError(f"Duplicate label key {key!r} in {self.path!r}.")
                self._rows[key] = number << 32 | row  # an int: less memory than a tuple
            self._keys.extend(keys)
        self._arrays = {}
        self._lock = threading.Lock()

    @classmethod
    def open(cls, path):
        """Opens a labels directory written by `TokenLabelWriter`.

        Args:
            path: the directory holding `index.json`.

        Returns:
            A `TokenLabels`.

        Example:

        >>> labels = TokenLabels.open("labels/imagenet")
        >>> labels.grid, labels.k, len(labels)
        ((18, 18), 5, 1281167)
        """
        return cls(path)

    def __len__(self):
        return len(self._keys)

    def __contains__(self, key):
        return key in self._rows

    def keys(self):
        """All keys, in storage order (a list)."""
        return list(self._keys)

    def _shard(self, number):
        arrays = self._arrays.get(number)
        if arrays is None:
            with self._lock:
                arrays = self._arrays.get(number)
                if arrays is None:
                    shard = self.index["shards"][number]
                    arrays = tuple(np.load(os.path.join(self.path, shard[name]), mmap_mode="r")
                                   for name in ("scores", "ids"))
                    self._arrays[number] = arrays
        return arrays

    def get(self, key):
        """The record of `key`: `(scores (h, w, k) float32, ids (h, w, k) int32)`.

        Raises a `KeyError` naming the key when it has no record.

        Args:
            key: str (or bytes) label key.

        Example:

        >>> scores, ids = TokenLabels.open("labels").get("n01440764/n01440764_10026")
        """
        if isinstance(key, bytes):
            key = key.decode()
        if key not in self._rows:
            raise KeyError(f"No token labels for key {key!r} in {self.path!r}.")
        position = self._rows[key]
        scores, ids = self._shard(position >> 32)
        row = position & 0xFFFFFFFF
        return scores[row].astype(np.float32), ids[row].astype(np.int32)

    def _lookup_numpy(self, keys):
        keys = np.asarray(keys)
        shape = keys.shape + self.grid + (self.k,)
        scores = np.zeros(shape, np.float32)
        ids = np.zeros(shape, np.int32)
        found = np.zeros(keys.shape, bool)
        for position, key in np.ndenumerate(keys):
            key = key.decode() if isinstance(key, bytes) else str(key)
            if key in self._rows:
                scores[position], ids[position] = self.get(key)
                found[position] = True
        return scores, ids, found

    def lookup(self, keys):
        """The records of a string tensor of keys, inside TensorFlow graphs.

        A missing key gives zeros and `found=False`. Runs through
        `tf.numpy_function` over the memory maps, so it works in
        `tf.data.Dataset.map(..., num_parallel_calls=...)`.

        Args:
            keys: string tensor, scalar (one image) or any shape.

        Returns:
            `(scores, ids, found)`: float32 and int32 `keys.shape + (h, w, k)`,
            bool `keys.shape`.

        Example:

        >>> labels = TokenLabels.open("labels")
        >>> dataset = dataset.map(lambda x, y, key: (x, y) + labels.lookup(key))
        """
        keys = tf.convert_to_tensor(keys, tf.string)
        scores, ids, found = tf.numpy_function(
            self._lookup_numpy, [keys], [tf.float32, tf.int32, tf.bool], stateful=False,
            name="token_labels_lookup",
        )
        shape = keys.shape.concatenate(self.grid + (self.k,))
        scores.set_shape(shape)
        ids.set_shape(shape)
        found.set_shape(keys.shape)
        return scores, ids, found


# === The released per-image label files ===


def read_released_label(path):
    """One released LV-ViT / SP-ViT label file as `(scores, ids)`, without torch.

    The release saves `torch.stack([top-k values, indices]).half()` permuted to
    `(2, k, h, w)` per image; this returns them channels-last.

    Args:
        path: a `.pt` file written by the release's `generate_label.py`.

    Returns:
        `(scores (h, w, k) float32, ids (h, w, k) int32)`.

    Example:

    >>> scores, ids = read_released_label("labels/n01440764/n01440764_10026.pt")
    >>> scores.shape
    (18, 18, 5)
    """
    value = read_torch_checkpoint(path)
    if not isinstance(value, np.ndarray) or value.ndim != 4 or value.shape[0] != 2:
        shape = getattr(value, "shape", type(value).__name__)
        raise ValueError(
            f"{os.fspath(path)!r} is not a released token label: expected a (2, k, h, w) "
            f"tensor. Received: {shape}"
        )
    scores = np.transpose(value[0], (1, 2, 0)).astype(np.float32)
    raw_ids = np.transpose(value[1], (1, 2, 0)).astype(np.float64)
    ids = np.rint(raw_ids)
    if not np.array_equal(ids, raw_ids) or (ids.size and ids.min() < 0):
        raise ValueError(
            f"{os.fspath(path)!r}: expected non-negative integer class ids in its second half; "
            f"received values in [{raw_ids.min()}, {raw_ids.max()}]."
        )
    return scores, ids.astype(np.int32)


def _released_files(root):
    """`[(key, path)]` of `root/<class>/<stem>.pt`, sorted."""
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise ValueError(
            f"{root!r}: no such folder. Expected the released labels' root "
            "(<root>/<class>/<stem>.pt).")
    files = []
    for name in sorted(os.listdir(root)):
        folder = os.path.join(root, name)
        if name.startswith(".") or not os.path.isdir(folder):
            continue
        for file in sorted(os.listdir(folder)):
            if file.endswith(".pt"):
                files.append((f"{name}/{file[:-3]}", os.path.join(folder, file)))
    if not files:
        raise ValueError(f"{root!r} holds no <class>/<stem>.pt label files.")
    return files


def convert_released_labels(root, out, *, num_classes=1000, teacher="released NFNet-F6 labels",
                            image_size=None, crop_pct=1.0, shard_size=DEFAULT_SHARD_SIZE,
                            verbose=1):
    """Converts the released per-image `.pt` labels into a labels directory.

    Walks `root/<class>/<stem>.pt` (keys `<class>/<stem>`, the image's path
    without extension), reads each file without torch and writes shards.
    Resumable: a rerun into the same `out` skips the keys already stored.

    Args:
        root: the released labels' root folder.
        out: the labels directory to write.
        num_classes: int. The teacher's class count (1000 for the release).
        teacher: str recorded in the index.
        image_size: optional `(h, w)` the teacher saw (the release: 576).
        crop_pct: float recorded in the index (the release: 1.0).
        shard_size: records per shard.
        verbose: 0 silent, 1 a progress bar.

    Returns:
        The number of records written by this call.

    Example:

    >>> convert_released_labels("label_top5_train_nfnet", "labels/imagenet",
    ...                         image_size=(576, 576))
    """
    files = _released_files(root)
    scores, ids = read_released_label(files[0][1])
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    writer = TokenLabelWriter(out, grid=scores.shape[:2], k=scores.shape[2],
                              num_classes=num_classes, teacher=teacher, image_size=image_size,
                              crop_pct=crop_pct, shard_size=shard_size,
                              extra={"source": "released .pt files"})
    done = writer.done_keys()
    todo = [(key, path) for key, path in files if key not in done]
    if verbose:
        if done:
            print(f"Continuing {os.fspath(out)!r}: {len(done)} of {len(files)} labels already "
                  "converted.")
        bar = keras.utils.Progbar(len(todo), unit_name="file")
    written = 0
    with writer:
        for step, (key, path) in enumerate(todo):
            scores, ids = read_released_label(path)
            if scores.shape[:2] != writer.grid or scores.shape[2] != writer.k:
                raise ValueError(f"{path!r} holds a {scores.shape} label; the others are "
                                 f"{writer.grid + (writer.k,)}.")
            written += writer.add([key], scores[None], ids[None])
            if verbose:
                bar.update(step + 1)
    return written
