"""idenprof.predict.conformal and idenprof.predict.selective: the scores and sets by hand, the coverage guarantee on
exchangeable data and on random splits of the shipped model's saved test predictions, the risk-coverage
curve by brute force, and how calibration.json carries the scores."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from serve_helpers import SHIPPED_MODEL

from idenprof.errors import ConfigError
from idenprof.predict import conformal, selective
from idenprof.predict.classifier import Classifier, load
from idenprof.predict.conformal import ConformalSets, read_conformal
from idenprof.predict.evaluation import read_predictions_csv


def test_scores_are_the_mass_ranked_above_plus_the_penalty_past_the_free_ranks():
    p = np.array([[0.1, 0.6, 0.3]])
    assert conformal.class_scores(p, penalty=0.0)[0].tolist() == pytest.approx([0.9, 0.0, 0.6])
    assert conformal.class_scores(p, penalty=0.1, free_ranks=1)[0].tolist() == pytest.approx([1.1, 0.0, 0.7])
    assert conformal.class_scores(p, penalty=0.1, free_ranks=2)[0].tolist() == pytest.approx([1.0, 0.0, 0.6])
    assert conformal.true_class_scores(p, [2], penalty=0.0).tolist() == pytest.approx([0.6])


def test_the_threshold_is_the_conformal_quantile_and_inf_when_too_few():
    scores = np.arange(1, 20) / 20.0  # 19 scores: 0.05 .. 0.95
    # ceil((19 + 1) * 0.9) = 18th smallest
    assert conformal.threshold(scores, 0.9) == pytest.approx(0.90)
    assert conformal.threshold(scores, 0.5) == pytest.approx(0.50)
    assert conformal.threshold(scores[:5], 0.9) == math.inf
    with pytest.raises(ValueError, match="between 0 and 1"):
        conformal.threshold(scores, 1.0)


def test_sets_grow_in_rank_order_until_they_hold_enough_mass_and_are_never_empty():
    sets = ConformalSets(scores=(0.0, 0.5, 0.7), penalty=0.0)
    p = np.array([[0.98, 0.01, 0.01, 0.0],   # sure: one class
                  [0.45, 0.40, 0.10, 0.05],  # between two
                  [0.30, 0.25, 0.25, 0.20]])  # spread
    q = sets.threshold(0.5)  # ceil(4 * 0.5) = 2nd smallest: 0.5
    assert q == 0.5
    assert sets.sets(p, 0.5) == [[0], [0, 1], [0, 1]]
    # q = 0.7: the spread photo takes a third class (0.30 + 0.25 <= 0.7), the doubtful one not (0.85)
    assert sets.sets(p, 0.75) == [[0], [0, 1], [0, 1, 2]]
    assert sets.masks(np.array([[0.2, 0.8]]), 0.25)[0].tolist() == [False, True]  # q = 0.0: the top only


def test_ranked_set_length_tells_when_a_short_top_list_cannot_hold_the_set():
    sets = ConformalSets(scores=(0.5, 0.6, 0.95), penalty=0.0)
    ranked = [0.5, 0.3, 0.15, 0.05]  # scores 0, 0.5, 0.8, 0.95
    assert sets.ranked_set_length(ranked, 0.5) == (2, False)  # q = 0.6
    assert sets.ranked_set_length(ranked[:2], 0.5) == (2, False)  # the third would score 0.8: out
    assert sets.ranked_set_length(ranked[:1], 0.5) == (1, True)  # the second would score 0.5: in
    assert sets.ranked_set_length(ranked, 0.6) == (4, False)  # q = 0.95


def test_coverage_is_guaranteed_on_exchangeable_data_even_with_few_calibration_photos():
    # Exchangeable photos: Dirichlet probabilities, the true class drawn from them. With n = 20
    # calibration photos the expected coverage is at least the target; taking the ceil(n * c)-th
    # score instead of the ceil((n + 1) * c)-th would miss it by about 5 points.
    rng = np.random.default_rng(0)
    classes, n, draws = 6, 20, 3000
    covered = {0.8: [], 0.9: []}
    for _ in range(draws):
        p = rng.dirichlet(np.full(classes, 0.4), size=n + 1)
        y = np.array([rng.choice(classes, p=row) for row in p])
        fitted = ConformalSets.fit(p[:n], y[:n], penalty=0.05)
        for target in covered:
            covered[target].append(fitted.masks(p[n:], target)[0, y[n]])
    for target, hits in covered.items():
        standard_error = math.sqrt(target * (1 - target) / draws)
        assert np.mean(hits) >= target - 3 * standard_error, (target, np.mean(hits))
        assert np.mean(hits) <= target + 1 / (n + 1) + 3 * standard_error + 0.03  # not just "every class"


def shipped_predictions():
    probabilities, labels, names = read_predictions_csv(SHIPPED_MODEL.parent / "predictions.csv")
    assert probabilities.shape == (2000, len(names)) and np.allclose(probabilities.sum(axis=1), 1, atol=1e-4)
    return probabilities, labels


@pytest.mark.parametrize("target", [0.8, 0.9, 0.95])
def test_coverage_holds_on_random_splits_of_the_shipped_models_test_predictions(target):
    probabilities, labels = shipped_predictions()
    rng = np.random.default_rng(1)
    coverages, sizes = [], []
    for _ in range(200):
        order = rng.permutation(len(labels))
        calibration, held = order[:1000], order[1000:]
        fitted = ConformalSets.fit(probabilities[calibration], labels[calibration])
        masks = fitted.masks(probabilities[held], target)
        coverages.append(masks[np.arange(len(held)), labels[held]].mean())
        sizes.append(masks.sum(axis=1).mean())
    # The guarantee is on average over splits. One split's coverage spreads by the calibration
    # quantile's and the held half's sampling, sqrt(a(1 - a)/1000) each, and as the two halves of one
    # pool are anti-correlated (a hard calibration half leaves an easy held half), about twice the
    # variance of independent draws: no split may fall more than 3 such standard deviations short.
    slack = 3 * math.sqrt(4 * target * (1 - target) / 1000)
    assert np.mean(coverages) >= target - 0.005
    assert min(coverages) >= target - slack
    assert 1.0 <= np.mean(sizes) < 2.5


def test_calibration_json_carries_the_scores_and_the_shipped_model_reads_them():
    fitted = read_conformal(SHIPPED_MODEL)
    assert fitted is not None and fitted.penalty == conformal.PENALTY
    stored = json.loads((SHIPPED_MODEL.parent / "calibration.json").read_text())["conformal"]
    assert stored["calibration_images"] == len(fitted.scores) == stored["calibration_images"] > 500
    assert list(fitted.scores) == sorted(fitted.scores)
    assert ConformalSets.from_json(fitted.to_json()) == fitted


def test_a_model_without_scores_has_no_sets(tmp_path):
    (tmp_path / "calibration.json").write_text(json.dumps({"temperature": 1.0}))
    assert read_conformal(tmp_path / "model.keras") is None
    (tmp_path / "calibration.json").write_text("{not json")
    assert read_conformal(tmp_path / "model.keras") is None


def test_the_python_api_gives_the_set_and_refuses_a_top_list_too_short_for_it(photos):
    classifier = load(SHIPPED_MODEL)
    assert classifier.conformal is not None and classifier.coverage == 0.9
    everything = classifier.predict(photos[0], top=10)
    narrow, wide = classifier.prediction_set(everything, 0.8), classifier.prediction_set(everything, 0.99)
    assert narrow[0] == everything[0][0] and narrow == wide[: len(narrow)] and len(wide) >= len(narrow)
    assert classifier.predict_set(photos[0], 0.99) == wide
    ask = classifier.prediction_json(everything, top=3, coverage=0.99)
    assert len(ask["predictions"]) == 3 and ask["prediction_set"] == {"classes": wide, "coverage": 0.99}
    if len(wide) > 1:
        with pytest.raises(ConfigError, match="predict with top=10"):
            classifier.prediction_set(everything[:1], 0.99)
    with pytest.raises(ConfigError, match="between 0 and 1"):
        load(SHIPPED_MODEL, coverage=1.5)
    bare = Classifier(classifier.predictor)
    assert bare.prediction_set(everything) is None and bare.prediction_json(everything)["prediction_set"] is None


def brute_force_accuracy_at(probabilities, labels, k):
    order = sorted(range(len(labels)), key=lambda i: -probabilities[i].max())
    return np.mean([probabilities[i].argmax() == labels[i] for i in order[:k]])


def test_the_risk_coverage_curve_matches_brute_force():
    rng = np.random.default_rng(2)
    probabilities = rng.dirichlet(np.ones(4), size=50)
    labels = rng.integers(0, 4, 50)
    coverage, accuracy = selective.risk_coverage(probabilities, labels)
    assert coverage[-1] == 1.0 and len(coverage) == 50
    for k in (1, 10, 25, 50):
        assert accuracy[k - 1] == pytest.approx(brute_force_accuracy_at(probabilities, labels, k))
    report = selective.selective_report(probabilities, labels)
    assert report["aurc"] == pytest.approx(np.mean(1 - accuracy))
    assert report["accuracy_at_coverage"]["0.5"] == pytest.approx(brute_force_accuracy_at(probabilities, labels, 25))
    assert report["accuracy_at_coverage"]["1.0"] == pytest.approx(np.mean(probabilities.argmax(1) == labels))
