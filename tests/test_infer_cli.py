"""infer.py as users run it: a subprocess per command. Most runs use the .tflite model, which
starts without TensorFlow (well under a second); each TensorFlow format is started once."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from test_export import CLASS_NAMES
from test_inference import bad_inputs, make_run

from idenprof.predict.inference import predict_files
from idenprof.predict.loaders import load_predictor
from idenprof.predict.model_finding import PRETRAINED_MODEL

REPO = Path(__file__).resolve().parents[1]
LINE = re.compile(r"^(\w+) : (\d+\.\d\d)$")


def infer(*args: str, cwd: Path = REPO):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run(
        [sys.executable, str(REPO / "infer.py"), *args],
        cwd=cwd, capture_output=True, text=True, timeout=300, env=env,
    )


def prediction_lines(stdout: str) -> list[tuple[str, float]]:
    return [(m.group(1), float(m.group(2))) for m in map(LINE.match, stdout.splitlines()) if m]


@pytest.fixture(scope="module")
def tflite(export_dir) -> str:
    return str(export_dir / "model.tflite")


def test_one_photo_prints_five_classes_in_percent_most_likely_first(tflite, photos):
    done = infer(str(photos[0]), "--model", tflite)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # no runtime chatter around the answer
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 5 and all(LINE.match(line) for line in lines), done.stdout
    predictions = prediction_lines(done.stdout)
    results, _ = predict_files(load_predictor(Path(tflite)), photos[:1])
    assert predictions == [(name, round(p * 100, 2)) for name, p in results[0].predictions]
    assert [p for _, p in predictions] == sorted((p for _, p in predictions), reverse=True)


def test_files_folders_and_globs_each_get_a_header_and_a_block(tflite, photos, small_dataset):
    folder = small_dataset / "test" / "waiter"
    pattern = str(small_dataset / "test" / "judge" / "*.jpg")
    done = infer(str(photos[0]), str(folder), pattern, "--model", tflite, "--top", "3")
    assert done.returncode == 0, done.stderr
    headers = [line for line in done.stdout.splitlines() if line.startswith("==> ")]
    expected = [str(photos[0]), *sorted(map(str, folder.glob("*.jpg"))),
                *sorted(map(str, (small_dataset / "test" / "judge").glob("*.jpg")))]
    assert headers == [f"==> {path} <==" for path in expected]
    assert len(prediction_lines(done.stdout)) == 3 * len(expected)


def test_top_is_bounded_by_the_number_of_classes(tflite, photos):
    done = infer(str(photos[0]), "--model", tflite, "--top", "40")
    assert done.returncode == 0, done.stderr
    assert sorted(name for name, _ in prediction_lines(done.stdout)) == sorted(CLASS_NAMES)


def test_json_lists_paths_and_probabilities(tflite, photos):
    done = infer(*map(str, photos[:3]), "--model", tflite, "--json", "--top", "2", "--tta")
    assert done.returncode == 0, done.stderr
    records = json.loads(done.stdout)
    assert [r["path"] for r in records] == [str(p) for p in photos[:3]]
    for record in records:
        assert [set(p) for p in record["predictions"]] == [{"class", "probability"}] * 2
        assert all(0 <= p["probability"] <= 1 for p in record["predictions"])
        assert record["predictions"][0]["probability"] >= record["predictions"][1]["probability"]


def test_default_model_is_the_best_of_the_most_recent_run(tmp_path, export_dir, photos):
    make_run(tmp_path / "runs", "resnet18-test", export_dir, with_export=True)
    done = infer(str(photos[0]), cwd=tmp_path)  # runs/ relative to the working folder
    assert done.returncode == 0, done.stderr
    assert len(prediction_lines(done.stdout)) == 5


def test_without_any_run_it_uses_the_pretrained_model_of_the_package(tmp_path, photos):
    done = infer(str(photos[0]), "--runs-dir", str(tmp_path / "runs"), "--json")
    assert done.returncode == 0, done.stderr
    results, _ = predict_files(load_predictor(PRETRAINED_MODEL), photos[:1])
    shown = json.loads(done.stdout)[0]["predictions"]
    assert [p["class"] for p in shown] == [name for name, _ in results[0].predictions]


def test_bad_inputs_are_one_line_each_and_good_images_still_predicted(tflite, photos, tmp_path):
    bad = bad_inputs(tmp_path, photos[0])
    done = infer(*map(str, bad.values()), str(photos[1]), "--model", tflite)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert f"==> {photos[1]} <==" in done.stdout and len(prediction_lines(done.stdout)) == 5
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == len(bad)
    for problem, path in bad.items():
        assert any(str(path) in line and problem in line for line in errors), (problem, errors)


@pytest.mark.parametrize("name", ["model.keras", "model.onnx"])
def test_a_model_file_that_is_not_a_model_is_a_one_line_error(tmp_path, photos, export_dir, name):
    fake = tmp_path / name
    fake.write_text("not a model")
    (tmp_path / "class_index.json").write_bytes((export_dir / "class_index.json").read_bytes())
    done = infer(str(photos[0]), "--model", str(fake))
    assert done.returncode == 2
    assert re.search(rf"^error: {re.escape(str(fake))}: cannot load", done.stderr, re.M)
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_labels_that_do_not_match_the_model_name_both_counts(tmp_path, tflite, photos):
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({"0": "cat", "1": "dog"}))
    done = infer(str(photos[0]), "--model", tflite, "--labels", str(labels))
    assert done.returncode == 2
    assert "has 10 outputs" in done.stderr and "names 2 classes" in done.stderr
    assert "Traceback" not in done.stderr


def test_bad_flag_values_are_usage_errors(tflite, photos):
    done = infer(str(photos[0]), "--model", tflite, "--top", "0")
    assert done.returncode == 2 and "error: --top must be at least 1" in done.stderr


def modules_imported_by_infer(model: str, photo: Path) -> set[str]:
    """Every module `python infer.py photo --model model` imports (it must succeed)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run(
        [sys.executable, "-X", "importtime", str(REPO / "infer.py"), str(photo), "--model", model],
        cwd=REPO, capture_output=True, text=True, timeout=120, env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()
            if line.startswith("import time:")}


