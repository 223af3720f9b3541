"""The run folder: every file a training run writes, its names and how to read them back.

    runs/<name>/
      config.json                      the resolved config and runtime plan
      class_index.json                 {"0": "chef", ...}: output position -> class name
      model-eEEE-valA.AAAA.keras/.h5   the kept checkpoint: the best by validation accuracy, or the
                                       last epoch's (config `keep`)
      metrics.csv                      per-epoch metrics (Keras CSVLogger)
      metrics.json                     test report of the kept checkpoint; written last, so its
                                       presence marks a finished run
      training_curves.png, confusion_matrix.png
      time_budget.json                 time spent so far, with --time-budget-min
      training_done.json               training has ended (written before the evaluation and export)
      .lock                            held by the train.py using the folder; holds its PID
      logs/                            TensorBoard
      backup/                          resume state while training: epoch-EEEE.weights.h5 and
                                       resume.json, which names them (its rename commits an epoch)
      export/                          model.keras, model.h5, saved_model/, model.tflite, model.onnx,
                                       class_index.json
      validation/                      with --record-validation: labels.npy and, per epoch,
                                       epoch-EEEE.npy, the hold-out's class probabilities

Training, inference and the tools read these names from here only. TensorFlow-free, so infer.py
can find a model without importing it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

CLASS_INDEX_FILENAME = "class_index.json"
REPORT_FILENAME = "metrics.json"
# export/: file names of each format, and the serving interface every format shares.
EXPORT_DIRNAME = "export"
EXPORT_FILENAMES = {
    "keras": "model.keras",
    "h5": "model.h5",
    "saved_model": "saved_model",
    "tflite": "model.tflite",
    "tflite_int8": "model.int8.tflite",
    "onnx": "model.onnx",
}
SAVED_MODEL_MARKER = "saved_model.pb"
PIXELS_SIGNATURE = "serving_default"
BYTES_SIGNATURE = "serving_bytes"
PIXELS_INPUT = "pixels"  # the pixels input of serving_default, LiteRT and ONNX
OUTPUT_KEY = "probabilities"
# Which export inference prefers: LiteRT starts fastest and predicts fastest, ONNX Runtime is a close
# second; both start without TensorFlow (docs/BENCHMARKS.md). The int8 LiteRT model is faster still
# but answers a little differently: a run's exact float32 exports come first, the int8 one before
# the slow-starting Keras formats (the shipped folder has only it and model.keras).
EXPORT_PREFERENCE = ("tflite", "onnx", "tflite_int8", "keras", "h5", "saved_model")
LOCK_FILENAME = ".lock"
# Keras' own BackupAndRestore files, in a run started before resume.json existed.
KERAS_BACKUP_METADATA = "training_metadata.json"
TRAINING_DONE_FILENAME = "training_done.json"
RESUME_STATE_FILENAME = "resume.json"

_CHECKPOINT_NAME = re.compile(r"^model-e(\d{3,})-val(\d+\.\d{4})\.(keras|h5)$")


@dataclass(frozen=True, order=True)
class Checkpoint:
    """A model checkpoint file; orders by validation accuracy, then epoch."""

    val_accuracy: float
    epoch: int  # 1-based
    path: Path


def checkpoint_name(epoch: int, val_accuracy: float, suffix: str = ".keras") -> str:
    """`model-e{epoch:03d}-val{val_accuracy:.4f}{suffix}`; epoch is 1-based."""
    return f"model-e{epoch:03d}-val{val_accuracy:.4f}{suffix}"


def parse_checkpoint_name(name: str) -> tuple[int, float, str] | None:
    """(epoch, val_accuracy, suffix) of a checkpoint file name, or None for any other name."""
    match = _CHECKPOINT_NAME.match(name)
    if match is None:
        return None
    return int(match.group(1)), float(match.group(2)), "." + match.group(3)


KEEP_RULES = ("best", "last")


def kept_by_rule(checkpoints: list[Checkpoint], keep: str) -> Checkpoint | None:
    """The checkpoint a run with `keep` ("best": validation accuracy, then epoch; "last": epoch)
    keeps among `checkpoints`; None for an empty list."""
    if not checkpoints:
        return None
    return max(checkpoints, key=lambda c: c.epoch) if keep == "last" else max(checkpoints)


def exported_models_in(export_dir: Path) -> list[Path]:
    """The exported models present in `export_dir` (a run's export/), in EXPORT_PREFERENCE order."""
    found = []
    for fmt in EXPORT_PREFERENCE:
        path = Path(export_dir) / EXPORT_FILENAMES[fmt]
        present = (path / SAVED_MODEL_MARKER).is_file() if fmt == "saved_model" else path.is_file()
        if present:
            found.append(path)
    return found


@dataclass(frozen=True)
class RunFolder:
    """Paths of one run's files (nothing is created by constructing it)."""

    path: Path

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))

    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def class_index_path(self) -> Path:
        return self.path / CLASS_INDEX_FILENAME

    @property
    def metrics_csv(self) -> Path:
        return self.path / "metrics.csv"

    @property
    def report_path(self) -> Path:
        return self.path / REPORT_FILENAME

    @property
    def curves_png(self) -> Path:
        return self.path / "training_curves.png"

    @property
    def confusion_png(self) -> Path:
        return self.path / "confusion_matrix.png"

    @property
    def time_budget_path(self) -> Path:
        return self.path / "time_budget.json"

    @property
    def logs_dir(self) -> Path:
        return self.path / "logs"

    @property
    def backup_dir(self) -> Path:
        return self.path / "backup"

    @property
    def resume_state_path(self) -> Path:
        return self.backup_dir / RESUME_STATE_FILENAME

    @property
    def export_dir(self) -> Path:
        return self.path / EXPORT_DIRNAME

    @property
    def validation_dir(self) -> Path:
        return self.path / "validation"

    def validation_path(self, epoch: int) -> Path:
        """The hold-out's class probabilities after `epoch` (1-based): float16 [images, classes]."""
        return self.validation_dir / f"epoch-{epoch:04d}.npy"

    def recorded_validation(self) -> dict[int, Path]:
        """{epoch: path} of the recorded epochs (see `validation_path`)."""
        found = {}
        for path in self.validation_dir.glob("epoch-*.npy") if self.validation_dir.is_dir() else []:
            epoch = path.stem.removeprefix("epoch-")
            if epoch.isdigit():
                found[int(epoch)] = path
        return dict(sorted(found.items()))

    @property
    def lock_path(self) -> Path:
        return self.path / LOCK_FILENAME

    @property
    def training_done_path(self) -> Path:
        return self.path / TRAINING_DONE_FILENAME

    def is_finished(self) -> bool:
        """Whether the run wrote its final report (training, evaluation and export are done)."""
        return self.report_path.is_file()

    def is_training_done(self) -> bool:
        """Whether training has ended (the evaluation and export may still be missing)."""
        return self.training_done_path.is_file()

    def checkpoint_path(self, epoch: int, val_accuracy: float, suffix: str = ".keras") -> Path:
        return self.path / checkpoint_name(epoch, val_accuracy, suffix)

    @property
    def keep(self) -> str:
        """Which checkpoint the run keeps (its config's `keep`): "best" (validation accuracy) or
        "last" (epoch). "best" for a folder without config.json or a run from before the setting."""
        try:
            return json.loads(self.config_path.read_text())["config"].get("keep", "best")
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return "best"

    def kept_among(self, checkpoints: list[Checkpoint]) -> Checkpoint | None:
        """The one of `checkpoints` the run's `keep` rule keeps; None for an empty list."""
        return kept_by_rule(checkpoints, self.keep)

    def checkpoints(self, suffix: str = ".keras") -> list[Checkpoint]:
        """The checkpoint files with `suffix` in the folder, best last."""
        found = []
        if self.path.is_dir():
            for path in self.path.iterdir():
                parsed = parse_checkpoint_name(path.name)
                if parsed and parsed[2] == suffix and path.is_file():
                    found.append(Checkpoint(parsed[1], parsed[0], path))
        return sorted(found)

    def committed_epochs(self) -> int | None:
        """Epochs whose training state is committed: from backup/resume.json, else a legacy Keras
        backup, else training_done.json's count; None when no such file says."""
        for path, key in ((self.resume_state_path, "epoch"), (self.backup_dir / KERAS_BACKUP_METADATA, "epoch"),
                          (self.training_done_path, "epochs")):
            if path.is_file():
                return int(json.loads(path.read_text())[key])
        return None

    def kept_checkpoint(self, keep: str | None = None) -> Checkpoint | None:
        """The kept `.keras` checkpoint, else the kept `.h5` one, by the rule `keep` (default: the
        run's, see `keep`), among the committed epochs' (a process killed while saving leaves a
        checkpoint of an epoch the resume state does not name yet); None when there is none."""
        committed = self.committed_epochs()
        for suffix in (".keras", ".h5"):
            found = [c for c in self.checkpoints(suffix) if committed is None or c.epoch <= committed]
            if found:
                return kept_by_rule(found, keep or self.keep)
        return None

    def exported_models(self) -> list[Path]:
        """The exported models present in export/, in EXPORT_PREFERENCE order."""
        return exported_models_in(self.export_dir)

    def model_for_inference(self) -> Path | None:
        """The model infer.py uses for this run, or None when it holds no model.

        The preferred export when export/ is at least as new as the kept checkpoint (a resumed run
        may have a newer checkpoint than its last export); otherwise the kept checkpoint.
        """
        best = self.kept_checkpoint()
        exported = self.exported_models()
        if exported and (best is None or exported[0].stat().st_mtime >= best.path.stat().st_mtime):
            return exported[0]
        return best.path if best else None
