"""Keras callbacks the stock ones do not cover: an atomic best-model checkpoint that survives
resume, a time budget that can drive the learning rate, and an early estimate of the time per
epoch."""

from __future__ import annotations

import contextlib
import gc
import json
import math
import os
import sys
import time
from pathlib import Path

import keras
import numpy as np

from idenprof.errors import IdenprofError
from idenprof.files import BackgroundWriter, atomic_write, check_free_space, write_json_atomically
from idenprof.predict.loaders import predict_in_batches
from idenprof.run_folder import KEEP_RULES, RunFolder
from idenprof.ship.export import save_model
from idenprof.train.recipe import budget_cosine_lr

# Room left for the HDF5 format's own bytes beyond the variables' values.
FREE_SPACE_MARGIN = 2**20


def save_model_atomically(model: keras.Model, path: Path, writer: BackgroundWriter | None = None) -> None:
    """Save under a temporary name in the same folder, then rename: a crash never leaves a half
    file under the final name. Disk-full becomes a one-line error. With `writer`, the flush and
    rename happen on it (see files.atomic_write)."""
    atomic_write(path, h5_safe(lambda tmp: save_model(model, tmp)), writer=writer)


def variables_bytes(variables) -> int:
    """Bytes of the values of Keras `variables` (what saving them writes, less the format's own)."""
    total = 0
    for variable in variables:
        try:
            itemsize = np.dtype(variable.dtype).itemsize
        except TypeError:
            itemsize = 4
        total += int(np.prod(variable.shape)) * itemsize
    return total


def h5_safe(write):
    """`write(path)`, closing what h5py left open of `path` when it fails (Keras does not close
    it): otherwise each later attempt to flush it onto the full disk prints a traceback."""

    def wrapped(path):
        try:
            write(path)
        except OSError:
            close_h5_file(path)
            raise

    return wrapped


def close_h5_file(path: Path) -> None:
    import h5py

    hook = sys.unraisablehook
    sys.unraisablehook = lambda *_: None  # h5py reports failed closes from destructors
    try:
        for file_id in h5py.h5f.get_obj_ids(types=h5py.h5f.OBJ_FILE):
            if os.path.abspath(os.fsdecode(file_id.name)) != os.path.abspath(path):
                continue
            for kinds in (h5py.h5f.OBJ_LOCAL | ~h5py.h5f.OBJ_FILE, h5py.h5f.OBJ_LOCAL | h5py.h5f.OBJ_FILE):
                with contextlib.suppress(Exception):
                    file_id._close_open_objects(kinds)
            with contextlib.suppress(Exception):
                file_id.close()
        gc.collect()
    finally:
        sys.unraisablehook = hook


class CheckpointKeeper(keras.callbacks.Callback):
    """Keep one checkpoint, `model-eEEE-valA.AAAA.keras` (+ `.h5`): with `keep="best"` the best
    epoch by `monitor`, with `keep="last"` the latest epoch.

    The kept checkpoint is read back from the files already in `run_dir`, so it survives a resume.
    The checkpoint a newer one replaces is removed at the next epoch's start (or training's end),
    once ResumeState has committed the epoch: a kill before that commit leaves the previous one,
    which the rerun (idenprof.train.resume.discard_uncommitted) keeps. With a `writer` (shared with
    ResumeState), the files are flushed, renamed and removed on it, in that same order.
    """

    def __init__(self, run_dir: Path, monitor: str = "val_accuracy", save_h5: bool = True, to_saved=None,
                 writer: BackgroundWriter | None = None, keep: str = "best"):
        """`to_saved(model) -> model`, when given, makes what is saved from the training model
        (for example a copy with a fixed input size)."""
        super().__init__()
        if keep not in KEEP_RULES:
            raise ValueError(f"keep must be one of {KEEP_RULES}, got {keep!r}")
        self.to_saved = to_saved
        self.writer = writer
        self.keep = keep
        self.run = RunFolder(run_dir)
        self.monitor = monitor
        self.save_h5 = save_h5
        existing = self.run.kept_checkpoint(keep)
        self.best = existing.val_accuracy if existing else -1.0
        self.best_path = existing.path if existing else None
        self.superseded: list[Path] = []

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or (self.keep == "best" and round(float(value), 4) <= self.best):
            return
        path = self.run.checkpoint_path(epoch + 1, float(value))
        model = self.to_saved(self.model) if self.to_saved else self.model
        check_free_space(path, (1 + self.save_h5) * variables_bytes(model.weights) + FREE_SPACE_MARGIN)
        save_model_atomically(model, path, self.writer)
        if self.save_h5:
            save_model_atomically(model, path.with_suffix(".h5"), self.writer)
        previous = self.best_path
        self.best, self.best_path = round(float(value), 4), path
        if previous is not None and previous != path:
            self.superseded.append(previous)

    def on_epoch_begin(self, epoch, logs=None):
        self.remove_superseded()

    def on_train_end(self, logs=None):
        self.remove_superseded()

    def remove_superseded(self):
        superseded, self.superseded = self.superseded, []

        def remove():
            for previous in superseded:
                previous.unlink(missing_ok=True)
                previous.with_suffix(".h5").unlink(missing_ok=True)

        if self.writer is None:
            remove()
        elif superseded:
            self.writer.submit(remove)


