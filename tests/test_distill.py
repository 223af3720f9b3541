"""Knowledge distillation (idenprof.train.distill): a teacher's probabilities mixed into the labels,
carried image by image through the training batches."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from train_helpers import TINY, run_train

from idenprof.config import resolve_config
from idenprof.data.augment import AugmentConfig
from idenprof.data.batches import make_dataset
from idenprof.data.dataset import scan_dataset
from idenprof.data.decoded import DecodedImages
from idenprof.errors import ConfigError
from idenprof.predict.loaders import load_predictor
from idenprof.train.distill import teacher_targets


def numbered_images(count: int, side: int = 8) -> DecodedImages:
    """Image i is filled with the value i: an image names itself inside a shuffled batch."""
    images = np.repeat(np.arange(count, dtype=np.uint8), side * side * 3).reshape(count, side, side, 3)
    return DecodedImages(images, np.arange(count, dtype=np.int32) % 3, [f"{i}.jpg" for i in range(count)], [])


@pytest.mark.parametrize("training", [False, True])
def test_each_image_carries_its_own_target_through_shuffled_and_augmented_batches(training):
    decoded = numbered_images(12)
    targets = np.random.default_rng(0).dirichlet(np.ones(3), size=12).astype(np.float32)
    batches = make_dataset(decoded, 3, batch_size=4, training=training, seed=1, targets=targets,
                           augment=AugmentConfig(flip=True) if training else None)
    seen = []
    for images, labels in batches:
        index = images.numpy()[:, 0, 0, 0].astype(int)
        np.testing.assert_allclose(labels.numpy(), targets[index], rtol=1e-6)
        seen.extend(index.tolist())
    assert sorted(seen) == list(range(12))
    if training:
        assert seen != list(range(12))  # shuffled, and still matched


def test_teacher_targets_mix_the_teacher_probabilities_into_the_labels(small_dataset, export_dir):
    layout = scan_dataset(small_dataset)
    samples = layout.samples["train"][::4]
    train_data = layout.decode(samples, 32, progress=False)
    config = resolve_config(None, {"teacher": str(export_dir / "model.tflite"), "teacher_weight": 0.3,
                                   "image_size": 32, "progress": False, "data_dir": str(small_dataset)})
    logged = []
    targets = teacher_targets(config, layout, train_data, logged.append)
    teacher = load_predictor(export_dir / "model.tflite").predict(train_data.images)
    one_hot = np.eye(10)[train_data.labels]
    np.testing.assert_allclose(targets, 0.7 * one_hot + 0.3 * teacher, atol=1e-6)
    np.testing.assert_allclose(targets.sum(axis=1), 1.0, atol=1e-5)
    assert "agrees with" in logged[0] and "0.7 x label + 0.3 x teacher" in logged[0]


def test_a_teacher_of_other_classes_is_refused(small_dataset, export_dir, tmp_path):
    for name in ("model.tflite", "class_index.json"):
        shutil.copy(export_dir / name, tmp_path / name)
    names = json.loads((tmp_path / "class_index.json").read_text())
    names["0"] = "astronaut"
    (tmp_path / "class_index.json").write_text(json.dumps(names))
    layout = scan_dataset(small_dataset)
    train_data = layout.decode(layout.samples["train"][:5], 32, progress=False)
    config = resolve_config(None, {"teacher": str(tmp_path / "model.tflite"), "progress": False,
                                   "data_dir": str(small_dataset)})
    with pytest.raises(ConfigError, match="astronaut"):
        teacher_targets(config, layout, train_data, print)


def test_train_py_distils_from_a_teacher_and_records_it(small_dataset, export_dir, tmp_path):
    run_dir = tmp_path / "run"
    result = run_train(["--data-dir", small_dataset, *TINY, "--epochs", "1", "--run-dir", run_dir,
                        "--teacher", export_dir / "model.tflite", "--teacher-weight", "0.5"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "agrees with" in result.stdout and "0.5 x teacher" in result.stdout
    saved = json.loads((run_dir / "config.json").read_text())["config"]
    assert saved["teacher"] == str(export_dir / "model.tflite") and saved["teacher_weight"] == 0.5
    bad = run_train(["--data-dir", small_dataset, *TINY, "--run-dir", tmp_path / "bad",
                     "--teacher", tmp_path / "missing.keras"])
    assert bad.returncode == 2 and "missing.keras" in bad.stderr and "Traceback" not in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and not (tmp_path / "bad").exists()
