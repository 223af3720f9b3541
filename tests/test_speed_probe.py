"""The speed probe of time-budgeted runs (idenprof.train.speed_probe): which sides it tries, what it
predicts and chooses, that the choice is saved, replayed and kept across a resume, and that the
run it starts is the run its saved config replays."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from train_helpers import TINY, run_train

from idenprof.config import resolve_config, saved_run_settings
from idenprof.errors import ConfigError
from idenprof.train.runtime import Environment, plan_runtime
from idenprof.train.speed_probe import (
    SpeedProbe,
    adopt_recorded_choice,
    candidate_sides,
    choose_side,
    decided,
    drops_mixing,
    predicted_epochs,
)
from idenprof.train.training import fit_training_side, open_run_folder, save_run_config, seed_everything


def test_the_cpu_preset_chooses_between_80_and_64_px_crops_and_cpu_long_between_112_and_80():
    assert candidate_sides(resolve_config("cpu", {}), stride=16) == [80, 64]
    assert candidate_sides(resolve_config("cpu", {"train_image_size": 96}), stride=16) == [96, 80, 64]
    assert candidate_sides(resolve_config("cpu", {"min_train_image_size": 48}), stride=16) == [80, 64, 48]
    assert candidate_sides(resolve_config("cpu", {"target_epochs": None}), stride=16) == []
    assert candidate_sides(resolve_config("cpu", {"train_image_size": 64}), stride=16) == []  # nothing to choose
    assert candidate_sides(resolve_config("cpu-long", {}), stride=16) == [112, 96, 80]


def test_cpu_long_drops_the_mixing_only_where_the_chosen_side_fits_too_few_epochs():
    long = resolve_config("cpu-long", {})
    assert long.mixing_min_epochs == 50 and (long.mixup_alpha, long.cutmix_alpha) == (0.2, 1.0)
    # Run 40's float32 CPU: 80 px crops, about 40 epochs: no mixing; stochastic depth stays.
    slow = decided(long, 80, 39.6)
    assert slow.train_image_size == 80 and slow.mixup_alpha == slow.cutmix_alpha == 0.0
    assert slow.stochastic_depth == 0.1 and slow.target_epochs is None and slow.mixing_min_epochs is None
    # Run 23's bfloat16 CPU: about 70 epochs of 112 px crops: the recipe as it was.
    fast = decided(long, 112, 71.0)
    assert fast.train_image_size == 112 and (fast.mixup_alpha, fast.cutmix_alpha) == (0.2, 1.0)
    # The cpu preset has no threshold: its mixing (none) is never touched.
    assert decided(resolve_config("cpu", {"mixup_alpha": 0.2}), 64, 9.0).mixup_alpha == 0.2
    # Decided on the prediction as config.json keeps it (two decimals), so a resume decides alike.
    assert not drops_mixing(50, 49.996) and drops_mixing(50, 49.99) and not drops_mixing(None, 1.0)
    probe = SpeedProbe(40, 7000.0, {112: 28.4, 96: 38.9, 80: 53.1}, {112: 24.0, 96: 30.0, 80: 39.6}, 80, 41.0, 50)
    assert probe.summary().endswith("training on 80 px crops, none fits 40 epochs: the fastest side; "
                                    "without mixup and cutmix (fewer than 50 epochs)")
    assert probe.to_dict()["mixing_dropped"] is True and probe.to_dict()["mixing_min_epochs"] == 50
    assert "mixup" not in SpeedProbe(40, 7000.0, {112: 80.0}, {112: 71.0}, 112, 41.0, 50).summary()


def test_predicted_epochs_split_the_budget_between_crops_and_whole_images():
    # 1,000 s left of a 1,200 s budget, the last quarter (300 s) on whole images.
    epochs = predicted_epochs(rate=60.0, whole_rate=30.0, whole_fraction=0.25, seconds_left=1000,
                              budget_seconds=1200, train_images=1000)
    assert epochs == pytest.approx((700 * 60 + 300 * 30) / 1000)
    # Already inside the whole-image phase: only whole images remain.
    assert predicted_epochs(60.0, 30.0, 0.25, 200, 1200, 1000) == pytest.approx(200 * 30 / 1000)


def test_the_largest_side_that_fits_the_target_wins_else_the_one_fitting_most():
    assert choose_side({80: 21.0, 64: 30.0}, target_epochs=20) == 80
    assert choose_side({80: 15.0, 64: 21.0, 48: 33.0}, target_epochs=20) == 64
    assert choose_side({80: 7.0, 64: 9.5}, target_epochs=20) == 64
    assert choose_side({80: 7.0, 64: 6.5}, target_epochs=20) == 80  # a smaller side that is not faster


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"time_budget_min": None}, "--target-epochs fits epochs to a time budget; give --time-budget-min too"),
        ({"target_epochs": 0}, "--target-epochs must be positive"),
        ({"min_train_image_size": 8}, "--min-train-image-size 8 is too small"),
        ({"mixing_min_epochs": 0}, "--mixing-min-epochs must be positive"),
    ],
)
def test_bad_probe_settings_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        resolve_config("cpu", overrides)


def test_a_resumed_run_keeps_the_side_its_probe_chose(tmp_path):
    plan = plan_runtime(Environment(), precision="float32", xla="off", batch_size=64)
    started = resolve_config("cpu", {"run_dir": str(tmp_path / "run")})
    run = open_run_folder(started)
    record = {"chosen_side": 64, "target_epochs": 20, "predicted_epochs": {"80": 7.1, "64": 9.8}}
    chosen = adopt_recorded_choice(started, record)
    save_run_config(run, chosen, plan, speed_probe=record)
    again = resolve_config("cpu", {"run_dir": str(run.path)})  # the same command, run again
    assert open_run_folder(again) == run  # not refused as "different settings"
    resumed = adopt_recorded_choice(again, json.loads(run.config_path.read_text())["speed_probe"])
    assert resumed.train_image_size == 64 and resumed.target_epochs is None
    save_run_config(run, resumed, plan)  # a resume rewrites config.json: the record stays
    assert json.loads(run.config_path.read_text())["speed_probe"] == record
    with pytest.raises(ConfigError, match="train_image_size: 64 in the run, 48 now"):
        open_run_folder(resolve_config("cpu", {"run_dir": str(run.path), "train_image_size": 48}))


def test_a_resumed_cpu_long_run_keeps_training_without_the_mixing_its_probe_dropped(tmp_path):
    plan = plan_runtime(Environment(), precision="float32", xla="off", batch_size=64)
    started = resolve_config("cpu-long", {"run_dir": str(tmp_path / "run")})
    run = open_run_folder(started)
    record = {"chosen_side": 80, "target_epochs": 40, "predicted_epochs": {"112": 24.0, "96": 30.0, "80": 39.6}}
    save_run_config(run, adopt_recorded_choice(started, record), plan, speed_probe=record)
    saved = json.loads(run.config_path.read_text())["config"]
    assert (saved["mixup_alpha"], saved["cutmix_alpha"], saved["mixing_min_epochs"]) == (0.0, 0.0, None)
    again = resolve_config("cpu-long", {"run_dir": str(run.path)})
    assert open_run_folder(again) == run  # the same command resumes it
    resumed = adopt_recorded_choice(again, record)
    assert resumed.train_image_size == 80 and resumed.mixup_alpha == resumed.cutmix_alpha == 0.0
    # Its config.json replays the run as it trained: 80 px crops, no mixing, no probe.
    preset, settings = saved_run_settings(run.config_path)
    replay = resolve_config(preset, settings)
    assert (replay.train_image_size, replay.mixup_alpha, replay.target_epochs) == (80, 0.0, None)


def test_a_cpu_long_config_from_before_the_threshold_replays_with_its_mixing(tmp_path):
    """config.json of a cpu-long run trained before `mixing_min_epochs` existed (the shipped
    model's run): target_epochs None, no mixing_min_epochs key."""
    settings = {k: v for k, v in dataclasses.asdict(resolve_config("cpu-long", {})).items()
                if k not in ("mixing_min_epochs", "preset")}
    settings.update(target_epochs=None, min_train_image_size=64)
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"config": {**settings, "preset": "cpu-long"}}))
    replay = resolve_config(*saved_run_settings(path))
    assert (replay.train_image_size, replay.mixup_alpha, replay.cutmix_alpha) == (112, 0.2, 1.0)
    assert candidate_sides(replay, stride=16) == []  # no probe: the mixing threshold has nothing to act on


