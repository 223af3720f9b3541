""""None of these": how far a photo is from the ten professions, and how well a score tells.

The model's own probabilities carry the detector. A model fine-tuned with outlier exposure
(idenprof.ship.outlier_exposure) learned to spread its probability evenly over the classes for photos of
anything else, so one number read from the probabilities, the none-score, separates them:

    none_score = (1 - p_max) / (1 - 1/C)      0: all on one class ... 1: even over the C classes

It is a function of the top probability alone, so every model format (.keras, .h5, SavedModel,
LiteRT, ONNX) answers the same, and a top-1 prediction is enough to compute it. Its threshold is
fitted on the hold-out (the score that `NONE_PASS_RATE` of the hold-out photos stay at or under) and
stored in calibration.json; a model without one flags nothing, as before.

The other scores here (max logit, energy, Mahalanobis, k-nearest neighbours) are the post-hoc
baselines bench/ood.py compares it with.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

# The none threshold lets this share of in-distribution hold-out photos through (95% TPR).
NONE_PASS_RATE = 0.95
NONE_RULE = "the none-score that 95% of the hold-out photos stay at or under"


def none_score(top_probability: float | np.ndarray, class_count: int) -> float | np.ndarray:
    """(1 - p_max) / (1 - 1/C), clipped to 0..1: 0 for a certain answer, 1 for even probabilities."""
    if class_count < 2:
        raise ValueError(f"a none-score needs at least 2 classes, got {class_count}")
    score = np.clip((1.0 - np.asarray(top_probability, dtype=np.float64)) / (1.0 - 1.0 / class_count), 0.0, 1.0)
    return float(score) if score.ndim == 0 else score


def none_scores(probabilities: np.ndarray) -> np.ndarray:
    """none_score of each row of probabilities [N, C]: float64 [N]."""
    probabilities = np.asarray(probabilities)
    return none_score(probabilities.max(axis=1), probabilities.shape[1])


def fit_none_threshold(known_scores: np.ndarray, pass_rate: float = NONE_PASS_RATE) -> float:
    """The score at or under which `pass_rate` of `known_scores` (in-distribution photos) lie."""
    known_scores = np.sort(np.asarray(known_scores, dtype=np.float64))
    if not len(known_scores):
        raise ValueError("no in-distribution scores to fit a threshold on")
    index = min(len(known_scores) - 1, max(0, int(np.ceil(pass_rate * len(known_scores))) - 1))
    return float(known_scores[index])


def auroc(known_scores: np.ndarray, unknown_scores: np.ndarray) -> float:
    """Area under the ROC curve for telling unknowns (higher score) from knowns: the chance that a
    random unknown scores above a random known, ties counting half (Mann-Whitney U)."""
    known = np.asarray(known_scores, dtype=np.float64)
    unknown = np.asarray(unknown_scores, dtype=np.float64)
    if not len(known) or not len(unknown):
        raise ValueError("AUROC needs both known and unknown scores")
    scores = np.concatenate([known, unknown])
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = scores[order]
    # Average ranks for ties.
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_scores)) + 1]
    ends = np.r_[starts[1:], len(scores)]
    for start, end in zip(starts, ends, strict=True):
        ranks[order[start:end]] = (start + end + 1) / 2.0
    unknown_rank_sum = ranks[len(known):].sum()
    u = unknown_rank_sum - len(unknown) * (len(unknown) + 1) / 2.0
    return float(u / (len(known) * len(unknown)))


def fpr_at_tpr(known_scores: np.ndarray, unknown_scores: np.ndarray, tpr: float = NONE_PASS_RATE) -> float:
    """FPR95: the share of unknowns that pass (score at or under the threshold) when the threshold
    lets `tpr` of the knowns pass."""
    threshold = fit_none_threshold(known_scores, tpr)
    return float(np.mean(np.asarray(unknown_scores) <= threshold))


def flagged_share(scores: np.ndarray, threshold: float) -> float:
    """The share of `scores` above `threshold` (flagged as none of these)."""
    scores = np.asarray(scores)
    return float(np.mean(scores > threshold)) if len(scores) else 0.0


def read_none_threshold(model_path: Path) -> float | None:
    """`none_threshold` from the calibration.json beside a model; None when there is none."""
    from idenprof.predict.calibration import number_beside

    return number_beside(model_path, "none_threshold")


# Post-hoc baselines (bench/ood.py): each maps model outputs to a score, higher = more unknown.

def max_logit_score(logits: np.ndarray) -> np.ndarray:
    """-max logit per row of logits [N, C]."""
    return -np.asarray(logits, dtype=np.float64).max(axis=1)


def energy_score(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """The free energy -T logsumexp(logits / T) per row (Liu et al. 2020)."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    top = z.max(axis=1, keepdims=True)
    return -temperature * (top[:, 0] + np.log(np.exp(z - top).sum(axis=1)))


@dataclass
class MahalanobisFit:
    """Class means [K, D] and the Cholesky factor L [D, D] of the shared precision (P = L L^T) of
    features [N, D] (Lee et al. 2018); `distance` is the score, idenprof.predict.ood_head puts it in a model."""

    means: np.ndarray
    cholesky: np.ndarray

    @classmethod
    def from_features(cls, features: np.ndarray, labels: np.ndarray, ridge: float = 1e-6) -> MahalanobisFit:
        features = np.asarray(features, np.float64)
        classes = np.arange(int(labels.max()) + 1)
        means = np.stack([features[labels == c].mean(axis=0) for c in classes])
        centred = features - means[labels]
        covariance = centred.T @ centred / len(features) + ridge * np.eye(features.shape[1])
        precision = np.linalg.inv(covariance)
        precision = (precision + precision.T) / 2
        return cls(means, np.linalg.cholesky(precision))

    def distance(self, features: np.ndarray) -> np.ndarray:
        """Squared Mahalanobis distance to the nearest class mean, float64 [N]."""
        u = np.asarray(features, np.float64) @ self.cholesky
        m = self.means @ self.cholesky
        return ((u[:, None, :] - m[None]) ** 2).sum(axis=2).min(axis=1)


class NearestNeighbourScore:
    """Cosine distance to the k-th nearest training feature, features L2-normalised (Sun et al. 2022)."""

    def __init__(self, features: np.ndarray, k: int = 10):
        self.bank = normalise(features)
        self.k = k

    def __call__(self, features: np.ndarray) -> np.ndarray:
        similarity = normalise(features) @ self.bank.T
        kth = np.sort(similarity, axis=1)[:, -self.k]
        return 1.0 - kth


# The smallest scale of the logits (idenprof.predict.ood_head): flat enough to read as "none", never 0, so
# that the order of the classes survives float32.
MIN_SCALE = 1e-3


def distance_tempered_probabilities(logits: np.ndarray, distance: np.ndarray, temperature: float,
                                    start: float, rate: float) -> np.ndarray:
    """softmax(logits * scale / T), scale = MIN_SCALE + (1 - MIN_SCALE) 2 sigmoid(-rate * max(0,
    distance - start)): the calibrated probabilities up to `start`, flattened toward even beyond
    it, so that the none-score reads a feature-space distance too (idenprof.predict.ood_head)."""
    sigmoid = 1.0 / (1.0 + np.exp(rate * np.maximum(0.0, np.asarray(distance, np.float64) - start)))
    scale = MIN_SCALE + (1.0 - MIN_SCALE) * 2.0 * sigmoid
    z = np.asarray(logits, np.float64) * scale[:, None] / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def normalise(features: np.ndarray) -> np.ndarray:
    features = np.asarray(features, dtype=np.float64)
    return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
