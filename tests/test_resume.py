"""A run folder survives a kill, a full disk or a diverging loss at any moment, and is used by one
train.py at a time (issue 15, items 1-4 and 6)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
from train_helpers import TINY, TRAIN_PY, metrics_rows, run_train, train_env

from idenprof.errors import ConfigError, IdenprofError
from idenprof.run_folder import RunFolder
from idenprof.train.callbacks import CheckpointKeeper, ResumeState
from idenprof.train.resume import discard_uncommitted, lock_run_folder

HEADER = "epoch,accuracy,val_accuracy\n"


def small_model():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    model.optimizer.build(model.trainable_variables)
    return model


def row(epoch: int, val: float = 0.5) -> str:
    return f"{epoch},0.5,{val}\n"


# --- one train.py per run folder -----------------------------------------------------------------


def test_a_second_train_py_on_a_busy_run_folder_fails_naming_it_and_the_holder(small_dataset, tmp_path, capsys):
    import train

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import fcntl, os, sys, time\n"
         f"f = open({str(run_dir / '.lock')!r}, 'a+'); fcntl.flock(f, fcntl.LOCK_EX)\n"
         "f.truncate(0); f.write(str(os.getpid())); f.flush(); print('locked', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        code = train.main(["--data-dir", str(small_dataset), *TINY, "--epochs", "1", "--run-dir", str(run_dir)])
    finally:
        holder.kill()
        holder.wait()
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert str(run_dir) in err[0] and f"PID {holder.pid}" in err[0]
    assert sorted(p.name for p in run_dir.iterdir()) == [".lock"]  # nothing else touched


def test_the_lock_is_exclusive_and_records_the_holder(tmp_path):
    run = RunFolder(tmp_path)
    with lock_run_folder(run):
        assert run.lock_path.read_text().strip() == str(os.getpid())
        with pytest.raises(ConfigError, match=f"{tmp_path} is in use by another train.py \\(PID {os.getpid()}\\)"):
            with lock_run_folder(run):
                pass
    with lock_run_folder(run):  # released at the end of the block
        pass


def test_a_lock_file_left_by_a_killed_process_does_not_block(tmp_path):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    run = RunFolder(tmp_path)
    run.lock_path.write_text(f"{gone.pid}\n")  # its owner is dead, so nothing holds the lock
    with lock_run_folder(run):
        assert run.lock_path.read_text().strip() == str(os.getpid())


# --- what a killed process leaves is discarded at the next start ---------------------------------


def committed_run(tmp_path, epochs: int) -> RunFolder:
    run = RunFolder(tmp_path)
    run.backup_dir.mkdir()
    weights = run.backup_dir / f"epoch-{epochs:04d}.weights.h5"
    weights.write_bytes(b"weights")
    run.resume_state_path.write_text(json.dumps({"epoch": epochs, "weights": weights.name}))
    return run


def test_files_of_an_uncommitted_epoch_are_discarded_and_the_committed_best_kept(tmp_path):
    run = committed_run(tmp_path, 2)  # epochs 1 and 2 committed; the kill came during epoch 3's end
    for name in ("model-e001-val0.4000", "model-e003-val0.7000"):  # e001 is the best of epochs 1-2
        for suffix in (".keras", ".h5"):
            (tmp_path / (name + suffix)).write_bytes(b"model")
    (tmp_path / "model-e002-val0.3000.keras").write_bytes(b"worse, left by a kill before its removal")
    leftovers = [tmp_path / ".model-e003-val0.7000.123.tmp.keras", tmp_path / ".metrics.77.tmp.csv",
                 run.backup_dir / ".epoch-0003.weights.9.tmp.weights.h5", run.backup_dir / "epoch-0003.weights.h5"]
    for path in leftovers:
        path.write_bytes(b"half")
    (tmp_path / "export" / ".export-abc").mkdir(parents=True)
    run.metrics_csv.write_text(HEADER + row(0, 0.4) + row(1, 0.3) + row(2, 0.7) + HEADER + row(1, 0.3) + "3,0.5")

    assert discard_uncommitted(run) == 2
    assert sorted(p.name for p in tmp_path.glob("model-*")) == ["model-e001-val0.4000.h5", "model-e001-val0.4000.keras"]
    assert not any(p.exists() for p in leftovers) and not (tmp_path / "export" / ".export-abc").exists()
    assert run.metrics_csv.read_text() == HEADER + row(0, 0.4) + row(1, 0.3)
    assert (run.backup_dir / "epoch-0002.weights.h5").is_file()


def test_with_keep_last_the_latest_committed_checkpoint_survives_a_kill(tmp_path):
    run = committed_run(tmp_path, 2)  # killed after epoch 2's commit, before epoch 1's file was removed
    run.config_path.write_text(json.dumps({"config": {"keep": "last"}}))
    for name in ("model-e001-val0.6000.keras", "model-e002-val0.4000.keras", "model-e003-val0.7000.keras"):
        (tmp_path / name).write_bytes(b"model")
    assert discard_uncommitted(run) == 2
    assert sorted(p.name for p in tmp_path.glob("model-*")) == ["model-e002-val0.4000.keras"]


def test_before_the_rerun_infer_uses_the_committed_checkpoint_not_the_one_a_kill_left(tmp_path):
    from idenprof.predict.model_finding import resolve_model_path

    run = committed_run(tmp_path, 2)  # killed while saving epoch 3: its file is there, not committed
    run.config_path.write_text(json.dumps({"config": {"keep": "best"}}))
    for name in ("model-e002-val0.5000.keras", "model-e003-val0.9000.keras"):
        (tmp_path / name).write_bytes(b"model")
    assert run.kept_checkpoint().path.name == "model-e002-val0.5000.keras"
    assert resolve_model_path(str(tmp_path)).name == "model-e002-val0.5000.keras"


def test_without_a_committed_epoch_nothing_of_the_killed_first_epoch_is_kept(tmp_path):
    run = RunFolder(tmp_path)
    (tmp_path / "model-e001-val0.4000.keras").write_bytes(b"model")
    run.metrics_csv.write_text(HEADER + row(0))
    assert discard_uncommitted(run) == 0
    assert list(tmp_path.iterdir()) == []


def test_a_new_best_removes_the_previous_only_after_its_epoch_is_committed(tmp_path):
    model = small_model()
    callback = CheckpointKeeper(tmp_path, save_h5=False)
    callback.set_model(model)
    callback.on_epoch_end(0, {"val_accuracy": 0.4})
    callback.on_epoch_begin(1)
    callback.on_epoch_end(1, {"val_accuracy": 0.6})
    # A kill here, before the epoch commits, must leave the previous best for the rerun.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model-e001-val0.4000.keras", "model-e002-val0.6000.keras"]
    callback.on_epoch_begin(2)  # after every callback's epoch end, ResumeState's commit included
    assert [p.name for p in tmp_path.iterdir()] == ["model-e002-val0.6000.keras"]


# --- the resume state ----------------------------------------------------------------------------


def test_resume_state_commits_weights_then_names_them_and_restores_both(tmp_path):
    run = RunFolder(tmp_path)
    model = small_model()
    state = ResumeState(run, time.monotonic())
    state.set_model(model)
    state.on_epoch_end(0)
    state.on_epoch_end(1)
    assert json.loads(run.resume_state_path.read_text()) == {"epoch": 2, "weights": "epoch-0002.weights.h5"}
    assert sorted(p.name for p in run.backup_dir.iterdir()) == ["epoch-0002.weights.h5", "resume.json"]
    restored = small_model()
    resumed = ResumeState(run, time.monotonic())
    resumed.set_model(restored)
    resumed.on_train_begin()
    assert restored._initial_epoch == 2
    for a, b in zip(model.get_weights(), restored.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_full_disk_at_an_epoch_end_keeps_the_previous_state_and_is_one_line(tmp_path, monkeypatch):
    import shutil

    run = RunFolder(tmp_path)
    state = ResumeState(run, time.monotonic())
    state.set_model(small_model())
    state.on_epoch_end(0)
    before = sorted(p.name for p in run.backup_dir.iterdir())
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(IdenprofError, match=r"^disk full: saving .*epoch-0002.weights.h5 needs .* run the same"):
        state.on_epoch_end(1)
    assert sorted(p.name for p in run.backup_dir.iterdir()) == before
    assert json.loads(run.resume_state_path.read_text())["epoch"] == 1


def test_training_done_is_recorded_before_the_resume_state_is_removed(tmp_path):
    run = RunFolder(tmp_path)
    state = ResumeState(run, time.monotonic())
    state.set_model(small_model())
    state.on_epoch_end(0)
    state.on_train_end()
    assert json.loads(run.training_done_path.read_text())["epochs"] == 1
    assert not run.backup_dir.exists()


# --- end to end ----------------------------------------------------------------------------------


def test_killed_during_the_export_the_rerun_only_evaluates_and_exports(small_dataset, tmp_path, monkeypatch, capsys):
    import idenprof.ship.export
    import train

    run_dir = tmp_path / "run"
    args = ["--data-dir", str(small_dataset), *TINY, "--epochs", "2", "--run-dir", str(run_dir)]

    def killed(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(idenprof.ship.export, "export_model", killed)
    assert train.main(args) == 130
    rows = metrics_rows(run_dir)
    assert len(rows) == 2 and not (run_dir / "metrics.json").exists()
    monkeypatch.undo()

    def no_training(*_args, **_kwargs):
        raise AssertionError("the rerun trained again")

    exported = []
    monkeypatch.setattr(keras.Model, "fit", no_training)
    monkeypatch.setattr(idenprof.ship.export, "export_model",
                        lambda model, out_dir, names, **_: exported.append(out_dir) or {})  # wrote nothing
    capsys.readouterr()
    assert train.main(args) == 0, capsys.readouterr().err
    assert "training had finished" in capsys.readouterr().out
    assert metrics_rows(run_dir) == rows and exported == [run_dir / "export"]
    assert json.loads((run_dir / "metrics.json").read_text())["best_epoch"] in (1, 2)


def test_a_loss_that_becomes_nan_stops_the_run_keeping_the_last_good_checkpoint(small_dataset, tmp_path,
                                                                                monkeypatch, capsys):
    import idenprof.train.training
    import train

    steps = 70 // 16

    class DivergesInEpochTwo(keras.optimizers.schedules.LearningRateSchedule):
        def __call__(self, step):
            return keras.ops.where(step < steps, 1e-3, 1e30)

    monkeypatch.setattr(idenprof.train.training, "make_learning_rate", lambda *a, **k: DivergesInEpochTwo())
    run_dir = tmp_path / "run"
    code = train.main(["--data-dir", str(small_dataset), *TINY, "--epochs", "3", "--run-dir", str(run_dir)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "the loss became nan in epoch 2" in err[0] and "model-e001-val" in err[0] and "--lr" in err[0]
    assert [p.name for p in run_dir.glob("model-e*.keras")] == [Path(err[0].split("is ")[-1].split(";")[0]).name]
    assert [int(r["epoch"]) for r in metrics_rows(run_dir)] == [0]
    assert json.loads(RunFolder(run_dir).resume_state_path.read_text())["epoch"] == 1  # resumable from epoch 1


@pytest.fixture
def small_disk(tmp_path):
    """A 48 MiB tmpfs: a disk that can really fill up (needs root to mount)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(mount)],
                      capture_output=True).returncode:
        pytest.skip("mounting a tmpfs needs root")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(folder: Path) -> Path:
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 65536)
    except OSError:
        try:
            while True:
                os.write(fd, b"\0" * 512)
        except OSError:
            pass
    finally:
        os.close(fd)
    return filler


