"""train.py end to end on small real subsets of IdenProf: outputs, resume, bad input."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import keras
import numpy as np
import pytest
from archive_subsets import extract_subset, make_subset_archive
from train_helpers import TINY, kill_during_epoch, metrics_rows, run_train

from idenprof.config import resolve_config
from idenprof.errors import ConfigError
from idenprof.train.recipe import make_learning_rate
from idenprof.train.training import open_run_folder, save_run_config


@pytest.fixture(scope="module")
def train_dataset(tmp_path_factory) -> Path:
    """20 training and 5 test images per class from the real archive."""
    tmp = tmp_path_factory.mktemp("train-data")
    return extract_subset(make_subset_archive(tmp / "subset.zip", 20, 5), tmp)


@pytest.fixture(scope="module")
def finished_run(train_dataset, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    run_dir = tmp_path_factory.mktemp("run") / "tiny"
    result = run_train(["--data-dir", train_dataset, *TINY, "--epochs", "6", "--lr", "3e-3",
                        "--run-dir", run_dir, "--seed", "1", "--tta"])
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir, result


def test_a_run_writes_every_output(finished_run):
    run_dir, result = finished_run
    keras_models = list(run_dir.glob("model-e*-val*.keras"))
    assert len(keras_models) == 1  # only the best is kept
    assert keras_models[0].with_suffix(".h5").is_file()
    assert json.loads((run_dir / "class_index.json").read_text())["0"] == "chef"
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["config"]["model"] == "resnet18" and saved["runtime"]["precision"] == "float32"
    # Provenance for the model card (idenprof.ship.packaging): the command and the code's commit.
    assert saved["command"].startswith("python train.py --data-dir ") and "--seed 1 --tta" in saved["command"]
    assert len(saved["git_commit"]) == 40 and isinstance(saved["git_dirty"], bool)
    assert [int(r["epoch"]) for r in metrics_rows(run_dir)] == list(range(6))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["images"] == 50 and 0.0 <= metrics["top1"] <= metrics["top5"] <= 1.0
    assert metrics["tta"] is True and 0.0 <= metrics["top1_without_tta"] <= 1.0
    assert len(metrics["confusion_matrix"]) == 10 and sum(map(sum, metrics["confusion_matrix"])) == 50
    class_index = json.loads((run_dir / "class_index.json").read_text())
    assert set(metrics["per_class_accuracy"]) == {class_index[str(i)] for i in range(10)}
    for png in ("training_curves.png", "confusion_matrix.png"):
        assert (run_dir / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert any((run_dir / "logs").rglob("events.out.tfevents*"))
    export = run_dir / "export"
    assert (export / "model.keras").is_file() and (export / "model.tflite").is_file()
    assert (export / "model.onnx").is_file()
    assert (export / "saved_model" / "saved_model.pb").is_file()
    assert not (run_dir / "backup").exists()  # resume state is removed once training finishes
    assert "test top-1" in result.stdout and f"python infer.py --model {run_dir}" in result.stdout


def test_training_accuracy_rises_well_above_chance(finished_run):
    rows = metrics_rows(finished_run[0])
    first, last = float(rows[0]["accuracy"]), float(rows[-1]["accuracy"])
    assert last > 0.3 and last > first + 0.1, (first, last)


def test_a_finished_run_is_not_overwritten(finished_run, train_dataset):
    run_dir, _ = finished_run
    before = sorted(p.name for p in run_dir.iterdir())
    result = run_train(["--data-dir", train_dataset, *TINY, "--epochs", "6", "--run-dir", run_dir])
    assert result.returncode == 2 and "already holds a finished run" in result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in run_dir.iterdir()) == before


def test_kill_mid_epoch_then_the_same_command_resumes(train_dataset, tmp_path):
    run_dir = tmp_path / "run"
    args = ["--data-dir", train_dataset, *TINY, "--epochs", "5", "--run-dir", run_dir,
            "--schedule", "cosine", "--warmup-epochs", "1"]
    done_before = kill_during_epoch(args, run_dir, finished_epochs=2)
    assert 2 <= done_before < 5
    assert list(run_dir.glob("model-e*.keras"))  # the best-so-far survived the kill
    # What a kill between an epoch's metrics row and its commit, or during a write, leaves:
    lines = (run_dir / "metrics.csv").read_text().splitlines(keepends=True)
    ahead = f"{len(lines) - 1}," + lines[-1].split(",", 1)[1]
    (run_dir / "metrics.csv").write_text("".join(lines) + lines[0] + ahead + ahead[:9])
    result = run_train(args)
    assert result.returncode == 0, result.stderr[-3000:]
    epochs = [int(r["epoch"]) for r in metrics_rows(run_dir)]
    assert epochs == list(range(5))  # resumed after the last finished epoch, nothing redone
    assert (run_dir / "metrics.csv").read_text().count("epoch,") == 1  # one header
    # The learning rate follows the uninterrupted schedule: the optimizer's step count was restored.
    config = resolve_config(None, {"epochs": 5, "schedule": "cosine", "warmup_epochs": 1, "batch_size": 16})
    schedule = make_learning_rate(config, steps_per_epoch=180 // 16)
    expected = [float(schedule(np.int64((e + 1) * (180 // 16)))) for e in range(5)]
    rates = [float(r["learning_rate"]) for r in metrics_rows(run_dir)]
    assert rates == pytest.approx(expected, rel=1e-4, abs=1e-9)
    assert len(list(run_dir.glob("model-e*.keras"))) == 1


def test_resuming_refuses_another_recipe_but_not_another_batch_norm_kernel(tmp_path):
    from idenprof.train.runtime import Environment, plan_runtime

    started = resolve_config("cpu", {"run_dir": str(tmp_path / "run")})
    run = open_run_folder(started)
    save_run_config(run, started, plan_runtime(Environment(), precision="float32", xla="off", batch_size=64))
    with pytest.raises(ConfigError, match=r"unfinished run with different settings \(lr: 0.002 in the run, 0.01 now\)"):
        open_run_folder(resolve_config("cpu", {"run_dir": str(run.path), "lr": 1e-2}))
    assert open_run_folder(resolve_config("cpu", {"run_dir": str(run.path), "fused_batch_norm": False})) == run


def test_a_run_started_before_a_setting_existed_resumes_with_its_default(tmp_path):
    import json

    from idenprof.train.runtime import Environment, plan_runtime

    started = resolve_config("cpu", {"run_dir": str(tmp_path / "run")})
    run = open_run_folder(started)
    save_run_config(run, started, plan_runtime(Environment(), precision="float32", xla="off", batch_size=64))
    saved = json.loads(run.config_path.read_text())
    for newer in ("stochastic_depth", "ema_momentum", "record_validation"):
        del saved["config"][newer]
    run.config_path.write_text(json.dumps(saved))
    assert open_run_folder(resolve_config("cpu", {"run_dir": str(run.path)})) == run
    with pytest.raises(ConfigError, match=r"different settings \(stochastic_depth: 0.0 in the run, 0.1 now\)"):
        open_run_folder(resolve_config("cpu", {"run_dir": str(run.path), "stochastic_depth": 0.1}))


def test_a_run_whose_preset_changed_since_says_which_value_resumes_it(tmp_path):
    """A cpu run started before the preset kept the last epoch has no `keep` in config.json
    (so "best"); today's preset says "last": the error names both, and --keep best resumes it."""
    import json

    from idenprof.train.runtime import Environment, plan_runtime

    started = resolve_config("cpu", {"run_dir": str(tmp_path / "run"), "keep": "best"})
    run = open_run_folder(started)
    save_run_config(run, started, plan_runtime(Environment(), precision="float32", xla="off", batch_size=64))
    saved = json.loads(run.config_path.read_text())
    del saved["config"]["keep"]
    run.config_path.write_text(json.dumps(saved))
    with pytest.raises(ConfigError, match=r"\(keep: 'best' in the run, 'last' now\); give those settings the run's"):
        open_run_folder(resolve_config("cpu", {"run_dir": str(run.path)}))
    assert open_run_folder(resolve_config("cpu", {"run_dir": str(run.path), "keep": "best"})) == run


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "resnet21"], "--model 'resnet21' is unknown"),
        (["--batch-size", "0"], "--batch-size must be positive"),
        (["--epochs", "0"], "--epochs must be positive"),
        (["--image-size", "8", "--stem", "imagenet"], "--image-size 8 is too small"),
    ],
)
def test_bad_flags_fail_before_any_work(args, message, tmp_path):
    import train

    empty = tmp_path / "nothing-here"
    code = train.main(["--data-dir", str(empty), "--data-url", str(tmp_path / "none.zip"),
                       "--run-dir", str(tmp_path / "run"), "--model", "resnet18", *args])
    assert code == 2
    assert not (tmp_path / "run").exists() and not empty.exists()


