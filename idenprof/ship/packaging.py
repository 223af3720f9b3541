"""Package a trained run as the model shipped inside idenprof: calibrated, evaluated, documented.

    idenprof-package runs/ship-cpu-long-seed0 [--data-dir data/idenprof] [--out idenprof/pretrained]
        [--none-detector mahalanobis] [--outlier-exposure EPOCHS]
    (or python -m idenprof.cli.package: the command line is idenprof/cli/package.py)

Reads the run's float32 export (export/model.keras; the kept checkpoint when the run has no export
yet), optionally fine-tunes it with outlier exposure so that it can say "none of these"
(idenprof.ship.outlier_exposure; the none threshold is then fitted on the hold-out too), fits a
temperature on the run's own hold-out split (idenprof.predict.calibration), optionally adds the
distance-tempered "none of these" head (idenprof.predict.ood_head), fits the prediction sets' scores on the
same hold-out (idenprof.predict.conformal), writes the calibrated model,
evaluates it once on the test split (idenprof.predict.evaluation; with the far-OOD benchmark photos of
idenprof.ship.outliers as unknowns where installed) and writes the model card. The folder:

    model.keras, model.tflite, class_index.json   the calibrated model (float32 output [N, C])
    calibration.json                              T, ECE before/after, min_confidence, none_threshold,
                                                  the prediction sets' hold-out scores
    calibration_holdout.png                       reliability on the hold-out, before and after
    test_report.json, predictions.csv             the test split (idenprof.predict.evaluation's report)
    confusion_matrix.png, reliability_diagram.png the test split
    risk_coverage.png                             the test split: accuracy against the share answered
    training_metrics.json, training_curves.png    the run's own report and curves
    MODEL_CARD.md

The folder is built beside `--out` and renamed into place only when complete and within
SIZE_LIMIT_BYTES; the LiteRT model stores float16 weights when float32 would not fit.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

from idenprof.errors import ConfigError, DatasetError, IdenprofError, ModelFileError
from idenprof.files import move_into_place
from idenprof.predict.evaluation import DEDUPLICATED_TEST
from idenprof.run_folder import CLASS_INDEX_FILENAME, EXPORT_FILENAMES, RunFolder

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "pretrained"
SIZE_LIMIT_BYTES = 25_000_000  # the whole folder; it ships inside the pip package
# Room kept for everything but the two models (pictures, JSON, CSV, card: about 0.5 MB).
OTHER_FILES_BYTES = 1_500_000
CARD_FILENAME = "MODEL_CARD.md"
TEST_REPORT = "test_report.json"
HOLDOUT_PNG = "calibration_holdout.png"
TRAINING_METRICS = "training_metrics.json"
TRAINING_CURVES = "training_curves.png"
# Outlier exposure: outliers are decoded at 5/4 of the model's side and cropped to it.
OUTLIER_SIDE_FACTOR = 5
PROCEDURAL_OUTLIERS = 1000
NONE_DETECTORS = ("mahalanobis",)
FEATURE_PHOTOS = 2000  # training photos whose features fit the distance-tempered head


@dataclasses.dataclass
class Provenance:
    """How the model was made: the training command and git commit, and where each came from."""

    command: str
    command_source: str
    commit: str | None
    commit_source: str


def package_run(run_dir: Path, data_dir: Path | None = None, out_dir: Path = DEFAULT_OUT,
                git_commit: str | None = None, outlier_exposure: int = 0, none_detector: str | None = None,
                log=print) -> Path:
    """Build the shipped-model folder `out_dir` from the run in `run_dir` (see the module doc).

    `data_dir` defaults to the run's own data folder; `git_commit` overrides the commit recorded in
    the run's config.json; `outlier_exposure` > 0 fine-tunes that many epochs with outliers first;
    `none_detector` "mahalanobis" adds the distance-tempered head (idenprof.predict.ood_head). Returns `out_dir`.
    """
    from idenprof.class_index import read_class_index
    from idenprof.data.dataset import scan_dataset, select_samples
    from idenprof.data.decoded import decode_images
    from idenprof.predict.calibration import CALIBRATION_FILENAME, calibrate, softmax
    from idenprof.predict.conformal import ConformalSets
    from idenprof.predict.evaluation import evaluate_samples
    from idenprof.predict.loaders import load_predictor
    from idenprof.predict.ood import NONE_RULE, fit_none_threshold, none_scores
    from idenprof.predict.report import plot_reliability_diagram
    from idenprof.ship.outliers import BENCHMARK_SOURCES, source_files

    started = time.monotonic()
    run = RunFolder(run_dir)
    saved = read_run_config(run)
    config = saved_train_config(saved, run)
    class_names = read_class_index(run.class_index_path)
    if config.validate_on != "holdout":
        raise ConfigError(f"{run.path} validated on the test split: there is no hold-out to calibrate on")
    data_dir = Path(data_dir or config.data_dir)
    layout = scan_dataset(data_dir)
    if layout.class_names != class_names:
        raise DatasetError(f"{data_dir} has classes {layout.class_names}, the run {class_names}; "
                           "pass the run's --data-dir")
    train, holdout, test = select_samples(layout, config)
    model, source = load_source_model(run)
    log(f"model: {source}; hold-out {len(holdout)} images, test {len(test)} images")
    exposure = None
    if outlier_exposure:
        model, exposure = expose_to_outliers(model, train, outlier_exposure, config.seed, log)

    holdout_data = decode_images(holdout, model.input_shape[1], progress=False)
    for path, reason in holdout_data.skipped:
        log(f"skipped unreadable hold-out image {path}: {reason}")
    calibrated, calibration, logits = calibrate(model, holdout_data.images, holdout_data.labels)
    detector = None
    if none_detector == "mahalanobis":
        calibrated, detector = temper_by_distance(calibrated, train, holdout_data.images, config.seed, log)
    # The final model's own hold-out probabilities: the detector's head changes them a little.
    holdout_probabilities = calibrated.predict(holdout_data.images, verbose=0)
    calibration.conformal = ConformalSets.fit(holdout_probabilities, holdout_data.labels).to_json()
    if exposure or detector:
        calibration.none_threshold = fit_none_threshold(none_scores(holdout_probabilities))
        calibration.none_rule = NONE_RULE
        log(f"none threshold {calibration.none_threshold:.3f} ({NONE_RULE})")
    best = run.kept_checkpoint()
    if best and abs(calibration.holdout_accuracy - best.val_accuracy) > 0.02:
        # Training validated on the same images (in bfloat16 perhaps): a gap means another split.
        log(f"warning: hold-out accuracy {calibration.holdout_accuracy:.2%} differs from the run's "
            f"{best.val_accuracy:.2%}; is --data-dir the run's dataset?")
    log(f"temperature {calibration.temperature:.3f}: hold-out ECE {calibration.ece_before:.3f} -> "
        f"{calibration.ece_after:.3f}; min_confidence {calibration.min_confidence:.3f}")

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = out_dir.parent / f".{out_dir.name}.staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        float16 = write_models(calibrated, class_names, staging, log)
        calibration.write(staging / CALIBRATION_FILENAME)
        plot_reliability_diagram(
            {"before (T = 1)": (softmax(logits), holdout_data.labels),
             f"after (T = {calibration.temperature:.2f})": (softmax(logits / calibration.temperature),
                                                             holdout_data.labels)},
            staging / HOLDOUT_PNG, title=f"reliability on the hold-out ({len(holdout_data.labels)} images)")
        agreement = keras_litert_agreement(calibrated, staging, holdout_data.images[:64])

        predictor = load_predictor(staging / EXPORT_FILENAMES["tflite"])
        unique_tests = {path for path, _ in layout.test_without_train_duplicates()}
        unknowns = [str(path) for _, path in source_files(BENCHMARK_SOURCES)[0]]
        report = evaluate_samples(
            predictor, test, staging, root=data_dir, tta=config.tta, subsets={DEDUPLICATED_TEST: unique_tests},
            gallery=False, split_name="test split", min_confidence=calibration.min_confidence,
            none_threshold=calibration.none_threshold, unknowns=unknowns or None,
            conformal=ConformalSets.from_json(calibration.conformal))
        os.replace(staging / "report.json", staging / TEST_REPORT)
        report["files"]["report"] = TEST_REPORT
        training_report = copy_training_report(run, staging)

        provenance = find_provenance(saved, config, git_commit)
        card = model_card(config=config, saved=saved, source=source, provenance=provenance,
                          layout=layout, holdout_images=len(holdout), report=report, exposure=exposure,
                          detector=detector,
                          calibration=calibration, training_report=training_report,
                          float16=float16, agreement=agreement, staging=staging)
        (staging / CARD_FILENAME).write_text(card)
        size = folder_bytes(staging)
        if size > SIZE_LIMIT_BYTES:
            raise IdenprofError(f"the packaged model is {size / 1e6:.1f} MB, over the "
                                f"{SIZE_LIMIT_BYTES / 1e6:.0f} MB limit; nothing was replaced")
        old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
        move_into_place(staging, out_dir, old)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log(f"test top-1 {report['top1']:.2%} (without train duplicates "
        f"{report['subsets'][DEDUPLICATED_TEST]['top1']:.2%}), top-5 {report['top5']:.2%}, ECE {report['ece']:.3f}")
    log(f"wrote {out_dir} ({folder_bytes(out_dir) / 1e6:.1f} MB) in {time.monotonic() - started:.0f} s")
    return out_dir


def expose_to_outliers(model, train_samples, epochs: int, seed: int, log) -> tuple:
    """(the model fine-tuned `epochs` epochs with outlier exposure on the run's training photos,
    what was done as a dict for the card)."""
    from idenprof.data.decoded import decode_images
    from idenprof.ship.outlier_exposure import fine_tune_with_outliers
    from idenprof.ship.outliers import training_outliers

    side = int(model.input_shape[1])
    photos = decode_images(train_samples, side, progress=False)
    outliers, by_source = training_outliers(OUTLIER_SIDE_FACTOR * side // 4, procedural=PROCEDURAL_OUTLIERS,
                                            seed=seed, log=log)
    if not len(outliers):
        raise ConfigError("--outlier-exposure needs outlier images; install the packages docs/OOD.md lists")
    log(f"outlier exposure: {len(photos.labels)} training photos, {len(outliers)} outliers, {epochs} epochs")
    tuned = fine_tune_with_outliers(model, photos.images, photos.labels, outliers, epochs=epochs, seed=seed, log=log)
    return tuned, {"epochs": epochs, "training_photos": int(len(photos.labels)), "outliers": int(len(outliers)),
                   "procedural": PROCEDURAL_OUTLIERS, "sources": by_source}


def temper_by_distance(calibrated, train_samples, holdout_images: np.ndarray, seed: int, log) -> tuple:
    """(the calibrated model with the distance-tempered head, what was fitted as a dict for the
    card): class means and covariance of up to FEATURE_PHOTOS training photos' pooled features,
    start and rate from the hold-out's (idenprof.predict.ood_head)."""
    import random

    import keras

    from idenprof.data.decoded import decode_images
    from idenprof.predict.ood import MahalanobisFit
    from idenprof.predict.ood_head import FEATURES_LAYER, tempering_for, with_distance_tempering

    side = int(calibrated.input_shape[1])
    chosen = sorted(random.Random(seed).sample(list(train_samples), min(FEATURE_PHOTOS, len(train_samples))))
    photos = decode_images(chosen, side, progress=False)
    features = keras.Model(calibrated.input, calibrated.get_layer(FEATURES_LAYER).output)

    def pooled(images):
        return np.concatenate([np.asarray(features.predict_on_batch(images[i:i + 64].astype(np.float32)))
                               for i in range(0, len(images), 64)])

    fit = MahalanobisFit.from_features(pooled(photos.images), photos.labels)
    start, rate = tempering_for(fit, pooled(holdout_images))
    log(f"distance-tempered head: Mahalanobis of {len(photos.labels)} training photos' features; "
        f"start {start:.1f}, rate {rate:.4f}")
    return with_distance_tempering(calibrated, fit, start, rate), {
        "kind": "mahalanobis", "training_photos": int(len(photos.labels)), "start": start, "rate": rate}


