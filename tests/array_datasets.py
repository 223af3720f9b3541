"""Small Fashion-MNIST and CIFAR-10 files in exactly the official formats, built at test time.

The real archives cannot be fetched here; these have the official file names, magic numbers,
member names and pickle keys, with a few synthetic images per class (each class a different
brightness, so a network can tell them apart).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import struct
import tarfile
from dataclasses import replace
from pathlib import Path

import numpy as np

CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def class_images(per_class: int, shape: tuple[int, ...], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 [10 * per_class, *shape] images, uint8 labels), class c around brightness 20 + 23 c."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(10, dtype=np.uint8), per_class)
    rng.shuffle(labels)
    noise = rng.integers(0, 16, size=(len(labels), *shape))
    return (20 + 23 * labels.reshape(-1, *[1] * len(shape)) + noise).astype(np.uint8), labels


def idx_bytes(array: np.ndarray) -> bytes:
    """The gzip IDX encoding of a uint8 array: magic 0x0000 08 <dims>, big-endian sizes, data."""
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return gzip.compress(header + array.tobytes())


def fashion_mnist_files(per_class_train: int, per_class_test: int) -> dict[str, bytes]:
    """{official file name: bytes} of the four Fashion-MNIST files."""
    files = {}
    for prefix, per_class, seed in (("train", per_class_train, 0), ("t10k", per_class_test, 1)):
        images, labels = class_images(per_class, (28, 28), seed)
        files[f"{prefix}-images-idx3-ubyte.gz"] = idx_bytes(images)
        files[f"{prefix}-labels-idx1-ubyte.gz"] = idx_bytes(labels)
    return files


def cifar_batch(images: np.ndarray, labels: np.ndarray, name: str) -> dict:
    """An official-format batch dict: b"data" uint8 [N, 3072] (red, green, blue planes), b"labels"."""
    return {b"batch_label": name.encode(), b"labels": [int(v) for v in labels],
            b"data": images.transpose(0, 3, 1, 2).reshape(len(images), -1),
            b"filenames": [f"{i:05d}.png".encode() for i in range(len(images))]}


def cifar10_archive(per_class_per_batch: int, per_class_test: int, members: dict[str, bytes] | None = None) -> bytes:
    """cifar-10-python.tar.gz's bytes: cifar-10-batches-py/ data_batch_1..5, test_batch and
    batches.meta, Python-2-style (protocol 2) pickles with bytes keys; `members` adds or replaces."""
    pickles = {"batches.meta": {b"num_cases_per_batch": 10 * per_class_per_batch,
                                b"label_names": [n.encode() for n in CIFAR_NAMES], b"num_vis": 3072}}
    for i in range(1, 6):
        images, labels = class_images(per_class_per_batch, (32, 32, 3), seed=i)
        pickles[f"data_batch_{i}"] = cifar_batch(images, labels, f"training batch {i} of 5")
    images, labels = class_images(per_class_test, (32, 32, 3), seed=9)
    pickles["test_batch"] = cifar_batch(images, labels, "testing batch 1 of 1")
    contents = {name: pickle.dumps(value, protocol=2) for name, value in pickles.items()}
    contents.update(members or {})
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, data in contents.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def write_files(folder: Path, files: dict[str, bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder


def pin_checksums(monkeypatch, dataset: str, files: dict[str, bytes]) -> None:
    """Make the catalog expect these files' MD5s (the published ones are the real files')."""
    from idenprof.data import catalog

    spec = catalog.DATASETS[dataset]
    pinned = tuple(replace(f, md5=hashlib.md5(files[f.name]).hexdigest(), sha256=None) for f in spec.files)
    monkeypatch.setitem(catalog.DATASETS, dataset, replace(spec, files=pinned))
