"""train.py for other people's data: a val/ folder, class weights, early stopping, replaying a run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from archive_subsets import CLASS_NAMES
from train_helpers import TINY, metrics_rows, run_train

from idenprof.config import resolve_config, saved_run_settings
from idenprof.data.dataset import scan_dataset, select_samples
from idenprof.errors import ConfigError
from idenprof.train.callbacks import Patience
from idenprof.train.training import class_weights


@pytest.fixture(scope="module")
def users_dataset(small_dataset, tmp_path_factory) -> Path:
    """The small real subset with a val/ folder (2 images per class moved out of train/, leaving 6)
    and an imbalanced train/: doctor keeps 1 image, chef 12 (its 6 and a copy of each)."""
    root = tmp_path_factory.mktemp("users") / "data"
    shutil.copytree(small_dataset, root)
    for name in CLASS_NAMES:
        train_files = sorted((root / "train" / name).glob("*.jpg"))
        (root / "val" / name).mkdir(parents=True)
        for path in train_files[:2]:
            shutil.move(path, root / "val" / name / path.name)
    # doctor: 1 image; chef: 6 originals + 6 copies = 12 > 10 x 1.
    for path in sorted((root / "train" / "doctor").glob("*.jpg"))[1:]:
        path.unlink()
    for path in sorted((root / "train" / "chef").glob("*.jpg")):
        shutil.copy(path, path.with_name("copy-" + path.name))
    return root


@pytest.fixture(scope="module")
def users_run(users_dataset, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("users-run") / "run"
    result = run_train(["--data-dir", users_dataset, *TINY, "--epochs", "6", "--run-dir", run_dir,
                        "--class-weight", "balanced", "--patience", "1", "--schedule", "constant", "--lr", "1e-9"])
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir, result


def test_a_val_folder_is_the_validation_split(users_dataset):
    layout = scan_dataset(users_dataset)
    assert list(layout.samples) == ["train", "test", "val"]
    train, val, _ = select_samples(layout, resolve_config(None, {}))
    assert len(val) == 2 * len(CLASS_NAMES) and all("/val/" in path for path, _ in val)
    assert len(train) == len(layout.samples["train"])  # no hold-out carved from train/


def test_training_says_it_validates_on_the_val_folder(users_run):
    _, result = users_run
    assert "validation: the val/ folder (20 images)" in result.stdout


def test_balanced_class_weights_follow_the_counts_and_are_printed():
    labels = np.array([0] * 12 + [1] * 1 + [2] * 6)
    lines = []
    weights = class_weights(labels, 3, "balanced", ["chef", "doctor", "engineer"], log=lines.append)
    assert weights == pytest.approx({0: 19 / 36, 1: 19 / 3, 2: 19 / 18})
    assert lines[0].startswith("warning: imbalanced training set: doctor has 1 images, chef 12")
    assert lines[1] == "class weights: chef 0.53, doctor 6.33, engineer 1.06"
    assert class_weights(labels[labels != 1], 3, None, ["a", "b", "c"], log=lines.append) is None


def test_an_imbalanced_run_warns_and_trains_with_class_weights(users_run):
    _, result = users_run
    assert "warning: imbalanced training set: doctor has 1 images, chef 12" in result.stdout
    assert "class weights: chef" in result.stdout and "doctor 6.10" in result.stdout


def test_patience_stops_a_run_that_stopped_improving_and_the_report_says_why(users_run):
    run_dir, result = users_run
    epochs = len(metrics_rows(run_dir))
    assert epochs < 6  # a learning rate of 1e-9 cannot improve validation accuracy for long
    assert "early stop after epoch" in result.stdout
    report = json.loads((run_dir / "metrics.json").read_text())
    assert report["stop_reason"] == "early stop: validation accuracy did not improve for 1 epochs"
    assert (run_dir / report["best_model"]).is_file()


def test_patience_counts_the_epochs_of_an_interrupted_run(tmp_path):
    history = tmp_path / "metrics.csv"
    history.write_text("epoch,val_accuracy\n0,0.5\n1,0.6\n2,0.55\n")

    class Model:
        stop_training = False

    callback = Patience(2, history, log=lambda _: None)
    callback.set_model(Model())
    callback.on_train_begin()
    callback.on_epoch_end(3, {"val_accuracy": 0.58})  # second epoch without beating 0.6
    assert callback.model.stop_training and callback.stopped_epoch == 4


def test_replaying_a_run_gives_its_config_with_flags_winning(tmp_path):
    from idenprof.train.runtime import Environment, plan_runtime
    from idenprof.train.training import open_run_folder, save_run_config

    original = resolve_config("cpu", {"seed": 3, "run_dir": str(tmp_path / "first"), "label_smoothing": 0.2})
    run = open_run_folder(original)
    save_run_config(run, original, plan_runtime(Environment(), precision="float32", xla="off", batch_size=64))
    preset, settings = saved_run_settings(run.config_path)
    assert resolve_config(preset, settings) == original
    replay = resolve_config(preset, {**settings, "run_dir": str(tmp_path / "again"), "epochs": 2})
    assert replay.seed == 3 and replay.label_smoothing == 0.2 and replay.preset == "cpu"
    assert (replay.epochs, replay.run_dir) == (2, str(tmp_path / "again"))


@pytest.mark.parametrize("content, message", [
    (None, "cannot read it"), ("not json", "is not JSON"), ('{"config": {"lr": 1}}', "not a run's config.json"),
])
def test_replaying_something_that_is_not_a_run_config_is_a_one_line_error(tmp_path, content, message):
    path = tmp_path / "config.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        saved_run_settings(path)


def test_train_py_replays_a_config_file_and_refuses_it_with_a_preset(users_run, tmp_path):
    run_dir, _ = users_run
    result = run_train(["--config", run_dir / "config.json", "--preset", "cpu"])
    assert result.returncode == 2 and "--preset and --config both name a recipe" in result.stderr
    result = run_train(["--config", run_dir / "config.json"])  # the same folder: a finished run
    assert result.returncode == 2 and "already holds a finished run" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("flag, value, message", [
    ("--patience", "0", "--patience must be positive"),
])
def test_bad_values_of_the_new_flags(flag, value, message, tmp_path):
    result = run_train(["--data-dir", tmp_path, flag, value])
    assert result.returncode == 2 and message in result.stderr


@pytest.mark.parametrize("case", ["config-epochs-word", "seed-negative", "seed-huge"])
def test_a_mistyped_setting_is_one_line_and_writes_no_run_folder(tmp_path, case):
    run_dir = tmp_path / "run"
    if case == "config-epochs-word":
        saved = {"config": {**json.loads(resolve_config("cpu", {}).to_json()), "epochs": "two"}}
        (tmp_path / "config.json").write_text(json.dumps(saved))
        args = ["--config", tmp_path / "config.json", "--run-dir", run_dir]
    else:
        args = ["--preset", "cpu", "--seed", "-1" if case == "seed-negative" else "99999999999999999999",
                "--run-dir", run_dir]
    result = run_train(args)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and result.stderr.strip().count("\n") == 0
    assert ("'epochs'" if case == "config-epochs-word" else "--seed must be") in result.stderr
    assert not run_dir.exists()