def read_run_config(run: RunFolder) -> dict:
    if not run.config_path.is_file():
        raise ConfigError(f"{run.path} has no config.json; give a run folder written by train.py")
    try:
        return json.loads(run.config_path.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"{run.config_path} cannot be read ({e})") from None


def saved_train_config(saved: dict, run: RunFolder):
    """The run's TrainConfig (settings this version does not know are ignored)."""
    from idenprof.config import TrainConfig

    known = {f.name for f in dataclasses.fields(TrainConfig)}
    values = saved.get("config")
    if not isinstance(values, dict):
        raise ConfigError(f"{run.config_path} has no \"config\" object; give a run folder written by train.py")
    return TrainConfig(**{k: v for k, v in values.items() if k in known})


def load_source_model(run: RunFolder):
    """(float32 Keras model, description): export/model.keras, else the kept checkpoint."""
    import keras

    from idenprof.precision import float32_copy

    exported = run.export_dir / EXPORT_FILENAMES["keras"]
    best = run.kept_checkpoint()
    path = exported if exported.is_file() else best.path if best else None
    if path is None:
        raise ModelFileError(f"{run.path} has no export/{EXPORT_FILENAMES['keras']} and no checkpoint")
    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as e:  # Keras raises many types for a bad file
        raise ModelFileError(f"{path}: cannot load as a Keras model ({e})") from None
    if path == exported:
        return model, f"{run.path.name}/export/{exported.name}"
    return float32_copy(model), f"{run.path.name}/{path.name} (checkpoint kept so far; the run had no export)"


