"""idenprof.ship.packaging: a run folder becomes the shipped model folder (calibrated, evaluated,
documented, within the size limit), atomically."""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from test_export import CLASS_NAMES, tiny_model

from idenprof.class_index import write_class_index
from idenprof.config import resolve_config
from idenprof.errors import IdenprofError
from idenprof.files import write_json_atomically
from idenprof.predict.calibration import temperature_of
from idenprof.predict.loaders import load_predictor
from idenprof.ship import card, packaging
from idenprof.ship.export import export_model

REPO = Path(__file__).resolve().parents[1]
PACKAGE_FILES = {
    "model.keras", "model.tflite", "class_index.json", "calibration.json", "calibration_holdout.png",
    "test_report.json", "predictions.csv", "confusion_matrix.png", "reliability_diagram.png",
    "risk_coverage.png",
    "training_curves.png", "MODEL_CARD.md",
}


def make_run(root: Path, dataset: Path, *, finished: bool, provenance: dict | None = None) -> Path:
    """A tiny run folder as train.py leaves it: config.json, class index, best checkpoint,
    metrics.csv; when `finished`, also export/ and metrics.json."""
    run = root / "run"
    run.mkdir(parents=True)
    config = resolve_config(None, {"model": "resnet18", "width": 0.125, "image_size": 32, "tta": True,
                                   "data_dir": str(dataset), "run_dir": str(run), "progress": False})
    write_json_atomically({"config": dataclasses.asdict(config), "runtime": {"device": "cpu"},
                           **(provenance or {})}, run / "config.json")
    write_class_index(CLASS_NAMES, run / "class_index.json")
    model = tiny_model()
    model.save(run / "model-e002-val0.1000.keras")
    (run / "metrics.csv").write_text("epoch,accuracy,loss,val_accuracy,val_loss\n"
                                     "0,0.1,2.4,0.1,2.3\n1,0.2,2.2,0.1,2.3\n")
    if finished:
        export_model(model, run / "export", CLASS_NAMES, formats=("keras",))
        write_json_atomically({"top1": 0.1, "epochs_run": 2, "train_seconds": 60.0, "best_epoch": 2,
                               "best_val_accuracy": 0.1}, run / "metrics.json")
    return run


@pytest.fixture(scope="module")
def interim(small_dataset, tmp_path_factory):
    """An unfinished run (checkpoint only, nothing recorded about its command) packaged."""
    root = tmp_path_factory.mktemp("interim")
    run = make_run(root, small_dataset, finished=False)
    logged: list[str] = []
    out = packaging.package_run(run, None, root / "pretrained", log=logged.append)
    return {"run": run, "out": out, "log": logged, "root": root}


def test_writes_every_file_and_leaves_no_staging(interim):
    assert {p.name for p in interim["out"].iterdir()} == PACKAGE_FILES
    assert sorted(p.name for p in interim["root"].iterdir()) == ["pretrained", "run"]


def test_calibration_json_matches_the_model_and_the_run_holdout(interim):
    saved = json.loads((interim["out"] / "calibration.json").read_text())
    assert {"temperature", "min_confidence", "ece_before", "ece_after", "holdout_images"} <= set(saved)
    assert saved["holdout_images"] == 10  # 10% of 8 training photos per class, rounded: 1 per class
    model = keras.models.load_model(interim["out"] / "model.keras")
    assert temperature_of(model) == pytest.approx(saved["temperature"])
    assert model.layers[-1].name == "probabilities"


def test_test_report_is_evaluation_of_the_shipped_litert_model(interim, small_dataset):
    report = json.loads((interim["out"] / "test_report.json").read_text())
    assert report["images"] == 40 and report["tta"] is True
    assert report["model"].endswith("model.tflite")
    assert set(report["subsets"]) == {"without_train_duplicates"}
    assert report["subsets"]["without_train_duplicates"]["images"] <= 40
    assert "at_min_confidence" in report
    predictor = load_predictor(interim["out"] / "model.tflite")
    assert predictor.class_names == CLASS_NAMES
    assert not Path(report["most_confident_mistakes"][0]["path"]).is_absolute()


