"""Selective prediction: how right the model is on the photos it answers, against how many it answers.

Answering only the photos whose top probability is highest trades coverage (the share answered)
for accuracy. The risk-coverage curve (Geifman & El-Yaniv 2017) orders the photos by top
probability, most confident first, and gives the accuracy of the first k for every k; the area
under the risk (1 - accuracy) curve (AURC) sums it up in one number, lower is better.
"""

from __future__ import annotations

import numpy as np

# The coverages report.json lists the accuracy at (besides the whole curve).
REPORTED_COVERAGES = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def risk_coverage(probabilities: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(coverage [N], accuracy [N]): answering the k most confident of N photos covers k / N of
    them with accuracy[k - 1]. Ties in confidence keep input order."""
    probabilities = np.asarray(probabilities)
    right = (probabilities.argmax(axis=1) == np.asarray(labels)).astype(np.float64)
    order = np.argsort(-probabilities.max(axis=1), kind="stable")
    answered = np.arange(1, len(right) + 1)
    return answered / len(right), np.cumsum(right[order]) / answered


def selective_report(probabilities: np.ndarray, labels: np.ndarray, points: int = 101) -> dict:
    """report.json's "selective": the curve at `points` coverages, the accuracy at
    REPORTED_COVERAGES, and the area under the risk-coverage curve (AURC, 0..1, lower is better)."""
    coverage, accuracy = risk_coverage(probabilities, labels)
    if not len(coverage):
        raise ValueError("no photos to draw a risk-coverage curve from")

    def accuracy_at(share: float) -> float:
        return float(accuracy[max(0, int(np.ceil(share * len(accuracy))) - 1)])

    grid = np.linspace(1 / len(coverage), 1.0, min(points, len(coverage)))
    return {
        "aurc": float(np.mean(1.0 - accuracy)),
        "accuracy_at_coverage": {f"{c:.1f}": accuracy_at(c) for c in REPORTED_COVERAGES},
        "curve": {"coverage": [round(float(c), 4) for c in grid],
                  "accuracy": [round(accuracy_at(c), 4) for c in grid]},
    }
