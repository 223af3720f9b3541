"""idenprof.ship.outlier_exposure: fine-tuning with outliers spreads the model's probability over the
classes for images like the outliers and keeps its answers for the training photos."""

from __future__ import annotations

import numpy as np
from test_export import CLASS_NAMES, IMAGE_SIZE, tiny_model

from idenprof.predict.calibration import is_calibrated, temperature_of
from idenprof.predict.ood import none_scores
from idenprof.ship.outliers import procedural_images


def class_photos(rng, per_class: int):
    """One flat colour per class with a little noise: uint8 [N, S, S, 3] and labels [N]."""
    colours = rng.integers(0, 256, (len(CLASS_NAMES), 3))
    labels = np.repeat(np.arange(len(CLASS_NAMES)), per_class)
    noise = rng.integers(-8, 9, (len(labels), IMAGE_SIZE, IMAGE_SIZE, 3))
    return np.clip(colours[labels][:, None, None, :] + noise, 0, 255).astype(np.uint8), labels


def test_outliers_end_up_far_more_spread_than_the_training_photos():
    from idenprof.ship.outlier_exposure import fine_tune_with_outliers

    rng = np.random.default_rng(0)
    photos, labels = class_photos(rng, 8)
    outliers = procedural_images(40, IMAGE_SIZE + 8, rng)
    model = tiny_model()
    tuned = fine_tune_with_outliers(model, photos, labels, outliers, epochs=30, batch_size=16,
                                    outlier_batch_size=8, learning_rate=3e-3, log=lambda _: None)
    assert is_calibrated(tuned) and temperature_of(tuned) == 1.0  # for calibrate() to refit
    probs = np.asarray(tuned.predict(photos, verbose=0))
    unseen = procedural_images(20, IMAGE_SIZE, np.random.default_rng(1))  # outliers never shown
    unseen_probs = np.asarray(tuned.predict(unseen, verbose=0))
    assert (probs.argmax(axis=1) == labels).mean() >= 0.8
    assert none_scores(unseen_probs).mean() > none_scores(probs).mean() + 0.3
