"""Which model to use: a file, a folder, or by default the latest finished run, else the shipped one."""

from __future__ import annotations

from pathlib import Path

from idenprof.errors import ModelFileError
from idenprof.predict.loaders import MODEL_FILE_SUFFIXES
from idenprof.run_folder import (
    SAVED_MODEL_MARKER,
    RunFolder,
    exported_models_in,
)

# The calibrated model shipped inside the package (idenprof.ship.packaging writes it): the default
# when no run has a model. LiteRT, the fastest format to start (docs/BENCHMARKS.md).
PRETRAINED_DIR = Path(__file__).resolve().parents[1] / "pretrained"
PRETRAINED_MODEL = PRETRAINED_DIR / "model.int8.tflite"


def resolve_model_path(model_arg: str | None, runs_dir: Path = Path("runs"),
                       pretrained: Path = PRETRAINED_MODEL) -> Path:
    """The model to load for `--model model_arg`.

    `model_arg` may be a model file (.keras, .h5, .tflite, .onnx), a SavedModel folder, or a run folder
    (see `RunFolder.model_for_inference`). Without it: the best model of the most recently
    modified finished run under `runs_dir` (one with its report), so a run still training does not
    shadow a finished one; the most recent unfinished run with a checkpoint when none has finished;
    the `pretrained` model shipped with the package when no run has a model.
    """
    if model_arg is not None:
        path = Path(model_arg)
        if path.is_file():
            if path.suffix.lower() not in MODEL_FILE_SUFFIXES:
                raise ModelFileError(
                    f"{path}: not a model file; expected {', '.join(MODEL_FILE_SUFFIXES)}, "
                    "a SavedModel folder or a run folder"
                )
            return path
        if path.is_dir():
            if (path / SAVED_MODEL_MARKER).is_file():
                return path
            best = RunFolder(path).model_for_inference() or next(iter(exported_models_in(path)), None)
            if best is None:
                raise ModelFileError(
                    f"{path}: no model in this folder (no .keras/.h5/.tflite checkpoint, "
                    "export/ or saved_model.pb)"
                )
            return best
        raise ModelFileError(f"{path}: no such model file or folder")
    runs_dir = Path(runs_dir)
    candidates = []
    if runs_dir.is_dir():
        for run in runs_dir.iterdir():
            if run.is_dir() and not run.name.startswith("."):
                best = RunFolder(run).model_for_inference()
                if best is not None:
                    finished = RunFolder(run).is_finished()
                    candidates.append((finished, run.stat().st_mtime, best))
    if not candidates:
        if Path(pretrained).is_file():
            return Path(pretrained)
        raise ModelFileError(
            f"no trained model under {runs_dir}/ and no pretrained model at {pretrained}; "
            "train one with python train.py or pass --model"
        )
    return max(candidates)[-1]


