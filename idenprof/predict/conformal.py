"""Prediction sets with guaranteed coverage: "chef or waiter", right 9 times in 10.

Split conformal prediction (Angelopoulos et al. 2021) with regularised adaptive prediction sets
(RAPS; APS when `penalty` is 0). Each photo's classes are ranked by probability; the score of
class j is the probability mass of the classes ranked above it, plus `penalty` for each rank past
`free_ranks`:

    score(x, j) = sum of p(x)_i over the classes i ranked above j + penalty * max(0, rank(j) - free_ranks)

so a set grows, class by class in rank order, until the classes already in it hold enough mass: a
photo the model is sure of gets one class, a doubtful one the two or three it is between.
On a calibration split (the hold-out that fits the temperature), the scores of the true classes
are kept, sorted. For a coverage 1 - a, the threshold q is the ceil((n + 1)(1 - a))-th smallest of
those n scores, and a photo's set is its classes scoring at most q (the top class scores 0, so a
set is never empty). If the calibration photos and a new photo are exchangeable, the set holds the
true class with probability at least 1 - a (at most 1 - a + 1/(n + 1) without ties): a guarantee
over photos like the hold-out's, not for each photo, and not for photos of none of the classes.

The scores are deterministic (the randomised form's U * p_j term taken at U = 0), so a photo gets
the same set every time; the price is coverage a little above the target, never below it.
Plain numpy; `ConformalSets` is what calibration.json stores as "conformal".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DEFAULT_COVERAGE = 0.90
# Chosen on the shipped model's hold-out (bench/conformal.py, docs/CONFORMAL.md).
PENALTY = 0.1
FREE_RANKS = 1
SCORE_DIGITS = 6


def class_scores(probabilities: np.ndarray, penalty: float = PENALTY, free_ranks: int = FREE_RANKS) -> np.ndarray:
    """Each class's conformal score for probabilities [N, C]: float64 [N, C], in class order."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    order = np.argsort(-probabilities, axis=1, kind="stable")
    ranked = np.take_along_axis(probabilities, order, axis=1)
    ranks = np.arange(1, probabilities.shape[1] + 1)
    ranked_scores = np.cumsum(ranked, axis=1) - ranked + penalty * np.maximum(0, ranks - free_ranks)
    scores = np.empty_like(ranked_scores)
    np.put_along_axis(scores, order, ranked_scores, axis=1)
    return scores


def true_class_scores(probabilities: np.ndarray, labels: np.ndarray, penalty: float = PENALTY,
                      free_ranks: int = FREE_RANKS) -> np.ndarray:
    """The score of each photo's true class: float64 [N]."""
    scores = class_scores(probabilities, penalty, free_ranks)
    return scores[np.arange(len(scores)), np.asarray(labels, dtype=np.int64)]


def threshold(calibration_scores: np.ndarray, coverage: float) -> float:
    """q: the ceil((n + 1) * coverage)-th smallest calibration score; inf (every class) when the
    calibration split is too small for that coverage."""
    check_coverage(coverage)
    scores = np.sort(np.asarray(calibration_scores, dtype=np.float64))
    rank = math.ceil((len(scores) + 1) * coverage - 1e-9)
    return float(scores[rank - 1]) if rank <= len(scores) else math.inf


def check_coverage(coverage: float) -> None:
    if not 0.0 < coverage < 1.0:
        raise ValueError(f"coverage must be between 0 and 1 (for example 0.9), got {coverage}")


def set_masks(probabilities: np.ndarray, q: float, penalty: float = PENALTY,
              free_ranks: int = FREE_RANKS) -> np.ndarray:
    """Which classes are in each photo's set: bool [N, C]; the top class always is."""
    # Stored scores are rounded to SCORE_DIGITS: the tolerance keeps a photo's own score inside.
    return class_scores(probabilities, penalty, free_ranks) <= q + 10.0 ** -SCORE_DIGITS


