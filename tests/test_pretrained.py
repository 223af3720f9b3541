"""The model shipped inside the package (idenprof/pretrained/, written by idenprof.ship.packaging):
small enough to ship, complete, calibrated, and loadable with the standard APIs alone."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from test_export import CLASS_NAMES

from idenprof.class_index import read_class_index
from idenprof.data.imaging import load_image_rgb
from idenprof.predict.loaders import load_predictor
from idenprof.predict.model_finding import PRETRAINED_DIR, PRETRAINED_MODEL
from idenprof.ship.packaging import SIZE_LIMIT_BYTES

SHIPPED = ["model.keras", "model.int8.tflite", "class_index.json", "calibration.json", "MODEL_CARD.md",
           "test_report.json", "confusion_matrix.png", "reliability_diagram.png", "calibration_holdout.png"]


def test_the_folder_is_at_most_15_mb():
    """The int8 LiteRT model and a deflated .keras keep it well under packaging's 25 MB limit."""
    size = sum(p.stat().st_size for p in PRETRAINED_DIR.rglob("*") if p.is_file())
    assert size <= 15_000_000 < SIZE_LIMIT_BYTES == 25_000_000
    assert (PRETRAINED_DIR / "model.int8.tflite").stat().st_size <= 4_000_000


def test_the_folder_has_the_model_its_calibration_and_its_card():
    for name in SHIPPED:
        assert (PRETRAINED_DIR / name).is_file(), name
    assert read_class_index(PRETRAINED_DIR / "class_index.json") == CLASS_NAMES
    calibration = json.loads((PRETRAINED_DIR / "calibration.json").read_text())
    assert calibration["temperature"] > 0 and 0 < calibration["min_confidence"] <= 1
    assert calibration["holdout_images"] == 900  # the run's 10% hold-out of IdenProf's 9,000
    report = json.loads((PRETRAINED_DIR / "test_report.json").read_text())
    assert report["images"] == 2000 and report["subsets"]["without_train_duplicates"]["images"] == 1956


LOAD_WITHOUT_THE_PROJECT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import keras
    from ai_edge_litert.interpreter import Interpreter

    folder, pixels_path = sys.argv[1:]
    pixels = np.load(pixels_path)
    model = keras.models.load_model(f"{folder}/model.keras")
    runner = Interpreter(model_path=f"{folder}/model.int8.tflite").get_signature_runner()
    print(json.dumps({
        "head": [layer.name for layer in model.layers[-3:]],
        "scale": float(model.get_layer("temperature").scale),
        "keras": np.asarray(model(pixels)).tolist(),
        "tflite": runner(pixels=pixels)["probabilities"].tolist(),
        "project_modules": sorted(m for m in sys.modules if m.split(".")[0] in ("idenprof", "models")),
    }))
    """
)


@pytest.fixture(scope="module")
def fresh_process(small_dataset, tmp_path_factory):
    """The shipped models run in a new Python that never imports this project, on real photos."""
    predictor = load_predictor(PRETRAINED_MODEL)
    photos = [sorted((small_dataset / "test" / name).glob("*.jpg"))[0] for name in CLASS_NAMES]
    pixels = np.stack([load_image_rgb(p, size=predictor.image_size) for p in photos]).astype(np.float32)
    scratch = tmp_path_factory.mktemp("fresh")
    np.save(scratch / "pixels.npy", pixels)
    done = subprocess.run([sys.executable, "-c", LOAD_WITHOUT_THE_PROJECT, str(PRETRAINED_DIR),
                           str(scratch / "pixels.npy")], cwd=scratch, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1]), predictor.predict(pixels)


def test_keras_model_loads_without_custom_objects_and_carries_the_temperature(fresh_process):
    result, _ = fresh_process
    assert result["project_modules"] == []
    # The logits, tempered by the Mahalanobis distance ("none of these", idenprof.predict.ood_head), then / T.
    assert result["head"] == ["none_tempered", "temperature", "probabilities"]
    temperature = json.loads((PRETRAINED_DIR / "calibration.json").read_text())["temperature"]
    assert 1 / result["scale"] == pytest.approx(temperature, rel=1e-6)


def test_int8_litert_and_keras_agree_and_give_probabilities(fresh_process):
    result, ours = fresh_process
    keras_probs, tflite_probs = np.array(result["keras"]), np.array(result["tflite"])
    np.testing.assert_allclose(keras_probs.sum(axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(tflite_probs.sum(axis=1), 1, atol=1e-5)  # the head computes in float32
    # int8 rounding inside the network moves probabilities, by up to about 0.25 on the test split,
    # and rarely the answer (about 2% of test photos; docs/BENCHMARKS.md).
    np.testing.assert_allclose(tflite_probs, keras_probs, atol=0.3)
    assert (tflite_probs.argmax(axis=1) == keras_probs.argmax(axis=1)).sum() >= 9
    np.testing.assert_allclose(ours, tflite_probs, atol=1e-6)  # infer.py's path: the same model


def test_the_int8_model_has_thresholds_of_its_own():
    from idenprof.predict.calibration import calibration_beside

    calibration = json.loads((PRETRAINED_DIR / "calibration.json").read_text())
    own = calibration["models"]["model.int8.tflite"]
    assert calibration_beside(PRETRAINED_MODEL)["none_threshold"] == own["none_threshold"]
    assert calibration_beside(PRETRAINED_DIR / "model.keras")["none_threshold"] == calibration["none_threshold"]
    assert own["none_threshold"] != calibration["none_threshold"]
    assert own["conformal"]["scores"] != calibration["conformal"]["scores"]
