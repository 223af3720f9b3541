"""The model card (MODEL_CARD.md) of a packaged model: the template model_card.md, filled in.

The card's prose and layout are the template's; this module computes what fills it (figures, tables, the
phrases that depend on the model) and which of its blocks hold, e.g. the interim-model warning for an
unfinished run or "None of these" for a model that can say so.
"""

from __future__ import annotations

import dataclasses
import re
import string
from pathlib import Path

import numpy as np

from idenprof.predict.evaluation import DEDUPLICATED_TEST
from idenprof.run_folder import CLASS_INDEX_FILENAME

TEMPLATE = Path(__file__).with_name("model_card.md")
# The packaged folder's files besides the models (idenprof.ship.packaging writes them).
CARD_FILENAME = "MODEL_CARD.md"
TEST_REPORT = "test_report.json"
HOLDOUT_PNG = "calibration_holdout.png"
TRAINING_METRICS = "training_metrics.json"
TRAINING_CURVES = "training_curves.png"
# The template's own first comment tells its editors this syntax.
BLOCK = re.compile(r"^<!-- if (\w+) -->\n(.*?)^<!-- end \1 -->\n", re.MULTILINE | re.DOTALL)
COMMENT = re.compile(r"^<!--.*?-->\n", re.MULTILINE | re.DOTALL)
WHITE_COATS = ["chef", "waiter", "doctor"]  # the look-alike uniforms "Known weaknesses" names
FILE_ROLES = {
    "model.keras": "the calibrated model, float32: `keras.models.load_model(path)`, no custom objects",
    "model.tflite": "the same for LiteRT (infer.py's default)",
    "model.int8.tflite": "the same for LiteRT, computing in int8 (infer.py's default): a quarter of the size and "
                         "faster on CPUs, its probabilities rounded a little; min_confidence, the none threshold "
                         "and the prediction sets are fitted on its own hold-out answers (calibration.json's "
                         "`models`)",
    CLASS_INDEX_FILENAME: "output position -> class name",
    "calibration.json": "temperature, ECE before/after, default min_confidence and its rule, the none "
                        "threshold, the hold-out scores of the prediction sets",
    HOLDOUT_PNG: "reliability diagram on the hold-out, before and after calibration",
    TEST_REPORT: "the test evaluation (idenprof.predict.evaluation, as `python evaluate.py` writes it)",
    "predictions.csv": "every test image: true class, prediction, probability of each class",
    "risk_coverage.png": "test accuracy of the answered photos against the share answered",
    "confusion_matrix.png": "test confusion matrix",
    "reliability_diagram.png": "reliability diagram on the test split",
    TRAINING_METRICS: "the training run's own test report (metrics.json)",
    TRAINING_CURVES: "loss and accuracy per epoch",
    CARD_FILENAME: "this card",
}
TEMPERING_LAYER = ("`none_tempered` (the logits times the scale the `none_*` layers compute from the features' "
                   "distance, see \"None of these\"), ")


def render_model_card(*, config, saved, source, provenance, layout, holdout_images, report, calibration,
                      training_report, float16, agreement, staging: Path, exposure=None, detector=None) -> str:
    """MODEL_CARD.md: what the model is, how it was made and tested, and what it is not for."""
    values = {
        **dataclasses.asdict(config),
        **model_values(report, calibration, agreement, detector),
        "file_rows": file_rows(staging, float16),
        **training_values(config, saved, source, provenance, training_report),
        **data_values(config, layout, holdout_images),
        **test_values(report, training_report),
        **calibration_values(calibration, report),
        **none_values(calibration, report, exposure, detector),
        **sure_values(report),
        **weakness_values(report),
        "packaging_command": packaging_command(detector, exposure),
    }
    return fill(TEMPLATE.read_text(encoding="utf-8"), blocks(report, calibration, training_report), values)


def fill(template: str, shown: dict[str, bool], values: dict) -> str:
    """`template` without its comments and the blocks `shown` leaves out, its ${names} filled from `values`."""
    return string.Template(COMMENT.sub("", kept_blocks(template, shown))).substitute(values)


def kept_blocks(text: str, shown: dict[str, bool]) -> str:
    """`text` without the "if NAME" ... "end NAME" blocks whose NAME `shown` says false."""
    return BLOCK.sub(lambda block: kept_blocks(block[2], shown) if shown[block[1]] else "", text)


def blocks(report, calibration, training_report) -> dict[str, bool]:
    """Which of the template's blocks the card shows."""
    can_say_none = calibration.none_threshold is not None
    return {"interim": not training_report, "finished": bool(training_report),
            "tta": bool(report["tta"]), "single_view": not report["tta"],
            "none": can_say_none, "always_answers": not can_say_none,
            "far_ood": can_say_none and "auroc" in report.get("none_of_these", {}),
            "sure": bool(report.get("prediction_sets") and report.get("selective"))}


def pct(value: float | None) -> str:
    """A share as a percentage, "-" when it is unknown."""
    return "-" if value is None else f"{value:.2%}"


