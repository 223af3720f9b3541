"""The Python API, idenprof.load() and Classifier: every kind of input gives the pixels
infer.py uses, lists give lists, the confidence threshold, heat maps, and the README example."""

from __future__ import annotations

import ast
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from archive_subsets import REPO_ROOT
from PIL import Image
from serve_helpers import export_tiny_model
from test_export import CLASS_NAMES, one_test_image_per_class

from idenprof.data.imaging import ImageError
from idenprof.errors import ConfigError, ModelFileError
from idenprof.predict.classifier import Classifier, load
from idenprof.predict.inference import predict_files
from idenprof.predict.loaders import load_predictor


@pytest.fixture(scope="module")
def tflite(tmp_path_factory) -> Path:
    return export_tiny_model(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def classifier(tflite) -> Classifier:
    return load(tflite)


@pytest.fixture(scope="module")
def photos(small_dataset) -> list[Path]:
    return one_test_image_per_class(small_dataset)


def run_python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def test_the_readme_example_runs_on_the_latest_run(tmp_path, tflite, photos):
    readme = (REPO_ROOT / "README.md").read_text()
    example = re.search(r"from your own program:\n\n```python\n(.*?)```", readme, re.S).group(1)
    assert example.startswith("import idenprof\nclassifier = idenprof.load()")
    run = tmp_path / "runs" / "cpu-32px-seed0"  # train.py's layout, finished
    run.mkdir(parents=True)
    shutil.copy(tflite.with_name("model.keras"), run / "model-e003-val0.5000.keras")
    shutil.copy(tflite.with_name("class_index.json"), run / "class_index.json")
    (run / "metrics.json").write_text("{}")
    shutil.copy(photos[8], tmp_path / "photo.jpg")
    done = run_python(example, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    printed = ast.literal_eval(done.stdout.strip())
    [expected], _ = predict_files(load_predictor(run / "model-e003-val0.5000.keras"), [photos[8]])
    assert printed == expected.predictions
    assert len(printed) == 5 and all(name in CLASS_NAMES for name, _ in printed)


def test_import_idenprof_and_a_litert_prediction_do_not_import_tensorflow(tmp_path, tflite, photos):
    done = run_python(
        "import sys, idenprof\n"
        "assert 'numpy' not in sys.modules and 'tensorflow' not in sys.modules\n"
        f"print(idenprof.load({str(tflite)!r}).predict({str(photos[0])!r})[0][0])\n"
        "print('tensorflow' in sys.modules, 'keras' in sys.modules)\n", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    name, imported = done.stdout.strip().splitlines()
    assert name in CLASS_NAMES and imported == "False False"


def test_paths_bytes_pil_images_and_arrays_give_the_same_answer_as_infer(classifier, photos):
    photo = photos[4]
    [expected], _ = predict_files(classifier.predictor, [photo])
    for image in (photo, str(photo), photo.read_bytes()):
        assert classifier.predict(image) == expected.predictions, type(image)
    # Decoded images skip the file's reduced-scale JPEG decoding, so they differ a little.
    pixels = np.asarray(Image.open(photo).convert("RGB"))
    decoded = classifier.predict(Image.open(photo))
    assert [p for _, p in decoded] == pytest.approx([p for _, p in expected.predictions], abs=0.02)
    for image in (pixels, pixels.astype(np.float32), pixels.astype(np.float64)):
        assert classifier.predict(image) == decoded, image.dtype


def test_a_list_gives_a_list_in_order_and_a_4d_array_is_a_batch(classifier, photos):
    singles = [classifier.predict(photo) for photo in photos[:3]]
    assert classifier.predict(photos[:3]) == singles
    assert classifier.predict(tuple(photos[:3])) == singles
    assert classifier.predict([]) == []
    batch = np.stack([classifier.pixels(photo) for photo in photos[:3]])
    assert classifier.predict(batch) == [classifier.predict(p) for p in batch]


def test_top_and_tta(classifier, photos):
    photo = photos[5]
    assert len(classifier.predict(photo, top=2)) == 2
    assert len(classifier.predict(photo, top=99)) == len(CLASS_NAMES)
    pixels = classifier.pixels(photo)  # [S, S, 3]: predicted as they are, no resize
    plain = dict(classifier.predict(photo, top=99))
    flipped = dict(classifier.predict(np.ascontiguousarray(pixels[:, ::-1]), top=99))
    averaged = dict(classifier.predict(photo, top=99, tta=True))
    for name in CLASS_NAMES:
        assert averaged[name] == pytest.approx((plain[name] + flipped[name]) / 2, abs=1e-3)
    with pytest.raises(ConfigError, match="top must be a whole number at least 1"):
        classifier.predict(photo, top=0)


def test_bad_inputs_raise_errors_that_say_what_is_wrong(classifier, photos):
    with pytest.raises(ImageError, match="not an image file"):
        classifier.predict(b"plain text")
    with pytest.raises(ImageError, match=r"expected pixels \[H, W, 3\]"):
        classifier.predict(np.zeros((10, 10, 4), np.uint8))
    with pytest.raises(ImageError, match=r"0\.\.255"):
        classifier.predict(np.full((10, 10, 3), 300.0))
    with pytest.raises(TypeError, match="cannot predict a int"):
        classifier.predict(42)


def test_min_confidence_comes_from_calibration_json_and_marks_unsure_results(tmp_path, tflite,
                                                                             photos):
    folder = tmp_path / "model"
    shutil.copytree(tflite.parent, folder)
    assert load(folder / "model.tflite").min_confidence == 0.0
    (folder / "calibration.json").write_text(json.dumps({"min_confidence": 0.6}))
    calibrated = load(folder / "model.tflite")
    assert calibrated.min_confidence == 0.6
    result = calibrated.predict(photos[0])
    assert calibrated.is_unsure(result) == (result[0][1] < 0.6)
    assert calibrated.is_unsure([("chef", 0.59), ("doctor", 0.2)])
    assert not calibrated.is_unsure([("chef", 0.61), ("doctor", 0.2)])
    assert load(folder / "model.tflite", min_confidence=0.1).min_confidence == 0.1
    (folder / "calibration.json").write_text("{\"threshold\": 0.5}")  # no min_confidence
    assert load(folder / "model.tflite").min_confidence == 0.0
    with pytest.raises(ConfigError, match="probability 0..1"):
        load(tflite, min_confidence=1.5)


def test_heatmap_is_a_png_of_the_photo_from_the_keras_model_beside_the_tflite(classifier, photos,
                                                                              tmp_path):
    assert classifier.heatmap_model_path == classifier.model_path.with_name("model.keras")
    heat = classifier.heatmap(photos[6], "judge")
    image = Image.open(io.BytesIO(heat.png))
    assert heat.class_name == "judge" and image.format == "PNG"
    assert image.size == Image.open(photos[6]).size
    assert classifier.heatmap(photos[6]).class_name == classifier.predict(photos[6])[0][0]
    with pytest.raises(ConfigError, match="unknown class 'astronaut'"):
        classifier.heatmap(photos[6], "astronaut")
    shutil.copy(classifier.model_path, tmp_path / "model.tflite")
    shutil.copy(classifier.model_path.with_name("class_index.json"), tmp_path)
    alone = load(tmp_path / "model.tflite")
    assert alone.heatmap_model_path is None
    with pytest.raises(ModelFileError, match="heat maps need a Keras model"):
        alone.heatmap(photos[6])
