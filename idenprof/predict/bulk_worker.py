"""What runs on the bulk job's workers: Apache Beam's RunInference with the model as a
ModelHandler, turning batches of inputs into infer.py's rows (idenprof.predict.bulk builds the
pipeline around it).

    handler = ClassifierHandler(model_files(model_path), model_path.name, top=5, tta=False,
                                thresholds={...}, batch_size=32)
    rows = paths | RunInference(handler)        # a PCollection of str -> of row dicts

Imports Apache Beam (the optional extra `idenprof[bulk]`): import it only to run a job.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from apache_beam.ml.inference.base import ModelHandler

from idenprof.errors import one_line
from idenprof.predict.calibration import CALIBRATION_FILENAME
from idenprof.predict.classifier import Classifier, load
from idenprof.predict.inputs import InputError
from idenprof.predict.outputs import prediction_rows
from idenprof.run_folder import CLASS_INDEX_FILENAME

LABELS_NAME = "labels.json"  # --labels, as a worker receives it


def model_files(model_path: Path, labels: Path | None = None) -> dict[str, bytes]:
    """The files a worker needs to load the model, by path relative to a folder it unpacks them
    to: the model file (or SavedModel folder), the class_index.json and calibration.json beside
    it, and `labels` as LABELS_NAME. They travel with the pipeline, so workers need no copy."""
    model_path = Path(model_path)
    files: dict[str, bytes] = {}
    if model_path.is_dir():
        for file in sorted(p for p in model_path.rglob("*") if p.is_file()):
            files[str(Path(model_path.name) / file.relative_to(model_path))] = file.read_bytes()
    else:
        files[model_path.name] = model_path.read_bytes()
    for name in (CLASS_INDEX_FILENAME, CALIBRATION_FILENAME):
        if (model_path.parent / name).is_file():
            files[name] = (model_path.parent / name).read_bytes()
    if labels is not None:
        files[LABELS_NAME] = Path(labels).read_bytes()
    return files


def batch_rows(classifier: Classifier, paths: list[str], top: int, tta: bool = False) -> list[dict]:
    """infer.py --output's rows for `paths` (prediction_rows of Classifier.predict_files), in
    order. Should the batch fail in a way predict_files does not expect, each input is retried
    alone, and one failing again becomes an error row: the job goes on."""
    classes = len(classifier.class_names)
    try:
        results, errors = classifier.predict_files(paths, top=classes, tta=tta, batch_size=len(paths))
    except Exception:  # noqa: BLE001 - whatever it is, it must not end a job of millions
        results, errors = [], []
        for path in paths:
            try:
                found, failed = classifier.predict_files([path], top=classes, tta=tta)
            except Exception as e:  # noqa: BLE001
                found, failed = [], [InputError(path, f"{path}: cannot predict it ({one_line(e)})")]
            results += found
            errors += failed
    return prediction_rows(paths, results, errors, classifier, top)


class ClassifierHandler(ModelHandler):
    """RunInference's model: loads the classifier once per worker from `files` (model_files),
    and gives each batch of input paths (or URLs) their rows."""

    def __init__(self, files: dict[str, bytes], model_name: str, top: int, tta: bool, thresholds: dict,
                 batch_size: int):
        # Fixed-size batches, as infer.py's: Beam's default starts at 1 and grows them.
        super().__init__(min_batch_size=batch_size, max_batch_size=batch_size)
        self.files, self.model_name = files, model_name
        self.top, self.tta, self.thresholds = top, tta, thresholds

    def load_model(self) -> Classifier:
        # The files can go once loaded: each loader reads (LiteRT: maps) its file as it loads.
        with tempfile.TemporaryDirectory(prefix="idenprof-bulk-model-") as unpacked:
            folder = Path(unpacked)
            for name, data in self.files.items():
                (folder / name).parent.mkdir(parents=True, exist_ok=True)
                (folder / name).write_bytes(data)
            labels = folder / LABELS_NAME if LABELS_NAME in self.files else None
            return load(folder / self.model_name, labels=labels, **self.thresholds)

    def run_inference(self, batch: Sequence[str], model: Classifier, inference_args=None) -> Iterable[dict]:
        return batch_rows(model, [str(path) for path in batch], self.top, self.tta)

    def get_metrics_namespace(self) -> str:
        return "idenprof"
