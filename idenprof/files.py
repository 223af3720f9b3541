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
from collections.abc import Callable
from pathlib import Path

from idenprof.errors import IdenprofError

TEMP_GLOB = ".*.tmp*"


def temp_name(path: Path) -> Path:
    """A hidden sibling of `path`, unique to this process, with the same suffix (np.save and
    Keras choose the format by it)."""
    path = Path(path)
    return path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")


def atomic_write(path: Path, write: Callable[[Path], object]) -> Path:
    """Call `write(tmp)`, then rename tmp over `path`; on failure remove tmp and leave `path` as
    it was. A full disk becomes an IdenprofError naming the file.

    The file gets the usual permissions (the process umask), as if written directly.
    """
    path = Path(path)
    tmp = temp_name(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as e:
        if e.errno == errno.ENOSPC:
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
