"""Package a trained run as the model shipped inside idenprof: calibrated, evaluated, documented.

    idenprof-package runs/ship-cpu-long-seed0 [--data-dir data/idenprof] [--out idenprof/pretrained]
        [--none-detector mahalanobis] [--outlier-exposure EPOCHS] [--int8]
    (or python -m idenprof.cli.package: the command line is idenprof/cli/package.py)

Reads the run's float32 export (export/model.keras; the kept checkpoint when the run has no export
yet), optionally fine-tunes it with outlier exposure so that it can say "none of these"
(idenprof.ship.outlier_exposure; the none threshold is then fitted on the hold-out too), fits a
temperature on the run's own hold-out split (idenprof.predict.calibration), optionally adds the
distance-tempered "none of these" head (idenprof.predict.ood_head), fits the prediction sets' scores on the
same hold-out (idenprof.predict.conformal), writes the calibrated model,
evaluates it once on the test split (idenprof.predict.evaluation; with the far-OOD benchmark photos of
idenprof.ship.outliers as unknowns where installed) and writes the model card (idenprof.ship.card,
from the template model_card.md). The folder:

    model.keras, model.tflite, class_index.json   the calibrated model (float32 output [N, C]); with
                                                  --int8, model.int8.tflite instead of model.tflite
    calibration.json                              T, ECE before/after, min_confidence, none_threshold,
                                                  the prediction sets' hold-out scores (those of the
                                                  int8 model fitted on its own answers, under "models")
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
from idenprof.run_folder import EXPORT_FILENAMES, RunFolder
from idenprof.ship.card import (
    CARD_FILENAME,
    HOLDOUT_PNG,
    TEST_REPORT,
    TRAINING_CURVES,
    TRAINING_METRICS,
    render_model_card,
)

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "pretrained"
SIZE_LIMIT_BYTES = 25_000_000  # the whole folder; it ships inside the pip package
# Room kept for everything but the two models (pictures, JSON, CSV, card: about 0.5 MB).
OTHER_FILES_BYTES = 1_500_000
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
                int8: bool = False, log=print) -> Path:
    """Build the shipped-model folder `out_dir` from the run in `run_dir` (see the module doc).

    `data_dir` defaults to the run's own data folder; `git_commit` overrides the commit recorded in
    the run's config.json; `outlier_exposure` > 0 fine-tunes that many epochs with outliers first;
    `none_detector` "mahalanobis" adds the distance-tempered head (idenprof.predict.ood_head); `int8`
    ships the int8 LiteRT model as the default file (evaluated, with its own thresholds). Returns `out_dir`.
    """
    from idenprof.class_index import read_class_index
    from idenprof.data.dataset import scan_dataset, select_samples
    from idenprof.data.decoded import decode_images
    from idenprof.predict.calibration import CALIBRATION_FILENAME, calibrate, calibration_beside, softmax
    from idenprof.predict.conformal import ConformalSets
    from idenprof.predict.evaluation import evaluate_samples
    from idenprof.predict.loaders import load_predictor
    from idenprof.predict.ood import NONE_RULE, fit_none_threshold, none_scores
    from idenprof.predict.report import plot_reliability_diagram
    from idenprof.ship.export import representative_photos
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
        photos = representative_photos(layout, train, model.input_shape[1], config.seed) if int8 else None
        served, float16 = write_models(calibrated, class_names, staging, log, int8_photos=photos)
        if int8:
            calibration.models = {served.name: own_calibration(load_predictor(served), holdout_data, calibration)}
            log(f"{served.name}: " + ", ".join(f"{k} {v:.3f}" for k, v in calibration.models[served.name].items()
                                                if isinstance(v, float)))
        calibration.write(staging / CALIBRATION_FILENAME)
        thresholds = calibration_beside(served)  # the served file's own entries
        plot_reliability_diagram(
            {"before (T = 1)": (softmax(logits), holdout_data.labels),
             f"after (T = {calibration.temperature:.2f})": (softmax(logits / calibration.temperature),
                                                             holdout_data.labels)},
            staging / HOLDOUT_PNG, title=f"reliability on the hold-out ({len(holdout_data.labels)} images)")
        agreement = keras_litert_agreement(calibrated, served, holdout_data.images[:64])

        predictor = load_predictor(served)
        unique_tests = {path for path, _ in layout.test_without_train_duplicates()}
        unknowns = [str(path) for _, path in source_files(BENCHMARK_SOURCES)[0]]
        report = evaluate_samples(
            predictor, test, staging, root=data_dir, tta=config.tta, subsets={DEDUPLICATED_TEST: unique_tests},
            gallery=False, split_name="test split", min_confidence=thresholds["min_confidence"],
            none_threshold=thresholds.get("none_threshold"), unknowns=unknowns or None,
            conformal=ConformalSets.from_json(thresholds["conformal"]))
        os.replace(staging / "report.json", staging / TEST_REPORT)
        report["files"]["report"] = TEST_REPORT
        training_report = copy_training_report(run, staging)

        provenance = find_provenance(saved, config, git_commit)
        card = render_model_card(config=config, saved=saved, source=source, provenance=provenance,
                                 layout=layout, holdout_images=len(holdout), report=report, exposure=exposure,
                                 detector=detector, calibration=calibration, training_report=training_report,
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
    # Checkpoints compute in float32 whatever the training precision (checkpoint_model_for).
    return model, f"{run.path.name}/{path.name} (checkpoint kept so far; the run had no export)"


def write_models(calibrated, class_names: list[str], folder: Path, log,
                 int8_photos: np.ndarray | None = None) -> tuple[Path, bool]:
    """model.keras (zip-deflated), class_index.json and the LiteRT model infer.py serves into
    `folder`: model.int8.tflite with `int8_photos` (representative pixels), else model.tflite, with
    float16 weights when float32 would leave too little of SIZE_LIMIT_BYTES. Returns (the LiteRT
    model's path, whether its weights are float16)."""
    from idenprof.ship.export import export_model

    litert = "tflite_int8" if int8_photos is not None else "tflite"
    paths = export_model(calibrated, folder, class_names, formats=("keras", litert), representative=int8_photos)
    deflate_zip(paths["keras"])
    models = sum(paths[f].stat().st_size for f in ("keras", litert))
    if models <= SIZE_LIMIT_BYTES - OTHER_FILES_BYTES:
        return paths[litert], False
    if litert == "tflite_int8":
        raise IdenprofError(f"the models take {models / 1e6:.1f} MB, over the {SIZE_LIMIT_BYTES / 1e6:.0f} MB "
                            "limit; nothing was replaced")
    log(f"the float32 models take {models / 1e6:.1f} MB: writing the .tflite with float16 weights")
    export_model(calibrated, folder, class_names, formats=("tflite",), tflite_float16=True)
    models = sum(paths[f].stat().st_size for f in ("keras", "tflite"))
    if models > SIZE_LIMIT_BYTES - OTHER_FILES_BYTES:
        raise IdenprofError(f"even with a float16 .tflite the models take {models / 1e6:.1f} MB, over the "
                            f"{SIZE_LIMIT_BYTES / 1e6:.0f} MB limit; nothing was replaced")
    return paths["tflite"], True


def deflate_zip(path: Path) -> None:
    """Rewrite the zip archive `path` (a .keras file, which Keras stores uncompressed) deflated:
    float32 weights shrink by about a tenth, and Keras reads either."""
    import zipfile

    packed = path.with_name(f".{path.name}.deflating")
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(packed, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as out:
        for item in source.infolist():
            out.writestr(item.filename, source.read(item.filename))
    os.replace(packed, path)


def own_calibration(predictor, holdout_data, calibration) -> dict:
    """calibration.json's entries for a model file that rounds the model's probabilities (the int8
    LiteRT model): min_confidence, the none threshold and the prediction sets' scores, fitted on
    that file's own hold-out answers by the same rules as the Keras model's."""
    from idenprof.predict.calibration import confidence_threshold
    from idenprof.predict.conformal import ConformalSets
    from idenprof.predict.ood import fit_none_threshold, none_scores

    probabilities = predictor.predict(holdout_data.images)
    labels = holdout_data.labels
    threshold, accuracy, coverage = confidence_threshold(probabilities, labels)
    own = {"min_confidence": threshold, "accuracy_at_min_confidence": accuracy, "coverage_at_min_confidence": coverage,
           "holdout_accuracy": float((probabilities.argmax(axis=1) == labels).mean()),
           "conformal": ConformalSets.fit(probabilities, labels).to_json()}
    if calibration.none_threshold is not None:
        own["none_threshold"] = fit_none_threshold(none_scores(probabilities))
    return own


def keras_litert_agreement(calibrated, litert: Path, images: np.ndarray) -> dict:
    """How far the written LiteRT model `litert` is from the Keras model on `images`: the largest
    probability difference and the share of equal top-1 predictions."""
    import keras

    from idenprof.predict.loaders import load_predictor

    expected = keras.ops.convert_to_numpy(calibrated(np.asarray(images, np.float32), training=False))
    got = load_predictor(litert).predict(images)
    return {"file": litert.name, "images": int(len(images)), "max_abs_difference": float(np.abs(expected - got).max()),
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
