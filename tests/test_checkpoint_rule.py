"""The checkpoint-rule study: --record-validation's per-epoch record and bench/checkpoint_rule.py."""

from __future__ import annotations

import sys

import keras
import numpy as np
import pytest

from idenprof.config import resolve_config
from idenprof.data.decoded import DecodedImages
from idenprof.run_folder import RunFolder
from idenprof.train.resume import discard_uncommitted
from idenprof.train.runtime import Environment, plan_runtime
from idenprof.train.training import compile_model, make_callbacks

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1] / "bench"))
import checkpoint_rule  # noqa: E402

TINY_NET = {"model": "resnet18", "image_size": 32, "stem": "small", "width": 0.25, "precision": "float32",
            "batch_size": 8, "progress": False, "optimizer": "sgd", "lr": 0.05, "schedule": "constant"}


def images_and_labels(seed, n=24, classes=3):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8), rng.integers(0, classes, size=n)


def test_the_record_holds_each_epochs_validation_as_the_checkpoint_would_predict_it(tmp_path):
    config = resolve_config(None, {**TINY_NET, "record_validation": True, "ema_momentum": 0.5})
    plan = plan_runtime(Environment(), precision="float32", xla="off", batch_size=config.batch_size)
    model = compile_model(config, plan, num_classes=3, steps_per_epoch=3)
    run = RunFolder(tmp_path)
    (x, y), (xv, yv) = images_and_labels(0), images_and_labels(1)
    val = DecodedImages(images=xv, labels=yv, paths=[f"v{i}.jpg" for i in range(len(yv))], skipped=[])
    callbacks = make_callbacks(config, run, 3, 3, 0.0, None, log=lambda *a: None, val_data=val)
    history = model.fit(x.astype("float32"), keras.utils.to_categorical(y, 3),
                        validation_data=(xv.astype("float32"), keras.utils.to_categorical(yv, 3)),
                        epochs=3, batch_size=8, verbose=0, callbacks=callbacks[:-1])  # no resume state

    recorded = run.recorded_validation()
    assert list(recorded) == [1, 2, 3]
    np.testing.assert_array_equal(np.load(run.validation_dir / "labels.npy"), yv)
    for epoch, path in recorded.items():
        probs = np.load(path)
        assert probs.shape == (24, 3) and probs.dtype == np.float16
        # The record's accuracy is the validation accuracy Keras logged (the averaged weights).
        assert np.mean(probs.argmax(axis=1) == yv) == pytest.approx(history.history["val_accuracy"][epoch - 1])
    [checkpoint] = run.checkpoints()
    saved = keras.models.load_model(checkpoint.path, compile=False)
    np.testing.assert_allclose(np.load(recorded[checkpoint.epoch]), saved.predict(xv, verbose=0), atol=2e-3)


def test_the_record_predicts_without_a_tf_data_iterator(tmp_path, monkeypatch):
    """An iterator per record is one more teardown per epoch, which waited at 0% CPU in training."""
    from keras.src.backend.tensorflow.trainer import TFEpochIterator

    from idenprof.train.callbacks import ValidationRecord

    model = compile_model(resolve_config(None, TINY_NET), plan_runtime(Environment(), precision="float32", xla="off",
                                                                       batch_size=8), num_classes=3, steps_per_epoch=3)
    xv, yv = images_and_labels(1, n=21)  # two batches of 8 and one of 5
    expected = model.predict(xv, batch_size=8, verbose=0)
    made = []
    original = TFEpochIterator._get_iterator
    monkeypatch.setattr(TFEpochIterator, "_get_iterator", lambda self: made.append(1) or original(self))
    record = ValidationRecord(RunFolder(tmp_path), xv, yv, to_saved=lambda m: m, batch_size=8)
    record.set_model(model)
    record.on_epoch_end(0)
    assert made == []
    np.testing.assert_allclose(np.load(RunFolder(tmp_path).validation_path(1)), expected, atol=1e-3)


