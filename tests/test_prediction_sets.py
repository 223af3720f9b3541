"""Prediction sets with the shipped model in every surface: infer.py (text, --json, --output,
--coverage), the JSON API (coverage=), the page in Chromium, and evaluate.py's risk-coverage report;
all agree with the Python API on real IdenProf test photos, one the model is sure of and one it
doubts."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest
import requests
from archive_subsets import REPO_ROOT
from serve_helpers import SHIPPED_MODEL, running_server
from test_page import page_at

from idenprof.predict.classifier import load, set_message


@pytest.fixture(scope="module")
def classifier():
    return load(SHIPPED_MODEL)


@pytest.fixture(scope="module")
def sure_and_doubtful(classifier, small_dataset):
    """(a test photo whose 90% set is one class, one whose set has several, their sets); neither
    flagged as none of the professions (the surfaces then say that instead of the set)."""
    photos = [p for p in sorted((small_dataset / "test").glob("*/*.jpg"))
              if not classifier.is_none_of_these(classifier.predict(p, top=10))]
    sets = {photo: classifier.predict_set(photo) for photo in photos}
    sure = next(p for p in photos if len(sets[p]) == 1)
    doubtful = max(photos, key=lambda p: len(sets[p]))
    assert len(sets[doubtful]) >= 2, "no doubtful photo among the test subset"
    return sure, doubtful, sets[sure], sets[doubtful]


def infer(*args):
    return subprocess.run([sys.executable, str(REPO_ROOT / "infer.py"), "--model", str(SHIPPED_MODEL), *args],
                          capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)


def test_infer_prints_each_photos_set_under_its_top_five(sure_and_doubtful, tmp_path):
    sure, doubtful, sure_set, doubtful_set = sure_and_doubtful
    result = infer(str(sure), str(doubtful), "--top", "1", "--output", str(tmp_path / "rows.csv"))
    assert result.returncode == 0, result.stderr
    sure_block, doubtful_block = result.stdout.split("\n\n")
    assert sure_block.splitlines()[1:] == [sure_block.splitlines()[1], set_message(sure_set, 0.9)]
    assert set_message(doubtful_set, 0.9) in doubtful_block.splitlines()
    assert " or " in set_message(doubtful_set, 0.9)
    # --top 1 shows one class, yet the set is whole: it is computed from every class
    assert len([line for line in doubtful_block.splitlines() if " : " in line]) == 1
    with open(tmp_path / "rows.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [row["prediction_set"] for row in rows] == ["|".join(sure_set), "|".join(doubtful_set)]


def test_infer_json_carries_the_set_and_coverage_widens_it(sure_and_doubtful):
    _, doubtful, _, doubtful_set = sure_and_doubtful
    answers = {coverage: json.loads(infer(str(doubtful), "--json", "--coverage", coverage).stdout)[0]
               for coverage in ("0.8", "0.9", "0.99")}
    assert answers["0.9"]["prediction_set"] == {"classes": doubtful_set, "coverage": 0.9}
    narrow, middle, wide = (answers[c]["prediction_set"]["classes"] for c in ("0.8", "0.9", "0.99"))
    assert len(narrow) <= len(middle) <= len(wide) and wide[: len(narrow)] == narrow
    assert answers["0.99"]["prediction_set"]["coverage"] == 0.99


@pytest.mark.parametrize("value", ["1", "0", "-0.5", "nan"])
def test_a_bad_coverage_is_one_line_and_exit_2(sure_and_doubtful, value):
    result = infer(str(sure_and_doubtful[0]), f"--coverage={value}")
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0, result.stderr
    assert "--coverage" in result.stderr and "between 0 and 1" in result.stderr and "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def server():
    with running_server("--model", str(SHIPPED_MODEL)) as (url, _):
        yield url


def test_the_json_api_takes_coverage_and_answers_the_set(server, sure_and_doubtful):
    _, doubtful, _, doubtful_set = sure_and_doubtful
    answer = requests.post(server + "api/predict?top=2", files={"image": doubtful.read_bytes()}, timeout=60).json()
    assert answer["prediction_set"] == {"classes": doubtful_set, "coverage": 0.9}
    assert len(answer["predictions"]) == 2
    wide = requests.post(server + "api/predict?coverage=0.99", files={"image": doubtful.read_bytes()}, timeout=60)
    assert wide.status_code == 200 and wide.json()["prediction_set"]["coverage"] == 0.99
    assert len(wide.json()["prediction_set"]["classes"]) >= len(doubtful_set)
    bad = requests.post(server + "api/predict?coverage=1.5", files={"image": doubtful.read_bytes()}, timeout=60)
    assert bad.status_code == 422 and "coverage" in bad.json()["error"]
    assert requests.get(server + "healthz", timeout=10).json()["coverage"] == 0.9


def test_the_page_shows_the_set_above_the_bars(server, sure_and_doubtful):
    sure, doubtful, sure_set, doubtful_set = sure_and_doubtful
    with page_at(server) as page:
        page.set_input_files("#files", str(doubtful))
        line = page.locator(".card .set")
        line.wait_for(state="visible", timeout=60_000)
        assert line.inner_text() == set_message(doubtful_set, 0.9)
        set_box, bars_box = line.bounding_box(), page.locator(".card .bars").bounding_box()
        assert set_box["y"] + set_box["height"] <= bars_box["y"]  # above the bars
        page.set_input_files("#files", str(sure))
        first = page.locator(".card").first
        first.locator(".bar").nth(4).wait_for(timeout=60_000)
        assert first.locator(".set").inner_text() == set_message(sure_set, 0.9)


def test_evaluate_draws_the_risk_coverage_curve_and_reports_the_sets(small_dataset, tmp_path):
    result = subprocess.run([sys.executable, str(REPO_ROOT / "evaluate.py"), str(small_dataset / "test"),
                             "--model", str(SHIPPED_MODEL), "--out", str(tmp_path / "out"), "--coverage", "0.95"],
                            capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert (tmp_path / "out" / "risk_coverage.png").stat().st_size > 10_000
    selective = report["selective"]
    assert selective["accuracy_at_coverage"]["1.0"] == pytest.approx(report["top1"])
    assert selective["accuracy_at_coverage"]["0.5"] >= report["top1"]  # the surest half is at least as right
    sets = report["prediction_sets"]
    assert sets["target"] == 0.95 and sets["images"] == report["images"] == 40
    assert set(sets["by_coverage"]) == {"0.8", "0.9", "0.95"}
    assert sets["by_coverage"]["0.8"]["mean_size"] <= sets["by_coverage"]["0.95"]["mean_size"]
    assert set(sets["per_class"]) == set(report["class_names"])
    assert "prediction sets at 95%" in result.stdout and "set size" in result.stdout
    with open(tmp_path / "out" / "predictions.csv", newline="") as f:
        header = next(csv.reader(f))
    assert header[-10:] == [f"p_{name}" for name in report["class_names"]]
