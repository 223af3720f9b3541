"""MultiWorkerMirroredStrategy: two local worker processes on 127.0.0.1 train one model together."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import keras
import numpy as np
import pytest
from train_helpers import TINY, TRAIN_PY, metrics_rows, train_env

from idenprof.errors import ConfigError
from idenprof.train.multiworker import is_chief, worker_output_dir


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def test_two_workers_finish_with_the_same_weights(small_dataset, tmp_path):
    run_dir = tmp_path / "run"
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
    args = ["--data-dir", small_dataset, *TINY, "--epochs", "2", "--run-dir", run_dir]
    workers = [
        subprocess.Popen(
            [sys.executable, str(TRAIN_PY), *map(str, args)],
            env=train_env({"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})}),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for i in range(2)
    ]
    try:
        outputs = [w.communicate(timeout=600) for w in workers]
    finally:
        for w in workers:
            w.kill()
    for w, (_, err) in zip(workers, outputs, strict=True):
        assert w.returncode == 0, err[-3000:]
    chief_out = outputs[0][0]
    assert "strategy multi_worker (2 replica(s), 2 worker(s))" in chief_out
    assert "global batch 16 = 8 per replica" in chief_out
    # The chief writes the run; the other worker only its own scratch folder inside it.
    assert (run_dir / "metrics.json").is_file() and (run_dir / "export" / "model.keras").is_file()
    assert not (run_dir / "workertemp_1" / "metrics.json").exists()
    assert [int(r["epoch"]) for r in metrics_rows(run_dir)] == [0, 1]
    # Both workers saved the same epochs, and each checkpoint holds the same weights.
    chief_models = sorted(p.name for p in run_dir.glob("model-e*.keras"))
    worker_models = sorted(p.name for p in (run_dir / "workertemp_1").glob("model-e*.keras"))
    assert chief_models == worker_models and chief_models
    chief = keras.models.load_model(run_dir / chief_models[-1], compile=False)
    worker = keras.models.load_model(run_dir / "workertemp_1" / worker_models[-1], compile=False)
    for a, b in zip(chief.get_weights(), worker.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    # Training changed the weights (a model that never stepped would also agree).
    initial = keras.models.clone_model(chief)
    assert any(not np.array_equal(a, b) for a, b in zip(chief.get_weights(), initial.get_weights(), strict=True))


def test_chief_is_the_chief_task_else_worker_zero():
    workers = {"cluster": {"worker": ["a:1", "b:2"]}}
    assert is_chief(None)
    assert is_chief({**workers, "task": {"type": "worker", "index": 0}})
    assert not is_chief({**workers, "task": {"type": "worker", "index": 1}})
    with_chief = {"cluster": {"chief": ["c:0"], "worker": ["a:1"]}}
    assert is_chief({**with_chief, "task": {"type": "chief", "index": 0}})
    assert not is_chief({**with_chief, "task": {"type": "worker", "index": 0}})


def test_other_workers_write_into_their_own_folder(tmp_path):
    tf_config = {"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}}
    assert worker_output_dir(tmp_path, tf_config) == tmp_path / "workertemp_1"
    assert worker_output_dir(tmp_path, None) == tmp_path


def test_a_cluster_without_a_task_is_a_config_error():
    with pytest.raises(ConfigError, match="task"):
        is_chief({"cluster": {"worker": ["a:1", "b:2"]}})


def test_a_keras_outside_the_patched_range_is_refused_with_the_range(monkeypatch):
    from idenprof.train.multiworker import PATCHED_KERAS, check_patchable_keras

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    check_patchable_keras(model)  # the installed Keras is the tested one
    low, high = PATCHED_KERAS
    monkeypatch.setattr(keras, "__version__", f"{high[0]}.{high[1] + 1}.0")
    with pytest.raises(ConfigError, match=rf"tested with Keras {low[0]}\.{low[1]} to {high[0]}\.{high[1]}"):
        check_patchable_keras(model)


def test_requirements_pin_the_patched_keras_range():
    from archive_subsets import REPO_ROOT

    from idenprof.train.multiworker import PATCHED_KERAS

    low, high = PATCHED_KERAS
    pins = (REPO_ROOT / "requirements.txt").read_text().split()
    assert f"keras>={low[0]}.{low[1]},<{high[0]}.{high[1] + 1}" in pins