def test_a_resumed_run_drops_the_record_of_an_uncommitted_epoch(tmp_path):
    run = RunFolder(tmp_path)
    run.validation_dir.mkdir()
    for epoch in (1, 2, 3):
        np.save(run.validation_path(epoch), np.zeros((2, 3), np.float16))
    run.backup_dir.mkdir()
    (run.resume_state_path).write_text('{"epoch": 2, "weights": "epoch-0002.weights.h5"}')
    assert discard_uncommitted(run) == 2
    assert list(run.recorded_validation()) == [1, 2]


def fake_run(folder, accuracies_per_epoch, labels):
    """A run folder whose record has, at each epoch, exactly the given images right."""
    run = RunFolder(folder)
    run.validation_dir.mkdir(parents=True)
    np.save(run.validation_dir / "labels.npy", labels)
    for epoch, right in enumerate(accuracies_per_epoch, start=1):
        probs = np.zeros((len(labels), 3), np.float16)
        probs[np.arange(len(labels)), np.where(right, labels, (labels + 1) % 3)] = 1
        np.save(run.validation_path(epoch), probs)
    return folder


def simulated_record(rng, true_accuracies, labels):
    """Probabilities [E, N, 3] of epochs that get each image right with their true accuracy, at random."""
    probs = np.zeros((len(true_accuracies), len(labels), 3), np.float32)
    for epoch, p in enumerate(true_accuracies):
        right = rng.random(len(labels)) < p
        probs[epoch, np.arange(len(labels)), np.where(right, labels, (labels + 1) % 3)] = 1
    return probs


def test_scoring_on_the_unseen_half_is_unbiased_where_the_best_epochs_own_accuracy_is_not():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 100)
    pickers = checkpoint_rule.rule_pickers()
    seen, scored, last = [], [], []
    for _ in range(60):  # 60 hold-outs of 300 images; 8 epochs, all truly 70% right
        probs = simulated_record(rng, [0.7] * 8, labels)
        accuracy = (probs.argmax(-1) == labels).mean(axis=1)
        seen.append(accuracy[pickers["best"](accuracy)])
        scores = checkpoint_rule.split_half_scores(probs, labels, pickers, splits=10)
        scored.append(scores["best"].mean())
        last.append(scores["last"].mean())
    assert np.mean(seen) > 0.725  # the best epoch's own accuracy: lucky by about 1.5 standard errors
    assert np.mean(scored) == pytest.approx(0.7, abs=0.006)  # scored on unseen images: the truth
    assert np.mean(last) == pytest.approx(0.7, abs=0.006)


def test_a_real_gain_is_kept_by_every_rule_that_can_see_it():
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(3), 200)
    probs = simulated_record(rng, [0.5, 0.6, 0.8], labels)
    scores = checkpoint_rule.split_half_scores(probs, labels, checkpoint_rule.rule_pickers(), splits=50)
    right_last = (probs[-1].argmax(-1) == labels).mean()
    for rule in ("best", "last", "best-of-last-3"):
        assert scores[rule].mean() == pytest.approx(right_last, abs=0.005)


def test_the_rules_pick_the_epochs_they_name():
    pickers = checkpoint_rule.rule_pickers()
    accuracy = np.array([0.9, 0.5, 0.7, 0.7, 0.6, 0.65])
    assert [pickers[r](accuracy) for r in ("best", "last", "best-of-last-3", "best-of-last-5")] == [0, 5, 3, 2]


def test_the_table_compares_rules_per_run_and_on_average(tmp_path, capsys):
    labels = np.repeat(np.arange(3), 10)
    rng = np.random.default_rng(1)
    runs = [fake_run(tmp_path / f"r{i}", [rng.random(30) < p for p in (0.4, 0.8, 0.6)], labels) for i in range(2)]
    assert checkpoint_rule.main([*map(str, runs), "--splits", "20"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("| run | epochs | hold-out images | best | last | best-of-last-3")
    assert "| r0 | 3 | 30 |" in out and "| mean of 2 runs |" in out


def test_a_run_without_a_record_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    assert checkpoint_rule.main([str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'run'} has no validation record; " \
                                              "train it with --record-validation"
