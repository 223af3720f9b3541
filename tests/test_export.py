"""export_model: five deployment formats that load with the standard APIs alone and agree."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

from idenprof.class_index import read_class_index
from idenprof.data.imaging import load_image_rgb
from idenprof.errors import ConfigError
from idenprof.ship.export import export_model
from models import ResNet18

IMAGE_SIZE = 32
CLASS_NAMES = [
    "chef", "doctor", "engineer", "farmer", "firefighter",
    "judge", "mechanic", "pilot", "police", "waiter",
]


def tiny_model(seed: int = 7) -> keras.Model:
    """The project's ResNet-18 at 1/8 width on 32x32 photos: every layer kind a real model has
    (preprocessing, batch norm, residual adds, pooling, softmax head) in a few seconds."""
    keras.utils.set_random_seed(seed)
    return ResNet18(input_shape=(IMAGE_SIZE, IMAGE_SIZE, 3), classes=len(CLASS_NAMES), width=0.125)


def one_test_image_per_class(dataset_root: Path) -> list[Path]:
    return [sorted((dataset_root / "test" / name).glob("*.jpg"))[0] for name in CLASS_NAMES]


@pytest.fixture(scope="module")
def exported(tmp_path_factory, small_dataset):
    model = tiny_model()
    out_dir = tmp_path_factory.mktemp("export")
    paths = export_model(model, out_dir, CLASS_NAMES)
    images = one_test_image_per_class(small_dataset)
    pixels = np.stack([load_image_rgb(p, size=IMAGE_SIZE) for p in images]).astype(np.float32)
    expected = keras.ops.convert_to_numpy(model(pixels))
    return {"dir": out_dir, "paths": paths, "images": images, "pixels": pixels,
            "expected": expected}


def top5(probabilities: np.ndarray) -> list[list[int]]:
    return np.argsort(-probabilities, axis=1)[:, :5].tolist()


def test_writes_every_format_and_the_class_index_and_nothing_else(exported):
    out_dir = exported["dir"]
    assert sorted(p.name for p in out_dir.iterdir()) == [
        "class_index.json", "model.h5", "model.keras", "model.onnx", "model.tflite", "saved_model",
    ]
    assert (out_dir / "saved_model" / "saved_model.pb").is_file()
    assert read_class_index(out_dir / "class_index.json") == CLASS_NAMES
    assert set(exported["paths"]) == {"keras", "h5", "saved_model", "tflite", "onnx", "class_index"}


def test_the_reference_predictions_have_a_clear_top5(exported):
    # Precondition for comparing top-5 across formats: no near-ties (relative) in the top six.
    log_ordered = np.log(-np.sort(-exported["expected"], axis=1)[:, :6])
    assert -np.diff(log_ordered, axis=1).min() > 1e-3


FRESH_PROCESS_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import keras
    import onnxruntime
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    out_dir, pixels_path, files_path = sys.argv[1:]
    pixels = np.load(pixels_path)
    files = json.load(open(files_path))
    results = {}
    for name in ("model.keras", "model.h5"):
        model = keras.models.load_model(f"{out_dir}/{name}", compile=False)
        results[name] = np.asarray(model(pixels)).tolist()
    loaded = tf.saved_model.load(f"{out_dir}/saved_model")
    outputs = loaded.signatures["serving_default"](pixels=tf.constant(pixels))
    results["serving_default"] = outputs["probabilities"].numpy().tolist()
    results["serving_default_dtype"] = outputs["probabilities"].dtype.name
    for kind in ("photos", "pngs"):
        encoded = [open(p, "rb").read() for p in files[kind]]
        outputs = loaded.signatures["serving_bytes"](images=tf.constant(encoded))
        results[f"serving_bytes_{kind}"] = outputs["probabilities"].numpy().tolist()
    runner = Interpreter(model_path=f"{out_dir}/model.tflite").get_signature_runner()
    outputs = runner(pixels=pixels)
    results["tflite"] = outputs["probabilities"].tolist()
    results["tflite_dtype"] = str(outputs["probabilities"].dtype)
    session = onnxruntime.InferenceSession(f"{out_dir}/model.onnx", providers=["CPUExecutionProvider"])
    results["onnx_interface"] = [[(v.name, v.type, v.shape) for v in session.get_inputs()],
                                 [(v.name, v.type, v.shape) for v in session.get_outputs()]]
    outputs = session.run(["probabilities"], {"pixels": pixels})[0]
    results["onnx"] = outputs.tolist()
    results["onnx_dtype"] = str(outputs.dtype)
    results["project_modules"] = sorted(
        m for m in sys.modules if m.split(".")[0] in ("idenprof", "models"))
    print(json.dumps(results))
    """
)