def test_model_card_of_an_unfinished_run(interim):
    card = (interim["out"] / "MODEL_CARD.md").read_text()
    assert "Interim model" in card
    command = next(line for line in card.splitlines() if line.startswith("    python train.py"))
    assert "--data-dir" not in command and "--run-dir" not in command
    assert "the machine's --data-dir, --run-dir and --quiet left out" in card
    assert "--model resnet18 --image-size 32 --width 0.125" in card and "rebuilt from the settings" in card
    assert "git commit: not recorded" in card
    for section in ("## Data and splits", "## Test results", "| chef |", "## Calibration",
                    "min_confidence", "## Known weaknesses", "Not for: identifying", "![confusion matrix]",
                    "## How sure is it", "| 90% |", "![risk-coverage on the test split](risk_coverage.png)"):
        assert section in card, section



def test_the_card_template_is_filled_whole_and_shows_each_block_only_when_it_holds(interim, small_dataset, tmp_path):
    from idenprof.data.dataset import scan_dataset
    from idenprof.predict.calibration import Calibration
    from idenprof.run_folder import RunFolder

    out = interim["out"]
    staging = tmp_path / "staging"
    shutil.copytree(out, staging, ignore=shutil.ignore_patterns("MODEL_CARD.md"))
    saved = json.loads((interim["run"] / "config.json").read_text())
    config = packaging.saved_train_config(saved, RunFolder(interim["run"]))
    calibration = Calibration(**json.loads((out / "calibration.json").read_text()))
    report = json.loads((out / "test_report.json").read_text())
    inputs = dict(config=config, saved=saved, source="run/model.keras", layout=scan_dataset(small_dataset),
                  provenance=packaging.find_provenance(saved, config, None), holdout_images=10, report=report,
                  calibration=calibration, training_report=None, float16=False, staging=staging,
                  agreement={"file": "model.tflite", "images": 10, "max_abs_difference": 1e-7, "same_top1": 1.0})
    finished = {"top1": 0.1, "epochs_run": 2, "train_seconds": 60.0, "best_epoch": 2, "best_val_accuracy": 0.1}
    can_say_none = dataclasses.replace(calibration, none_threshold=0.9, none_rule="a rule")
    detector = {"training_photos": 70, "start": 12.5, "rate": 0.01}

    def render(**changes) -> str:
        text = card.render_model_card(**{**inputs, **changes})
        assert "$" not in text and "<!--" not in text  # every ${name} filled, no block marker left
        return text

    interim_card = render()
    assert interim_card.count("Interim model") == 1 and "UNFINISHED when packaged" in interim_card
    assert "With flip test-time augmentation" in interim_card and "Single view (no" not in interim_card
    assert "## None of these" not in interim_card and "the model always answers one of the ten" in interim_card
    finished_card = render(training_report=finished, report={**report, "tta": False})
    assert "Interim" not in finished_card and "UNFINISHED" not in finished_card
    assert "- training: 2 epochs in 1 min; best checkpoint epoch 2" in finished_card
    assert "Single view (no test-time augmentation)." in finished_card and "With flip" not in finished_card
    none_card = render(calibration=can_say_none, detector=detector, report={**report, "none_of_these": {}})
    assert "## None of these" in none_card and "`none_tempered`" in none_card and "beyond 12.5" in none_card
    assert "Far-OOD" not in none_card and "the model always answers one of the ten" not in none_card
    far_ood = {"known_flagged": 0.05, "auroc": 0.9, "fpr95": 0.3, "unknown_flagged": 0.8, "unknown_images": 52}
    far_ood_card = render(calibration=can_say_none, detector=detector, report={**report, "none_of_these": far_ood})
    assert "Far-OOD benchmark (52 photos" in far_ood_card and "AUROC 0.900" in far_ood_card
    no_sets = render(report={key: value for key, value in report.items() if key != "prediction_sets"})
    assert "## How sure is it" in interim_card and "## How sure is it" not in no_sets

def test_the_package_carries_the_prediction_sets_hold_out_scores(interim):
    from idenprof.predict.conformal import read_conformal

    calibration = json.loads((interim["out"] / "calibration.json").read_text())
    fitted = read_conformal(interim["out"] / "model.tflite")
    assert fitted is not None and len(fitted.scores) == calibration["holdout_images"]
    report = json.loads((interim["out"] / "test_report.json").read_text())
    assert set(report["prediction_sets"]["by_coverage"]) == {"0.8", "0.9", "0.95"}
    assert report["prediction_sets"]["view"] == "single"


