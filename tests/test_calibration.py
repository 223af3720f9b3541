"""idenprof.predict.calibration: the temperature fit, ECE, the min_confidence rule, and the calibrated
model (plain Keras layers that load anywhere and convert to LiteRT)."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest
from test_export import CLASS_NAMES, IMAGE_SIZE, tiny_model

from idenprof.data.dataset import scan_dataset
from idenprof.data.decoded import decode_images
from idenprof.predict.calibration import (
    calibrate,
    confidence_threshold,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    read_min_confidence,
    reliability_bins,
    softmax,
    temperature_of,
)
from idenprof.predict.loaders import load_predictor
from idenprof.ship.export import export_model


def test_fit_recovers_the_temperature_that_generated_the_labels():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, size=(4000, 10))
    true_t = 2.5
    probs = softmax(logits / true_t)
    labels = np.array([rng.choice(10, p=p) for p in probs])
    fitted = fit_temperature(logits, labels)
    assert fitted == pytest.approx(true_t, rel=0.08)
    # It is the minimum: the NLL is higher on either side.
    nll = negative_log_likelihood(logits, labels, fitted)
    assert nll < negative_log_likelihood(logits, labels, fitted * 1.1)
    assert nll < negative_log_likelihood(logits, labels, fitted / 1.1)


def test_ece_by_hand_on_four_images():
    # Confidences 0.9 (right), 0.9 (wrong), 0.5 (right), 0.34 (wrong); 15 bins.
    probs = np.array([[0.9, 0.1, 0.0], [0.9, 0.1, 0.0], [0.5, 0.3, 0.2], [0.34, 0.33, 0.33]])
    labels = np.array([0, 1, 0, 1])
    # Bin (12/15, 13/15] ... 0.9 is in (0.8667, 0.9333]: accuracy 0.5, confidence 0.9 -> 0.4.
    # 0.5 alone: accuracy 1 -> 0.5 ; 0.34 alone: accuracy 0 -> 0.34.
    expected = 2 / 4 * 0.4 + 1 / 4 * 0.5 + 1 / 4 * 0.34
    assert expected_calibration_error(probs, labels) == pytest.approx(expected)
    counts, _, accuracy = reliability_bins(probs, labels)
    assert counts.sum() == 4 and counts[13] == 2 and accuracy[13] == 0.5


def test_bin_edges_belong_to_the_lower_bin_and_certainty_to_the_last():
    probs = np.array([[1 / 15, 14 / 15], [1.0, 0.0], [0.5, 0.5]])
    counts, _, _ = reliability_bins(probs[:, ::-1][:1], np.array([0]))  # confidence 14/15
    assert counts[13] == 1
    counts, _, _ = reliability_bins(probs[1:2], np.array([0]))
    assert counts[14] == 1


def test_min_confidence_is_the_smallest_threshold_keeping_the_target_accuracy():
    # Sorted by confidence: right, right, wrong, right, wrong.
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.6, 0.4], [0.55, 0.45]])
    labels = np.array([0, 0, 1, 0, 1])
    # Prefix accuracies 1, 1, 2/3, 3/4, 3/5: the largest set at >= 75% stops at 0.6.
    assert confidence_threshold(probs, labels, 0.75) == (0.6, 0.75, 0.8)
    assert confidence_threshold(probs, labels, 0.9) == (0.8, 1.0, 0.4)


def test_min_confidence_keeps_or_drops_equal_confidences_together():
    probs = np.array([[0.9, 0.1], [0.7, 0.3], [0.7, 0.3]])
    labels = np.array([0, 0, 1])  # at 0.7: one right, one wrong
    assert confidence_threshold(probs, labels, 0.7) == (0.9, 1.0, pytest.approx(1 / 3))


def test_without_any_confident_enough_set_min_confidence_is_one():
    probs = np.array([[0.9, 0.1], [0.8, 0.2]])
    assert confidence_threshold(probs, np.array([1, 1]), 0.9) == (1.0, None, 0.0)


@pytest.fixture(scope="module")
def calibrated(small_dataset):
    """A tiny model calibrated on the small dataset's training photos."""
    layout = scan_dataset(small_dataset)
    data = decode_images(layout.samples["train"], IMAGE_SIZE, progress=False)
    model = tiny_model()
    calibrated_model, result, logits = calibrate(model, data.images, data.labels)
    return {"model": model, "calibrated": calibrated_model, "result": result, "logits": logits,
            "images": data.images.astype(np.float32), "labels": data.labels}