def test_the_run_after_the_probe_draws_the_random_numbers_its_replay_draws(tmp_path):
    """The probe's throwaway model draws from the seeded generators; the run must start from the
    seed as the replay of its config.json (no probe) does."""
    import keras

    config = resolve_config(None, {"model": "resnet18", "width": 0.25, "stem": "small", "image_size": 24,
                                   "batch_size": 8, "time_budget_min": 5, "target_epochs": 1,
                                   "min_train_image_size": 16, "precision": "float32", "seed": 3,
                                   "run_dir": str(tmp_path / "run")})
    plan = plan_runtime(Environment(), precision="float32", xla="off", batch_size=8)
    run = open_run_folder(config)
    seed_everything(config.seed)
    decided = fit_training_side(config, plan, run, num_classes=10, steps=4, train_images=32,
                                start=__import__("time").monotonic(), log=lambda _: None)
    after_probe = [np.random.random(), float(keras.random.uniform(()))]
    seed_everything(config.seed)
    replayed = [np.random.random(), float(keras.random.uniform(()))]
    assert after_probe == replayed
    assert decided.target_epochs is None and decided.train_image_size is None  # 24 px: the largest fits 1 epoch
    saved = json.loads(run.config_path.read_text())
    assert saved["speed_probe"]["chosen_side"] == 24 and set(saved["speed_probe"]["images_per_second"]) == {"24", "16"}