def test_finished_run_uses_its_export_report_and_recorded_provenance(small_dataset, tmp_path, interim):
    run = make_run(tmp_path, small_dataset, finished=True,
                   provenance={"command": "python train.py --preset cpu", "git_commit": "a" * 40, "git_dirty": False})
    out = tmp_path / "pretrained"
    shutil.copytree(interim["out"], out)  # a previous package is replaced whole
    (out / "stale.txt").write_text("old")
    packaging.package_run(run, small_dataset, out, log=lambda _: None)
    assert {p.name for p in out.iterdir()} == PACKAGE_FILES | {"training_metrics.json"}
    card = (out / "MODEL_CARD.md").read_text()
    assert "    python train.py --preset cpu\n" in card and f"`{'a' * 40}` (recorded in config.json)" in card
    assert "Interim" not in card and "2 epochs in 1 min; best checkpoint epoch 2 (hold-out accuracy 10.00%)" in card
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pretrained", "run"]


def test_over_the_size_limit_nothing_is_replaced(small_dataset, tmp_path, interim, monkeypatch):
    # The float32 models fit, the pictures and reports beside them do not.
    models = sum((interim["out"] / name).stat().st_size for name in ("model.keras", "model.tflite"))
    monkeypatch.setattr(packaging, "OTHER_FILES_BYTES", 0)
    monkeypatch.setattr(packaging, "SIZE_LIMIT_BYTES", models + 1000)
    out = tmp_path / "pretrained"
    out.mkdir()
    (out / "keep.txt").write_text("previous package")
    with pytest.raises(IdenprofError, match="MB limit; nothing was replaced"):
        packaging.package_run(interim["run"], small_dataset, out, log=lambda _: None)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pretrained"]


def test_litert_weights_become_float16_when_float32_would_not_fit(interim, tmp_path, monkeypatch):
    model = keras.models.load_model(interim["out"] / "model.keras")
    float32_size = (interim["out"] / "model.tflite").stat().st_size
    keras_size = (interim["out"] / "model.keras").stat().st_size
    monkeypatch.setattr(packaging, "OTHER_FILES_BYTES", 0)
    monkeypatch.setattr(packaging, "SIZE_LIMIT_BYTES", keras_size + float32_size - 1)
    messages: list[str] = []
    assert packaging.write_models(model, CLASS_NAMES, tmp_path, messages.append) == (tmp_path / "model.tflite", True)
    assert "float16" in messages[0]
    assert (tmp_path / "model.tflite").stat().st_size < 0.6 * float32_size
    pixels = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype(np.float32)
    got = load_predictor(tmp_path / "model.tflite").predict(pixels)
    np.testing.assert_allclose(got, keras.ops.convert_to_numpy(model(pixels)), atol=2e-2)


def test_rebuilt_command_parses_back_to_the_same_config():
    from idenprof.cli.train import build_parser

    config = resolve_config("cpu-long", {"data_dir": "/data/idenprof", "run_dir": "runs/x y",
                                         "progress": False, "seed": 1, "crop_scale": [0.4, 1.0]})
    words = shlex.split(packaging.flags_for(config))
    assert words[:4] == ["python", "train.py", "--preset", "cpu-long"]
    args = vars(build_parser().parse_args(words[2:]))
    assert resolve_config(args.pop("preset"), args) == config


def test_the_cards_command_leaves_out_the_training_machines_folders():
    command = ("python train.py --preset cpu-long --seed 2 --data-dir /work/main/data/idenprof "
               "--run-dir=/work/main/runs/long --quiet --cache-dir '/tmp/a b' --tta")
    assert packaging.portable_command(command) == "python train.py --preset cpu-long --seed 2 --tta"


