"""Checkpoint files: atomic saves, disk-full errors, and the kept model (best or last) surviving a resume."""

from __future__ import annotations

import errno
import json

import keras
import pytest

from idenprof.errors import IdenprofError
from idenprof.run_folder import RunFolder
from idenprof.train.callbacks import CheckpointKeeper, save_model_atomically


def small_model():
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])


def test_disk_full_while_saving_is_one_clear_error_and_leaves_nothing(tmp_path, monkeypatch):
    model = small_model()
    target = tmp_path / "model-e001-val0.5000.keras"

    def full_disk(path, *args, **kwargs):
        with open(path, "wb") as f:
            f.write(b"half a model")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(model, "save", full_disk)
    with pytest.raises(IdenprofError, match="disk full while saving .*run the same command to resume"):
        save_model_atomically(model, target)
    assert list(tmp_path.iterdir()) == []  # neither the final name nor the half-written temporary


def test_an_interrupted_save_never_replaces_the_previous_best(tmp_path, monkeypatch):
    model = small_model()
    best = tmp_path / "model-e001-val0.5000.keras"
    save_model_atomically(model, best)
    before = best.read_bytes()

    def crash(path, *args, **kwargs):
        with open(path, "wb") as f:
            f.write(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(model, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_model_atomically(model, tmp_path / "model-e002-val0.6000.keras")
    assert best.read_bytes() == before
    assert RunFolder(tmp_path).kept_checkpoint().path == best
    keras.models.load_model(best)


def test_best_checkpoint_keeps_only_the_best_and_remembers_it_after_a_restart(tmp_path):
    model = small_model()
    callback = CheckpointKeeper(tmp_path)
    callback.set_model(model)
    for epoch, accuracy in enumerate([0.4, 0.6, 0.5]):
        callback.on_epoch_begin(epoch)
        callback.on_epoch_end(epoch, {"val_accuracy": accuracy})
    callback.on_train_end()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model-e002-val0.6000.h5", "model-e002-val0.6000.keras"]
    restarted = CheckpointKeeper(tmp_path)  # a resumed run reads the best so far from disk
    restarted.set_model(model)
    restarted.on_epoch_end(3, {"val_accuracy": 0.55})
    best = RunFolder(tmp_path).kept_checkpoint()
    assert (best.epoch, best.val_accuracy) == (2, 0.6)


def test_keep_last_keeps_the_latest_epoch_whatever_its_accuracy_and_after_a_restart(tmp_path):
    model = small_model()
    callback = CheckpointKeeper(tmp_path, save_h5=False, keep="last")
    callback.set_model(model)
    for epoch, accuracy in enumerate([0.4, 0.6, 0.5]):
        callback.on_epoch_begin(epoch)
        callback.on_epoch_end(epoch, {"val_accuracy": accuracy})
    callback.on_train_end()
    assert [p.name for p in tmp_path.iterdir()] == ["model-e003-val0.5000.keras"]
    restarted = CheckpointKeeper(tmp_path, save_h5=False, keep="last")
    restarted.set_model(model)
    restarted.on_epoch_begin(3)
    restarted.on_epoch_end(3, {"val_accuracy": 0.2})  # worse, and still kept: it is the latest
    restarted.on_train_end()
    assert [p.name for p in tmp_path.iterdir()] == ["model-e004-val0.2000.keras"]
    with pytest.raises(ValueError, match="keep must be one of"):
        CheckpointKeeper(tmp_path, keep="first")


def test_the_run_folder_reads_its_rule_from_config_json_and_picks_by_it(tmp_path):
    run = RunFolder(tmp_path)
    for name in ("model-e002-val0.6000.keras", "model-e003-val0.5000.keras"):
        (tmp_path / name).write_bytes(b"model")
    assert run.keep == "best"  # no config.json: runs from before the setting kept the best
    assert run.kept_checkpoint().epoch == 2
    run.config_path.write_text(json.dumps({"config": {"keep": "last"}}))
    assert run.keep == "last"
    assert run.kept_checkpoint().epoch == 3
    assert run.kept_checkpoint("best").epoch == 2  # an explicit rule wins


def test_whole_image_phase_sets_the_flag_for_the_last_fraction_of_epochs_or_time():
    import tensorflow as tf

    from idenprof.train.callbacks import WholeImagePhase

    flag = tf.Variable(False)
    by_epoch = WholeImagePhase(flag, fraction=0.25, epochs=8)
    seen = []
    for epoch in range(8):
        by_epoch.on_epoch_begin(epoch)
        seen.append(bool(flag.numpy()))
    assert seen == [False] * 6 + [True] * 2
    progress = [0.5]
    by_time = WholeImagePhase(flag, fraction=0.25, epochs=100, progress=lambda: progress[0])
    by_time.on_epoch_begin(0)
    assert not flag.numpy()
    progress[0] = 0.8
    by_time.on_epoch_begin(1)
    assert flag.numpy()
