"""Learning-rate schedules at their boundaries, and the optimizers' Keras 3 arguments."""

import json

import keras
import numpy as np
import pytest

from idenprof.config import resolve_config
from idenprof.train.callbacks import TimeBudget
from idenprof.train.recipe import budget_cosine_lr, make_learning_rate, make_optimizer

STEPS = 10  # steps per epoch


def lr_at(schedule, step):
    return float(schedule(np.int64(step)))


def test_step_schedule_divides_by_ten_after_each_boundary_epoch():
    schedule = make_learning_rate(resolve_config(None, {}), STEPS)
    # Epoch e (0-based) runs optimizer steps e*STEPS .. e*STEPS+STEPS-1.
    assert lr_at(schedule, 0) == pytest.approx(1e-3)
    assert lr_at(schedule, 80 * STEPS - 1) == pytest.approx(1e-3)  # last step of epoch 80 (1-based)
    assert lr_at(schedule, 80 * STEPS) == pytest.approx(1e-4)  # first step of epoch 81
    assert lr_at(schedule, 120 * STEPS - 1) == pytest.approx(1e-4)
    assert lr_at(schedule, 120 * STEPS) == pytest.approx(1e-5)
    assert lr_at(schedule, 160 * STEPS) == pytest.approx(1e-6)
    assert lr_at(schedule, 180 * STEPS) == pytest.approx(1e-7)
    assert lr_at(schedule, 199 * STEPS) == pytest.approx(1e-7)


def test_step_schedule_flags():
    c = resolve_config(None, {"lr": 0.1, "lr_boundaries": [2, 5], "lr_decay_factor": 0.5})
    schedule = make_learning_rate(c, STEPS)
    assert [lr_at(schedule, s) for s in (19, 20, 49, 50)] == pytest.approx([0.1, 0.05, 0.05, 0.025])


def test_cosine_schedule_warms_up_then_decays_to_zero_at_the_last_step():
    c = resolve_config(None, {"schedule": "cosine", "lr": 2e-3, "warmup_epochs": 2, "epochs": 10})
    schedule = make_learning_rate(c, STEPS)
    assert lr_at(schedule, 0) == pytest.approx(0.0, abs=1e-9)
    assert lr_at(schedule, 10) == pytest.approx(1e-3, rel=1e-3)  # halfway through warm-up
    assert lr_at(schedule, 20) == pytest.approx(2e-3, rel=1e-3)  # peak
    assert lr_at(schedule, 60) == pytest.approx(1e-3, rel=1e-2)  # halfway through the decay
    assert lr_at(schedule, 100) == pytest.approx(0.0, abs=1e-7)


def test_optimizers_take_learning_rate_and_decoupled_weight_decay():
    adam = make_optimizer(resolve_config(None, {}), 1e-3)
    assert isinstance(adam, keras.optimizers.Adam)
    adamw = make_optimizer(resolve_config(None, {"optimizer": "adamw", "weight_decay": 0.05}), 1e-3)
    assert isinstance(adamw, keras.optimizers.AdamW) and adamw.weight_decay == pytest.approx(0.05)
    sgd = make_optimizer(resolve_config(None, {"optimizer": "sgd", "momentum": 0.8}), 0.1)
    assert isinstance(sgd, keras.optimizers.SGD) and sgd.nesterov and sgd.momentum == pytest.approx(0.8)


def test_budget_cosine_warms_up_by_step_and_decays_with_the_clock():
    assert budget_cosine_lr(1.0, step=0, warmup_steps=4, progress=0.0) == pytest.approx(0.25)
    assert budget_cosine_lr(1.0, step=3, warmup_steps=4, progress=0.0) == pytest.approx(1.0)
    assert budget_cosine_lr(1.0, step=100, warmup_steps=4, progress=0.5) == pytest.approx(0.5)
    assert budget_cosine_lr(2.0, step=100, warmup_steps=0, progress=1.0) == pytest.approx(0.0)
    assert budget_cosine_lr(2.0, step=100, warmup_steps=0, progress=1.7) == pytest.approx(0.0)


class FakeClock:
    """Seconds that pass only when a test callback says so."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class Tick(keras.callbacks.Callback):
    """Advance the fake clock by one second at the end of each batch (list it first)."""

    def __init__(self, clock):
        super().__init__()
        self.clock = clock

    def on_train_batch_end(self, batch, logs=None):
        self.clock.now += 1.0


def tiny_regression_model():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1), loss="mse")
    return model


def fit_with_budget(model, budget, clock, budget_s, epochs=10):
    seen = []

    class RecordRate(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            seen.append(float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))

    x = np.random.default_rng(0).normal(size=(64, 2)).astype("float32")
    y = x.sum(axis=1, keepdims=True)
    history = model.fit(x, y, batch_size=8, epochs=epochs, verbose=0, validation_data=(x[:8], y[:8]),
                        callbacks=[Tick(clock), budget, RecordRate()])
    return history, seen


def test_time_budget_stops_mid_epoch_when_spent_and_drives_the_rate(tmp_path):
    clock, model = FakeClock(), tiny_regression_model()
    state = tmp_path / "time_budget.json"
    budget = TimeBudget(20.0, start_time=0.0, state_path=state, peak_lr=0.1, warmup_steps=2, clock=clock)
    history, rates = fit_with_budget(model, budget, clock, 20.0)
    # 8 batches per epoch, one fake second each: the budget ends inside the third epoch.
    assert int(model.optimizer.iterations) == 20 and len(history.history["loss"]) == 3
    assert "val_loss" in history.history and len(history.history["val_loss"]) == 3
    assert rates[0] == pytest.approx(0.05)  # warm-up step 1 of 2
    assert rates[10] == pytest.approx(budget_cosine_lr(0.1, 10, 2, 10 / 20))
    assert rates[-1] < rates[10] < rates[1]
    assert json.loads(state.read_text())["elapsed_s"] == pytest.approx(20.0)


def test_time_budget_resumes_the_time_already_spent(tmp_path):
    state = tmp_path / "time_budget.json"
    state.write_text(json.dumps({"elapsed_s": 15.0}))
    clock, model = FakeClock(), tiny_regression_model()
    budget = TimeBudget(20.0, start_time=0.0, state_path=state, clock=clock)
    fit_with_budget(model, budget, clock, 20.0)
    assert int(model.optimizer.iterations) == 5
    assert model.optimizer.learning_rate.numpy() == pytest.approx(0.1)  # no peak_lr: rate untouched


def test_time_budget_keeps_the_longest_validation_in_reserve(tmp_path):
    clock, model = FakeClock(), tiny_regression_model()
    budget = TimeBudget(20.0, start_time=0.0, state_path=tmp_path / "t.json", clock=clock)

    class SlowValidation(keras.callbacks.Callback):
        def on_test_end(self, logs=None):
            clock.now += 4.0

    x = np.ones((64, 2), "float32")
    model.fit(x, x[:, :1], batch_size=8, epochs=10, verbose=0, validation_data=(x[:8], x[:8, :1]),
              callbacks=[Tick(clock), SlowValidation(), budget])
    # Epoch 1: 8 batches + 4 s validation = 12 s; then 16 s of budget are left for training
    # (20 less the 4 s reserve), so 4 more batches run.
    assert int(model.optimizer.iterations) == 12
