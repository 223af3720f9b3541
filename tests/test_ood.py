"""idenprof.predict.ood, idenprof.ship.outliers and the none-score in the library's surfaces: the score, the
threshold, AUROC and FPR95 checked by hand and against brute force; the outlier sources; evaluate's
"none_of_these" report; the rows infer.py writes."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from test_evaluation import CLASS_NAMES, IMAGE_SIZE, probabilities

from idenprof.errors import ConfigError, DatasetError
from idenprof.predict import ood
from idenprof.predict.classifier import Classifier, load
from idenprof.predict.evaluation import evaluate_folder
from idenprof.predict.inference import FilePrediction
from idenprof.predict.inputs import InputError
from idenprof.predict.loaders import Predictor
from idenprof.predict.outputs import prediction_rows, write_predictions
from idenprof.ship import outliers


def test_none_score_is_0_for_certainty_and_1_for_even_probabilities():
    assert ood.none_score(1.0, 10) == 0.0
    assert ood.none_score(0.1, 10) == pytest.approx(1.0)
    assert ood.none_score(0.55, 10) == pytest.approx(0.5)
    rows = np.array([[1.0, 0.0], [0.5, 0.5], [0.75, 0.25]])
    assert ood.none_scores(rows).tolist() == pytest.approx([0.0, 1.0, 0.5])
    with pytest.raises(ValueError, match="at least 2 classes"):
        ood.none_score(0.5, 1)


def test_the_threshold_lets_95_percent_of_known_scores_pass():
    known = np.arange(1, 101) / 100.0  # 0.01 .. 1.00
    threshold = ood.fit_none_threshold(known)
    assert threshold == pytest.approx(0.95)
    assert ood.flagged_share(known, threshold) == pytest.approx(0.05)


def brute_force_auroc(known, unknown) -> float:
    wins = sum((u > k) + 0.5 * (u == k) for u in unknown for k in known)
    return wins / (len(known) * len(unknown))


def test_auroc_matches_brute_force_with_ties_and_the_extremes():
    rng = np.random.default_rng(0)
    known = rng.integers(0, 8, 40) / 8.0  # many ties
    unknown = rng.integers(2, 10, 30) / 8.0
    assert ood.auroc(known, unknown) == pytest.approx(brute_force_auroc(known, unknown))
    assert ood.auroc([0.1, 0.2], [0.8, 0.9]) == 1.0
    assert ood.auroc([0.8, 0.9], [0.1, 0.2]) == 0.0
    assert ood.auroc([0.5, 0.5], [0.5]) == 0.5


def test_fpr95_is_the_share_of_unknowns_under_the_95_percent_threshold():
    known = np.arange(1, 101) / 100.0
    unknown = np.array([0.5, 0.9, 0.96, 0.99])
    assert ood.fpr_at_tpr(known, unknown) == pytest.approx(0.5)


def test_post_hoc_baselines_rank_far_features_higher():
    rng = np.random.default_rng(1)
    features = np.concatenate([rng.normal(0, 1, (50, 4)) + [5, 0, 0, 0], rng.normal(0, 1, (50, 4)) + [0, 5, 0, 0]])
    labels = np.repeat([0, 1], 50)
    near, far = np.array([[5.0, 0, 0, 0]]), np.array([[-6.0, -6.0, 4.0, 4.0]])
    mahalanobis = ood.MahalanobisFit.from_features(features, labels).distance
    knn = ood.NearestNeighbourScore(features, k=5)
    assert mahalanobis(far)[0] > mahalanobis(near)[0]
    assert knn(far)[0] > knn(near)[0]
    confident, flat = np.array([[9.0, 0.0, 0.0]]), np.array([[1.0, 1.0, 1.0]])
    assert ood.energy_score(flat)[0] > ood.energy_score(confident)[0]
    assert ood.max_logit_score(flat)[0] > ood.max_logit_score(confident)[0]


def test_the_threshold_is_read_from_calibration_json_and_a_bad_one_is_none(tmp_path):
    model = tmp_path / "model.tflite"
    model.write_bytes(b"")
    assert ood.read_none_threshold(model) is None
    (tmp_path / "calibration.json").write_text(json.dumps({"none_threshold": 0.42}))
    assert ood.read_none_threshold(model) == 0.42
    (tmp_path / "calibration.json").write_text(json.dumps({"none_threshold": True}))
    assert ood.read_none_threshold(model) is None
    (tmp_path / "calibration.json").write_text("not json")
    assert ood.read_none_threshold(model) is None


def classifier(threshold):
    predictor = Predictor(list(CLASS_NAMES), IMAGE_SIZE, lambda images: None, Path("hand.keras"))
    return Classifier(predictor, min_confidence=0.5, none_threshold=threshold)


def test_the_classifier_flags_above_its_threshold_and_never_without_one():
    flat = [("chef", 0.12), ("doctor", 0.11)]
    sure = [("chef", 0.97), ("doctor", 0.01)]
    with_detector = classifier(0.6)
    assert with_detector.is_none_of_these(flat) and not with_detector.is_none_of_these(sure)
    answer = with_detector.prediction_json(flat)
    assert answer["none_of_these"] is True and answer["none_score"] == pytest.approx((1 - 0.12) / 0.9)
    assert answer["unsure"] is True
    without = classifier(None)
    assert not without.is_none_of_these(flat)
    assert without.prediction_json(flat)["none_of_these"] is False
    assert without.prediction_json([])["none_score"] is None


def test_load_takes_a_threshold_override_and_refuses_a_bad_one(export_dir):
    model = export_dir / "model.tflite"
    assert load(model).none_threshold is None  # no calibration.json: the detector is off
    assert load(model, none_threshold=0.3).none_threshold == 0.3
    with pytest.raises(ConfigError, match="none_threshold must be a score 0..1, got 1.5"):
        load(model, none_threshold=1.5)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_output_rows_carry_the_score_and_the_flag(tmp_path, suffix):
    results = [FilePrediction("cat.png", [("farmer", 0.15), ("chef", 0.1)]),
               FilePrediction("chef.jpg", [("chef", 0.99), ("waiter", 0.01)])]
    errors = [InputError("broken.jpg", "broken.jpg: not an image")]
    rows = prediction_rows(["cat.png", "chef.jpg", "broken.jpg"], results, errors, classifier(0.7))
    path = write_predictions(tmp_path / f"rows{suffix}", rows, top=2)
    if suffix == ".csv":
        read = list(csv.DictReader(path.open()))
        assert [r["none_of_these"] for r in read] == ["true", "false", ""]
        assert float(read[0]["none_score"]) == pytest.approx(0.85 / 0.9, abs=1e-6)
        assert read[2]["none_score"] == "" and read[2]["error"]
    else:
        read = [json.loads(line) for line in path.read_text().splitlines()]
        assert [r["none_of_these"] for r in read] == [True, False, None]
        assert read[1]["none_score"] == pytest.approx(0.01 / 0.9, abs=1e-6)


def rows_for(images):
    """Probabilities from the image: a flat grey image (every pixel 128) gets even probabilities,
    anything else a sure chef."""
    flat = np.all(images == 128, axis=(1, 2, 3))
    sure = np.array(probabilities(chef=0.99, doctor=0.01), np.float32)
    return np.where(flat[:, None], np.float32(1 / len(CLASS_NAMES)), sure[None])


def test_evaluate_reports_flagged_shares_auroc_and_fpr95_for_a_folder_of_unknowns(small_dataset, tmp_path):
    from PIL import Image

    known = tmp_path / "known"
    shutil.copytree(small_dataset / "test" / "chef", known / "chef")
    unknown = tmp_path / "unknown" / "deeper"
    unknown.mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (40, 30), (128, 128, 128)).save(unknown / f"grey-{i}.png")
    Image.new("RGB", (40, 30), (10, 200, 30)).save(unknown / "green.png")  # an unknown the model misses
    predictor = Predictor(list(CLASS_NAMES), IMAGE_SIZE, rows_for, Path("hand.keras"))
    report = evaluate_folder(predictor, known, tmp_path / "out", unknown_dir=tmp_path / "unknown",
                             none_threshold=0.5, gallery=False)
    none = report["none_of_these"]
    assert none["known_flagged"] == 0.0 and none["unknown_images"] == 4
    assert none["unknown_flagged"] == pytest.approx(0.75)
    assert none["auroc"] == pytest.approx(0.75 + 0.25 * 0.5)  # the green one ties with every known
    assert none["fpr95"] == pytest.approx(0.25)
    assert json.loads((tmp_path / "out" / "report.json").read_text())["none_of_these"] == none
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="holds no image"):
        evaluate_folder(predictor, known, tmp_path / "out2", unknown_dir=tmp_path / "empty")


def test_outlier_sources_skip_left_out_folders_and_name_missing_packages(tmp_path):
    from PIL import Image

    for folder in ("animals", "people", "food"):
        (tmp_path / folder).mkdir()
        Image.new("RGBA", (8, 8)).save(tmp_path / folder / f"{folder}.png")
    (tmp_path / "food" / "notes.txt").write_text("no image")
    source = outliers.Source("stamps", "apt:x", "GPL", str(tmp_path), ("**/*.png",), ("people",))
    assert [p.name for p in source.files()] == ["animals.png", "food.png"]
    absent = outliers.Source("absent", "apt:absent", "?", str(tmp_path / "nowhere"))
    files, missing = outliers.source_files([source, absent])
    assert len(files) == 2 and missing == ["absent (apt:absent)"]


def test_procedural_and_synthetic_images_are_varied_rgb():
    rng = np.random.default_rng(0)
    images = outliers.procedural_images(4, 32, rng)
    assert images.shape == (4, 32, 32, 3) and images.dtype == np.uint8
    assert all(len(np.unique(image.reshape(-1, 3), axis=0)) > 3 for image in images)
    synthetic = outliers.synthetic_images(16)
    assert len(synthetic) >= 12 and len({name for name, _ in synthetic}) == len(synthetic)
    assert all(image.shape == (16, 16, 3) and image.dtype == np.uint8 for _, image in synthetic)


def test_a_stamp_pasted_on_a_background_keeps_its_opaque_pixels():
    stamp = np.zeros((4, 4, 4), np.uint8)
    stamp[:2, :, :3], stamp[:2, :, 3] = 200, 255  # top half opaque, bottom transparent
    background = np.full((4, 4, 3), 10, np.uint8)
    pasted = outliers.paste_on(stamp, background)
    assert (pasted[:2] == 200).all() and (pasted[2:] == 10).all()