def write_models(calibrated, class_names: list[str], folder: Path, log) -> bool:
    """model.keras, model.tflite and class_index.json into `folder`; the .tflite gets float16
    weights when both float32 models would leave too little of SIZE_LIMIT_BYTES. Returns whether
    it did."""
    from idenprof.ship.export import export_model

    export_model(calibrated, folder, class_names, formats=("keras", "tflite"))
    models = sum((folder / EXPORT_FILENAMES[f]).stat().st_size for f in ("keras", "tflite"))
    if models <= SIZE_LIMIT_BYTES - OTHER_FILES_BYTES:
        return False
    log(f"the float32 models take {models / 1e6:.1f} MB: writing the .tflite with float16 weights")
    export_model(calibrated, folder, class_names, formats=("tflite",), tflite_float16=True)
    models = sum((folder / EXPORT_FILENAMES[f]).stat().st_size for f in ("keras", "tflite"))
    if models > SIZE_LIMIT_BYTES - OTHER_FILES_BYTES:
        raise IdenprofError(f"even with a float16 .tflite the models take {models / 1e6:.1f} MB, over the "
                            f"{SIZE_LIMIT_BYTES / 1e6:.0f} MB limit; nothing was replaced")
    return True


def keras_litert_agreement(calibrated, folder: Path, images: np.ndarray) -> dict:
    """How far the written .tflite is from the Keras model on `images`: the largest probability
    difference and the share of equal top-1 predictions."""
    import keras

    from idenprof.predict.loaders import load_predictor

    expected = keras.ops.convert_to_numpy(calibrated(np.asarray(images, np.float32), training=False))
    got = load_predictor(folder / EXPORT_FILENAMES["tflite"]).predict(images)
    return {"images": int(len(images)), "max_abs_difference": float(np.abs(expected - got).max()),
            "same_top1": float((expected.argmax(1) == got.argmax(1)).mean())}