def test_litert_path_does_not_import_tensorflow(tflite, photos):
    imported = modules_imported_by_infer(tflite, photos[0])
    assert "ai_edge_litert.interpreter" in imported
    assert not {m for m in imported if m.split(".")[0] in ("tensorflow", "keras")}


def test_onnx_path_does_not_import_tensorflow(export_dir, photos):
    imported = modules_imported_by_infer(str(export_dir / "model.onnx"), photos[0])
    assert "onnxruntime" in imported
    assert not {m for m in imported if m.split(".")[0] in ("tensorflow", "keras", "tf2onnx")}


def test_onnx_gives_the_same_answer_as_litert_with_nothing_on_stderr(export_dir, tflite, photos):
    args = [*map(str, photos[:2]), "--top", "10"]
    done = infer(*args, "--model", str(export_dir / "model.onnx"))
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert prediction_lines(done.stdout) == prediction_lines(infer(*args, "--model", tflite).stdout)


@pytest.mark.parametrize("fmt", ["model.keras", "model.h5", "saved_model"])
def test_tensorflow_formats_give_the_same_answer_as_litert(export_dir, tflite, photos, fmt):
    args = [*map(str, photos[:2]), "--top", "10"]
    done = infer(*args, "--model", str(export_dir / fmt))
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # TensorFlow's native start-up lines are kept off the terminal
    assert prediction_lines(done.stdout) == prediction_lines(infer(*args, "--model", tflite).stdout)


def test_below_min_confidence_it_says_not_sure(tflite, photos):
    done = infer(*map(str, photos[:2]), "--model", tflite, "--min-confidence", "1")
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("not sure — maybe none of these 10 professions") == 2
    assert len(prediction_lines(done.stdout)) == 10
    sure = infer(str(photos[0]), "--model", tflite, "--min-confidence", "0")
    assert "not sure" not in sure.stdout and len(prediction_lines(sure.stdout)) == 5
    records = json.loads(infer(str(photos[0]), "--model", tflite, "--json",
                               "--min-confidence", "1").stdout)
    assert records[0]["unsure"] is True


def test_min_confidence_defaults_to_calibration_json_beside_the_model(tmp_path, export_dir, photos):
    folder = tmp_path / "model"
    folder.mkdir()
    for name in ("model.tflite", "class_index.json"):
        (folder / name).write_bytes((export_dir / name).read_bytes())
    (folder / "calibration.json").write_text('{"min_confidence": 1.0}')
    done = infer(str(photos[0]), "--model", str(folder / "model.tflite"))
    assert done.returncode == 0, done.stderr
    assert "not sure — maybe none of these 10 professions" in done.stdout


def test_a_min_confidence_outside_0_to_1_is_a_one_line_error(tflite, photos):
    done = infer(str(photos[0]), "--model", tflite, "--min-confidence", "2")
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "min_confidence must be a probability 0..1" in done.stderr
