"""idenprof.predict.evaluation and evaluate.py: metrics checked by hand, every output written, each model
format, and the user's mistakes (a class the model does not know, an unreadable photo)."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_export import CLASS_NAMES, IMAGE_SIZE, tiny_model

from idenprof.errors import DatasetError
from idenprof.predict.evaluation import evaluate_folder, labelled_samples
from idenprof.predict.inference import predict_files
from idenprof.predict.loaders import Predictor, load_predictor
from idenprof.ship.export import export_model

REPO = Path(__file__).resolve().parents[1]
OUTPUTS = ["report.json", "confusion_matrix.png", "reliability_diagram.png", "top_mistakes.png",
           "predictions.csv"]


def probabilities(**by_class: float) -> list[float]:
    row = [0.0] * len(CLASS_NAMES)
    for name, p in by_class.items():
        row[CLASS_NAMES.index(name)] = p
    return row


# Five photos (chef, chef, doctor, doctor, judge, in folder order) and what the model says.
HAND_ROWS = np.array([
    probabilities(chef=0.62, doctor=0.30, judge=0.08),                        # right
    probabilities(doctor=0.72, chef=0.20, judge=0.08),                        # wrong
    probabilities(doctor=0.92, chef=0.08),                                    # right
    probabilities(judge=0.52, chef=0.2, police=0.1, pilot=0.1, farmer=0.06, doctor=0.02),  # wrong, not in top 5
    probabilities(judge=0.82, chef=0.18),                                     # right
], dtype=np.float32)


@pytest.fixture(scope="module")
def photo_folder(small_dataset, tmp_path_factory) -> Path:
    """chef/ (2 photos), doctor/ (2), judge/ (1 photo and an unreadable .jpg), empty pilot/, and
    a note that is not an image."""
    root = tmp_path_factory.mktemp("photos") / "my_photos"
    for name, count in (("chef", 2), ("doctor", 2), ("judge", 1), ("pilot", 0)):
        (root / name).mkdir(parents=True)
        for photo in sorted((small_dataset / "test" / name).glob("*.jpg"))[:count]:
            shutil.copy(photo, root / name / photo.name)
    (root / "judge" / "zz_broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    (root / "notes.txt").write_text("my photos\n")
    return root


def fixed_predictor(rows: np.ndarray) -> Predictor:
    """A predictor answering `rows` for the images it is given, in order (one call)."""
    def predict_batch(images):
        assert len(images) == len(rows)
        return rows

    return Predictor(list(CLASS_NAMES), IMAGE_SIZE, predict_batch, Path("hand.keras"))


@pytest.fixture(scope="module")
def hand_report(photo_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("hand")
    report = evaluate_folder(fixed_predictor(HAND_ROWS), photo_folder, out, batch_size=64,
                             subsets={"first_two": {str(p) for p in sorted((photo_folder / "chef").iterdir())}},
                             min_confidence=0.7)
    return out, report


def test_top1_top5_and_confusion_by_hand(hand_report):
    _, report = hand_report
    assert report["images"] == 5
    assert report["top1"] == pytest.approx(3 / 5)
    assert report["top5"] == pytest.approx(4 / 5)  # the doctor called judge has doctor 6th
    cm = np.array(report["confusion_matrix"])
    chef, doctor, judge = (CLASS_NAMES.index(n) for n in ("chef", "doctor", "judge"))
    assert cm[chef, chef] == 1 and cm[chef, doctor] == 1 and cm[doctor, doctor] == 1
    assert cm[doctor, judge] == 1 and cm[judge, judge] == 1 and cm.sum() == 5


def test_precision_recall_f1_by_hand(hand_report):
    per_class = hand_report[1]["per_class"]
    assert per_class["chef"] == pytest.approx({"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2})
    assert per_class["doctor"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    assert per_class["judge"] == pytest.approx({"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1})
    # No photo and never predicted: undefined, not zero.
    assert per_class["pilot"] == {"precision": None, "recall": None, "f1": None, "support": 0}
    assert hand_report[1]["macro_f1"] == pytest.approx((2 / 3 + 0.5 + 2 / 3) / 3)


def test_ece_subsets_and_min_confidence_by_hand(hand_report):
    report = hand_report[1]
    # Five confidences in five different bins: ECE is the mean |correct - confidence|.
    assert report["ece"] == pytest.approx((0.38 + 0.72 + 0.08 + 0.52 + 0.18) / 5, abs=1e-6)
    assert report["subsets"]["first_two"] == {"images": 2, "top1": 0.5, "top5": 1.0}
    assert report["at_min_confidence"] == pytest.approx(
        {"min_confidence": 0.7, "coverage": 3 / 5, "accuracy": 2 / 3})


def test_most_confident_mistakes_first(hand_report):
    mistakes = hand_report[1]["most_confident_mistakes"]
    assert [(m["true"], m["predicted"]) for m in mistakes] == [("chef", "doctor"), ("doctor", "judge")]
    assert mistakes[0]["probability"] == pytest.approx(0.72)
    assert mistakes[1]["true_probability"] == pytest.approx(0.02)
    assert mistakes[0]["path"].startswith("chef/")  # relative to the evaluated folder


def test_unreadable_photo_is_reported_and_the_rest_evaluated(hand_report):
    report = hand_report[1]
    assert [u["path"] for u in report["unreadable"]] == ["judge/zz_broken.jpg"]
    assert report["unreadable"][0]["reason"]


def test_every_output_is_written(hand_report):
    out, report = hand_report
    for name in OUTPUTS:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert (out / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "report.json").read_text()) == json.loads(json.dumps(report))
    with open(out / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["true"], r["predicted"]) for r in rows] == [
        ("chef", "chef"), ("chef", "doctor"), ("doctor", "doctor"), ("doctor", "judge"), ("judge", "judge")]
    assert float(rows[1]["probability"]) == pytest.approx(0.72)


def test_unknown_class_folders_are_all_named(photo_folder, tmp_path):
    folder = tmp_path / "photos"
    shutil.copytree(photo_folder, folder)
    (folder / "astronaut").mkdir()
    (folder / "Chef").mkdir()
    with pytest.raises(DatasetError, match=r"class folder\(s\) Chef, astronaut not among the model's classes"):
        labelled_samples(folder, CLASS_NAMES)


# ----- evaluate.py with real (tiny) models -----

@pytest.fixture(scope="module")
def export_dir(tmp_path_factory) -> Path:
    out_dir = tmp_path_factory.mktemp("export")
    export_model(tiny_model(), out_dir, CLASS_NAMES, formats=("keras", "tflite"))
    return out_dir


def evaluate(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([sys.executable, str(REPO / "evaluate.py"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300, env=env)


@pytest.mark.parametrize("model_file", ["model.tflite", "model.keras"])
def test_cli_evaluates_each_model_format_like_infer(model_file, export_dir, photo_folder, tmp_path):
    out = tmp_path / "eval"
    done = evaluate("--model", str(export_dir / model_file), str(photo_folder), "--out", str(out))
    assert done.returncode == 1, done.stderr  # one unreadable photo
    assert done.stderr.strip() == f"error: {photo_folder / 'judge' / 'zz_broken.jpg'}: " + \
        json.loads((out / "report.json").read_text())["unreadable"][0]["reason"]
    for name in OUTPUTS:
        assert (out / name).is_file(), name
    report = json.loads((out / "report.json").read_text())
    photos = sorted(str(p) for p in photo_folder.glob("*/*.jpg") if "broken" not in p.name)
    results, _ = predict_files(load_predictor(export_dir / model_file), photos)
    expected = [r.predictions[0][0] == Path(r.path).parent.name for r in results]
    assert report["images"] == 5 and report["top1"] == pytest.approx(np.mean(expected))
    assert f"top-1 {report['top1']:.2%}" in done.stdout and "precision" in done.stdout


def test_cli_unknown_class_is_one_line_and_exit_2(export_dir, photo_folder, tmp_path):
    folder = tmp_path / "photos"
    shutil.copytree(photo_folder, folder)
    (folder / "astronaut").mkdir()
    done = evaluate("--model", str(export_dir / "model.tflite"), str(folder), "--out", str(tmp_path / "e"))
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "astronaut" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "e" / "report.json").exists()


def test_cli_missing_folder_is_one_line_and_exit_2(export_dir, tmp_path):
    done = evaluate("--model", str(export_dir / "model.tflite"), str(tmp_path / "nowhere"))
    assert done.returncode == 2 and done.stderr.startswith("error: ") and done.stderr.count("\n") == 1
