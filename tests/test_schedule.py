"""Learning-rate schedules at their boundaries, and the optimizers' Keras 3 arguments."""

import keras
import numpy as np
import pytest

from idenprof.config import resolve_config
from idenprof.training import make_learning_rate, make_optimizer

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
