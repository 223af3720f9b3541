"""Prediction files: one row per input image, as CSV, JSON or JSON Lines, written atomically.

Each row: the path (or URL), the top classes with their probabilities, whether the model is unsure,
its none-score and whether the photo shows none of the classes (idenprof.predict.ood), its prediction set
(idenprof.predict.conformal; in CSV the classes joined by "|"), and the error when the image could not be
predicted (then no classes).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from idenprof.errors import ConfigError
from idenprof.files import write_text_atomically

OUTPUT_FORMATS = (".csv", ".json", ".jsonl")


def check_output_path(path: Path) -> Path:
    """`path` when its suffix names a format we write and its folder exists.

    Raises:
        ConfigError: another suffix, or a missing folder.
    """
    path = Path(path)
    if path.suffix.lower() not in OUTPUT_FORMATS:
        raise ConfigError(f"--output {path}: name a .csv, .json or .jsonl file")
    if not path.parent.is_dir():
        raise ConfigError(f"--output {path}: folder {path.parent} does not exist; create it first")
    return path


FAILED = {"predictions": [], "unsure": None, "none_score": None, "none_of_these": None, "prediction_set": None}


def prediction_rows(inputs: list[str], results, errors, classifier, top: int | None = None) -> list[dict]:
    """Rows in input order: {"path", "predictions": [{"class", "probability"}] (the first `top`),
    "unsure", "none_score", "none_of_these", "prediction_set", "error"}; `classifier` (None when no
    image was read) judges each."""
    by_path = {r.path: r for r in results}
    failed = {e.path: e.message for e in errors}
    rows = []
    for path in inputs:
        if path in by_path:
            rows.append({"path": path, **classifier.prediction_json(by_path[path].predictions, top), "error": None})
        elif path in failed:
            rows.append({"path": path, **FAILED, "error": failed[path]})
    for path, message in failed.items():  # arguments that named no image (missing file, empty folder)
        if path not in inputs:
            rows.append({"path": path, **FAILED, "error": message})
    return rows


def json_line(row: dict) -> str:
    """One row as a line of JSON Lines (infer.py --output FILE.jsonl, and the bulk job's shards)."""
    return json.dumps(row, ensure_ascii=False) + "\n"


def write_predictions(path: Path, rows: list[dict], top: int) -> Path:
    """Write `rows` to `path` in the format its suffix names (see OUTPUT_FORMATS)."""
    suffix = Path(path).suffix.lower()
    if suffix == ".json":
        text = json.dumps(rows, indent=2, ensure_ascii=False) + "\n"
    elif suffix == ".jsonl":
        text = "".join(json_line(row) for row in rows)
    else:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        header = ["path"]
        for rank in range(1, top + 1):
            header += [f"class_{rank}", f"probability_{rank}"]
        writer.writerow(header + ["unsure", "none_score", "none_of_these", "prediction_set", "error"])
        for row in rows:
            cells = [row["path"]]
            for rank in range(top):
                if rank < len(row["predictions"]):
                    cells += [row["predictions"][rank]["class"], f"{row['predictions'][rank]['probability']:.6f}"]
                else:
                    cells += ["", ""]
            unsure, none_of_these = ("" if row[k] is None else str(row[k]).lower() for k in ("unsure", "none_of_these"))
            score = "" if row["none_score"] is None else f"{row['none_score']:.6f}"
            classes = "|".join(row["prediction_set"]["classes"]) if row["prediction_set"] else ""
            writer.writerow(cells + [unsure, score, none_of_these, classes, row["error"] or ""])
        text = buffer.getvalue()
    return write_text_atomically(text, path)
