"""Keras callbacks the stock ones do not cover: an atomic best-model checkpoint that survives
resume, a time budget, and an early estimate of the time per epoch."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import time
import warnings
from pathlib import Path

import keras

from idenprof.errors import IdenprofError

BEST_MODEL_PATTERN = re.compile(r"^model-e(\d{3,})-val(\d\.\d{4})\.keras$")


def find_best_checkpoint(run_dir: Path) -> tuple[Path, int, float] | None:
    """The best `.keras` checkpoint in `run_dir` as (path, epoch, val_accuracy), or None."""
    found = []
    for path in Path(run_dir).glob("model-e*-val*.keras"):
        m = BEST_MODEL_PATTERN.match(path.name)
        if m:
            found.append((float(m.group(2)), int(m.group(1)), path))
    if not found:
        return None
    acc, epoch, path = max(found)
    return path, epoch, acc


@contextlib.contextmanager
def absl_warnings_silenced():
    from absl import logging as absl_logging

    before = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.ERROR)
    try:
        yield
    finally:
        absl_logging.set_verbosity(before)


def save_model_atomically(model: keras.Model, path: Path) -> None:
    """Save to a temporary name in the same folder, then rename: a crash never leaves a half file
    under the final name. Disk-full becomes a one-line error."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    try:
        if path.suffix == ".h5":
            # Keras warns that .h5 is legacy at every save; we write it on purpose, as the original did.
            with warnings.catch_warnings(), absl_warnings_silenced():
                warnings.simplefilter("ignore")
                model.save(tmp)
        else:
            model.save(tmp)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        if e.errno == errno.ENOSPC:
            raise IdenprofError(f"disk full while saving {path}; free some space and run the same command to resume") from None
        raise


class BestModelCheckpoint(keras.callbacks.Callback):
    """Keep only the best model by `monitor`, as `model-eEEE-valA.AAAA.keras` (+ `.h5`).

    The best-so-far is read back from the files already in `run_dir`, so it survives a resume.
    """

    def __init__(self, run_dir: Path, monitor: str = "val_accuracy", save_h5: bool = True):
        super().__init__()
        self.run_dir = Path(run_dir)
        self.monitor = monitor
        self.save_h5 = save_h5
        existing = find_best_checkpoint(self.run_dir)
        self.best = existing[2] if existing else -1.0
        self.best_path = existing[0] if existing else None

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or round(float(value), 4) <= self.best:
            return
        path = self.run_dir / f"model-e{epoch + 1:03d}-val{float(value):.4f}.keras"
        save_model_atomically(self.model, path)
        if self.save_h5:
            save_model_atomically(self.model, path.with_suffix(".h5"))
        previous = self.best_path
        self.best, self.best_path = round(float(value), 4), path
        if previous is not None and previous != path:
            previous.unlink(missing_ok=True)
            previous.with_suffix(".h5").unlink(missing_ok=True)


class TimeBudget(keras.callbacks.Callback):
    """Stop training before the epoch that would overrun `budget_s` (wall time since `start_time`)."""

    def __init__(self, budget_s: float, start_time: float):
        super().__init__()
        self.budget_s = budget_s
        self.start_time = start_time
        self.epoch_start = start_time
        self.longest_epoch_s = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_start = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        now = time.monotonic()
        self.longest_epoch_s = max(self.longest_epoch_s, now - self.epoch_start)
        if now - self.start_time + self.longest_epoch_s > self.budget_s:
            self.model.stop_training = True


class EpochTimeEstimate(keras.callbacks.Callback):
    """After a few batches of the first epoch, print how long an epoch will take."""

    def __init__(self, steps_per_epoch: int, after_batches: int = 10, log=print):
        super().__init__()
        self.steps_per_epoch = steps_per_epoch
        self.after_batches = min(after_batches, max(2, steps_per_epoch - 1))
        self.log = log
        self.t0 = None
        self.done = False

    def on_train_batch_end(self, batch, logs=None):
        if self.done:
            return
        if batch == 0:  # the first batch includes tracing and compilation: time from the second
            self.t0 = time.monotonic()
        elif batch >= self.after_batches and self.t0 is not None:
            per_step = (time.monotonic() - self.t0) / batch
            epoch_s = per_step * self.steps_per_epoch
            length = f"{epoch_s / 60:.1f} min" if epoch_s >= 60 else f"{epoch_s:.0f} s"
            self.log(
                f"estimate: {length} per epoch "
                f"({per_step * 1000:.0f} ms per step, {self.steps_per_epoch} steps)"
            )
            self.done = True


class LearningRateLogger(keras.callbacks.Callback):
    """Add the optimizer's current learning rate to each epoch's logs (so CSVLogger and
    TensorBoard record it). Must come before the loggers in the callback list."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
