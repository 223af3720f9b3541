"""The GPU configuration (float16 with loss scaling, XLA, several replicas), forced on the CPU."""

from __future__ import annotations

import json
import subprocess
import sys

import keras
import numpy as np
import pytest
from train_helpers import TINY, kill_during_epoch, metrics_rows, run_train

from idenprof.config import resolve_config
from idenprof.train.runtime import Environment, plan_runtime
from idenprof.train.training import build_network, compile_model

FRESH_PROCESS_PREDICT = r"""
import json, sys
import numpy as np, keras
model = keras.models.load_model(sys.argv[1])
images = np.load(sys.argv[2])
probs = model.predict(images, verbose=0)
assert not any(m.split(".")[0] in ("idenprof", "models") for m in sys.modules), "project imported"
np.save(sys.argv[3], probs)
print(json.dumps({"dtype": str(probs.dtype)}))
"""


def test_float16_wraps_the_optimizer_for_loss_scaling_and_keeps_a_float32_softmax():
    config = resolve_config(None, {"model": "resnet18", "image_size": 32, "stem": "small", "width": 0.25,
                                   "precision": "float16"})
    plan = plan_runtime(Environment(), precision="float16", xla="off", batch_size=config.batch_size)
    model = compile_model(config, plan, num_classes=10, steps_per_epoch=10)
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert model.get_layer("conv1_conv").compute_dtype == "float16"
    assert model.output.dtype == "float32"
    # The precision is scoped to the training model: what is built next is float32, nothing to undo.
    assert keras.mixed_precision.global_policy().name == "float32"
    assert build_network(config, 10).get_layer("conv1_conv").compute_dtype == "float32"


def test_gpu_configuration_trains_and_exports_a_portable_model(small_dataset, tmp_path):
    run_dir = tmp_path / "run"
    result = run_train(["--data-dir", small_dataset, "--precision", "float16", "--xla", "on",
                        "--max-per-class", "4", "--image-size", "32", "--model", "resnet18",
                        "--width", "0.25", "--stem", "small", "--epochs", "1", "--batch-size", "8",
                        "--run-dir", run_dir, "--quiet"])
    assert result.returncode == 0, result.stderr[-3000:]
    runtime = json.loads((run_dir / "config.json").read_text())["runtime"]
    assert (runtime["precision"], runtime["dtype_policy"], runtime["xla"]) == ("float16", "mixed_float16", True)
    assert "precision float16" in result.stdout and "xla on" in result.stdout
    assert np.isfinite(float(metrics_rows(run_dir)[-1]["loss"]))

    [model_path] = run_dir.glob("model-e*.keras")
    images = np.stack([keras.utils.img_to_array(keras.utils.load_img(p, target_size=(32, 32)))
                       for p in sorted((small_dataset / "test" / "chef").glob("*.jpg"))])
    np.save(tmp_path / "images.npy", images)
    fresh = subprocess.run([sys.executable, "-c", FRESH_PROCESS_PREDICT, str(model_path),
                            str(tmp_path / "images.npy"), str(tmp_path / "probs.npy")],
                           capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    assert json.loads(fresh.stdout.strip().splitlines()[-1])["dtype"] == "float32"
    fresh_probs = np.load(tmp_path / "probs.npy")
    assert np.allclose(fresh_probs.sum(axis=1), 1.0, atol=1e-3)
    checkpoint = keras.models.load_model(model_path)
    # Checkpoints compute in float32 whatever the training precision, like the exports.
    assert all(layer.dtype_policy.compute_dtype == "float32" for layer in checkpoint.layers)
    ours = checkpoint.predict(images, verbose=0)
    assert np.array_equal(ours.argmax(axis=1), fresh_probs.argmax(axis=1))
    assert np.allclose(ours, fresh_probs, atol=1e-3)


def test_mirrored_strategy_over_two_cpu_devices_splits_the_batch_in_the_gpu_configuration(small_dataset, tmp_path):
    run_dir = tmp_path / "run"
    gpu_like = [a if a != "float32" else "float16" for a in TINY] + ["--xla", "on"]
    result = run_train(["--data-dir", small_dataset, *gpu_like, "--cpu-replicas", "2", "--epochs", "2",
                        "--lr", "2e-3", "--schedule", "constant", "--run-dir", run_dir])
    assert result.returncode == 0, result.stderr[-3000:]
    runtime = json.loads((run_dir / "config.json").read_text())["runtime"]
    assert (runtime["strategy"], runtime["replicas"], runtime["global_batch"], runtime["per_replica_batch"]) == (
        "mirrored", 2, 16, 8)
    # Keras does not compile with XLA under tf.distribute: the plan says so and trains without it.
    assert (runtime["precision"], runtime["xla"]) == ("float16", False)
    assert "note: XLA is off" in result.stdout
    assert all(np.isfinite(float(r["loss"])) for r in metrics_rows(run_dir))
    assert [float(r["learning_rate"]) for r in metrics_rows(run_dir)] == pytest.approx([2e-3, 2e-3])
    assert (run_dir / "metrics.json").is_file()


def test_mirrored_strategy_resumes_after_a_kill(small_dataset, tmp_path):
    run_dir = tmp_path / "run"
    args = ["--data-dir", small_dataset, *TINY, "--cpu-replicas", "2", "--epochs", "4", "--run-dir", run_dir]
    assert 1 <= kill_during_epoch(args, run_dir, finished_epochs=1) < 4
    result = run_train(args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [int(r["epoch"]) for r in metrics_rows(run_dir)] == [0, 1, 2, 3]
