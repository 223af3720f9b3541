"""files.BackgroundWriter: a slow disk delays the files, never the caller, and never their order."""

from __future__ import annotations

import errno
import json
import os
import threading
import time

import pytest

import idenprof.files as files
from idenprof.errors import IdenprofError
from idenprof.files import TEMP_GLOB, BackgroundWriter, atomic_write, write_json_atomically
from idenprof.run_folder import RunFolder
from idenprof.train.callbacks import CheckpointKeeper, ResumeState


@pytest.fixture
def blocked_disk(monkeypatch):
    """os.fsync waits until the returned event is set: a disk that takes its time."""
    released = threading.Event()
    real_fsync = os.fsync

    def slow_fsync(fd):
        assert released.wait(timeout=60), "the test never released the disk"
        real_fsync(fd)

    monkeypatch.setattr(files.os, "fsync", slow_fsync)
    return released


def test_with_a_writer_the_caller_returns_before_the_flush_and_the_file_appears_after(tmp_path, blocked_disk):
    target = tmp_path / "state.json"
    with BackgroundWriter() as writer:
        write_json_atomically({"epoch": 1}, target, writer)
        # The caller is back while the disk still holds the flush: only the temporary exists.
        assert not target.exists()
        assert len(list(tmp_path.glob(TEMP_GLOB))) == 1
        blocked_disk.set()
    assert json.loads(target.read_text()) == {"epoch": 1}
    assert list(tmp_path.glob(TEMP_GLOB)) == []


def test_two_writes_of_one_file_in_flight_end_with_the_second(tmp_path, blocked_disk):
    target = tmp_path / "elapsed.json"
    with BackgroundWriter() as writer:
        write_json_atomically({"elapsed_s": 1}, target, writer)
        write_json_atomically({"elapsed_s": 2}, target, writer)
        blocked_disk.set()
    assert json.loads(target.read_text()) == {"elapsed_s": 2}
    assert list(tmp_path.glob(TEMP_GLOB)) == []


def test_jobs_run_one_at_a_time_in_the_order_given():
    done, running = [], []

    def job(i):
        def run():
            running.append(i)
            assert len(running) == 1
            time.sleep(0.001)
            done.append(i)
            running.remove(i)

        return run

    with BackgroundWriter() as writer:
        for i in range(40):
            writer.submit(job(i))
    assert done == list(range(40))


def test_a_failed_job_drops_the_later_ones_and_is_raised_in_the_callers_thread(tmp_path, monkeypatch):
    def full_disk(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", full_disk)
    later = []
    writer = BackgroundWriter()
    atomic_write(tmp_path / "model.keras", lambda tmp: tmp.write_bytes(b"weights"), writer=writer)
    writer.submit(lambda: later.append("committed"))  # e.g. the commit that names that checkpoint
    with pytest.raises(IdenprofError, match=r"^disk full while saving .*model.keras; free some space"):
        writer.drain()
    assert later == []  # nothing after the failure ran
    assert list(tmp_path.iterdir()) == []  # neither the file nor its temporary
    writer.submit(lambda: later.append("after"))  # the error was reported once; the queue stays stopped
    writer.close()
    assert later == []


def test_leaving_the_block_with_an_error_finishes_the_queue_and_keeps_that_error(tmp_path):
    target = tmp_path / "a.json"
    with pytest.raises(KeyError), BackgroundWriter() as writer:
        write_json_atomically({"a": 1}, target, writer)
        raise KeyError("training stopped")
    assert json.loads(target.read_text()) == {"a": 1}


def small_model():
    import keras

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    model.optimizer.build(model.trainable_variables)
    return model


def test_an_epochs_checkpoint_and_commit_wait_for_the_disk_in_order(tmp_path, blocked_disk):
    """At an epoch's end the callbacks return at once on a slow disk; the checkpoint is published
    before the commit that follows it, and the superseded best goes only after that commit."""
    run = RunFolder(tmp_path)
    model = small_model()
    with BackgroundWriter() as writer:
        best = CheckpointKeeper(tmp_path, save_h5=False, writer=writer)
        state = ResumeState(run, time.monotonic(), writer)
        for callback in (best, state):
            callback.set_model(model)
        blocked_disk.set()
        best.on_epoch_end(0, {"val_accuracy": 0.4})
        state.on_epoch_end(0)
        writer.drain()
        blocked_disk.clear()
        best.on_epoch_begin(1)
        best.on_epoch_end(1, {"val_accuracy": 0.6})
        state.on_epoch_end(1)
        # Epoch 2 is written but not yet flushed: what is on disk is still epoch 1, consistent.
        assert json.loads(run.resume_state_path.read_text())["epoch"] == 1
        assert [c.path.name for c in run.checkpoints(".keras")] == ["model-e001-val0.4000.keras"]
        best.on_epoch_begin(2)  # queues the removal of epoch 1's checkpoint behind epoch 2's commit
        assert (tmp_path / "model-e001-val0.4000.keras").exists()
        blocked_disk.set()
    assert json.loads(run.resume_state_path.read_text()) == {"epoch": 2, "weights": "epoch-0002.weights.h5"}
    assert [c.path.name for c in run.checkpoints(".keras")] == ["model-e002-val0.6000.keras"]
    assert sorted(p.name for p in run.backup_dir.iterdir()) == ["epoch-0002.weights.h5", "resume.json"]


def test_training_end_waits_for_the_queue_before_recording_training_done(tmp_path, blocked_disk):
    run = RunFolder(tmp_path)
    writer = BackgroundWriter()
    state = ResumeState(run, time.monotonic(), writer)
    state.set_model(small_model())
    state.on_epoch_end(0)
    threading.Timer(0.2, blocked_disk.set).start()
    state.on_train_end()
    assert json.loads(run.training_done_path.read_text())["epochs"] == 1
    assert not run.backup_dir.exists()
    writer.close()


def test_the_disk_full_message_never_shows_two_equal_sizes():
    from idenprof.files import distinct_mib

    assert distinct_mib(9 * 2**20 + 300_000, 9 * 2**20 + 100_000) == ("9.3", "9.1")
    assert distinct_mib(40 * 2**20, 3 * 2**20) == ("40", "3")