class ValidationRecord(keras.callbacks.Callback):
    """Record the hold-out's class probabilities after every epoch, from the weights a checkpoint
    of that epoch would hold (`to_saved`, as for CheckpointKeeper), so that checkpoint rules
    can be compared afterwards (bench/checkpoint_rule.py). Writes the run folder's validation/:
    labels.npy (int [images]) once, then epoch-EEEE.npy (float16 [images, classes]) per epoch.
    Costs one prediction pass over the hold-out per epoch. Put it before ResumeState, which
    commits the epoch (idenprof.train.resume discards an uncommitted epoch's file).
    """

    def __init__(self, run: RunFolder, images, labels, to_saved, batch_size: int,
                 writer: BackgroundWriter | None = None):
        super().__init__()
        self.run, self.images, self.labels = run, images, np.asarray(labels)
        self.to_saved, self.batch_size, self.writer = to_saved, batch_size, writer

    def on_epoch_end(self, epoch, logs=None):
        self.run.validation_dir.mkdir(exist_ok=True)
        labels_path = self.run.validation_dir / "labels.npy"
        if not labels_path.is_file():
            atomic_write(labels_path, lambda tmp: np.save(tmp, self.labels), suffix=".npy")
        model = self.to_saved(self.model)
        probs = predict_in_batches(model.predict_on_batch, self.images, self.batch_size,
                                   model.output_shape[-1]).astype(np.float16)
        atomic_write(self.run.validation_path(epoch + 1), lambda tmp: np.save(tmp, probs), suffix=".npy",
                     writer=self.writer)


class ResumeState(keras.callbacks.BackupAndRestore):
    """Keras' BackupAndRestore (resume from the last finished epoch), with a state that a kill or
    a full disk at any moment leaves loadable.

    At each epoch's end the weights and optimizer state go to backup/epoch-EEEE.weights.h5, then
    backup/resume.json names them; both are written atomically, and the rename of resume.json
    commits the epoch. Put it last among the callbacks, so the epoch's checkpoint and metrics row
    are written before the commit (idenprof.train.resume discards those of an uncommitted epoch). When
    training ends, it writes training_done.json before removing backup/, so a process killed
    during the evaluation or export reruns only those.

    With a `writer`, the weights file is written now and everything after it (its flush and
    rename, the commit, removing the previous state) is queued on the writer, after the epoch's
    checkpoint; training's end waits for the queue before writing training_done.json.
    """

    def __init__(self, run: RunFolder, start_time: float, writer: BackgroundWriter | None = None):
        super().__init__(str(run.backup_dir))
        self.run = run
        self.start_time = start_time
        self.writer = writer
        self.epochs_done = 0

    def _load_model(self):
        if not self.run.resume_state_path.is_file():
            super()._load_model()  # Keras' own files (a run started before resume.json), or none
            self.epochs_done = self.model._initial_epoch or 0
            return
        state = json.loads(self.run.resume_state_path.read_text())
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        self.model.load_weights(self.run.backup_dir / state["weights"])
        self.model._initial_epoch = self.epochs_done = int(state["epoch"])

    def _save_model(self):
        self.run.backup_dir.mkdir(parents=True, exist_ok=True)
        weights = self.run.backup_dir / f"epoch-{self._current_epoch:04d}.weights.h5"
        state = [*self.model.variables, *(self.model.optimizer.variables if self.model.optimizer else [])]
        check_free_space(weights, variables_bytes(state) + FREE_SPACE_MARGIN)
        atomic_write(weights, h5_safe(self.model.save_weights), suffix=".weights.h5", writer=self.writer)
        epoch = self._current_epoch

        def commit():
            write_json_atomically({"epoch": epoch, "weights": weights.name}, self.run.resume_state_path)
            for older in self.run.backup_dir.iterdir():
                if older.name not in (weights.name, self.run.resume_state_path.name) and not older.name.startswith("."):
                    older.unlink(missing_ok=True)

        if self.writer is None:
            commit()
        else:
            self.writer.submit(commit)
        self.epochs_done = epoch

    def on_train_end(self, logs=None):
        if self.writer is not None:
            self.writer.drain()
        done = {"epochs": self.epochs_done, "train_seconds": round(time.monotonic() - self.start_time, 1)}
        write_json_atomically(done, self.run.training_done_path)
        super().on_train_end(logs)


class TrainingDiverged(IdenprofError):
    """The loss stopped being a finite number."""