def copy_training_report(run: RunFolder, folder: Path) -> dict | None:
    """The run's metrics.json (as training_metrics.json) and its training curves; None when the
    run is unfinished (the curves are then drawn from metrics.csv so far)."""
    from idenprof.predict.report import plot_training_curves

    if run.curves_png.is_file():
        shutil.copyfile(run.curves_png, folder / TRAINING_CURVES)
    elif run.metrics_csv.is_file():
        plot_training_curves(run.metrics_csv, folder / TRAINING_CURVES)
    if not run.report_path.is_file():
        return None
    shutil.copyfile(run.report_path, folder / TRAINING_METRICS)
    return json.loads(run.report_path.read_text())


def flags_for(config) -> str:
    """The train.py flags that give `config`: its preset and every setting that differs from it."""
    from idenprof.config import FIELDS, resolve_config

    base = dataclasses.asdict(resolve_config(config.preset, {}))
    words = ["python", "train.py"] + (["--preset", config.preset] if config.preset else [])
    for name, value in dataclasses.asdict(config).items():
        if name == "preset" or base.get(name) == value:
            continue
        negated = FIELDS[name].metadata["negated"]
        if negated:
            words.append(negated if not value else f"--{name.replace('_', '-')}")
        elif value is True:
            words.append(f"--{name.replace('_', '-')}")
        elif value is not None and value is not False:
            shown = ",".join(map(str, value)) if isinstance(value, list) else str(value)
            words += [f"--{name.replace('_', '-')}", shown]
    import shlex

    return shlex.join(words)


