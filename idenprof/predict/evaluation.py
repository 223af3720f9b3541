"""Evaluate a model on any labelled folder: accuracy, per-class scores, calibration, mistakes.

    predictor = load_predictor(resolve_model_path("runs/cpu-96px-seed0"))
    report = evaluate_folder(predictor, Path("data/idenprof/test"), Path("evaluation"))

The folder has one subfolder per class, named as in the model's class_index.json (IdenProf's
test/, or your own photos; a subset of the classes is fine). The output folder gets:

    report.json              top-1, top-5, per-class precision/recall/F1, confusion matrix, ECE,
                             unreadable files, the most confident mistakes, and "none_of_these":
                             the share flagged as none of the classes and, given photos of
                             unknowns, how well the none-score tells them apart (AUROC, FPR95);
                             "selective": accuracy against the share answered (idenprof.predict.selective);
                             "prediction_sets": coverage and size of the conformal sets, per
                             class too, for a model with them (idenprof.predict.conformal)
    confusion_matrix.png     rows: true class, columns: predicted
    reliability_diagram.png  accuracy against confidence (15 bins) with the ECE
    risk_coverage.png        accuracy of the answered photos against the share answered
    top_mistakes.png         the wrong predictions the model was surest of (with `gallery`)
    predictions.csv          one row per image: path, true, predicted, probability, p(true), and
                             the probability of every class (p_<class>)

evaluate.py and idenprof.ship.packaging (the test report of the shipped model) call `evaluate_samples`;
the end of training (metrics.json) calls `write_evaluation` with the predictions it has made: one
report format, one code path. Images are decoded by idenprof.data.decoded (the same pixels as
training and infer.py) and predicted by any format idenprof.predict.inference loads.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from idenprof.data.dataset import Sample, scan_class_folders
from idenprof.data.imaging import IMAGE_EXTENSIONS
from idenprof.errors import DatasetError
from idenprof.files import atomic_write, write_json_atomically
from idenprof.predict.calibration import ECE_BINS, expected_calibration_error, read_min_confidence
from idenprof.predict.conformal import DEFAULT_COVERAGE, ConformalSets, read_conformal, set_report
from idenprof.predict.inference import predict_views
from idenprof.predict.loaders import Predictor
from idenprof.predict.ood import auroc, flagged_share, fpr_at_tpr, none_scores, read_none_threshold
from idenprof.predict.report import (
    classification_metrics,
    plot_confusion_matrix,
    plot_image_gallery,
    plot_reliability_diagram,
    plot_risk_coverage,
)
from idenprof.predict.selective import selective_report

REPORT_FILENAME = "report.json"
CONFUSION_PNG = "confusion_matrix.png"
RELIABILITY_PNG = "reliability_diagram.png"
RISK_COVERAGE_PNG = "risk_coverage.png"
MISTAKES_PNG = "top_mistakes.png"
PREDICTIONS_CSV = "predictions.csv"
MISTAKES_SHOWN = 16
# The subset of a test split whose files do not also appear in train (byte-identical duplicates).
DEDUPLICATED_TEST = "without_train_duplicates"


def labelled_samples(data_dir: Path, class_names: list[str]) -> list[Sample]:
    """(image path, index in `class_names`) for every image under data_dir/<class>/.

    Raises DatasetError naming every class folder the model does not know, or when the folders
    hold no image at all.
    """
    folders = scan_class_folders(data_dir)
    unknown = [name for name in folders if name not in class_names]
    if unknown:
        # A dataset root (train/, test/) given in place of one split is the likely mistake.
        hint = f" (or give one split, e.g. {Path(data_dir) / 'test'})" if {"train", "test"} & set(unknown) else ""
        raise DatasetError(
            f"{data_dir}: class folder(s) {', '.join(unknown)} not among the model's classes "
            f"({', '.join(class_names)}); rename or remove them{hint}"
        )
    samples = [(path, class_names.index(name)) for name, paths in folders.items() for path in paths]
    if not samples:
        raise DatasetError(f"{data_dir}: its class folders hold no image files ({', '.join(IMAGE_EXTENSIONS)})")
    return samples


def evaluate_folder(predictor: Predictor, data_dir: Path, out_dir: Path, unknown_dir: Path | None = None,
                    **options) -> dict:
    """`evaluate_samples` on every image of a class-folder dataset (see `labelled_samples`), with
    the min_confidence, none_threshold and conformal scores of the model's calibration.json when it
    has them, and the
    images of `unknown_dir` (any folder tree of photos of none of the classes) as unknowns."""
    samples = labelled_samples(Path(data_dir), predictor.class_names)
    options.setdefault("min_confidence", read_min_confidence(predictor.model_path))
    options.setdefault("none_threshold", read_none_threshold(predictor.model_path))
    options.setdefault("conformal", read_conformal(predictor.model_path))
    if unknown_dir is not None:
        options["unknowns"] = unknown_images(Path(unknown_dir))
    return evaluate_samples(predictor, samples, out_dir, root=Path(data_dir), **options)


def unknown_images(folder: Path) -> list[str]:
    """Every image file under `folder` (subfolders too), sorted. DatasetError when there is none."""
    if not folder.is_dir():
        raise DatasetError(f"--unknown {folder}: not a folder; give a folder of photos of none of the classes")
    paths = sorted(str(p) for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not paths:
        raise DatasetError(f"--unknown {folder} holds no image ({', '.join(IMAGE_EXTENSIONS)})")
    return paths


def evaluate_samples(
    predictor: Predictor,
    samples: list[Sample],
    out_dir: Path,
    *,
    tta: bool = False,
    batch_size: int = 32,
    progress: bool = False,
    **options,
) -> dict:
    """Predict every sample once and write the report files into `out_dir` (created).

    Args:
        predictor: any loaded model (idenprof.predict.loaders.load_predictor).
        samples: (image path, class index in predictor.class_names) pairs.
        tta: average each image with its mirror (report.json then also has top1_without_tta).
        options: what to report and how (`write_evaluation`'s keyword arguments: root, subsets,
            gallery, split_name, min_confidence, none_threshold, unknowns, conformal, coverage).

    Returns:
        The report (what report.json holds). Unreadable images are listed in it and left out.
    """
    from idenprof.data.decoded import decode_images

    decoded = decode_images(samples, predictor.image_size, progress=progress)
    if len(decoded.labels) == 0:
        raise DatasetError(f"none of the {len(samples)} images could be read (e.g. {decoded.skipped[0][0]})")
    views = predict_views(lambda x: predictor.predict(x, batch_size), decoded.images, tta)

    def unknown_scores(paths: list[str]) -> tuple[np.ndarray, list[tuple[str, str]]]:
        found = decode_images([(path, 0) for path in paths], predictor.image_size, progress=progress)
        if len(found.labels) == 0:
            raise DatasetError(f"none of the {len(paths)} unknown images could be read (e.g. {found.skipped[0][0]})")
        probs = predict_views(lambda x: predictor.predict(x, batch_size), found.images, tta).mean()
        return none_scores(probs), found.skipped

    return write_evaluation(views, decoded, predictor.class_names, out_dir, model_name=str(predictor.model_path),
                            unknown_scores=unknown_scores, **options)


def write_evaluation(
    views,
    decoded,
    names: list[str],
    out_dir: Path,
    *,
    model_name: str,
    root: Path | None = None,
    subsets: dict[str, set[str]] | None = None,
    gallery: bool = True,
    split_name: str = "evaluation",
    min_confidence: float | None = None,
    none_threshold: float | None = None,
    unknowns: list[str] | None = None,
    unknown_scores=None,
    conformal: ConformalSets | None = None,
    coverage: float = DEFAULT_COVERAGE,
    report_name: str = REPORT_FILENAME,
    extra: dict | None = None,
) -> dict:
    """The report of predictions already made, and its files, into `out_dir` (created): what
    evaluate.py, packaging and the end of training all write, through this one function.

    Args:
        views: idenprof.predict.inference.Views of `decoded`'s images (idenprof.data.decoded.DecodedImages).
        names: class name of each output position; model_name: what report.json calls the model.
        root: paths in the outputs are written relative to it (so reports do not carry the
            machine's folders); absolute when None.
        subsets: {name: image paths}: top-1/top-5 on those images too (from the same predictions),
            e.g. the test images that do not also appear in train.
        gallery: draw top_mistakes.png (it shows the photos themselves).
        split_name: what the images are, for the picture titles.
        min_confidence: also report the share of images predicted at or above this probability
            and their accuracy (the model's calibration.json default, see idenprof.predict.calibration).
        none_threshold: also report the share of images flagged as none of the classes (idenprof.predict.ood).
        unknowns: paths of photos of none of the classes, and `unknown_scores(paths)` their
            none-scores and the unreadable ones: report how well the none-score tells them from
            the labelled images (AUROC, FPR at 95% TPR) and the share flagged.
        conformal: the model's calibration scores (idenprof.predict.conformal): report the sets' coverage,
            mean size and singleton share at `coverage` (0..1), overall and per class (single view,
            as they were calibrated, even with test-time augmentation).
        report_name, extra: the report's file name (metrics.json at the end of training) and
            fields added to it (the training's own).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tta = views.mirrored is not None
    def shown(path: str) -> str:
        return Path(os.path.relpath(path, root)).as_posix() if root is not None else path

    labels = decoded.labels
    probs = views.mean()
    report = {"model": model_name, "tta": tta}
    report.update(classification_metrics(probs, labels, names))
    if tta:
        report["top1_without_tta"] = classification_metrics(views.single, labels, names)["top1"]
    report["ece"] = expected_calibration_error(probs, labels, ECE_BINS)
    report["ece_bins"] = ECE_BINS
    report["mean_confidence"] = float(probs.max(axis=1).mean())
    if min_confidence is not None:
        sure = probs.max(axis=1) >= min_confidence
        report["at_min_confidence"] = {
            "min_confidence": min_confidence, "coverage": float(sure.mean()),
            "accuracy": float((probs.argmax(axis=1) == labels)[sure].mean()) if sure.any() else None,
        }
    if none_threshold is not None or unknowns:
        report["none_of_these"] = none_report(probs, none_threshold, unknowns, unknown_scores)
    report["selective"] = selective_report(probs, labels)
    if conformal is not None:
        # Single view, as the sets were calibrated and as infer.py predicts by default.
        report["prediction_sets"] = {"view": "single", **set_report(views.single, labels, conformal, coverage, names)}
    report["subsets"] = {}
    for subset, paths in (subsets or {}).items():
        keep = np.array([p in paths for p in decoded.paths], dtype=bool)
        part = classification_metrics(probs[keep], labels[keep], names)
        report["subsets"][subset] = {key: part[key] for key in ("images", "top1", "top5")}
    report["unreadable"] = [{"path": shown(path), "reason": reason} for path, reason in decoded.skipped]
    predicted = probs.argmax(axis=1)
    confidence = probs.max(axis=1)
    wrong = np.flatnonzero(predicted != labels)
    worst = wrong[np.argsort(-confidence[wrong], kind="stable")][:MISTAKES_SHOWN]
    report["most_confident_mistakes"] = [
        {"path": shown(decoded.paths[i]), "true": names[labels[i]], "predicted": names[predicted[i]],
         "probability": float(confidence[i]), "true_probability": float(probs[i, labels[i]])}
        for i in worst
    ]

    files = {"report": REPORT_FILENAME, "confusion_matrix": CONFUSION_PNG,
             "reliability_diagram": RELIABILITY_PNG, "risk_coverage": RISK_COVERAGE_PNG,
             "predictions": PREDICTIONS_CSV}
    plot_confusion_matrix(report["confusion_matrix"], names, out_dir / CONFUSION_PNG,
                          title=f"confusion matrix ({split_name}, {len(labels)} images)")
    plot_reliability_diagram({Path(model_name).name: (probs, labels)}, out_dir / RELIABILITY_PNG,
                             title=f"reliability ({split_name}, {len(labels)} images)")
    plot_risk_coverage(report["selective"], out_dir / RISK_COVERAGE_PNG,
                       title=f"risk-coverage ({split_name}, {len(labels)} images)")
    if gallery:
        captions = [f"true {m['true']}\npredicted {m['predicted']} {m['probability']:.0%}"
                    for m in report["most_confident_mistakes"]]
        plot_image_gallery(decoded.images[worst], captions, out_dir / MISTAKES_PNG,
                           title=f"most confident mistakes ({split_name})")
        files["mistakes_gallery"] = MISTAKES_PNG
    write_predictions_csv(out_dir / PREDICTIONS_CSV, [shown(p) for p in decoded.paths], labels, probs, names)
    report["files"] = {**files, "report": report_name}
    report.update(extra or {})
    write_json_atomically(report, out_dir / report_name)  # last: a complete report
    return report


def none_report(probs: np.ndarray, none_threshold: float | None, unknowns: list[str] | None,
                unknown_scores) -> dict:
    """report.json's "none_of_these": the share of the labelled images flagged and, with unknowns,
    AUROC and FPR95 of the none-score (knowns: the labelled images) and the share of unknowns flagged."""
    known = none_scores(probs)
    part = {"none_threshold": none_threshold,
            "known_flagged": None if none_threshold is None else flagged_share(known, none_threshold)}
    if unknowns:
        unknown, skipped = unknown_scores(unknowns)
        part.update({
            "unknown_images": int(len(unknown)), "auroc": auroc(known, unknown), "fpr95": fpr_at_tpr(known, unknown),
            "unknown_flagged": None if none_threshold is None else flagged_share(unknown, none_threshold),
            "unknown_unreadable": [{"path": path, "reason": reason} for path, reason in skipped],
        })
    return part


def write_predictions_csv(path: Path, paths: list[str], labels: np.ndarray, probs: np.ndarray,
                          class_names: list[str]) -> Path:
    """One row per image: path, true, predicted, probability (of the prediction), true_probability,
    then p_<class> for every class in class index order (what prediction sets are computed from)."""
    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            out = csv.writer(f)
            out.writerow(["path", "true", "predicted", "probability", "true_probability"]
                         + [f"p_{name}" for name in class_names])
            for p, label, row in zip(paths, labels, probs, strict=True):
                guess = int(row.argmax())
                out.writerow([p, class_names[label], class_names[guess], f"{row[guess]:.6f}",
                              f"{row[label]:.6f}"] + [f"{value:.6f}" for value in row])

    return atomic_write(path, write)


def read_predictions_csv(path: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(probabilities float64 [N, C], labels int [N], class names) from a predictions.csv."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    columns = [c for c in rows[0] if c.startswith("p_")]
    if not columns:
        raise DatasetError(f"{path} has no p_<class> columns (written before they were added)")
    names = [c[2:] for c in columns]
    start = rows[0].index(columns[0])
    probabilities = np.array([[float(v) for v in row[start:start + len(names)]] for row in rows[1:]])
    labels = np.array([names.index(row[1]) for row in rows[1:]], dtype=np.int64)
    return probabilities, labels, names


def summary_lines(report: dict) -> list[str]:
    """What evaluate.py prints: headline numbers and a per-class table."""
    tta = "with flip TTA" if report["tta"] else "single view"
    lines = [f"{report['images']} images, {tta}: top-1 {report['top1']:.2%}   top-5 {report['top5']:.2%}   "
             f"ECE {report['ece']:.3f}   macro F1 {fmt(report['macro_f1'])}"]
    if "top1_without_tta" in report:
        lines.append(f"top-1 without TTA: {report['top1_without_tta']:.2%}")
    if "at_min_confidence" in report:
        sure = report["at_min_confidence"]
        lines.append(f"at or above min_confidence {sure['min_confidence']:.3f}: {sure['coverage']:.1%} of the "
                     f"images, {fmt(sure['accuracy'])} correct")
    none = report.get("none_of_these")
    if none and none["none_threshold"] is not None:
        lines.append(f"flagged as none of the classes (none-score above {none['none_threshold']:.3f}): "
                     f"{none['known_flagged']:.1%} of the images")
    if none and "auroc" in none:
        flagged = "" if none["unknown_flagged"] is None else f", {none['unknown_flagged']:.1%} of them flagged"
        lines.append(f"unknowns: {none['unknown_images']} images; AUROC {none['auroc']:.3f}, FPR at 95% TPR "
                     f"{none['fpr95']:.1%}{flagged}")
    selective = report["selective"]["accuracy_at_coverage"]
    lines.append("answering only the most confident: " + ", ".join(
        f"{float(share):.0%} of the images {accuracy:.1%} correct" for share, accuracy in selective.items()
        if share in ("0.5", "0.8", "0.9")) + f" (AURC {report['selective']['aurc']:.3f})")
    sets = report.get("prediction_sets")
    if sets:
        lines.append(f"prediction sets at {sets['target']:.0%}: they hold the true class for {sets['coverage']:.1%} "
                     f"of the images, {sets['mean_size']:.2f} classes on average, {sets['singletons']:.1%} "
                     f"a single class ({fmt(sets['singleton_accuracy'])} of those right)")
    for name, part in report["subsets"].items():
        lines.append(f"{name.replace('_', ' ')}: {part['images']} images, top-1 {part['top1']:.2%}, "
                     f"top-5 {part['top5']:.2%}")
    width = max(len(n) for n in report["class_names"] + ["class"])
    set_sizes = (sets or {}).get("per_class", {})
    lines.append(f"{'class':{width}}  precision  recall      F1  images" + ("  set size" if set_sizes else ""))
    for name, c in report["per_class"].items():
        size = f"  {set_sizes[name]['mean_size']:>8.2f}" if name in set_sizes else ""
        lines.append(f"{name:{width}}  {fmt(c['precision']):>9}  {fmt(c['recall']):>6}  {fmt(c['f1']):>6}  "
                     f"{c['support']:>6}{size}")
    if report["unreadable"]:
        lines.append(f"{len(report['unreadable'])} unreadable image(s) left out (listed in {REPORT_FILENAME})")
    return lines


def fmt(value: float | None) -> str:
    """A 0..1 score as a percentage, '-' when undefined."""
    return "-" if value is None else f"{value:.1%}"
