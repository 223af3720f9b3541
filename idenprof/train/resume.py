"""Keeping a run folder resumable: one train.py at a time, and what a killed one left behind.

A run folder is used by one process at a time: `lock_run_folder` holds an exclusive
`fcntl.flock` on its `.lock` file (which also records the holder's PID). The kernel drops the
lock when the process ends however it ends, so a lock file left by a killed process never blocks
a rerun.

An epoch is committed when backup/resume.json is renamed into place (see
idenprof.train.callbacks.ResumeState), after the epoch's checkpoint and metrics row were written. A
process killed between those writes leaves files for an epoch that was never committed;
`discard_uncommitted` removes them before training resumes, so the kept checkpoint, metrics.csv
and the resume state always describe the same epochs. TensorFlow-free.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import json
import os
import shutil
from pathlib import Path

from idenprof.errors import ConfigError
from idenprof.files import TEMP_GLOB, write_text_atomically
from idenprof.run_folder import RunFolder


@contextlib.contextmanager
def lock_run_folder(run: RunFolder):
    """Hold `run`'s lock for the block; ConfigError naming the folder and the holder's PID when
    another process holds it."""
    lock = open(run.lock_path, "a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        pid = lock.read().strip() or "unknown"
        lock.close()
        raise ConfigError(
            f"{run.path} is in use by another train.py (PID {pid}); wait for it to end, or pass another --run-dir"
        ) from None
    try:
        lock.truncate(0)
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        yield
    finally:
        lock.close()  # releases the lock; the file stays (removing it would race a new holder)


def committed_epochs(run: RunFolder) -> int:
    """Epochs whose training state is committed (`RunFolder.committed_epochs`); 0 when the run has none."""
    return run.committed_epochs() or 0


def discard_uncommitted(run: RunFolder) -> int:
    """Remove what an interrupted process left half done; returns the committed epoch count.

    Temporaries (`files.TEMP_GLOB`) and export staging folders; backup weights resume.json does
    not name; checkpoints of epochs after the committed ones, and every committed checkpoint
    but the kept one (`RunFolder.keep`); metrics.csv rows of uncommitted epochs, repeated
    headers and rows, a torn last line; recorded validation probabilities of uncommitted epochs.
    """
    epochs = committed_epochs(run)
    for folder in (run.path, run.backup_dir, run.export_dir):
        for leftover in [*folder.glob(TEMP_GLOB), *folder.glob(".export-*")] if folder.is_dir() else []:
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)
    if run.resume_state_path.is_file():
        current = json.loads(run.resume_state_path.read_text())["weights"]
        for weights in run.backup_dir.glob("epoch-*.weights.h5"):
            if weights.name != current:
                weights.unlink()
    for suffix in (".keras", ".h5"):
        checkpoints = run.checkpoints(suffix)
        kept = run.kept_among([c for c in checkpoints if c.epoch <= epochs])
        for checkpoint in checkpoints:
            if checkpoint != kept:
                checkpoint.path.unlink()
    keep_metrics_rows(run.metrics_csv, epochs)
    for epoch, path in run.recorded_validation().items():
        if epoch > epochs:
            path.unlink()
    return epochs


def keep_metrics_rows(csv_path: Path, epochs: int) -> None:
    """Rewrite Keras' CSVLogger file (atomically, only when needed) with one header and one row
    for each of the epochs 0..epochs-1 it holds; remove it when none is left."""
    if not csv_path.is_file():
        return
    text = csv_path.read_text()
    lines = text.splitlines(keepends=True)
    if not lines:
        return
    header = lines[0]
    width = len(next(csv.reader([header])))
    kept, seen = [header], set()
    for line in lines[1:]:
        if line == header or not line.endswith("\n"):
            continue
        row = next(csv.reader([line]), [])
        try:
            epoch = int(row[0])
        except (IndexError, ValueError):
            continue
        if len(row) == width and epoch < epochs and epoch not in seen:
            seen.add(epoch)
            kept.append(line)
    if len(kept) == 1:
        csv_path.unlink()
    elif kept != lines:
        buffer = io.StringIO()
        buffer.writelines(kept)
        write_text_atomically(buffer.getvalue(), csv_path)
