"""Read PyTorch checkpoints into numpy arrays without PyTorch.

`torch.load` unpickles arbitrary objects, so opening a downloaded checkpoint
with it can run code chosen by whoever made the file. This module instead
parses the two on-disk formats written by `torch.save` with a restricted
unpickler that only knows how to rebuild tensors, storages and plain Python
containers, and maps every tensor to a `numpy.ndarray`. Neither torch nor
keras is imported.

Supported formats:

- The zip format written by `torch.save` since PyTorch 1.6: a zip archive
  holding `<archive>/data.pkl` (the pickled object, whose tensors refer to
  storages through persistent ids), one raw record per storage in
  `<archive>/data/<key>` and an optional `<archive>/byteorder` record.
- The legacy stream written with `_use_new_zipfile_serialization=False`: a
  magic-number pickle, a protocol-version pickle, a `sys_info` pickle, the
  pickled object, a pickled list of storage keys, then for each key an int64
  element count followed by the storage's raw bytes.

The file extension does not matter (`.pth`, `.pth.tar`, `.pt`, `.bin`...):
the zip format is recognised by its magic bytes.

Example:

>>> state = load_torch_state_dict("spvit_tiny.pth")  # doctest: +SKIP
>>> state["patch_embed.proj.weight"].shape  # doctest: +SKIP
(192, 3, 16, 16)
"""

import collections
import os
import pickle
import struct
import types
import zipfile
import zlib
from collections.abc import Mapping

import numpy as np
from numpy.lib.stride_tricks import as_strided

try:
    import ml_dtypes
except ImportError:
    ml_dtypes = None

_ZIP_MAGIC = b"PK\x03\x04"
_LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL_VERSION = 1001

# torch storage class -> element dtype name. UntypedStorage holds raw bytes.
_STORAGE_DTYPES = {
    "FloatStorage": "float32",
    "DoubleStorage": "float64",
    "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16",
    "LongStorage": "int64",
    "IntStorage": "int32",
    "ShortStorage": "int16",
    "CharStorage": "int8",
    "ByteStorage": "uint8",
    "BoolStorage": "bool",
    "UntypedStorage": "uint8",
}

# Prefixes added to every parameter name by torch.nn.DataParallel /
# DistributedDataParallel and by torch.compile.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


class UnsafeCheckpointError(ValueError):
    """The checkpoint's pickle refers to a global outside the allow-list."""


class CheckpointFormatError(ValueError):
    """The file is truncated, corrupted or not a PyTorch checkpoint."""


class _Sealed:
    """Base for every object this module hands to the unpickler.

    Pickle's BUILD opcode calls `__setstate__` (or sets attributes) on any
    object on its stack. Refusing it keeps a crafted file from altering the
    rebuild helpers or the pending tensors, whose fields are later trusted
    to index into storage buffers.
    """

    __slots__ = ()

    def __setstate__(self, state):
        raise TypeError(
            f"the pickle tries to set the state of a {type(self).__name__}"
        )


class _Global(_Sealed):
    """A callable standing in for an allowed torch/python global."""

    __slots__ = ("_function",)

    def __init__(self, function):
        self._function = function

    def __call__(self, *args):
        return self._function(*args)


class _StorageType(_Sealed):
    """Stands in for a `torch.*Storage` class; only carries the dtype."""

    __slots__ = ("dtype_name",)

    def __init__(self, dtype_name):
        self.dtype_name = dtype_name


class _Storage(_Sealed):
    """One storage of the checkpoint: dtype, element count, raw bytes.

    `data` stays None until the bytes are read; in the legacy format they
    follow the pickle, so tensors can only be materialised afterwards.
    """

    __slots__ = ("key", "dtype_name", "numel", "data")

    def __init__(self, key, dtype_name, numel):
        self.key = key
        self.dtype_name = dtype_name
        self.numel = numel
        self.data = None

    @property
    def itemsize(self):
        return _raw_dtype(self.dtype_name).itemsize

    def set_data(self, data, big_endian):
        """Stores the raw bytes, converted to little-endian if needed."""
        expected = self.numel * self.itemsize
        if len(data) != expected:
            raise CheckpointFormatError(
                f"storage {self.key} has {len(data)} bytes, expected {expected}"
            )
        if big_endian and self.itemsize > 1:
            data = (
                np.frombuffer(data, dtype=f">u{self.itemsize}")
                .astype(f"<u{self.itemsize}")
                .tobytes()
            )
        self.data = data