def test_calibrated_model_ends_in_named_plain_keras_layers(calibrated):
    model = calibrated["calibrated"]
    head = [layer.name for layer in model.layers[-3:]]
    assert head == ["predictions", "temperature", "probabilities"]
    assert model.get_layer("predictions").get_config()["activation"] == "linear"
    assert isinstance(model.get_layer("temperature"), keras.layers.Rescaling)
    assert model.output.dtype == "float32" and model.output_shape == (None, len(CLASS_NAMES))
    assert temperature_of(model) == pytest.approx(calibrated["result"].temperature)


def test_calibrated_probabilities_are_softmax_of_logits_over_t_with_the_same_ranking(calibrated):
    t = calibrated["result"].temperature
    images = calibrated["images"][:8]
    got = keras.ops.convert_to_numpy(calibrated["calibrated"](images))
    np.testing.assert_allclose(got, softmax(calibrated["logits"][:8] / t), atol=1e-5)
    original = keras.ops.convert_to_numpy(calibrated["model"](images))
    assert (got.argmax(1) == original.argmax(1)).all()
    np.testing.assert_allclose(original, softmax(calibrated["logits"][:8]), atol=1e-5)


def test_fit_lowers_the_holdout_nll_and_reports_what_it_measured(calibrated):
    result = calibrated["result"]
    assert result.nll_after <= result.nll_before + 1e-9
    assert result.holdout_images == len(calibrated["labels"])
    assert result.ece_before == pytest.approx(
        expected_calibration_error(softmax(calibrated["logits"]), calibrated["labels"]))
    assert result.ece_after == pytest.approx(
        expected_calibration_error(softmax(calibrated["logits"] / result.temperature), calibrated["labels"]))


def test_temperature_travels_with_keras_and_litert_exports(calibrated, tmp_path):
    export_model(calibrated["calibrated"], tmp_path, CLASS_NAMES, formats=("keras", "tflite"))
    loaded = keras.models.load_model(tmp_path / "model.keras")  # no custom objects
    assert temperature_of(loaded) == pytest.approx(calibrated["result"].temperature)
    images = calibrated["images"][:6]
    expected = keras.ops.convert_to_numpy(calibrated["calibrated"](images))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(images)), expected, atol=1e-6)
    litert = load_predictor(tmp_path / "model.tflite").predict(images)
    assert litert.dtype == np.float32
    np.testing.assert_allclose(litert, expected, atol=1e-4)


def test_calibrating_a_calibrated_model_refits_from_its_logits(calibrated):
    again, result, logits = calibrate(calibrated["calibrated"], calibrated["images"], calibrated["labels"])
    np.testing.assert_allclose(logits, calibrated["logits"], atol=1e-4)
    assert result.temperature == pytest.approx(calibrated["result"].temperature, rel=1e-3)
    assert [layer.name for layer in again.layers].count("temperature") == 1


def test_calibration_json_round_trip(calibrated, tmp_path):
    path = calibrated["result"].write(tmp_path / "calibration.json")
    saved = json.loads(path.read_text())
    assert {"temperature", "min_confidence", "ece_before", "ece_after", "holdout_images"} <= set(saved)
    (tmp_path / "model.tflite").write_bytes(b"")
    assert read_min_confidence(tmp_path / "model.tflite") == saved["min_confidence"]
    assert read_min_confidence(Path(tmp_path / "elsewhere" / "model.tflite")) is None
