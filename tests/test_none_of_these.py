""""None of these" with the shipped model, in every surface: a real photo of an animal from the far-OOD
benchmark (scikit-image's Chelsea the cat) is flagged through infer.py (text, --json, --output), the
Python API in both shipped formats, the JSON API and the page in Chromium; a real IdenProf test
photo is not.

The shipped model carries the distance-tempered head and its none_threshold in calibration.json, so
these tests use its defaults, as a user would; a copy without the threshold flags nothing."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import requests
from archive_subsets import REPO_ROOT
from serve_helpers import SHIPPED_MODEL, running_server
from test_page import page_at

from idenprof.predict.classifier import load
from idenprof.predict.ood import read_none_threshold
from idenprof.ship.outliers import the_cat_photo

ARTIFACTS = REPO_ROOT / "test-artifacts"


@pytest.fixture(scope="module")
def cat():
    path = the_cat_photo()
    assert path is not None, "needs scikit-image (requirements-dev.txt) for its photo of a cat"
    return path


@pytest.fixture(scope="module")
def chef(small_dataset):
    """A real IdenProf chef photo the shipped model is sure of."""
    classifier = load(SHIPPED_MODEL)
    photos = sorted((small_dataset / "test" / "chef").glob("*.jpg"))
    return max(photos, key=lambda p: dict(classifier.predict(p, top=10))["chef"])


def test_the_shipped_model_carries_its_threshold_and_a_model_without_one_flags_nothing(cat, tmp_path):
    threshold = read_none_threshold(SHIPPED_MODEL)
    assert threshold is not None and 0 < threshold < 1
    for name in (SHIPPED_MODEL.name, "class_index.json"):
        shutil.copy(SHIPPED_MODEL.parent / name, tmp_path / name)
    calibration = json.loads((SHIPPED_MODEL.parent / "calibration.json").read_text())
    calibration["none_threshold"] = None
    for own in (calibration.get("models") or {}).values():  # the int8 file's own threshold
        own["none_threshold"] = None
    (tmp_path / "calibration.json").write_text(json.dumps(calibration))
    bare = load(tmp_path / SHIPPED_MODEL.name)
    answer = bare.predict(cat)
    assert bare.none_threshold is None and not bare.is_none_of_these(answer)
    assert bare.prediction_json(answer)["none_score"] == bare.none_score(answer) > threshold


@pytest.mark.parametrize("model_file", [SHIPPED_MODEL.name, "model.keras"])
def test_python_api_flags_the_cat_and_not_the_chef_in_both_formats(cat, chef, model_file):
    classifier = load(SHIPPED_MODEL.parent / model_file)
    cat_answer, chef_answer = classifier.predict([cat, chef])
    assert classifier.is_none_of_these(cat_answer), classifier.none_score(cat_answer)
    assert not classifier.is_none_of_these(chef_answer)
    assert chef_answer[0][0] == "chef"


def infer(*args):
    return subprocess.run([sys.executable, str(REPO_ROOT / "infer.py"), "--model", str(SHIPPED_MODEL), *args],
                          capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)


def test_infer_says_none_under_the_cat_and_not_under_the_chef(cat, chef, tmp_path):
    result = infer(str(cat), str(chef), "--output", str(tmp_path / "rows.jsonl"))
    assert result.returncode == 0, result.stderr
    cat_block, chef_block = result.stdout.split("\n\n")
    assert "none of the 10 professions (score 0." in cat_block
    assert "none of the" not in chef_block and "not sure" not in chef_block
    rows = [json.loads(line) for line in (tmp_path / "rows.jsonl").read_text().splitlines()]
    assert [row["none_of_these"] for row in rows] == [True, False]
    assert rows[0]["none_score"] > rows[1]["none_score"]


def test_infer_json_and_the_threshold_override(cat):
    answer = json.loads(infer(str(cat), "--json").stdout)[0]
    assert answer["none_of_these"] is True and 0 < answer["none_score"] <= 1
    lifted = json.loads(infer(str(cat), "--json", "--none-threshold", "1").stdout)[0]
    assert lifted["none_of_these"] is False and lifted["none_score"] == answer["none_score"]
    bad = infer(str(cat), "--none-threshold", "2")
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0
    assert "none_threshold must be a score 0..1" in bad.stderr


@pytest.fixture(scope="module")
def server():
    with running_server("--model", str(SHIPPED_MODEL)) as (url, _):
        yield url


def test_the_json_api_flags_the_cat_and_not_the_chef(server, cat, chef):
    answers = {}
    for name, photo in (("cat", cat), ("chef", chef)):
        response = requests.post(server + "api/predict", files={"image": photo.read_bytes()}, timeout=60)
        assert response.status_code == 200, response.text
        answers[name] = response.json()
    assert answers["cat"]["none_of_these"] is True and answers["chef"]["none_of_these"] is False
    assert requests.get(server + "healthz", timeout=10).json()["none_threshold"] == read_none_threshold(SHIPPED_MODEL)


def test_the_page_shows_a_message_for_the_cat_and_bars_for_the_chef(server, cat, chef):
    with page_at(server) as page:
        page.set_input_files("#files", str(cat))
        message = page.locator(".card .none")
        message.wait_for(state="visible", timeout=60_000)
        assert "None of the ten professions" in message.inner_text()
        assert not page.locator(".card .bars").is_visible()
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "page-none.png"), full_page=True)
        page.locator(".card .show-guesses").click()  # the guesses stay one click away
        assert page.locator(".card .bar").count() == 5 and page.locator(".card .bars").is_visible()
        page.set_input_files("#files", str(chef))
        chef_card = page.locator(".card").first
        chef_card.locator(".bar").nth(4).wait_for(timeout=60_000)
        assert not chef_card.locator(".none").is_visible()
        assert chef_card.locator(".bar .label").first.inner_text() == "chef"
