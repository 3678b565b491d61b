"""Writes official-format (torch zip) checkpoints with numpy only.

The pickles are hand-written opcode by opcode, so tests can make the files
the official code would save without torch installed.
"""

import struct
import zipfile

import numpy as np

STORAGE_TYPES = {
    "float32": "FloatStorage",
    "float64": "DoubleStorage",
    "float16": "HalfStorage",
    "int64": "LongStorage",
    "int32": "IntStorage",
    "uint8": "ByteStorage",
    "bool": "BoolStorage",
}


def pickle_global(module, name):
    return b"c" + f"{module}\n{name}\n".encode()


def pickle_str(text):
    data = text.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def pickle_int(value):
    return b"J" + struct.pack("<i", value)


def pickle_tuple(*items):
    return b"(" + b"".join(items) + b"t"


def pickle_dict(items):
    return b"}(" + b"".join(pickle_str(k) + v for k, v in items.items()) + b"u"


def pickle_tensor(storage, key, numel, offset, size, stride, legacy=False):
    """Opcodes calling torch._utils._rebuild_tensor_v2 on a persistent id."""
    pid = [pickle_str("storage"), pickle_global("torch", storage), pickle_str(key), pickle_str("cpu")]
    pid.append(pickle_int(numel))
    if legacy:
        pid.append(b"N")  # no storage view
    hooks = pickle_global("collections", "OrderedDict") + b")R"
    args = pickle_tuple(
        pickle_tuple(*pid) + b"Q",
        pickle_int(offset),
        pickle_tuple(*map(pickle_int, size)),
        pickle_tuple(*map(pickle_int, stride)),
        b"\x89",  # requires_grad=False
        hooks,
    )
    return pickle_global("torch._utils", "_rebuild_tensor_v2") + args + b"R"


def write_torch_zip(path, data_pkl, storages, byteorder="little", name="archive"):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{name}/data.pkl", data_pkl)
        if byteorder is not None:
            archive.writestr(f"{name}/byteorder", byteorder)
        for key, array in storages.items():
            archive.writestr(f"{name}/data/{key}", array.tobytes())
        archive.writestr(f"{name}/version", "3\n")


def write_torch_checkpoint(path, tree):
    """Saves nested dicts of numpy arrays / ints / strs as `torch.save` would."""
    storages = {}

    def encode(value):
        if isinstance(value, dict):
            return pickle_dict({k: encode(v) for k, v in value.items()})
        if isinstance(value, str):
            return pickle_str(value)
        if isinstance(value, (int, np.integer)) and not isinstance(value, np.ndarray):
            return pickle_int(int(value))
        array = np.ascontiguousarray(value)
        key = str(len(storages))
        storages[key] = array
        stride = tuple(int(s // array.itemsize) for s in array.strides)
        storage = STORAGE_TYPES[str(array.dtype)]
        return pickle_tensor(storage, key, array.size, 0, array.shape, stride)

    write_torch_zip(path, b"\x80\x02" + encode(tree) + b".", storages)
