"""Writing files so that a reader (or a rerun after a crash) never sees a half-written one.

Every output of the project that is replaced in place goes through `atomic_write`: write a hidden
temporary sibling, then rename it over the final name (a rename within one folder is atomic).
Temporaries are named `.{stem}.{pid}-{n}.tmp{suffix}`: unique per process and write, hidden, and
recognisable by `TEMP_GLOB` so leftovers of a killed process can be cleaned.

Training hands the slow half of each write (the fsync and the rename) to a `BackgroundWriter`:
on this project's VM an fsync sometimes waits tens of seconds for the shared disk, and training
must not wait with it.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import os
import queue
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

from idenprof.errors import IdenprofError

TEMP_GLOB = ".*.tmp*"

_temp_numbers = itertools.count()


def temp_name(path: Path, suffix: str | None = None) -> Path:
    """A hidden sibling of `path`, unique to this process and call (two writes of one file can be
    in flight at once), with the same suffix (np.save and Keras choose the format by it;
    `suffix` overrides it, e.g. ".weights.h5")."""
    path = Path(path)
    unique = f"{os.getpid()}-{next(_temp_numbers)}"
    return path.with_name(f".{path.stem}.{unique}.tmp{path.suffix if suffix is None else suffix}")


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
        needed, available = distinct_mib(needed_bytes, free)
        raise IdenprofError(
            f"disk full: saving {path} needs about {needed} MiB and "
            f"{available} MiB are free; free some space and run the same command to resume"
        )


def distinct_mib(larger: int, smaller: int) -> tuple[str, str]:
    """Two byte counts in MiB with just enough decimals (up to 3) to show that they differ."""
    for decimals in range(4):
        a, b = f"{larger / 2**20:.{decimals}f}", f"{smaller / 2**20:.{decimals}f}"
        if a != b:
            break
    return a, b


def atomic_write(path: Path, write: Callable[[Path], object], suffix: str | None = None,
                 writer: BackgroundWriter | None = None) -> Path:
    """Call `write(tmp)`, flush tmp to disk, then rename it over `path`; on failure remove tmp
    and leave `path` as it was. A full disk becomes an IdenprofError naming the file.

    With `writer`, only `write(tmp)` happens now; the flush and the rename are queued on the
    writer (in order with its other jobs), and `path` appears when the writer gets to it.
    The file gets the usual permissions (the process umask), as if written directly.
    """
    path = Path(path)
    tmp = temp_name(path, suffix)
    with _disk_full_named(path), _removed_on_failure(tmp):
        write(tmp)
    if writer is None:
        _flush_and_rename(tmp, path)
    else:
        writer.submit(lambda: _flush_and_rename(tmp, path))
    return path


def _flush_and_rename(tmp: Path, path: Path) -> None:
    with _disk_full_named(path), _removed_on_failure(tmp):
        with open(tmp, "rb") as f:  # a power cut after the rename must not leave an empty file
            os.fsync(f.fileno())
        os.replace(tmp, path)


@contextlib.contextmanager
def _disk_full_named(path: Path):
    """Turn a disk-full OSError raised in the block into an IdenprofError naming `path`."""
    try:
        yield
    except OSError as e:
        if is_disk_full(e):
            raise IdenprofError(
                f"disk full while saving {path}; free some space and run the same command to resume"
            ) from None
        raise


@contextlib.contextmanager
def _removed_on_failure(tmp: Path):
    """Remove `tmp` when the block raises."""
    try:
        yield
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class BackgroundWriter:
    """Runs file jobs (callables) one at a time on a background thread, in the order submitted.

    A job that fails stops the queue: the jobs after it are dropped (so nothing that depends on a
    file that was not written gets committed), and its exception is raised in the caller's thread
    at the next `submit` or `drain`. Use as a context manager: leaving the block drains the
    queue (without hiding an exception already on its way out).
    """

    def __init__(self):
        self._jobs: queue.Queue = queue.Queue()
        self._error: BaseException | None = None  # a failure not yet raised in the caller's thread
        self._failed = False  # once a job fails, later jobs are dropped
        self._thread = threading.Thread(target=self._run, name="idenprof-file-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                if job is not None and not self._failed:
                    job()
            except BaseException as error:  # noqa: BLE001 (handed to the caller's thread)
                self._error, self._failed = error, True
            finally:
                self._jobs.task_done()
            if job is None:
                return

    def submit(self, job: Callable[[], object]) -> None:
        """Queue `job`; first raise the error of an earlier job, if one failed."""
        self._raise_error()
        self._jobs.put(job)

    def drain(self) -> None:
        """Wait until every queued job has run; raise the first failure."""
        self._jobs.join()
        self._raise_error()

    def _raise_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def close(self) -> None:
        self.drain()
        self._jobs.put(None)
        self._thread.join()

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        if error is None:
            self.close()
        else:  # finish what was queued, but let the exception in flight be the one reported
            self._jobs.join()
            self._jobs.put(None)
        return False


def write_text_atomically(text: str, path: Path, writer: BackgroundWriter | None = None) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text), writer=writer)


def write_json_atomically(data, path: Path, writer: BackgroundWriter | None = None) -> Path:
    """`data` as indented JSON (with a final newline) at `path`, atomically (see `atomic_write`)."""
    return write_text_atomically(json.dumps(data, indent=2) + "\n", path, writer)


def move_into_place(staged: Path, final: Path, aside: Path) -> Path:
    """Rename `staged` (a file or a folder) to `final`. A folder already at `final` is first
    renamed to `aside` (renaming onto a non-empty folder fails), so `final` is never half-written;
    the caller deletes `aside`."""
    final = Path(final)
    if final.is_dir():
        os.replace(final, aside)
    os.replace(staged, final)
    return final