def test_train_py_prints_saves_and_replays_the_probes_choice(small_dataset, tmp_path):
    args = [a for a in TINY if a not in ("--image-size", "32")]
    run_dir = tmp_path / "probed"
    # An unreachable target: the probe trains on the side that fits the most epochs.
    result = run_train(["--data-dir", small_dataset, *args, "--image-size", "32", "--time-budget-min", "10",
                        "--target-epochs", "100000", "--min-train-image-size", "16", "--epochs", "1",
                        "--mixup-alpha", "0.2", "--mixing-min-epochs", "100000", "--run-dir", run_dir])
    assert result.returncode == 0, result.stderr[-3000:]
    saved = json.loads((run_dir / "config.json").read_text())
    probe = saved["speed_probe"]
    assert set(probe["predicted_epochs"]) == {"32", "24", "16"}
    fastest = max(probe["predicted_epochs"], key=lambda side: probe["predicted_epochs"][side])
    assert probe["chosen_side"] == int(fastest) and probe["target_epochs"] == 100000
    assert saved["config"]["train_image_size"] == (None if fastest == "32" else int(fastest))
    assert saved["config"]["target_epochs"] is None and saved["config"]["mixing_min_epochs"] is None
    assert saved["config"]["mixup_alpha"] == 0.0 and probe["mixing_dropped"] is True  # too few epochs to mix
    assert (f"training on {fastest} px crops, none fits 100000 epochs: the fastest side; without mixup and "
            "cutmix (fewer than 100000 epochs)") in result.stdout
    # Replaying the saved config (train.py --config) trains on the same side without probing again.
    preset, settings = saved_run_settings(run_dir / "config.json")
    replay = resolve_config(preset, settings)
    assert replay.train_image_size == saved["config"]["train_image_size"] and replay.target_epochs is None
    assert replay.mixup_alpha == 0.0
    assert candidate_sides(replay, stride=8) == []


def test_a_multi_worker_cluster_trains_on_the_configured_side_without_probing(tmp_path):
    config = resolve_config("cpu", {"run_dir": str(tmp_path / "run")})
    cluster = {"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}, "task": {"type": "worker", "index": 0}}
    notes = []
    kept = fit_training_side(config, plan=None, run=None, num_classes=10, steps=4, train_images=32, start=0.0,
                             log=notes.append, tf_config=cluster)
    assert kept is config and kept.train_image_size == 80
    assert notes == ["note: no speed probe in a multi-worker cluster (each machine would choose for itself): "
                     "training on 80 px; give --train-image-size to choose"]