def model_values(report, calibration, agreement, detector) -> dict:
    """The model's classes, head and the LiteRT model's agreement with the Keras one."""
    return {"class_names": ", ".join(report["class_names"]), "temperature": f"{calibration.temperature:.4f}",
            "tempering_layer": TEMPERING_LAYER if detector else "",
            "agreement_file": agreement["file"], "agreement_images": agreement["images"],
            "agreement_difference": f"{agreement['max_abs_difference']:.1e}",
            "agreement_top1": f"{agreement['same_top1']:.0%}"}


def file_rows(staging: Path, float16: bool) -> str:
    """The rows of the Files table: every file of `staging` with its size and role."""
    tflite = FILE_ROLES["model.tflite"] + (
        ", weights stored as float16 to keep the folder under 25 MB" if float16 else ", float32")
    roles = {**FILE_ROLES, "model.tflite": tflite}
    sizes = {p.name: p.stat().st_size for p in staging.iterdir() if p.is_file()}
    return "\n".join(f"| `{name}` | {sizes[name]:,} | {roles.get(name, '')} |" for name in sorted(sizes))


def training_values(config, saved, source, provenance, training_report) -> dict:
    """How it was trained: the command and commit, the recipe, the machine and how long it ran."""
    runtime = saved.get("runtime", {})
    commit = provenance.commit_source
    if provenance.commit:
        commit = f"`{provenance.commit}` ({provenance.commit_source})"
    return {"command": provenance.command, "command_source": provenance.command_source, "commit": commit,
            "run_folder": Path(config.run_dir or "").name or "?", "source": source,
            "train_size": config.train_image_size or config.image_size,
            "whole_image_share": f"{config.whole_image_fraction:.0%}",
            "regularisation": "".join(f", {extra}" for extra in regularisation(config)),
            "device": runtime.get("device", "?"), "replicas": runtime.get("replicas", "?"),
            "machine_precision": runtime.get("precision", "?"), **run_length(training_report)}


def regularisation(config) -> list[str]:
    """The recipe's augmentation and regularisation beyond crops and flips."""
    extras = [("mixup alpha", config.mixup_alpha), ("cutmix alpha", config.cutmix_alpha),
              ("stochastic depth", config.stochastic_depth), ("colour jitter", config.color_jitter),
              ("shift", config.shift), ("rotation", config.rotation), ("EMA momentum", config.ema_momentum),
              ("distilled from", config.teacher and f"{config.teacher} (weight {config.teacher_weight})")]
    return [f"{name} {value}" for name, value in extras if value]


def run_length(training_report) -> dict:
    """A finished run's epochs, minutes and kept checkpoint; {} for an unfinished one."""
    if not training_report:
        return {}
    epoch = training_report.get("best_epoch")  # the kept checkpoint's, whatever the rule
    kept = (f"best checkpoint epoch {epoch}" if training_report.get("keep", "best") == "best"
            else f"the last epoch ({epoch}) kept")
    return {"epochs_run": training_report.get("epochs_run"), "kept": kept,
            "train_minutes": f"{training_report.get('train_seconds', 0) / 60:.0f}",
            "best_val_accuracy": pct(training_report.get("best_val_accuracy")),
            "training_top1": pct(training_report.get("top1"))}


def data_values(config, layout, holdout_images: int) -> dict:
    """The dataset's size, the hold-out and its role, the test photos that repeat training ones."""
    train_count, test_count = sum(layout.counts("train")), sum(layout.counts("test"))
    return {"train_photos": f"{train_count:,}", "test_photos": f"{test_count:,}",
            "train_per_class": layout.counts("train")[0], "test_per_class": layout.counts("test")[0],
            "holdout_share": f"{config.val_fraction:.0%}", "holdout_images": holdout_images,
            "holdout_role": ("chose the best checkpoint" if config.keep == "best"
                             else "was measured after each epoch (the last was kept)"),
            "trained_photos": f"{train_count - holdout_images:,}",
            "duplicate_tests": len({test for _, test in layout.duplicates})}


def test_values(report, training_report) -> dict:
    """The test split's accuracy, all and de-duplicated, and per class."""
    dedup = report["subsets"][DEDUPLICATED_TEST]
    rows = [f"| {name} | {pct(c['precision'])} | {pct(c['recall'])} | {pct(c['f1'])} | {c['support']} |"
            for name, c in report["per_class"].items()]
    return {"test_images": f"{report['images']:,}", "top1": pct(report["top1"]), "top5": pct(report["top5"]),
            "dedup_images": f"{dedup['images']:,}", "dedup_top1": pct(dedup["top1"]),
            "dedup_top5": pct(dedup["top5"]), "single_view_top1": pct(report.get("top1_without_tta")),
            "class_rows": "\n".join(rows)}