def test_cli_bad_run_folder_is_one_line_and_exit_2(tmp_path):
    done = subprocess.run([sys.executable, "-m", "idenprof.cli.package", str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert done.returncode == 2
    assert done.stderr == f"error: {tmp_path} has no config.json; give a run folder written by train.py\n"


def test_the_recipe_line_names_the_regularisation_a_run_used(interim):
    from idenprof.config import resolve_config

    assert card.regularisation(resolve_config("cpu-long", {})) == [
        "mixup alpha 0.2", "cutmix alpha 1.0", "stochastic depth 0.1"]
    assert card.regularisation(resolve_config("cpu", {"color_jitter": 0.2})) == ["colour jitter 0.2"]
    assert card.regularisation(resolve_config("cpu", {})) == []
    assert card.regularisation(resolve_config("cpu", {"teacher": "idenprof/pretrained"})) == [
        "distilled from idenprof/pretrained (weight 0.5)"]
    assert "px images, flips; seed " in (interim["out"] / "MODEL_CARD.md").read_text()  # the interim run used none


def test_outlier_exposure_fine_tunes_and_stores_a_none_threshold_and_a_card_section(small_dataset, tmp_path):
    run = make_run(tmp_path, small_dataset, finished=True)
    logged: list[str] = []
    out = packaging.package_run(run, None, tmp_path / "pretrained", outlier_exposure=1, log=logged.append)
    saved = json.loads((out / "calibration.json").read_text())
    assert 0 < saved["none_threshold"] <= 1 and "95%" in saved["none_rule"]
    assert any(line.startswith("outlier exposure: 1 epochs") for line in logged)
    card = (out / "MODEL_CARD.md").read_text()
    assert "## None of these" in card and f"{saved['none_threshold']:.4f}" in card
    report = json.loads((out / "test_report.json").read_text())
    assert report["none_of_these"]["none_threshold"] == saved["none_threshold"]


def test_without_outlier_exposure_there_is_no_none_threshold(interim):
    saved = json.loads((interim["out"] / "calibration.json").read_text())
    assert saved["none_threshold"] is None
    assert "## None of these" not in (interim["out"] / "MODEL_CARD.md").read_text()
    assert "none_tempered" not in (interim["out"] / "MODEL_CARD.md").read_text()


def test_the_distance_tempered_head_is_packaged_with_its_threshold_and_keeps_every_answer(small_dataset, tmp_path):
    """With --int8 too: the int8 LiteRT model is the served file, with thresholds of its own."""
    run = make_run(tmp_path, small_dataset, finished=True)
    out = packaging.package_run(run, None, tmp_path / "pretrained", none_detector="mahalanobis", int8=True,
                                log=lambda _: None)
    saved = json.loads((out / "calibration.json").read_text())
    assert 0 < saved["none_threshold"] <= 1
    model = keras.models.load_model(out / "model.keras")
    assert "none_tempered" in [layer.name for layer in model.layers]
    assert model.layers[-1].name == "probabilities"
    card = (out / "MODEL_CARD.md").read_text()
    assert "distance-tempered head" in card and "`none_tempered` (the logits times the scale" in card
    plain = keras.models.load_model(run / "export" / "model.keras")
    photos = sorted((small_dataset / "test").rglob("*.jpg"))[:12]
    from idenprof.data.imaging import load_image_rgb

    pixels = np.stack([load_image_rgb(p, size=32) for p in photos]).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(model.predict(pixels, verbose=0)).argmax(axis=1),
                                  np.asarray(plain.predict(pixels, verbose=0)).argmax(axis=1))

    # The int8 model replaces model.tflite and is what the test report evaluated.
    assert (out / "model.int8.tflite").is_file() and not (out / "model.tflite").exists()
    assert json.loads((out / "test_report.json").read_text())["model"].endswith("model.int8.tflite")
    assert "`model.int8.tflite`" in card and "--model idenprof/pretrained/model.int8.tflite" in card
    own = saved["models"]["model.int8.tflite"]
    assert 0 < own["none_threshold"] <= 1 and 0 < own["min_confidence"] <= 1 and own["conformal"]["scores"]
    from idenprof.predict.calibration import calibration_beside, read_min_confidence

    assert calibration_beside(out / "model.int8.tflite")["none_threshold"] == own["none_threshold"]
    assert read_min_confidence(out / "model.int8.tflite") == own["min_confidence"]
    assert read_min_confidence(out / "model.keras") == saved["min_confidence"]
    int8 = load_predictor(out / "model.int8.tflite").predict(pixels)
    np.testing.assert_allclose(int8, model.predict(pixels, verbose=0), atol=0.15)
