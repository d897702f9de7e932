"""Read a backbone checkpoint file without torch: checksums, and the tensors as numpy arrays.

A serving process needs the trained weights, not torch (a quarter of a GB of memory and seconds
of start-up). The checkpoint stays the one artefact: ``torch.save``'s zip format, verified
against its ``.sha256`` as always, is read here directly, so there is no second weights file to
export, ship and keep in step with it, and a user's own checkpoint serves as it is. The model
card a checkpoint stores (plain dicts, lists, strings and numbers) comes back with the tensors,
so a serving process knows the input contract and the class names without torch.

Reading it never runs code from the file. The zip holds ``data.pkl`` (the dict, pickled) and one
raw little-endian buffer per tensor storage. The pickle is read by an unpickler that resolves
exactly four names, each to a function of this module or a plain container: the dict class
(``collections.OrderedDict``), the tensor rebuild (``torch._utils._rebuild_tensor_v2``, here a
strided, bounds-checked, read-only array over the file's bytes) and the storage types (a
dtype). Any other global, the legacy non-zip format, or a storage that is short or outside the
file is a :class:`~adaspring_ros.core.model.weights.CheckpointError` naming the file. This is
the allow-list idea of ``torch.load(weights_only=True)``, with a smaller list.
"""

from __future__ import annotations

import collections
import hashlib
import io
import math
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from adaspring_ros.core.model.weights import CheckpointError, WeightBank, bank_from_checkpoint

__all__ = ["sha256_of", "checksum_path", "write_checksum", "verify_checksum", "read_checkpoint",
           "load_weight_bank"]

# torch's storage classes by pickled name, and the element type they hold.
_STORAGE_DTYPES = {
    "FloatStorage": "f4", "DoubleStorage": "f8", "HalfStorage": "f2", "LongStorage": "i8",
    "IntStorage": "i4", "ShortStorage": "i2", "CharStorage": "i1", "ByteStorage": "u1",
    "BoolStorage": "b1",
}


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def checksum_path(path: str | Path) -> Path:
    """The sibling file that holds ``path``'s sha256 (``<path>.sha256``)."""
    path = Path(path)
    return path.with_name(path.name + ".sha256")


def write_checksum(path: str | Path) -> str:
    """Write ``<path>.sha256`` in sha256sum format; returns the digest."""
    path = Path(path)
    digest = sha256_of(path)
    checksum_path(path).write_text(f"{digest}  {path.name}\n")
    return digest


def verify_checksum(path: str | Path) -> str:
    """Check ``path`` against ``<path>.sha256``; returns the digest or raises CheckpointError."""
    path = Path(path)
    sums = checksum_path(path)
    if not path.is_file():
        raise CheckpointError(f"backbone checkpoint {path} does not exist")
    if not sums.is_file():
        raise CheckpointError(f"checksum file {sums} is missing (cannot verify {path.name})")
    fields = sums.read_text().split()
    expected = fields[0].lower() if fields else ""
    digest = sha256_of(path)
    if digest != expected:
        raise CheckpointError(
            f"{path} does not match {sums.name}: sha256 {digest} != {expected or '(empty)'}; "
            "the file is corrupt, truncated or from another training run")
    return digest


class _StorageType:
    """A pickled torch storage class: only ever the element type of a persistent id."""

    def __init__(self, dtype: str) -> None:
        self.dtype = dtype


class _Storage:
    """A tensor storage: ``count`` elements of ``dtype`` from byte ``start`` of ``data``."""

    __slots__ = ("data", "start", "count", "dtype")

    def __init__(self, data: bytes, start: int, count: int, dtype: np.dtype) -> None:
        self.data, self.start, self.count, self.dtype = data, start, count, dtype


def _rebuild_tensor(storage: _Storage, offset: int, size: tuple, stride: tuple,
                    *_ignored: Any) -> np.ndarray:
    """A tensor as a read-only array over the file's bytes: ``size`` elements of ``storage``
    from ``offset`` by ``stride`` (in elements), after checking that every one of them lies
    inside the storage."""
    if not isinstance(storage, _Storage):
        raise CheckpointError("a tensor without a storage")
    size, stride, offset = tuple(int(s) for s in size), tuple(int(s) for s in stride), int(offset)
    if len(size) != len(stride) or offset < 0 or any(s < 0 for s in size + stride):
        raise CheckpointError(f"tensor of size {size}, stride {stride} at {offset}")
    dtype = storage.dtype
    if math.prod(size) == 0:
        return np.zeros(size, dtype.newbyteorder("="))
    if offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True)) >= storage.count:
        raise CheckpointError(f"tensor of size {size} at {offset} runs past its storage of "
                              f"{storage.count} elements")
    array = np.ndarray(size, dtype, storage.data, storage.start + offset * dtype.itemsize,
                       tuple(s * dtype.itemsize for s in stride))
    return array if dtype.isnative else array.astype(dtype.newbyteorder("="))