@pytest.mark.slow
def test_a_disk_filling_up_during_training_is_one_line_and_the_rerun_resumes(small_dataset, small_disk):
    run_dir = small_disk / "run"
    args = ["--data-dir", small_dataset, *TINY, "--epochs", "4", "--run-dir", run_dir]
    proc = subprocess.Popen([sys.executable, str(TRAIN_PY), *map(str, args)], env=train_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        while proc.poll() is None and not (run_dir / "backup" / "resume.json").exists():
            time.sleep(0.05)
        filler = fill(small_disk)  # the disk is full from the middle of epoch 2
        err = proc.communicate(timeout=300)[1]
    finally:
        proc.kill()
    assert proc.returncode == 2, err[-3000:]
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: disk full"), err[-3000:]
    filler.unlink()
    result = run_train(args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "A total of" not in result.stderr
    assert [int(r["epoch"]) for r in metrics_rows(run_dir)] == [0, 1, 2, 3]


def assert_consistent(run_dir: Path, epochs: int) -> None:
    """A finished run: each epoch once in metrics.csv, and the one checkpoint is of the first
    epoch reaching its best validation accuracy."""
    rows = metrics_rows(run_dir)
    assert [int(r["epoch"]) for r in rows] == list(range(epochs))
    best = max(round(float(r["val_accuracy"]), 4) for r in rows)
    first_best = next(int(r["epoch"]) + 1 for r in rows if round(float(r["val_accuracy"]), 4) == best)
    [checkpoint] = run_dir.glob("model-e*.keras")
    assert checkpoint.name == f"model-e{first_best:03d}-val{best:.4f}.keras"
    assert json.loads((run_dir / "metrics.json").read_text())["best_model"] == checkpoint.name


@pytest.mark.slow
def test_soak_twenty_kills_at_random_moments_leave_consistent_runs(small_dataset, tmp_path):
    """Kill train.py at random moments (start-up, training, checkpoint saves, evaluation, export)
    twenty times, rerunning the same command after each: every run ends consistent."""
    rng = random.Random(15)
    epochs, finished = 8, 0

    def args_of(run_dir):
        return ["--data-dir", small_dataset, *TINY, "--epochs", epochs, "--max-per-class", "4", "--run-dir", run_dir]

    run_dir = tmp_path / "run0"
    for _ in range(20):
        proc = subprocess.Popen([sys.executable, str(TRAIN_PY), *map(str, args_of(run_dir))], env=train_env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            proc.wait(timeout=rng.uniform(3.0, 30.0))
        except subprocess.TimeoutExpired:
            proc.kill()
        err = proc.communicate()[1]
        assert proc.returncode in (0, -9), err[-3000:]
        if proc.returncode == 0:
            assert_consistent(run_dir, epochs)
            finished += 1
            run_dir = tmp_path / f"run{finished}"
    result = run_train(args_of(run_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    assert_consistent(run_dir, epochs)
