"""Classification reports: metrics (numpy) and pictures (PNG, matplotlib) shared by the
end-of-training report (metrics.json), idenprof.predict.evaluation and idenprof.ship.packaging."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from idenprof.files import atomic_write


def classification_metrics(probs: np.ndarray, labels: np.ndarray, class_names: list[str]) -> dict:
    """Top-1, top-5, per-class accuracy, precision, recall and F1, and the confusion matrix.

    Args:
        probs: float [N, C] class probabilities (or any scores; only their order matters).
        labels: int [N] true class indices.
        class_names: the C class names.

    Returns:
        A JSON-ready dict. confusion_matrix[i][j] counts images of class i predicted as j (rows:
        true, columns: predicted). per_class_accuracy is the recall; a per-class value is None when
        undefined (precision of a class never predicted, recall of a class with no image, F1 when
        either is None). macro_f1 averages the defined F1 values.
    """
    labels = np.asarray(labels)
    predicted = probs.argmax(axis=1)
    k = min(5, probs.shape[1])
    top5 = np.argsort(-probs, axis=1)[:, :k]
    n = len(class_names)
    confusion = np.zeros((n, n), dtype=int)
    np.add.at(confusion, (labels, predicted), 1)
    per_class = {}
    for i, name in enumerate(class_names):
        true_count, predicted_count, hits = confusion[i].sum(), confusion[:, i].sum(), confusion[i, i]
        precision = float(hits / predicted_count) if predicted_count else None
        recall = float(hits / true_count) if true_count else None
        f1 = None
        if precision is not None and recall is not None:
            f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {"precision": precision, "recall": recall, "f1": f1,
                           "support": int(true_count)}
    f1s = [c["f1"] for c in per_class.values() if c["f1"] is not None]
    return {
        "images": int(len(labels)),
        "top1": float((predicted == labels).mean()) if len(labels) else 0.0,
        "top5": float((top5 == labels[:, None]).any(axis=1).mean()) if len(labels) else 0.0,
        "per_class_accuracy": {name: c["recall"] for name, c in per_class.items()},
        "per_class": per_class,
        "macro_f1": float(np.mean(f1s)) if f1s else None,
        "confusion_matrix": confusion.tolist(),
        "class_names": list(class_names),
    }


def read_history_csv(path: Path) -> dict[str, list[float]]:
    """Columns of Keras' CSVLogger file as float lists (epoch included)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return {key: [float(r[key]) for r in rows if r.get(key) not in (None, "")] for key in (rows[0] if rows else {})}


def plot_training_curves(history_csv: Path, out_png: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h = read_history_csv(history_csv)
    epochs = [e + 1 for e in h.get("epoch", [])]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    for key, ax in (("loss", ax_loss), ("accuracy", ax_acc)):
        for prefix, style in (("", "-"), ("val_", "--")):
            if prefix + key in h:
                ax.plot(epochs, h[prefix + key], style, label=(prefix or "train_") + key)
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    atomic_write(out_png, lambda tmp: fig.savefig(tmp, dpi=100))
    plt.close(fig)
    return out_png


def plot_confusion_matrix(confusion: list[list[int]], class_names: list[str], out_png: Path,
                          title: str = "confusion matrix (test split)") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(confusion)
    size = max(5, 0.6 * len(class_names) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center",
                    color="white" if cm[i, j] > cm.max() / 2 else "black", fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    atomic_write(out_png, lambda tmp: fig.savefig(tmp, dpi=100))
    plt.close(fig)
    return out_png


def plot_reliability_diagram(curves: dict[str, tuple[np.ndarray, np.ndarray]], out_png: Path,
                             bins: int = 15, title: str = "reliability diagram") -> Path:
    """Accuracy against confidence in `bins` equal-width confidence bins, one line per entry of
    `curves` ({label: (probs [N, C], labels [N])}); the legend gives each one's ECE. Below, how
    many images fall in each bin. A calibrated model follows the diagonal."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from idenprof.predict.calibration import expected_calibration_error, reliability_bins

    fig, (ax, ax_count) = plt.subplots(2, 1, figsize=(5.5, 6.5), sharex=True,
                                       gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], ":", color="gray", label="perfect calibration")
    width = 1.0 / bins
    for number, (label, (probs, labels)) in enumerate(curves.items()):
        counts, confidence, accuracy = reliability_bins(probs, labels, bins)
        used = counts > 0
        ece = expected_calibration_error(probs, labels, bins)
        ax.plot(confidence[used], accuracy[used], "o-", label=f"{label} (ECE {ece:.3f})")
        offset = (number - (len(curves) - 1) / 2) * width / (len(curves) + 1)
        centres = (np.arange(bins) + 0.5) * width + offset
        ax_count.bar(centres, counts, width=width / (len(curves) + 1), label=label)
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    ax_count.set_xlabel(f"confidence (top-1 probability, {bins} bins)")
    ax_count.set_ylabel("images")
    fig.tight_layout()
    atomic_write(out_png, lambda tmp: fig.savefig(tmp, dpi=100))
    plt.close(fig)
    return out_png


def plot_risk_coverage(selective: dict, out_png: Path, title: str = "risk-coverage") -> Path:
    """Accuracy of the answered photos against the share answered, most confident first, from
    idenprof.predict.selective.selective_report."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = selective["curve"]
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    ax.plot(np.asarray(curve["coverage"]) * 100, np.asarray(curve["accuracy"]) * 100, "-",
            label=f"AURC {selective['aurc']:.3f}")
    ax.set_xlabel("photos answered, most confident first (%)")
    ax.set_ylabel("accuracy of the answered photos (%)")
    ax.set_xlim(0, 100)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    atomic_write(out_png, lambda tmp: fig.savefig(tmp, dpi=100))
    plt.close(fig)
    return out_png


def plot_image_gallery(images: np.ndarray, captions: list[str], out_png: Path, title: str,
                       columns: int = 4) -> Path:
    """A grid of uint8 RGB images [K, S, S, 3], each with its caption; says "none" when K is 0."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = max(1, -(-len(images) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(2.6 * columns, 2.9 * rows + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    if len(images) == 0:
        axes[0, 0].text(0, 0.5, "none", fontsize=14)
    for ax, image, caption in zip(axes.flat, images, captions, strict=False):
        ax.imshow(image)
        ax.set_title(caption, fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    atomic_write(out_png, lambda tmp: fig.savefig(tmp, dpi=100))
    plt.close(fig)
    return out_png