class _PendingTensor(_Sealed):
    """A tensor whose storage bytes may not have been read yet."""

    __slots__ = ("storage", "offset", "size", "stride")

    def __init__(self, storage, offset, size, stride):
        self.storage = storage
        self.offset = offset
        self.size = size
        self.stride = stride

    def to_numpy(self):
        """Copies the strided view of the storage into a new array."""
        storage = self.storage
        offset = _as_index(self.offset, "storage offset")
        size = tuple(_as_index(n, "size") for n in _as_sequence(self.size))
        stride = tuple(_as_index(s, "stride") for s in _as_sequence(self.stride))
        if len(size) != len(stride):
            raise CheckpointFormatError(
                f"tensor has size {size} but stride {stride}"
            )
        raw_dtype = _raw_dtype(storage.dtype_name)
        if 0 in size:
            array = np.empty(size, dtype=raw_dtype)
        else:
            last = offset + sum((n - 1) * s for n, s in zip(size, stride))
            if last >= storage.numel:
                raise CheckpointFormatError(
                    f"tensor with size {size}, stride {stride} and offset "
                    f"{offset} reads past the end of storage {storage.key} "
                    f"({storage.numel} elements)"
                )
            if storage.data is None:
                raise CheckpointFormatError(
                    f"storage {storage.key} is used but its data is missing"
                )
            flat = np.frombuffer(storage.data, dtype=raw_dtype)
            # The bounds check above is what makes as_strided safe here.
            array = as_strided(
                flat[offset:],
                shape=size,
                strides=[s * raw_dtype.itemsize for s in stride],
            ).copy()
        if storage.dtype_name == "bfloat16" and ml_dtypes is None:
            # bfloat16 is the upper half of a float32, so this is exact.
            array = (array.astype(np.uint32) << 16).view(np.float32)
        return array


def _raw_dtype(dtype_name):
    """The numpy dtype a storage's bytes are read as."""
    if dtype_name == "bfloat16":
        return np.dtype(ml_dtypes.bfloat16 if ml_dtypes else np.uint16)
    return np.dtype(dtype_name)


def _as_index(value, what):
    # bool is an int subclass but never a valid size, stride or offset.
    if type(value) is not int or value < 0:
        raise CheckpointFormatError(f"invalid tensor {what}: {value!r}")
    return value


def _as_sequence(value):
    if not isinstance(value, (tuple, list)):
        raise CheckpointFormatError(f"invalid tensor shape: {value!r}")
    return value


def _rebuild_tensor(storage, storage_offset, size, stride):
    if not isinstance(storage, _Storage):
        raise CheckpointFormatError(
            f"tensor rebuilt from {type(storage).__name__}, not a storage"
        )
    return _PendingTensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v2(
    storage,
    storage_offset,
    size,
    stride,
    requires_grad,
    backward_hooks,
    metadata=None,
):
    # The metadata dict flags lazily conjugated/negated views, which have no
    # numpy equivalent; ordinary tensors have it empty or absent.
    if metadata and any(metadata.values()):
        raise CheckpointFormatError(
            f"tensors with metadata {metadata!r} are not supported"
        )
    return _rebuild_tensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad, backward_hooks, state=None):
    if not isinstance(data, _PendingTensor):
        raise CheckpointFormatError(
            f"parameter rebuilt from {type(data).__name__}, not a tensor"
        )
    return data


def _encode_latin1(text, encoding):
    # Protocol-2 pickles store `bytes` as _codecs.encode(text, "latin1");
    # other codecs are refused because some (e.g. zlib) do real work.
    if encoding != "latin1" or not isinstance(text, str):
        raise CheckpointFormatError(f"refusing _codecs.encode(..., {encoding!r})")
    return text.encode("latin1")


def _allowed_globals():
    allowed = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch._utils", "_rebuild_tensor"): _Global(_rebuild_tensor),
        ("torch._utils", "_rebuild_tensor_v2"): _Global(_rebuild_tensor_v2),
        ("torch._utils", "_rebuild_parameter"): _Global(_rebuild_parameter),
        ("torch._utils", "_rebuild_parameter_with_state"): _Global(
            _rebuild_parameter
        ),
        # Training scripts store their argparse arguments in the checkpoint.
        ("argparse", "Namespace"): types.SimpleNamespace,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("builtins", "slice"): slice,
        ("builtins", "complex"): complex,
        ("_codecs", "encode"): _Global(_encode_latin1),
    }
    for storage_name, dtype_name in _STORAGE_DTYPES.items():
        allowed["torch", storage_name] = _StorageType(dtype_name)
        # A dtype stored as a value (e.g. an AMP setting) is returned as its
        # name: numpy dtype objects are mutable singletons, strings are not.
        if storage_name != "UntypedStorage":
            allowed["torch", dtype_name] = f"torch.{dtype_name}"
    return allowed