class _Unpickler(pickle.Unpickler):
    """Resolves only the names a weights file holds; storages come from the zip's entries."""

    _GLOBALS = {("collections", "OrderedDict"): collections.OrderedDict,
                ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor}

    def __init__(self, raw: bytes, archive: zipfile.ZipFile, prefix: str) -> None:
        super().__init__(io.BytesIO(archive.read(f"{prefix}data.pkl")))
        self.raw, self.archive, self.prefix = raw, archive, prefix
        byteorder = "little"
        if f"{prefix}byteorder" in archive.NameToInfo:
            byteorder = archive.read(f"{prefix}byteorder").decode("ascii", "replace")
        self.order = "<" if byteorder == "little" else ">"
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str) -> Any:
        found = self._GLOBALS.get((module, name))
        if found is not None:
            return found
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        raise CheckpointError(f"it refers to {module}.{name}, which a weights file never holds")

    def _entry(self, name: str) -> tuple[bytes, int, int]:
        """(bytes, start, length) of an entry: a range of the file for a stored (uncompressed)
        one, as torch writes them, without zipfile's per-entry overhead (the file's sha256
        covers them); the entry read out for another."""
        info = self.archive.getinfo(name)
        start = info.header_offset
        header = self.raw[start:start + 30]
        if info.compress_type != zipfile.ZIP_STORED or len(header) < 30 \
                or header[:4] != b"PK\x03\x04":
            data = self.archive.read(name)
            return data, 0, len(data)
        start += 30 + int.from_bytes(header[26:28], "little") \
            + int.from_bytes(header[28:30], "little")
        if start + info.file_size > len(self.raw):
            raise CheckpointError(f"entry {name} runs past the end of the file")
        return self.raw, start, info.file_size

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType)):
            raise CheckpointError(f"unknown persistent object {str(pid)[:80]}")
        _, kind, key, _location, numel = pid
        key = str(key)
        if key not in self.storages:
            data, start, length = self._entry(f"{self.prefix}data/{key}")
            dtype = np.dtype(kind.dtype).newbyteorder(self.order)
            if length < int(numel) * dtype.itemsize:
                raise CheckpointError(f"storage {key} holds {length} bytes, "
                                      f"{numel} elements need more")
            self.storages[key] = _Storage(data, start, int(numel), dtype)
        return self.storages[key]


def read_checkpoint(path: str | Path) -> Any:
    """The object ``torch.save`` wrote to ``path`` (zip format), tensors as numpy arrays;
    CheckpointError naming the file for anything else."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        with zipfile.ZipFile(io.BytesIO(raw)) as archive:
            pickles = [n for n in archive.namelist() if n.endswith("data.pkl")]
            if len(pickles) != 1:
                raise CheckpointError("no data.pkl in the archive")
            return _Unpickler(raw, archive, pickles[0][:-len("data.pkl")]).load()
    except CheckpointError as exc:
        raise CheckpointError(f"cannot load {path}: {exc}") from exc
    except Exception as exc:  # zip, pickle and decoding errors of a damaged file, in many types
        raise CheckpointError(f"cannot load {path}: {type(exc).__name__}: {exc}") from exc


def load_weight_bank(path: str | Path, verify: bool = True) -> WeightBank:
    """The checked :class:`WeightBank` of a backbone checkpoint, read without torch.

    The file's sha256 must match ``<path>.sha256`` (unless ``verify=False``); the digest is
    kept as ``bank.sha256``, the model card (checked against the weights; the legacy card for a
    version-1 file) as ``bank.card``.
    """
    path = Path(path)
    digest = verify_checksum(path) if verify else sha256_of(path)
    bank = bank_from_checkpoint(read_checkpoint(path), str(path))
    bank.sha256 = digest
    return bank