class StopOnNaN(keras.callbacks.Callback):
    """End training with TrainingDiverged at the first batch whose loss is NaN or infinite
    (Keras' TerminateOnNaN would still end the epoch and save its state). The epoch is not
    committed: the kept checkpoint and the resume state stay those of the last good epoch."""

    def __init__(self, run: RunFolder, hint: str = "", writer: BackgroundWriter | None = None):
        super().__init__()
        self.run = run
        self.hint = hint
        self.writer = writer
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None or math.isfinite(float(loss)):
            return
        if self.writer is not None:
            self.writer.drain()  # the checkpoint named below must be on disk
        best = self.run.kept_checkpoint()
        kept = f"the checkpoint kept so far is {best.path}" if best else "no checkpoint was saved"
        raise TrainingDiverged(
            f"training diverged: the loss became {float(loss)} in epoch {self.epoch + 1}, batch {batch + 1}; {kept}; "
            f"{self.hint or 'lower --lr'} and train again with a new --run-dir"
        )


class TimeBudget(keras.callbacks.Callback):
    """End training when `budget_s` seconds of wall time are spent, counted from `start_time`
    (the command's start) plus the time earlier, interrupted runs of the same folder spent.

    It stops after the batch that leaves just enough time for one validation pass, so the run ends
    within the budget. With `peak_lr` it also drives the learning rate (see `budget_cosine_lr`):
    the schedule ends when the budget does, whatever the machine's speed. The time spent is saved
    in `state_path` at each epoch's end, so a resumed run continues the same budget.
    """

    def __init__(self, budget_s: float, start_time: float, state_path: Path,
                 peak_lr: float | None = None, warmup_steps: int = 0, clock=time.monotonic,
                 writer: BackgroundWriter | None = None):
        super().__init__()
        self.writer = writer
        self.budget_s = budget_s
        self.clock = clock
        self.state_path = Path(state_path)
        earlier_s = 0.0
        if self.state_path.exists():
            earlier_s = float(json.loads(self.state_path.read_text()).get("elapsed_s", 0.0))
        self.origin = start_time - earlier_s  # elapsed = clock() - origin
        self.peak_lr = peak_lr
        self.warmup_steps = warmup_steps
        self.validation_s = 0.0  # the longest validation pass so far: kept in reserve
        self.test_start = None

    def elapsed_s(self) -> float:
        return self.clock() - self.origin

    def progress(self) -> float:
        """Fraction of the training time (the budget less the validation reserve) spent."""
        return self.elapsed_s() / max(1e-9, self.budget_s - self.validation_s)

    def on_train_batch_begin(self, batch, logs=None):
        if self.peak_lr is not None:
            step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
            self.model.optimizer.learning_rate = budget_cosine_lr(
                self.peak_lr, step, self.warmup_steps, self.progress())

    def on_train_batch_end(self, batch, logs=None):
        if self.progress() >= 1.0:
            self.model.stop_training = True

    def on_test_begin(self, logs=None):
        self.test_start = self.clock()

    def on_test_end(self, logs=None):
        if self.test_start is not None:
            self.validation_s = max(self.validation_s, self.clock() - self.test_start)

    def on_epoch_end(self, epoch, logs=None):
        write_json_atomically({"elapsed_s": round(self.elapsed_s(), 3)}, self.state_path, writer=self.writer)
        if self.progress() >= 1.0:
            self.model.stop_training = True


class WholeImagePhase(keras.callbacks.Callback):
    """Train the last `fraction` of the run on whole images at the evaluation size (FixRes
    fine-tuning: batch-norm statistics and filters settle at the size the model is used at).

    At each epoch's start, sets `flag` (the boolean tf.Variable `idenprof.data.batches.make_dataset` reads) once
    the run's progress reaches 1 - fraction. Progress is `progress()` when given (the time
    budget's), else the epoch over `epochs`.
    """

    def __init__(self, flag, fraction: float, epochs: int, progress=None):
        super().__init__()
        self.flag = flag
        self.start = 1.0 - fraction
        self.epochs = epochs
        self.progress = progress

    def on_epoch_begin(self, epoch, logs=None):
        done = self.progress() if self.progress else epoch / self.epochs
        self.flag.assign(done >= self.start)


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


class Patience(keras.callbacks.Callback):
    """Stop when `monitor` has not improved for `patience` epochs (early stopping that survives a
    resume: the epochs already in `history_csv`, Keras' CSVLogger file, count too). The best
    checkpoint is CheckpointKeeper's job; this only stops."""

    def __init__(self, patience: int, history_csv: Path, monitor: str = "val_accuracy", log=print):
        super().__init__()
        self.patience = patience
        self.history_csv = Path(history_csv)
        self.monitor = monitor
        self.log = log
        self.stopped_epoch: int | None = None  # 1-based, set when this callback stopped the run

    def on_train_begin(self, logs=None):
        from idenprof.predict.report import read_history_csv

        earlier = read_history_csv(self.history_csv).get(self.monitor, []) if self.history_csv.is_file() else []
        self.best, self.wait = -math.inf, 0
        for value in earlier:
            self._update(value)

    def _update(self, value: float) -> None:
        if value > self.best:
            self.best, self.wait = value, 0
        else:
            self.wait += 1

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None:
            return
        self._update(float(value))
        if self.wait >= self.patience:
            self.stopped_epoch = epoch + 1
            self.model.stop_training = True
            self.log(f"early stop after epoch {epoch + 1}: {self.monitor} has not improved for "
                     f"{self.patience} epochs (best {self.best:.4f})")