# The training machine's own folders and output choice: a reader runs the command without them.
MACHINE_FLAGS = {"--data-dir": 1, "--run-dir": 1, "--cache-dir": 1, "--quiet": 0}


def portable_command(command: str) -> str:
    """`command` without the flags that name the training machine's folders (MACHINE_FLAGS)."""
    import shlex

    words, kept, skip = shlex.split(command), [], 0
    for word in words:
        if skip:
            skip -= 1
            continue
        name = word.split("=", 1)[0]
        if name in MACHINE_FLAGS:
            skip = 0 if "=" in word else MACHINE_FLAGS[name]
            continue
        kept.append(word)
    return shlex.join(kept)


def find_provenance(saved: dict, config, git_commit: str | None) -> Provenance:
    if saved.get("command"):
        command, command_source = saved["command"], "recorded in config.json"
    else:
        command, command_source = flags_for(config), "rebuilt from the settings in config.json"
    if portable_command(command) != command:
        command = portable_command(command)
        command_source += "; the machine's --data-dir, --run-dir and --quiet left out"
    if git_commit:
        commit, commit_source = git_commit, "given to the packaging command"
    elif saved.get("git_commit"):
        commit = saved["git_commit"]
        commit_source = "recorded in config.json" + (" (with uncommitted changes)" if saved.get("git_dirty") else "")
    else:
        commit, commit_source = None, "not recorded (the run predates config.json's git_commit field)"
    return Provenance(command, command_source, commit, commit_source)


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


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


def regularisation(config) -> list[str]:
    """The recipe's augmentation and regularisation beyond crops and flips, for the model card."""
    extras = [("mixup alpha", config.mixup_alpha), ("cutmix alpha", config.cutmix_alpha),
              ("stochastic depth", config.stochastic_depth), ("colour jitter", config.color_jitter),
              ("shift", config.shift), ("rotation", config.rotation), ("EMA momentum", config.ema_momentum)]
    return [f"{name} {value}" for name, value in extras if value]