def test_bad_flag_message_is_one_line_without_traceback(tmp_path):
    result = run_train(["--data-dir", tmp_path, "--model", "resnet21"])
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: --model 'resnet21' is unknown; choose one of resnet18, resnet34, resnet50, resnet101, resnet152, "
        "densenet121, densenet169, densenet201"
    ]


def test_missing_data_and_a_class_missing_from_a_split(small_dataset, tmp_path, capsys):
    import shutil

    import train

    code = train.main(["--data-dir", str(tmp_path / "absent"), "--data-url", str(tmp_path / "absent.zip"), *TINY])
    assert code == 2 and "absent.zip" in capsys.readouterr().err
    broken = tmp_path / "broken"
    shutil.copytree(small_dataset, broken)
    shutil.rmtree(broken / "test" / "pilot")
    code = train.main(["--data-dir", str(broken), *TINY, "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and "pilot" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_a_class_without_a_readable_training_image_fails_naming_it(small_dataset, tmp_path, capsys):
    import shutil

    import train

    broken = Path(shutil.copytree(small_dataset, tmp_path / "broken"))
    for photo in (broken / "train" / "pilot").glob("*.jpg"):
        photo.write_bytes(b"not a jpeg")
    (broken / "train" / "chef" / "nested").mkdir()
    code = train.main(["--data-dir", str(broken), *TINY, "--run-dir", str(tmp_path / "run")])
    captured = capsys.readouterr()
    assert f"warning: {broken / 'train' / 'chef' / 'nested'}/ is ignored" in captured.out
    assert code == 2 and captured.err.count("\n") == 1
    assert "class(es) pilot have no readable training image" in captured.err


def test_unwritable_run_folder(small_dataset, tmp_path, capsys):
    import train

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code = train.main(["--data-dir", str(small_dataset), *TINY, "--run-dir", str(blocker / "run")])
    err = capsys.readouterr().err
    assert code == 2 and "--run-dir" in err and "cannot write" in err


def test_a_batch_larger_than_the_training_set_is_lowered_to_it(small_dataset, tmp_path, capsys):
    import train

    code = train.main(["--data-dir", str(small_dataset), *TINY, "--batch-size", "512", "--epochs", "1",
                       "--run-dir", str(tmp_path / "run")])
    assert code == 0
    # 80 images less the hold-out of one per class
    assert "note: only 70 training images: batch size lowered from 512 to 70" in capsys.readouterr().out
    assert (tmp_path / "run" / "metrics.json").is_file()


def test_download_only_reports_the_layout(small_archive, tmp_path):
    data_dir = tmp_path / "data" / "idenprof"
    result = run_train(["--download-only", "--data-dir", data_dir, "--data-url", small_archive, "--quiet"],
                       cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (data_dir / "train" / "chef").is_dir() and (data_dir / "test" / "waiter").is_dir()
    assert "chef" in result.stdout and "waiter" in result.stdout
    assert not (tmp_path / "runs").exists()  # nothing trained


def test_training_on_smaller_crops_then_whole_images_saves_models_at_the_evaluation_size(train_dataset, tmp_path):
    run_dir = tmp_path / "run"
    args = [a for a in TINY if a not in ("--image-size", "32")]
    result = run_train(["--data-dir", train_dataset, *args, "--image-size", "40", "--train-image-size", "32",
                        "--crop-scale", "0.5,1", "--whole-image-fraction", "0.5", "--epochs", "2",
                        "--max-per-class", "8", "--run-dir", run_dir])
    assert result.returncode == 0, result.stderr[-3000:]
    [best] = run_dir.glob("model-e*.keras")
    for path in (best, best.with_suffix(".h5"), run_dir / "export" / "model.keras"):
        assert keras.models.load_model(path, compile=False).input_shape == (None, 40, 40, 3), path
    assert json.loads((run_dir / "metrics.json").read_text())["images"] == 50


@pytest.mark.parametrize("preset", ["cpu", "cpu-long"])
def test_each_preset_runs_its_code_path_on_a_small_subset(preset, small_dataset, tmp_path):
    """The presets' recipe (smaller training crops, time budget with its schedule, TTA, auto
    precision) on tiny images: a preset cannot silently break. Their accuracy is in docs/ACCURACY.md."""
    run_dir = tmp_path / preset
    result = run_train(["--preset", preset, "--data-dir", small_dataset, "--image-size", "32",
                        "--train-image-size", "16", "--batch-size", "16", "--epochs", "2",
                        "--run-dir", run_dir, "--quiet"])
    assert result.returncode == 0, result.stderr[-3000:]
    saved = json.loads((run_dir / "config.json").read_text())["config"]
    assert saved["preset"] == preset and saved["time_budget_min"] and saved["schedule"] == "cosine"
    assert json.loads((run_dir / "time_budget.json").read_text())["elapsed_s"] > 0
    rates = [float(r["learning_rate"]) for r in metrics_rows(run_dir)]
    assert len(rates) == 2 and 0 < rates[1] < saved["lr"]  # warm-up, then the budget's cosine
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["tta"] is True and "top1_without_tta" in metrics
    [kept] = run_dir.glob("model-e*.keras")  # the presets keep the last epoch, whatever its accuracy
    assert kept.name.startswith("model-e002-") and metrics["keep"] == "last" and metrics["best_epoch"] == 2
    assert "kept model (the last epoch)" in result.stdout + result.stderr
    assert keras.models.load_model(kept, compile=False).input_shape == (None, 32, 32, 3)
    # The presets also export the int8 LiteRT model and measure it on the test split.
    assert (run_dir / "export" / "model.int8.tflite").is_file() and 0 <= metrics["int8_top1"] <= 1