_ALLOWED_GLOBALS = _allowed_globals()


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that only resolves allow-listed globals.

    Args:
        file: Binary file positioned at the start of a pickle.
        path: Checkpoint path, for error messages.
        storages: Dict of key -> `_Storage` shared by all tensors of the
            checkpoint, or None for pickles that must not hold tensors.
        read_storage: Callable `(storage) -> None` filling in `storage.data`
            when a key is first seen, or None when the bytes are read later.
        pid_length: Length of the persistent-id tuples of this format.
    """

    def __init__(self, file, path, storages=None, read_storage=None, pid_length=5):
        # Python 2 pickles hold str as bytes; torch decodes them as utf-8.
        super().__init__(file, encoding="utf-8")
        self._path = path
        self._storages = storages
        self._read_storage = read_storage
        self._pid_length = pid_length

    def find_class(self, module, name):
        # Protocol 0-2 pickles written by Python 3 spell builtins the
        # Python 2 way.
        if module == "__builtin__":
            module = "builtins"
        try:
            return _ALLOWED_GLOBALS[module, name]
        except KeyError:
            raise UnsafeCheckpointError(
                f"'{self._path}': refusing to load global '{module}.{name}'. "
                "Only tensors and plain containers (dicts, lists, tuples, "
                "numbers, strings) are read from PyTorch checkpoints; the "
                "file may be malicious or not a checkpoint."
            ) from None

    def persistent_load(self, pid):
        if self._storages is None:
            raise CheckpointFormatError(f"unexpected persistent id {pid!r}")
        if not (
            isinstance(pid, tuple)
            and len(pid) == self._pid_length
            and _ascii(pid[0]) == "storage"
        ):
            raise CheckpointFormatError(f"unsupported persistent id {pid!r}")
        storage_type, key, _location, numel = pid[1:5]
        # Legacy ids end with view metadata, set only by PyTorch < 0.4.
        if self._pid_length == 6 and pid[5] is not None:
            raise CheckpointFormatError(
                "storage views from PyTorch < 0.4 are not supported"
            )
        if not isinstance(storage_type, _StorageType):
            raise CheckpointFormatError(f"invalid storage type {storage_type!r}")
        key = _ascii(key)
        storage = self._storages.get(key)
        if storage is None:
            storage = _Storage(key, storage_type.dtype_name, _as_index(numel, "numel"))
            self._storages[key] = storage
            if self._read_storage is not None:
                self._read_storage(storage)
        elif storage.dtype_name != storage_type.dtype_name:
            raise CheckpointFormatError(
                f"storage {key} is used as both {storage.dtype_name} and "
                f"{storage_type.dtype_name}"
            )
        return storage


def _ascii(value):
    return value.decode("ascii") if isinstance(value, bytes) else value


def _materialize(obj, done):
    """Replaces every pending tensor inside `obj` by its numpy array.

    Containers built by the unpickler are private to this module, so they
    are updated in place. `done` maps id() of visited objects to
    `(original, replacement)`, which keeps shared tensors shared, stops on
    reference cycles and keeps originals alive so ids are not reused.
    """
    if id(obj) in done:
        return done[id(obj)][1]
    if isinstance(obj, _PendingTensor):
        done[id(obj)] = (obj, obj.to_numpy())
    elif isinstance(obj, (dict, list, types.SimpleNamespace)):
        done[id(obj)] = (obj, obj)
        items = vars(obj) if isinstance(obj, types.SimpleNamespace) else obj
        pairs = enumerate(items) if isinstance(items, list) else items.items()
        for key, value in list(pairs):
            items[key] = _materialize(value, done)
    elif isinstance(obj, tuple):
        done[id(obj)] = (obj, tuple(_materialize(item, done) for item in obj))
    elif isinstance(obj, (set, frozenset)) and any(
        isinstance(item, _PendingTensor) for item in obj
    ):
        raise CheckpointFormatError("tensors inside a set cannot be converted")
    else:
        return obj
    return done[id(obj)][1]


def _read_zip(file, path):
    with zipfile.ZipFile(file) as archive:
        names = set(archive.namelist())
        pickles = sorted(
            n for n in names if n.endswith("/data.pkl") and n.count("/") == 1
        )
        if not pickles:
            raise CheckpointFormatError(
                "zip archive has no <archive>/data.pkl record, so it is not a "
                "checkpoint written by torch.save"
            )
        prefix = pickles[0][: -len("data.pkl")]
        byteorder = b"little"
        if prefix + "byteorder" in names:
            byteorder = archive.read(prefix + "byteorder").strip()
            if byteorder not in (b"little", b"big"):
                raise CheckpointFormatError(f"unknown byte order {byteorder!r}")

        def read_storage(storage):
            record = f"{prefix}data/{storage.key}"
            if record not in names:
                raise CheckpointFormatError(f"missing storage record {record!r}")
            storage.set_data(archive.read(record), byteorder == b"big")

        with archive.open(pickles[0]) as data_pkl:
            unpickler = _RestrictedUnpickler(
                data_pkl, path, storages={}, read_storage=read_storage
            )
            return unpickler.load()


def _read_legacy(file, path):
    def load_header():
        return _RestrictedUnpickler(file, path).load()

    if load_header() != _LEGACY_MAGIC_NUMBER:
        raise CheckpointFormatError(
            "neither a zip archive nor a legacy PyTorch pickle (bad magic number)"
        )
    protocol = load_header()
    if protocol != _LEGACY_PROTOCOL_VERSION:
        raise CheckpointFormatError(f"unsupported legacy protocol {protocol!r}")
    sys_info = load_header()
    big_endian = isinstance(sys_info, dict) and not sys_info.get("little_endian", True)

    storages = {}
    result = _RestrictedUnpickler(file, path, storages=storages, pid_length=6).load()
    keys = load_header()
    if not isinstance(keys, list):
        raise CheckpointFormatError(f"invalid storage key list {keys!r}")

    file_size = os.fstat(file.fileno()).st_size
    count_format = ">q" if big_endian else "<q"
    for key in keys:
        storage = storages.get(_ascii(key))
        if storage is None:
            raise CheckpointFormatError(f"storage {key!r} is not used by any tensor")
        header = file.read(8)
        if len(header) != 8:
            raise CheckpointFormatError(f"storage {storage.key} is missing")
        (count,) = struct.unpack(count_format, header)
        if count != storage.numel:
            raise CheckpointFormatError(
                f"storage {storage.key} has {count} elements, expected "
                f"{storage.numel}"
            )
        # Checking the size first avoids allocating a huge read buffer when
        # a corrupted count is enormous.
        nbytes = count * storage.itemsize
        available = file_size - file.tell()
        storage.set_data(file.read(min(nbytes, available)), big_endian)
    return result


def read_torch_checkpoint(path):
    """Reads a PyTorch checkpoint without PyTorch and without running its code.

    Tensors (and `torch.nn.Parameter`s) become `numpy.ndarray`s with the
    tensor's dtype, shape and values (non-contiguous and storage-sharing
    tensors are copied into independent C-contiguous arrays). bfloat16
    tensors use `ml_dtypes.bfloat16` when `ml_dtypes` is importable and are
    otherwise upcast exactly to float32. `argparse.Namespace` objects become
    `types.SimpleNamespace`, torch dtypes stored as values become strings
    such as `"torch.float16"`, and dicts, OrderedDicts, lists, tuples, sets,
    numbers and strings are kept as they are.

    Args:
        path: Path of a file written by `torch.save`, in the zip format
            (PyTorch >= 1.6 default) or the legacy format. Any extension.

    Returns:
        The unpickled object, usually a dict.

    Raises:
        FileNotFoundError: If `path` does not exist.
        UnsafeCheckpointError: If the pickle refers to anything other than
            tensors and plain containers (e.g. `os.system` or a model
            class), which is refused before anything is called.
        CheckpointFormatError: If the file is truncated, corrupted or not
            a PyTorch checkpoint.

    Example:

    >>> ckpt = read_torch_checkpoint("checkpoint.pth.tar")  # doctest: +SKIP
    >>> ckpt["epoch"], ckpt["state_dict"]["head.bias"].dtype  # doctest: +SKIP
    (299, dtype('float32'))
    """
    path = os.fspath(path)
    with open(path, "rb") as file:
        magic = file.read(len(_ZIP_MAGIC))
        if not magic:
            raise CheckpointFormatError(f"'{path}': the file is empty")
        file.seek(0)
        try:
            if magic == _ZIP_MAGIC:
                checkpoint = _read_zip(file, path)
            else:
                checkpoint = _read_legacy(file, path)
            return _materialize(checkpoint, {})
        except UnsafeCheckpointError:
            raise
        except CheckpointFormatError as error:
            raise CheckpointFormatError(
                f"'{path}': cannot read PyTorch checkpoint: {error}"
            ) from None
        # Any failure while decoding untrusted bytes means the file is
        # damaged; report it with the path rather than as a library error.
        except (
            pickle.UnpicklingError,
            zipfile.BadZipFile,
            zlib.error,
            struct.error,
            EOFError,
            ValueError,
            TypeError,
            AttributeError,
            IndexError,
            KeyError,
            OverflowError,
            RecursionError,
            NotImplementedError,
        ) as error:
            raise CheckpointFormatError(
                f"'{path}': cannot read PyTorch checkpoint, the file is "
                f"truncated or corrupted ({type(error).__name__}: {error})"
            ) from error


def _is_state_dict(value):
    return (
        isinstance(value, Mapping)
        and len(value) > 0
        and all(
            isinstance(k, str) and isinstance(v, np.ndarray)
            for k, v in value.items()
        )
    )


def extract_state_dict(checkpoint, path="<mapping>", prefer_ema=False):
    """Finds the model weights in a checkpoint returned by `read_torch_checkpoint`.

    Training scripts wrap the weights in different ways; the first of these
    that is a non-empty mapping of names to arrays is used:
    `checkpoint["state_dict_ema"]` or `checkpoint["model_ema"]` when
    `prefer_ema` is set, then `checkpoint["state_dict"]`,
    `checkpoint["model"]`, `checkpoint["state_dict_ema"]`,
    `checkpoint["model_ema"]`, and finally `checkpoint` itself. A `module.`
    (DataParallel) or `_orig_mod.` (torch.compile) prefix shared by every
    name is removed.

    Args:
        checkpoint: The object returned by `read_torch_checkpoint`, or a
            mapping of parameter names to numpy arrays.
        path: Where the checkpoint came from, for error messages.
        prefer_ema: Whether to prefer the exponential-moving-average weights
            when the checkpoint holds both.

    Returns:
        A new dict mapping parameter names to numpy arrays (not copied).

    Raises:
        ValueError: If no state dict is found; the message lists the
            checkpoint's top-level keys.

    Example:

    >>> import numpy as np
    >>> ckpt = {"epoch": 3, "state_dict": {"module.fc.bias": np.zeros(2)}}
    >>> list(extract_state_dict(ckpt))
    ['fc.bias']
    """
    if not isinstance(checkpoint, Mapping):
        raise ValueError(
            f"'{path}': expected the checkpoint to be a dict, got "
            f"{type(checkpoint).__name__}"
        )
    ema_keys = ("state_dict_ema", "model_ema")
    keys = ema_keys if prefer_ema else ()
    keys += ("state_dict", "model") + ema_keys
    candidates = [checkpoint[k] for k in keys if k in checkpoint] + [checkpoint]
    state_dict = next((c for c in candidates if _is_state_dict(c)), None)
    if state_dict is None:
        raise ValueError(
            f"'{path}': no state dict found in the checkpoint. Expected one of "
            f"the keys {list(keys)} holding a mapping of names to arrays, or "
            f"such a mapping itself; top-level keys are {list(checkpoint)}."
        )
    state_dict = dict(state_dict)
    stripped = True
    while stripped:
        stripped = False
        for prefix in _WRAPPER_PREFIXES:
            if all(k.startswith(prefix) for k in state_dict):
                state_dict = {k[len(prefix) :]: v for k, v in state_dict.items()}
                stripped = True
    return state_dict


def load_torch_state_dict(path, prefer_ema=False):
    """Reads the model weights of a PyTorch checkpoint as numpy arrays.

    Same as `extract_state_dict(read_torch_checkpoint(path), path,
    prefer_ema)`; see those functions for the details.

    Args:
        path: Path of a file written by `torch.save`.
        prefer_ema: Whether to prefer the EMA weights when present.

    Returns:
        A dict mapping parameter names to numpy arrays.

    Raises:
        FileNotFoundError: If `path` does not exist.
        UnsafeCheckpointError: If the file holds anything but tensors and
            plain containers.
        CheckpointFormatError: If the file is truncated or corrupted.
        ValueError: If the checkpoint holds no state dict.

    Example:

    >>> weights = load_torch_state_dict("model_best.pth.tar")  # doctest: +SKIP
    """
    return extract_state_dict(read_torch_checkpoint(path), path, prefer_ema)