def model_card(*, config, saved, source, provenance: Provenance, layout, holdout_images, report,
               calibration, training_report, float16, agreement, staging: Path, exposure=None,
               detector=None) -> str:
    """MODEL_CARD.md: what the model is, how it was made and tested, and what it is not for."""
    sizes = {p.name: p.stat().st_size for p in staging.iterdir() if p.is_file()}
    dedup = report["subsets"][DEDUPLICATED_TEST]
    train_count = sum(layout.counts("train"))
    test_count = sum(layout.counts("test"))
    duplicate_tests = len({b for _, b in layout.duplicates})
    runtime = saved.get("runtime", {})
    lines = ["# IdenProf profession classifier", ""]
    if not training_report:
        lines += ["> **Interim model**: packaged from the checkpoint kept so far of a run still "
                  "training; the figures below are that checkpoint's, not the final model's.", ""]
    lines += [
        f"A {config.model} (width x{config.width}, {config.stem} stem) that takes one photo, resized whole "
        f"to {config.image_size}x{config.image_size} pixels, and gives the probability of each of ten "
        f"uniformed professions: {', '.join(report['class_names'])}. Trained from scratch on IdenProf "
        "(web photos of people at work); the probabilities are calibrated (temperature scaling).",
        "",
        "## Files",
        "",
        "| file | bytes | what |",
        "|---|---:|---|",
    ]
    what = {
        "model.keras": "the calibrated model, float32: `keras.models.load_model(path)`, no custom objects",
        "model.tflite": "the same for LiteRT (infer.py's default)"
        + (", weights stored as float16 to keep the folder under 25 MB" if float16 else ", float32"),
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
    for name in sorted(sizes):
        lines.append(f"| `{name}` | {sizes[name]:,} | {what.get(name, '')} |")
    lines += [
        "",
        f"Input: float32 RGB pixels 0..255, shape [N, {config.image_size}, {config.image_size}, 3] "
        "(preprocessing is inside the model). Output: float32 probabilities [N, 10] in the order of "
        "`class_index.json`. The head, by layer name: `predictions` (Dense, linear: the logits), "
        + ("`none_tempered` (the logits times the scale the `none_*` layers compute from the features' "
           "distance, see \"None of these\"), " if detector else "")
        + f"`temperature` (Rescaling by 1/T, T = {calibration.temperature:.4f}), `probabilities` "
        "(float32 softmax). The .tflite was checked against the .keras on "
        f"{agreement['images']} hold-out images: largest probability difference "
        f"{agreement['max_abs_difference']:.1e}, same top-1 for {agreement['same_top1']:.0%}.",
        "",
        "## How it was trained",
        "",
        f"    {provenance.command}",
        "",
        f"- command: {provenance.command_source}; run folder `{Path(config.run_dir or '').name or '?'}`; "
        f"model packaged from {source}",
        f"- git commit: `{provenance.commit}` ({provenance.commit_source})" if provenance.commit
        else f"- git commit: {provenance.commit_source}",
        f"- recipe: preset `{config.preset}`; {config.optimizer} lr {config.lr} (weight decay "
        f"{config.weight_decay}), {config.schedule} schedule, label smoothing {config.label_smoothing}, "
        f"batch {config.batch_size}, random crops (area {config.crop_scale}) at "
        f"{config.train_image_size or config.image_size} px, "
        f"the last {config.whole_image_fraction:.0%} on whole {config.image_size} px images, flips"
        f"{''.join(f', {extra}' for extra in regularisation(config))}; seed {config.seed}",
        f"- machine: {runtime.get('device', '?')} x{runtime.get('replicas', '?')}, precision "
        f"{runtime.get('precision', '?')}",
    ]
    if training_report:
        epoch = training_report.get("best_epoch")  # the kept checkpoint's, whatever the rule
        kept = (f"best checkpoint epoch {epoch}" if training_report.get("keep", "best") == "best"
                else f"the last epoch ({epoch}) kept")
        lines.append(
            f"- training: {training_report.get('epochs_run')} epochs in "
            f"{training_report.get('train_seconds', 0) / 60:.0f} min; {kept} "
            f"(hold-out accuracy {pct(training_report.get('best_val_accuracy'))})")
    else:
        lines.append("- training: UNFINISHED when packaged (an interim model from the checkpoint kept so far)")
    holdout_role = ("chose the best checkpoint" if config.keep == "best"
                    else "was measured after each epoch (the last was kept)")
    lines += [
        "",
        "## Data and splits",
        "",
        f"IdenProf: {train_count:,} training and {test_count:,} test photos, ten classes "
        f"({layout.counts('train')[0]} and {layout.counts('test')[0]} per class). "
        f"A stratified {config.val_fraction:.0%} of the training photos ({holdout_images} images, seed "
        f"{config.seed}) is held out: it {holdout_role} and fitted the temperature. The "
        f"rest ({train_count - holdout_images:,} photos) trained the model. The test split was used "
        f"once, for the figures below. {duplicate_tests} test photos are byte-identical to training "
        "photos; the de-duplicated figures leave them out.",
        "",
        "## Test results",
        "",
        "| test images | top-1 | top-5 |",
        "|---|---:|---:|",
        f"| all {report['images']:,} | {pct(report['top1'])} | {pct(report['top5'])} |",
        f"| de-duplicated {dedup['images']:,} | {pct(dedup['top1'])} | {pct(dedup['top5'])} |",
        "",
        ("With flip test-time augmentation (the mean of the photo and its mirror, `infer.py --tta`); "
         f"a single view (infer.py's default) scores {pct(report.get('top1_without_tta'))} top-1."
         if report["tta"] else "Single view (no test-time augmentation)."),
    ]
    if training_report:
        lines.append(f"The training run's own report (`{TRAINING_METRICS}`) gives "
                     f"{pct(training_report.get('top1'))} top-1 before calibration.")
    lines += ["", "Per class (test split):", "", "| class | precision | recall | F1 | images |",
              "|---|---:|---:|---:|---:|"]
    for name, c in report["per_class"].items():
        lines.append(f"| {name} | {pct(c['precision'])} | {pct(c['recall'])} | {pct(c['f1'])} | {c['support']} |")
    lines += ["", "![confusion matrix](confusion_matrix.png)", ""]
    at = report.get("at_min_confidence", {})
    lines += [
        "## Calibration",
        "",
        f"Temperature T = {calibration.temperature:.4f}, fitted on the {calibration.holdout_images} "
        "hold-out images by minimising the negative log-likelihood of softmax(logits / T) "
        f"({calibration.nll_before:.3f} -> {calibration.nll_after:.3f} nats per image). Expected "
        f"calibration error (15 bins) on the hold-out: {calibration.ece_before:.3f} before, "
        f"{calibration.ece_after:.3f} after; on the test split after: {report['ece']:.3f}.",
        "",
        f"Default `min_confidence` = {calibration.min_confidence:.4f}: {calibration.min_confidence_rule}. "
        f"On the hold-out {calibration.coverage_at_min_confidence:.1%} of the photos reach it and "
        f"{pct(calibration.accuracy_at_min_confidence)} of those are right; on the test split "
        f"{pct(at.get('coverage'))} reach it and {pct(at.get('accuracy'))} of those are right. "
        "Below it, treat the answer as \"not sure\".",
        "",
        f"![reliability on the hold-out]({HOLDOUT_PNG}) ![reliability on the test split](reliability_diagram.png)",
        "",
    ]
    lines += none_section(calibration, report, exposure, detector)
    lines += sure_section(report)
    lines += [
        "## Known weaknesses",
        "",
    ]
    within, errors = share_of_errors_within(report, ["chef", "waiter", "doctor"])
    confusions = ", ".join(f"{t} taken for {p} ({n})" for t, p, n in top_confusions(report))
    lines += [
        f"- Look-alike uniforms: the most frequent test confusions are {confusions}. Chef, waiter "
        f"and doctor (white coats and jackets) mistaken for one another make {within} of the "
        f"{errors} test errors.",
        f"- Small images: the photo is shrunk whole to {config.image_size}x{config.image_size} pixels "
        "(aspect ratio not kept); a person who fills little of the frame, several people, or a "
        "very wide or tall photo loses the details of the uniform.",
        ("- Anything else: the none-score flags most photos of no person (see \"None of these\"), but a "
         "person in other clothes, a costume or a uniform of another profession still often gets one "
         "of the ten; the flag is a screen, not a guarantee."
         if calibration.none_threshold is not None else
         "- Anything else: the model always answers one of the ten professions. A photo of a person "
         "with none of them, of no person, or of a costume gets a profession anyway, often with high "
         "confidence; `min_confidence` filters some of these but is not an out-of-distribution "
         "detector."),
        "- The data: IdenProf's web photos over-represent some looks of each profession (posed stock "
        "photos, uniforms from a few countries); accuracy on other photos, and across people's "
        "gender, age or skin colour, was not measured.",
        "",
        "## Intended use",
        "",
        "Demonstrations, teaching and research on image classification: recognising the uniform or "
        "work setting of a photo among these ten professions, with calibrated probabilities.",
        "",
        "Not for: identifying, tracking or profiling real people; deciding or inferring anything "
        "about a person (their actual job, employment, access, policing, immigration, credit) from "
        "a photo of them; surveillance. The model sees clothing and surroundings, not a person's "
        "profession, and its errors are not evenly spread.",
        "",
        "## Use it",
        "",
        "    python infer.py photo.jpg                       # this model, when no run under runs/ has one",
        "    python infer.py photo.jpg --coverage 0.95       # wider prediction sets",
        "    python evaluate.py --model idenprof/pretrained/model.tflite my_photos/   # one folder per class",
        "",
        f"Packaged with `{packaging_command(detector, exposure)}` from {source}.",
        "",
    ]
    return "\n".join(lines)


def packaging_command(detector, exposure) -> str:
    """The packaging command that made a card's model (its run folder as RUN_DIR)."""
    flags = (" --none-detector mahalanobis" if detector else "") + (
        f" --outlier-exposure {exposure['epochs']}" if exposure else "")
    return f"python -m idenprof.cli.package RUN_DIR{flags}"


def sure_section(report) -> list[str]:
    """The card's "How sure is it" section: prediction sets and selective accuracy on the test split."""
    sets, selective = report.get("prediction_sets"), report.get("selective")
    if not sets or not selective:
        return []
    lines = [
        "## How sure is it",
        "",
        "Prediction sets (split conformal, RAPS; idenprof.predict.conformal, docs/CONFORMAL.md): besides its top "
        "five the model names the professions a photo is among, e.g. \"chef or waiter (90% sets)\", in "
        "sets that hold the true profession for at least the chosen share of photos like its hold-out. "
        "Calibrated on the hold-out (single view, as infer.py predicts); `--coverage P` picks the share. "
        f"On the test split ({sets['images']} photos, single view):",
        "",
        "| target coverage | test coverage | mean set size | single-class sets | their top-1 accuracy |",
        "|---:|---:|---:|---:|---:|",
    ]
    for target, part in sets["by_coverage"].items():
        lines.append(f"| {float(target):.0%} | {pct(part['coverage'])} | {part['mean_size']:.2f} | "
                     f"{pct(part['singletons'])} | {pct(part['singleton_accuracy'])} |")
    worst = sorted(sets["per_class"].items(), key=lambda item: -item[1]["mean_size"])
    lines += [
        "",
        f"At {sets['target']:.0%}, by true class (largest sets first, where the model is least sure): "
        + ", ".join(f"{name} {part['mean_size']:.2f} ({pct(part['coverage'])} covered)" for name, part in worst) + ".",
        "",
        "The guarantee is over photos like the hold-out's (taken from IdenProf's training folders), not for "
        "each photo; IdenProf's test folders are a little harder, so coverage there runs slightly under "
        "the target. It says nothing of photos of none of the professions (see \"None of these\").",
        "",
        "Answering only the photos it is surest of (risk-coverage, test split, "
        f"{'with flip TTA' if report['tta'] else 'single view'}): "
        + ", ".join(f"{float(share):.0%} answered {acc:.1%} right" for share, acc in
                    selective["accuracy_at_coverage"].items())
        + f"; area under the risk-coverage curve {selective['aurc']:.3f}.",
        "",
        "![risk-coverage on the test split](risk_coverage.png)",
        "",
    ]
    return lines


def none_section(calibration, report, exposure, detector=None) -> list[str]:
    """The card's "None of these" section; [] for a model without the detector."""
    if calibration.none_threshold is None:
        return []
    none = report.get("none_of_these", {})
    how = []
    if exposure:
        how.append(
            f"fine-tuned for {exposure['epochs']} epochs with outlier exposure on its {exposure['training_photos']:,} "
            f"training photos and {exposure['outliers']:,} images of anything else "
            f"({', '.join(f'{k} {v}' for k, v in exposure['sources'].items())}, {exposure['procedural']} procedural "
            "textures): for those it learned to spread its probability over the ten classes")
    if detector:
        how.append(
            "given a distance-tempered head: the Mahalanobis distance of its pooled features to the nearest "
            f"class mean ({detector['training_photos']:,} training photos) flattens its probabilities beyond "
            f"{detector['start']:.1f}, the distance 95% of the hold-out stays under (layers `none_*`; no answer "
            "changes)")
    lines = [
        "## None of these",
        "",
        f"The model was {'; and '.join(how)}. The none-score (1 - top probability) / (1 - 1/10), 0..1, reads "
        f"that; above `none_threshold` = {calibration.none_threshold:.4f} ({calibration.none_rule}) infer.py, "
        "the API and the page say \"none of the ten professions\".",
        "",
        f"On the test split {pct(none.get('known_flagged'))} of the photos are flagged.",
    ]
    if "auroc" in none:
        lines += [
            "",
            f"Far-OOD benchmark ({none['unknown_images']} photos of no profession that training never saw: "
            "scikit-image's, scikit-learn's and matplotlib's sample photos, the MATE and UKUI wallpapers; "
            f"docs/OOD.md): AUROC {none['auroc']:.3f} against the test split, FPR at 95% TPR "
            f"{pct(none['fpr95'])}; {pct(none['unknown_flagged'])} flagged at the threshold.",
        ]
    lines += [
        "",
        "What it cannot do: a person at another activity, in a costume, or in another uniform looks much "
        "like the ten professions to it and is often not flagged; photos of unusual quality may be flagged.",
        "",
    ]
    return lines
