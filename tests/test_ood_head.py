"""idenprof.predict.ood_head: the distance-tempered head equals its numpy twin, keeps every answer, flattens
far photos, loads with plain Keras and converts to LiteRT."""

from __future__ import annotations

import numpy as np
import pytest
from test_export import CLASS_NAMES, IMAGE_SIZE, tiny_model

from idenprof.predict import ood
from idenprof.predict.calibration import logits_model, predict_logits, with_temperature
from idenprof.predict.ood import MahalanobisFit
from idenprof.predict.ood_head import FEATURES_LAYER, tempering_for, with_distance_tempering


@pytest.fixture(scope="module")
def tempered(tmp_path_factory):
    import keras

    rng = np.random.default_rng(0)
    calibrated = with_temperature(logits_model(tiny_model()), 0.8)
    features_model = keras.Model(calibrated.input, calibrated.get_layer(FEATURES_LAYER).output)
    photos = rng.integers(0, 256, (60, IMAGE_SIZE, IMAGE_SIZE, 3)).astype(np.float32)
    labels = np.arange(60) % len(CLASS_NAMES)
    features = np.asarray(features_model.predict(photos, verbose=0))
    fit = MahalanobisFit.from_features(features, labels, ridge=1e-3)
    start, rate = tempering_for(fit, features)
    model = with_distance_tempering(calibrated, fit, start, rate)
    return {"model": model, "calibrated": calibrated, "fit": fit, "start": start, "rate": rate,
            "photos": photos, "features_model": features_model, "dir": tmp_path_factory.mktemp("head")}


def test_the_head_equals_its_numpy_twin_and_keeps_every_answer(tempered):
    far = np.full((4, IMAGE_SIZE, IMAGE_SIZE, 3), 255.0, np.float32)  # flat white: not like the photos
    images = np.concatenate([tempered["photos"][:8], far])
    got = np.asarray(tempered["model"].predict(images, verbose=0))
    logits = predict_logits(logits_model(tempered["calibrated"]), images)
    distance = tempered["fit"].distance(np.asarray(tempered["features_model"].predict(images, verbose=0)))
    expected = ood.distance_tempered_probabilities(logits, distance, 0.8, tempered["start"], tempered["rate"])
    np.testing.assert_allclose(got, expected, atol=2e-4)
    np.testing.assert_array_equal(got.argmax(axis=1), logits.argmax(axis=1))


def test_far_inputs_are_flattened_and_near_ones_keep_their_calibrated_probabilities(tempered):
    model, calibrated = tempered["model"], tempered["calibrated"]
    near = tempered["photos"][:20]
    distance = tempered["fit"].distance(np.asarray(tempered["features_model"].predict(near, verbose=0)))
    inside = distance <= tempered["start"]
    assert inside.sum() >= 15
    np.testing.assert_allclose(np.asarray(model.predict(near[inside], verbose=0)),
                               np.asarray(calibrated.predict(near[inside], verbose=0)), atol=1e-5)
    far = np.zeros((2, IMAGE_SIZE, IMAGE_SIZE, 3), np.float32)
    far[1] = 255.0
    far_distance = tempered["fit"].distance(np.asarray(tempered["features_model"].predict(far, verbose=0)))
    flatter = ood.none_scores(np.asarray(model.predict(far, verbose=0)))
    plain = ood.none_scores(np.asarray(calibrated.predict(far, verbose=0)))
    assert np.all(far_distance > tempered["start"]) and np.all(flatter >= plain - 1e-6) and flatter.min() > 0.99


def test_it_saves_loads_without_custom_objects_and_converts_to_litert(tempered):
    import keras

    from idenprof.predict.loaders import load_predictor
    from idenprof.ship.export import export_model

    out = tempered["dir"]
    export_model(tempered["model"], out, CLASS_NAMES, formats=("keras", "tflite"))
    reloaded = keras.models.load_model(out / "model.keras")
    images = tempered["photos"][:6]
    expected = np.asarray(tempered["model"].predict(images, verbose=0))
    np.testing.assert_allclose(np.asarray(reloaded.predict(images, verbose=0)), expected, atol=1e-5)
    np.testing.assert_allclose(load_predictor(out / "model.tflite").predict(images), expected, atol=1e-4)
