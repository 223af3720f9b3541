"""Writing files so that a reader (or a rerun after a crash) never sees a half-written one.

Every output of the project that is replaced in place goes through `atomic_write`: write a hidden
temporary sibling, then rename it over the final name (a rename within one folder is atomic).
Temporaries are named `.{stem}.{pid}.tmp{suffix}`: unique per process, hidden, and recognisable
by `TEMP_GLOB` so leftovers of a killed process can be cleaned.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from idenprof.errors import IdenprofError

TEMP_GLOB = ".*.tmp*"


def temp_name(path: Path, suffix: str | None = None) -> Path:
    """A hidden sibling of `path`, unique to this process, with the same suffix (np.save and
    Keras choose the format by it; `suffix` overrides it, e.g. ".weights.h5")."""
    path = Path(path)
    return path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix if suffix is None else suffix}")


def is_disk_full(error: OSError) -> bool:
    """Whether `error` says the disk is full (h5py reports it in its message, not in errno)."""
    return error.errno == errno.ENOSPC or "No space left on device" in str(error)


def check_free_space(path: Path, needed_bytes: int) -> None:
    """IdenprofError (disk full) when the file system of `path`'s folder has less than
    `needed_bytes` free. h5py cannot fail cleanly on a full disk (it prints errors from
    destructors, then may crash the process): check before writing HDF5 files."""
    path = Path(path)
    free = shutil.disk_usage(path.parent).free
    if free < needed_bytes:
        raise IdenprofError(
            f"disk full: saving {path} needs about {needed_bytes / 2**20:.0f} MiB and "
            f"{free / 2**20:.0f} MiB are free; free some space and run the same command to resume"
        )


def atomic_write(path: Path, write: Callable[[Path], object], suffix: str | None = None) -> Path:
    """Call `write(tmp)`, flush tmp to disk, then rename it over `path`; on failure remove tmp
    and leave `path` as it was. A full disk becomes an IdenprofError naming the file.

    The file gets the usual permissions (the process umask), as if written directly.
    """
    path = Path(path)
    tmp = temp_name(path, suffix)
    try:
        write(tmp)
        with open(tmp, "rb") as f:  # a power cut after the rename must not leave an empty file
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        if is_disk_full(e):
            raise IdenprofError(
                f"disk full while saving {path}; free some space and run the same command to resume"
            ) from None
        raise
    finally:
        if tmp.is_file():
            tmp.unlink(missing_ok=True)
    return path


def write_text_atomically(text: str, path: Path) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def write_json_atomically(data, path: Path) -> Path:
    """`data` as indented JSON (with a final newline) at `path`, atomically."""
    return write_text_atomically(json.dumps(data, indent=2) + "\n", path)


def move_into_place(staged: Path, final: Path, aside: Path) -> Path:
    """Rename `staged` (a file or a folder) to `final`. A folder already at `final` is first
    renamed to `aside` (renaming onto a non-empty folder fails), so `final` is never half-written;
    the caller deletes `aside`."""
    final = Path(final)
    if final.is_dir():
        os.replace(final, aside)
    os.replace(staged, final)
    return final