@dataclass(frozen=True)
class ConformalSets:
    """A calibration split's sorted true-class scores, and how they were scored."""

    scores: tuple[float, ...]
    penalty: float = PENALTY
    free_ranks: int = FREE_RANKS
    method: str = "RAPS (Angelopoulos et al. 2021), deterministic (U = 0)"

    @classmethod
    def fit(cls, probabilities: np.ndarray, labels: np.ndarray, penalty: float = PENALTY,
            free_ranks: int = FREE_RANKS) -> ConformalSets:
        scores = np.sort(true_class_scores(probabilities, labels, penalty, free_ranks))
        return cls(tuple(round(float(s), SCORE_DIGITS) for s in scores), float(penalty), int(free_ranks))

    def threshold(self, coverage: float) -> float:
        return threshold(np.asarray(self.scores), coverage)

    def masks(self, probabilities: np.ndarray, coverage: float = DEFAULT_COVERAGE) -> np.ndarray:
        """bool [N, C]: the classes in each photo's set at `coverage`."""
        return set_masks(probabilities, self.threshold(coverage), self.penalty, self.free_ranks)

    def sets(self, probabilities: np.ndarray, coverage: float = DEFAULT_COVERAGE) -> list[list[int]]:
        """Each photo's set as class indices, most probable first."""
        probabilities = np.asarray(probabilities)
        masks = self.masks(probabilities, coverage)
        return [[int(j) for j in np.argsort(-row, kind="stable") if mask[j]]
                for row, mask in zip(probabilities, masks, strict=True)]

    def ranked_set_length(self, ranked_probabilities, coverage: float = DEFAULT_COVERAGE) -> tuple[int, bool]:
        """For one photo's probabilities in rank order (most likely first; all classes, or the
        top k): how many of them lead the set, and whether the set goes on past the k given."""
        ranked = np.asarray(ranked_probabilities, dtype=np.float64)
        q = self.threshold(coverage)
        # In rank order already, so class_scores keeps the order (argsort is stable on ties).
        inside = int((class_scores(ranked[None], self.penalty, self.free_ranks)[0] <= q + 10.0 ** -SCORE_DIGITS).sum())
        next_score = ranked.sum() + self.penalty * max(0, len(ranked) + 1 - self.free_ranks)
        return inside, bool(inside == len(ranked) and next_score <= q + 10.0 ** -SCORE_DIGITS)

    def to_json(self) -> dict:
        return {"method": self.method, "penalty": self.penalty, "free_ranks": self.free_ranks,
                "calibration_images": len(self.scores), "scores": list(self.scores)}

    @classmethod
    def from_json(cls, data: dict) -> ConformalSets:
        scores = tuple(float(s) for s in data["scores"])
        if not scores:
            raise ValueError("no calibration scores")
        return cls(scores, float(data["penalty"]), int(data["free_ranks"]), str(data.get("method", cls.method)))


def read_conformal(model_path: Path) -> ConformalSets | None:
    """The "conformal" entry of the calibration.json beside a model; None when there is none or it
    cannot be read."""
    from idenprof.predict.calibration import calibration_beside

    try:
        return ConformalSets.from_json((calibration_beside(model_path) or {})["conformal"])
    except (ValueError, KeyError, TypeError):
        return None


# The coverages every report gives the sets' figures at, besides the one asked for.
REPORTED_COVERAGES = (0.8, 0.9, 0.95)


def set_report(probabilities: np.ndarray, labels: np.ndarray, conformal: ConformalSets,
               coverage: float, class_names: list[str]) -> dict:
    """Coverage, mean size, singleton share and singleton accuracy of the sets on labelled photos,
    overall and per true class at `coverage`, and overall at each of REPORTED_COVERAGES."""
    report = sets_at(probabilities, labels, conformal, coverage, class_names)
    report["by_coverage"] = {}
    for c in REPORTED_COVERAGES:
        part = sets_at(probabilities, labels, conformal, c, class_names)
        report["by_coverage"][f"{c:g}"] = {k: v for k, v in part.items() if k not in ("per_class", "size_counts")}
    return report


def sets_at(probabilities: np.ndarray, labels: np.ndarray, conformal: ConformalSets,
            coverage: float, class_names: list[str]) -> dict:
    labels = np.asarray(labels, dtype=np.int64)
    masks = conformal.masks(probabilities, coverage)
    covered = masks[np.arange(len(labels)), labels]
    sizes = masks.sum(axis=1)
    singleton = sizes == 1
    right = np.asarray(probabilities).argmax(axis=1) == labels

    def summary(rows):
        return {"images": int(rows.sum()), "coverage": float(covered[rows].mean()),
                "mean_size": float(sizes[rows].mean()), "singletons": float(singleton[rows].mean())}

    everything = np.ones(len(labels), dtype=bool)
    return {
        "target": coverage,
        **summary(everything),
        "singleton_accuracy": float(right[singleton].mean()) if singleton.any() else None,
        "size_counts": {str(k): int((sizes == k).sum()) for k in range(1, masks.shape[1] + 1) if (sizes == k).any()},
        "per_class": {name: summary(labels == c) for c, name in enumerate(class_names) if (labels == c).any()},
    }
