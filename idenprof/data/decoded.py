"""Decode every photo once into one uint8 array, with an optional on-disk cache.

`decode_images` runs `idenprof.data.imaging.load_image_rgb` (the one decode-and-resize of the
project) over a thread pool and keeps the pixels in memory, or memory-maps them from a `.npy`
cache when they would not fit. `idenprof.data.batches` serves batches from the result.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from idenprof.data.imaging import ImageError, load_image_rgb
from idenprof.errors import ConfigError
from idenprof.files import atomic_write, temp_name

# Bump when the decoded pixels of a file would change (e.g. a new resize method), so old caches
# are not reused.
CACHE_VERSION = 1
# Rows copied at a time when a cache is rewritten without its unreadable files.
_COPY_BLOCK_ROWS = 256


@dataclass
class DecodedImages:
    """Every readable image of a sample list, decoded once at one size.

    Attributes:
        images: uint8 [N, S, S, 3] RGB; an np.ndarray in memory, or an np.memmap of a whole
            `.npy` cache file when the array is too large to hold comfortably.
        labels: int32 [N], class index of each image.
        paths: the N file paths, in sample order.
        skipped: (path, reason) of each unreadable or corrupt file, left out of the arrays.
    """

    images: np.ndarray
    labels: np.ndarray
    paths: list[str]
    skipped: list[tuple[str, str]]


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, not the machine's count)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def memory_budget_bytes() -> int:
    """A quarter of physical RAM: the most decoded pixels we hold in memory."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4


def decode_images(
    samples: list[tuple[str, int]],
    image_size: int,
    *,
    cache_dir: Path | None = None,
    workers: int | None = None,
    progress: bool = True,
    memory_limit_bytes: int | None = None,
) -> DecodedImages:
    """Decode every sample's file once, resized to image_size x image_size.

    Files are decoded in parallel threads (PIL releases the GIL while decoding). Unreadable files
    are reported in `skipped` and left out. With `cache_dir`, the pixels are also saved there as
    a `.npy` file keyed by the files' paths, sizes and mtimes and `image_size`, and a later call
    with the same files loads that instead of decoding.

    Args:
        samples: (file path, class index) pairs.
        image_size: side S of the square output, in pixels.
        cache_dir: folder for the on-disk cache; required when the pixels would not fit in
            `memory_limit_bytes`, since they are then memory-mapped from there.
        workers: decoding threads; default: the available CPU cores.
        progress: show a tqdm progress bar while decoding.
        memory_limit_bytes: the most pixel bytes kept in memory; default a quarter of RAM.

    Returns:
        DecodedImages with images uint8 [N, S, S, 3] and labels int32 [N].

    Raises:
        ConfigError: the pixels do not fit in memory and no cache_dir is given.
    """
    paths = [str(path) for path, _ in samples]
    labels = np.array([label for _, label in samples], dtype=np.int32)
    shape = (len(paths), image_size, image_size, 3)
    limit = memory_budget_bytes() if memory_limit_bytes is None else memory_limit_bytes
    in_memory = math.prod(shape) <= limit
    if cache_dir is None and not in_memory:
        raise ConfigError(
            f"{len(paths)} images at {image_size}x{image_size} need {math.prod(shape) / 1e9:.1f} GB, "
            "more than a quarter of this machine's memory; give a cache directory to keep them on disk"
        )
    decode = _Decoder(paths, image_size, workers or available_cores(), progress)
    if cache_dir is None:
        images, failures = _decode_in_memory(decode, shape)
    else:
        images, failures = _cached_decode(decode, shape, Path(cache_dir), in_memory)
    keep = _kept_indices(len(paths), failures)
    return DecodedImages(
        images=images,
        labels=labels[keep],
        paths=[paths[i] for i in keep],
        skipped=[(paths[i], reason) for i, reason in sorted(failures.items())],
    )


