"""The native file formats of the array datasets, read into numpy arrays.

    read_idx(path, dims)        gzip IDX of unsigned bytes (MNIST, Fashion-MNIST): images uint8
                                [N, 28, 28] (magic 0x00000803) or labels uint8 [N] (magic 0x00000801)
    read_cifar_archive(path)    CIFAR-10's python tarball (cifar-10-python.tar.gz): each split's
                                images uint8 [N, 32, 32, 3] and labels, and batches.meta's label names

Anything that is not the format raises DatasetError naming the file and what is wrong, in one line.
"""

from __future__ import annotations

import gzip
import io
import math
import pickle
import struct
import tarfile
import zlib
from pathlib import Path

import numpy as np

from idenprof.errors import DatasetError

IDX_UNSIGNED_BYTE = 0x08  # the IDX type code of uint8 data
CIFAR_FOLDER = "cifar-10-batches-py"
CIFAR_SPLITS = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}
CIFAR_META = "batches.meta"
CIFAR_SIDE = 32
# What the official pickles (numpy arrays in Python 2 dicts) may reference; nothing else is loaded.
_PICKLE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
}
REFETCH = "delete it and download it again"


def read_idx(path: Path, dims: int) -> np.ndarray:
    """A gzip-compressed IDX file of unsigned bytes with `dims` dimensions.

    Returns:
        uint8 array of the shape the header gives, e.g. [60000, 28, 28] for dims=3.

    Raises:
        DatasetError: not gzip, a wrong magic number (type or dimensions) or a wrong data length.
    """
    try:
        with gzip.open(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise DatasetError(f"{path} is not a readable gzip file ({e}); {REFETCH}") from None
    expected = IDX_UNSIGNED_BYTE << 8 | dims
    header = 4 + 4 * dims
    if len(data) < header or data[:4] != expected.to_bytes(4, "big"):
        raise DatasetError(f"{path} is not an IDX file of {dims}-D unsigned bytes (magic number "
                           f"0x{data[:4].hex() or 'none'}, expected 0x{expected:08x}); {REFETCH}")
    shape = struct.unpack(f">{dims}I", data[4:header])
    if len(data) - header != math.prod(shape):
        raise DatasetError(f"{path} holds {len(data) - header} data bytes, its header says {math.prod(shape)} "
                           f"{list(shape)}: it is truncated or corrupt; {REFETCH}")
    return np.frombuffer(data, np.uint8, offset=header).reshape(shape)


class _DatasetUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in _PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name}")
        return super().find_class(module, name)


def _unpickle(data: bytes, where: str):
    try:
        return _DatasetUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as e:  # a damaged pickle raises almost anything
        raise DatasetError(f"{where} is not a readable pickle ({type(e).__name__}: {e}); {REFETCH}") from None


def _cifar_batch(batch, where: str) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 [N, 32, 32, 3], int64 [N]) of one batch dict {b"data": uint8 [N, 3072], b"labels": [N]};
    each row of data is the red plane, then green, then blue, each 32x32 row-major."""
    data = batch.get(b"data") if isinstance(batch, dict) else None
    labels = batch.get(b"labels") if isinstance(batch, dict) else None
    pixels = 3 * CIFAR_SIDE * CIFAR_SIDE
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != pixels:
        raise DatasetError(f"{where} has no b'data' array of uint8 [N, {pixels}]; {REFETCH}")
    if labels is None or len(labels) != len(data):
        raise DatasetError(f"{where} has no b'labels' list of {len(data)} class indices; {REFETCH}")
    images = data.reshape(-1, 3, CIFAR_SIDE, CIFAR_SIDE).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), np.asarray(labels, dtype=np.int64)


def read_cifar_archive(path: Path) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[str]]:
    """CIFAR-10's python tarball, read in place (nothing is extracted).

    Returns:
        ({"train": (images, labels), "test": (images, labels)}, class names): images uint8
        [N, 32, 32, 3] RGB, labels int64 [N]; the names are batches.meta's b"label_names".

    Raises:
        DatasetError: not a gzip tar, a member missing, or a member not in the official format.
    """
    splits = {}
    try:
        with tarfile.open(path, "r:gz") as tar:
            members = {m.name: m for m in tar.getmembers() if m.isfile()}

            def load(name):
                member = members.get(f"{CIFAR_FOLDER}/{name}")
                if member is None:
                    raise DatasetError(f"{path} has no {CIFAR_FOLDER}/{name}: it is not CIFAR-10's python archive "
                                       f"(cifar-10-python.tar.gz); {REFETCH}")
                return _unpickle(tar.extractfile(member).read(), f"{path}: {name}")

            meta = load(CIFAR_META)
            for split, names in CIFAR_SPLITS.items():
                parts = [_cifar_batch(load(name), f"{path}: {name}") for name in names]
                splits[split] = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise DatasetError(f"{path} is not a readable tar.gz archive ({e}); {REFETCH}") from None
    names = meta.get(b"label_names") if isinstance(meta, dict) else None
    if not names or not all(isinstance(n, bytes) for n in names):
        raise DatasetError(f"{path}: {CIFAR_META} has no b'label_names' list; {REFETCH}")
    return splits, [n.decode() for n in names]
