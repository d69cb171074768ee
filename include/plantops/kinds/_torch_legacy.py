"""A reader of PyTorch's legacy (pre-1.6, not zip) ``torch.save`` format with ``pickle`` and numpy:
the state dict of a weights file as numpy arrays, without torch.

The file is a sequence of pickles: the magic number, the protocol version (1001), a dict of system
info (endianness, type sizes), then the object itself, whose persistent ids name storages
(``('storage', storage_type, key, location, numel, view_metadata)``), then the list of storage keys,
and for each key in that order an int64 little-endian element count followed by the raw data.
Tensors are rebuilt by ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)``: the
unpickler answers that name, and the storage types (``torch.FloatStorage``...), with its own
markers, so nothing of torch is needed and no other global is allowed (a weights file is data: an
unexpected global raises :class:`TorchFileProblem` rather than being imported).
"""

from __future__ import annotations

import collections
import pickle
import struct
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

MAGIC = 0x1950A86A20F9469CFC6C
PROTOCOL = 1001
DTYPES = {
    "DoubleStorage": np.float64, "FloatStorage": np.float32, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16, "CharStorage": np.int8,
    "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


class TorchFileProblem(ValueError):
    pass


class _StorageType:
    def __init__(self, name: str) -> None:
        self.name = name
        self.dtype = np.dtype(DTYPES[name])


class _Storage:
    """A storage named by the object pickle; its data is read after it."""

    def __init__(self, key: str, dtype: np.dtype, numel: int) -> None:
        self.key, self.dtype, self.numel = key, dtype, numel
        self.data: np.ndarray | None = None


class _Tensor:
    """A tensor to build once its storage's data is read: a strided view of it."""

    def __init__(self, storage: _Storage, offset: int, size: tuple[int, ...], stride: tuple[int, ...]) -> None:
        self.storage, self.offset, self.size, self.stride = storage, int(offset), tuple(size), tuple(stride)

    def array(self) -> np.ndarray:
        data = self.storage.data
        assert data is not None
        if not self.size:
            return data[self.offset].copy()
        itemsize = data.dtype.itemsize
        last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride, strict=True)) if all(self.size) \
            else self.offset
        if last >= len(data):
            raise TorchFileProblem(f"a tensor of size {self.size} at offset {self.offset} overruns storage "
                                   f"{self.storage.key} of {len(data)} elements")
        view = np.lib.stride_tricks.as_strided(data[self.offset:], shape=self.size,
                                               strides=[s * itemsize for s in self.stride])
        return np.array(view)


def _rebuild_tensor_v2(storage: _Storage, offset: int, size: tuple[int, ...], stride: tuple[int, ...],
                       requires_grad: bool = False, backward_hooks: Any = None, metadata: Any = None) -> _Tensor:
    return _Tensor(storage, offset, size, stride)


def _rebuild_tensor(storage: _Storage, offset: int, size: tuple[int, ...], stride: tuple[int, ...]) -> _Tensor:
    return _Tensor(storage, offset, size, stride)


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: BinaryIO, storages: dict[str, _Storage]) -> None:
        super().__init__(file)
        self.storages = storages

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor_v2
        if module == "torch._utils" and name == "_rebuild_tensor":
            return _rebuild_tensor
        if module == "torch" and name in DTYPES:
            return _StorageType(name)
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        raise TorchFileProblem(f"the weights file names {module}.{name}: not a plain state dict of tensors")

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise TorchFileProblem(f"unexpected persistent id {pid!r}")
        _, storage_type, key, _location, numel, view = (*pid, None)[:6]
        if view is not None:
            raise TorchFileProblem(f"storage {key} is a view ({view!r}): not supported")
        if key not in self.storages:
            self.storages[key] = _Storage(str(key), storage_type.dtype, int(numel))
        return self.storages[key]


def _load(file: BinaryIO, what: str) -> Any:
    try:
        return pickle.load(file)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad file
        raise TorchFileProblem(f"cannot read the {what}: {exc}") from exc


def load_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """The file's state dict, key -> numpy array (in the file's key order). Raises
    :class:`TorchFileProblem` naming the file for anything but the legacy format of plain tensors."""
    path = Path(path)
    storages: dict[str, _Storage] = {}
    with path.open("rb") as file:
        try:
            if _load(file, "magic number") != MAGIC:
                raise TorchFileProblem("not a legacy torch file (magic number)")
            if _load(file, "protocol version") != PROTOCOL:
                raise TorchFileProblem("unknown protocol version")
            info = _load(file, "system info")
            if not info.get("little_endian", False):
                raise TorchFileProblem("a big-endian file")
            try:
                obj = _Unpickler(file, storages).load()
            except TorchFileProblem:
                raise
            except Exception as exc:  # noqa: BLE001
                raise TorchFileProblem(f"cannot read the object: {exc}") from exc
            keys = _load(file, "storage keys")
            if sorted(map(str, keys)) != sorted(storages):
                raise TorchFileProblem(f"{len(keys)} storage keys listed, {len(storages)} referenced")
            for key in keys:
                storage = storages[str(key)]
                (count,) = struct.unpack("<q", file.read(8))
                if count != storage.numel:
                    raise TorchFileProblem(f"storage {key}: {count} elements, {storage.numel} expected")
                raw = file.read(count * storage.dtype.itemsize)
                if len(raw) != count * storage.dtype.itemsize:
                    raise TorchFileProblem(f"storage {key}: truncated")
                storage.data = np.frombuffer(raw, dtype=storage.dtype.newbyteorder("<"))
            if file.read(1):
                raise TorchFileProblem("trailing data after the last storage")
        except TorchFileProblem as exc:
            raise TorchFileProblem(f"{path}: {exc}") from None
    if not isinstance(obj, dict) or not all(isinstance(v, _Tensor) for v in obj.values()):
        raise TorchFileProblem(f"{path}: not a state dict of tensors")
    return {str(k): v.array() for k, v in obj.items()}