@dataclass
class _Decoder:
    paths: list[str]
    image_size: int
    workers: int
    progress: bool

    def into(self, out: np.ndarray) -> dict[int, str]:
        """Decode paths[i] into out[i] for every i; returns {index: reason} of the failures."""

        def decode_one(i: int) -> str | None:
            try:
                out[i] = load_image_rgb(self.paths[i], size=self.image_size)
            except ImageError as e:
                return str(e).removeprefix(f"{self.paths[i]}: ")
            return None

        failures = {}
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            reasons = pool.map(decode_one, range(len(self.paths)))
            bar = tqdm(
                reasons,
                total=len(self.paths),
                desc="decoding images",
                unit="img",
                disable=not self.progress,
            )
            for i, reason in enumerate(bar):
                if reason is not None:
                    failures[i] = reason
        return failures

    def cache_key(self) -> str:
        """Hash of everything the decoded pixels depend on: files (path, size, mtime) and size."""
        entries = []
        for path in self.paths:
            try:
                st = os.stat(path)
                entries.append((path, st.st_size, st.st_mtime_ns))
            except OSError:
                entries.append((path, -1, -1))
        blob = json.dumps([CACHE_VERSION, self.image_size, entries]).encode()
        return hashlib.sha256(blob).hexdigest()[:24]


def _decode_in_memory(
    decode: _Decoder, shape: tuple[int, ...]
) -> tuple[np.ndarray, dict[int, str]]:
    """(uint8 images of the readable files, {index: reason} of the others)."""
    images = np.empty(shape, dtype=np.uint8)
    failures = decode.into(images)
    if failures:
        images = images[_kept_indices(shape[0], failures)]
    return images, failures


def _kept_indices(count: int, failures: dict[int, str]) -> np.ndarray:
    return np.array([i for i in range(count) if i not in failures], dtype=np.int64)


def _cached_decode(
    decode: _Decoder, shape: tuple[int, ...], cache_dir: Path, in_memory: bool
) -> tuple[np.ndarray, dict[int, str]]:
    """Load the cache for these files if present, else decode and write it (atomically)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    stem = f"images-{decode.image_size}px-{decode.cache_key()}"
    npy_path, meta_path = cache_dir / f"{stem}.npy", cache_dir / f"{stem}.json"
    cached = _read_cache(npy_path, meta_path, shape, in_memory)
    if cached is not None:
        return cached
    if in_memory:
        images, failures = _decode_in_memory(decode, shape)
        atomic_write(npy_path, lambda tmp: np.save(tmp, images))
    else:
        # Too big for memory: decode straight into a memory-mapped scratch file.
        scratch = temp_name(cache_dir / f"{stem}-scratch.npy")
        try:
            full = np.lib.format.open_memmap(scratch, mode="w+", dtype=np.uint8, shape=shape)
            failures = decode.into(full)
            full.flush()
            if failures:
                keep = _kept_indices(shape[0], failures)
                atomic_write(npy_path, lambda tmp: _copy_rows(full, keep, tmp))
            else:
                os.replace(scratch, npy_path)
            del full
        finally:
            scratch.unlink(missing_ok=True)
        images = np.load(npy_path, mmap_mode="r")
    meta = {"shape": list(shape), "failures": {str(i): r for i, r in failures.items()}}
    atomic_write(meta_path, lambda tmp: tmp.write_text(json.dumps(meta)))
    return images, failures


def _read_cache(
    npy_path: Path, meta_path: Path, shape: tuple[int, ...], in_memory: bool
) -> tuple[np.ndarray, dict[int, str]] | None:
    """The cached (images, failures), or None when missing or not for these files."""
    try:
        meta = json.loads(meta_path.read_text())
        failures = {int(i): reason for i, reason in meta["failures"].items()}
        images = np.load(npy_path, mmap_mode="r")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    expected = (shape[0] - len(failures), *shape[1:])
    if tuple(meta["shape"]) != tuple(shape) or images.shape != expected or images.dtype != np.uint8:
        return None
    return (np.array(images) if in_memory else images), failures


def _copy_rows(source: np.ndarray, rows: np.ndarray, dest: Path) -> None:
    """Write source[rows] to a new .npy at dest, a block at a time (source may exceed RAM)."""
    out = np.lib.format.open_memmap(
        dest, mode="w+", dtype=source.dtype, shape=(len(rows), *source.shape[1:])
    )
    for start in range(0, len(rows), _COPY_BLOCK_ROWS):
        block = rows[start : start + _COPY_BLOCK_ROWS]
        out[start : start + len(block)] = source[block]
    out.flush()