@pytest.fixture(scope="module")
def fresh_process_results(exported, tmp_path_factory):
    """Every format loaded and run in a new Python that never imports this project (run from an
    empty folder so neither the repo nor the tests are on its path)."""
    scratch = tmp_path_factory.mktemp("fresh")
    pixels_path = scratch / "pixels.npy"
    np.save(pixels_path, exported["pixels"])
    # The exact model input as lossless S x S PNGs: serving_bytes must reproduce it exactly.
    pngs = [str(scratch / f"{i}.png") for i in range(len(exported["pixels"]))]
    for png, pixels in zip(pngs, exported["pixels"], strict=True):
        Image.fromarray(pixels.astype(np.uint8)).save(png)
    files_path = scratch / "files.json"
    files_path.write_text(json.dumps({"photos": list(map(str, exported["images"])), "pngs": pngs}))
    completed = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS_SCRIPT, str(exported["dir"]), str(pixels_path),
         str(files_path)],
        cwd=scratch, capture_output=True, text=True, timeout=300,
        env={"PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "2", "HOME": str(scratch)},
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_fresh_process_does_not_import_the_project(fresh_process_results):
    assert fresh_process_results["project_modules"] == []


@pytest.mark.parametrize("fmt", ["model.keras", "model.h5", "serving_default", "tflite", "onnx"])
def test_each_format_gives_the_same_top5_as_the_keras_model(fresh_process_results, exported, fmt):
    probabilities = np.array(fresh_process_results[fmt], dtype=np.float32)
    assert probabilities.shape == (len(CLASS_NAMES), len(CLASS_NAMES))
    np.testing.assert_allclose(probabilities, exported["expected"], atol=1e-5)
    assert top5(probabilities) == top5(exported["expected"])
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_saved_model_litert_and_onnx_outputs_are_float32(fresh_process_results):
    assert fresh_process_results["serving_default_dtype"] == "float32"
    assert fresh_process_results["tflite_dtype"] == "float32"
    assert fresh_process_results["onnx_dtype"] == "float32"


def test_onnx_has_the_serving_default_interface(fresh_process_results):
    inputs, outputs = fresh_process_results["onnx_interface"]
    assert inputs == [["pixels", "tensor(float)", ["N", IMAGE_SIZE, IMAGE_SIZE, 3]]]
    assert outputs == [["probabilities", "tensor(float)", ["N", len(CLASS_NAMES)]]]


def test_serving_bytes_decodes_encoded_images_to_the_same_input(fresh_process_results, exported):
    from_bytes = np.array(fresh_process_results["serving_bytes_pngs"], dtype=np.float32)
    np.testing.assert_allclose(from_bytes, exported["expected"], atol=1e-5)


def test_serving_bytes_resizes_photos_like_training(fresh_process_results, exported):
    # In-graph JPEG decode and antialiased bilinear resize vs Pillow's draft decode and
    # bilinear resize: a few grey levels apart, so close probabilities and the same top-1.
    from_bytes = np.array(fresh_process_results["serving_bytes_photos"], dtype=np.float32)
    np.testing.assert_allclose(from_bytes.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(from_bytes, exported["expected"], atol=0.05)
    assert from_bytes.argmax(axis=1).tolist() == exported["expected"].argmax(axis=1).tolist()


def test_reexport_replaces_existing_files_and_leaves_no_staging(tmp_path):
    export_model(tiny_model(seed=1), tmp_path, CLASS_NAMES, formats=("saved_model", "keras"))
    second = tiny_model(seed=2)
    export_model(second, tmp_path, CLASS_NAMES, formats=("saved_model", "keras"))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "class_index.json", "model.keras", "saved_model",
    ]
    reloaded = keras.models.load_model(tmp_path / "model.keras", compile=False)
    for saved, current in zip(reloaded.get_weights(), second.get_weights(), strict=True):
        np.testing.assert_array_equal(saved, current)


def test_mixed_precision_model_exports_float32_litert(tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = tiny_model()
    finally:
        keras.mixed_precision.set_global_policy("float32")
    export_model(model, tmp_path, CLASS_NAMES, formats=("tflite", "keras"))
    pixels = np.random.default_rng(0).uniform(0, 255, (3, IMAGE_SIZE, IMAGE_SIZE, 3))
    pixels = pixels.astype(np.float32)
    runner = Interpreter(model_path=str(tmp_path / "model.tflite")).get_signature_runner()
    probabilities = runner(pixels=pixels)["probabilities"]
    assert probabilities.dtype == np.float32
    # bfloat16 compute in the original vs float32 in the export: close, not identical.
    np.testing.assert_allclose(probabilities, keras.ops.convert_to_numpy(model(pixels)), atol=0.02)
    reloaded = keras.models.load_model(tmp_path / "model.keras", compile=False)
    assert {layer.dtype_policy.name for layer in reloaded.layers} == {"float32"}


def test_int8_litert_computes_in_int8_between_float32_pixels_and_probabilities(exported, tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    model = tiny_model()
    paths = export_model(model, tmp_path, CLASS_NAMES, formats=("tflite_int8",),
                         representative=exported["pixels"])
    assert paths["tflite_int8"].name == "model.int8.tflite"
    interpreter = Interpreter(model_path=str(paths["tflite_int8"]))
    kinds = {np.dtype(t["dtype"]).name for t in interpreter.get_tensor_details()}
    assert {"int8", "int32"} <= kinds  # int8 activations and weights, int32 biases
    runner = interpreter.get_signature_runner("serving_default")
    probabilities = runner(pixels=exported["pixels"])["probabilities"]
    assert probabilities.dtype == np.float32 and probabilities.shape == (len(CLASS_NAMES), len(CLASS_NAMES))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=0.02)
    # int8 rounding: the softmax answers in steps of 1/256, activations in 256 levels each.
    np.testing.assert_allclose(probabilities, exported["expected"], atol=0.1)
    agree = probabilities.argmax(axis=1) == exported["expected"].argmax(axis=1)
    assert agree.sum() >= 8, agree
    assert paths["tflite_int8"].stat().st_size < (exported["dir"] / "model.tflite").stat().st_size / 2


def test_int8_export_without_representative_photos_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="representative"):
        export_model(tiny_model(), tmp_path, CLASS_NAMES, formats=("tflite_int8",))
    assert list(tmp_path.iterdir()) == []


def test_unknown_format_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="torchscript"):
        export_model(tiny_model(), tmp_path, CLASS_NAMES, formats=("torchscript",))


def test_class_count_must_match_the_model_outputs(tmp_path):
    with pytest.raises(ConfigError, match="10 outputs but 3 class names"):
        export_model(tiny_model(), tmp_path, ["a", "b", "c"])