def calibration_values(calibration, report) -> dict:
    """The temperature's fit, the ECE and the default min_confidence on the hold-out and the test split."""
    at = report.get("at_min_confidence", {})
    return {"calibration_images": calibration.holdout_images,
            "nll_before": f"{calibration.nll_before:.3f}", "nll_after": f"{calibration.nll_after:.3f}",
            "ece_before": f"{calibration.ece_before:.3f}", "ece_after": f"{calibration.ece_after:.3f}",
            "test_ece": f"{report['ece']:.3f}", "min_confidence": f"{calibration.min_confidence:.4f}",
            "min_confidence_rule": calibration.min_confidence_rule,
            "holdout_coverage": f"{calibration.coverage_at_min_confidence:.1%}",
            "holdout_accuracy": pct(calibration.accuracy_at_min_confidence),
            "test_coverage": pct(at.get("coverage")), "test_accuracy": pct(at.get("accuracy"))}


def none_values(calibration, report, exposure, detector) -> dict:
    """"None of these": how the model learned to say it, its threshold and how often it does; {} without one."""
    if calibration.none_threshold is None:
        return {}
    none = report.get("none_of_these", {})
    how = [exposure_clause(exposure)] if exposure else []
    how += [detector_clause(detector)] if detector else []
    values = {"none_how": "; and ".join(how), "none_threshold": f"{calibration.none_threshold:.4f}",
              "none_rule": calibration.none_rule, "known_flagged": pct(none.get("known_flagged"))}
    if "auroc" in none:
        values.update(unknown_images=none["unknown_images"], auroc=f"{none['auroc']:.3f}",
                      fpr95=pct(none["fpr95"]), unknown_flagged=pct(none["unknown_flagged"]))
    return values


def exposure_clause(exposure: dict) -> str:
    """How outlier exposure taught the model to say "none of these"."""
    sources = ", ".join(f"{k} {v}" for k, v in exposure["sources"].items())
    return (f"fine-tuned for {exposure['epochs']} epochs with outlier exposure on its "
            f"{exposure['training_photos']:,} training photos and {exposure['outliers']:,} images of anything else "
            f"({sources}, {exposure['procedural']} procedural textures): for those it learned to spread its "
            "probability over the ten classes")


def detector_clause(detector: dict) -> str:
    """How the distance-tempered head makes the model say "none of these"."""
    return ("given a distance-tempered head: the Mahalanobis distance of its pooled features to the nearest "
            f"class mean ({detector['training_photos']:,} training photos) flattens its probabilities beyond "
            f"{detector['start']:.1f}, the distance 95% of the hold-out stays under (layers `none_*`; no answer "
            "changes)")


def sure_values(report) -> dict:
    """"How sure is it": the prediction sets and the selective accuracy on the test split; {} without them."""
    sets, selective = report.get("prediction_sets"), report.get("selective")
    if not sets or not selective:
        return {}
    rows = [f"| {float(target):.0%} | {pct(part['coverage'])} | {part['mean_size']:.2f} | "
            f"{pct(part['singletons'])} | {pct(part['singleton_accuracy'])} |"
            for target, part in sets["by_coverage"].items()]
    worst = sorted(sets["per_class"].items(), key=lambda item: -item[1]["mean_size"])
    return {"sets_images": sets["images"], "coverage_rows": "\n".join(rows), "sets_target": f"{sets['target']:.0%}",
            "sets_by_class": ", ".join(f"{name} {part['mean_size']:.2f} ({pct(part['coverage'])} covered)"
                                       for name, part in worst),
            "selective_view": "with flip TTA" if report["tta"] else "single view",
            "accuracy_at_coverage": ", ".join(f"{float(share):.0%} answered {acc:.1%} right"
                                              for share, acc in selective["accuracy_at_coverage"].items()),
            "aurc": f"{selective['aurc']:.3f}"}


def weakness_values(report) -> dict:
    """The test split's most frequent confusions and the errors among the white-coat uniforms."""
    within, errors = share_of_errors_within(report, WHITE_COATS)
    confusions = ", ".join(f"{t} taken for {p} ({n})" for t, p, n in top_confusions(report))
    return {"confusions": confusions, "white_coat_errors": within, "errors": errors}


def top_confusions(report: dict, count: int = 6) -> list[tuple[str, str, int]]:
    """The largest off-diagonal cells of the confusion matrix: (true, predicted, images)."""
    cm, names = np.asarray(report["confusion_matrix"]), report["class_names"]
    cells = [(int(cm[i, j]), names[i], names[j]) for i in range(len(names)) for j in range(len(names))
             if i != j and cm[i, j]]
    return [(t, p, n) for n, t, p in sorted(cells, reverse=True)[:count]]


def share_of_errors_within(report: dict, group: list[str]) -> tuple[int, int]:
    """(errors where both the true and the predicted class are in `group`, all errors)."""
    cm, names = np.asarray(report["confusion_matrix"]), report["class_names"]
    index = [names.index(n) for n in group if n in names]
    errors = int(cm.sum() - np.trace(cm))
    within = int(sum(cm[i, j] for i in index for j in index if i != j))
    return within, errors


def packaging_command(detector, exposure) -> str:
    """The packaging command that made a card's model (its run folder as RUN_DIR)."""
    flags = (" --none-detector mahalanobis" if detector else "") + (
        f" --outlier-exposure {exposure['epochs']}" if exposure else "")
    return f"python -m idenprof.cli.package RUN_DIR{flags}"
