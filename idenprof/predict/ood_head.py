"""A distance-tempered head: the model's own probabilities say "none of these" for photos far from
its training photos in feature space, in every format, with no extra output.

The Mahalanobis distance d of the pooled features to the nearest class mean (class means and one
shared covariance of the training photos; Lee et al. 2018) scales the logits before the calibrated
softmax:

    probabilities = softmax(logits * scale / T)
    scale = MIN_SCALE + (1 - MIN_SCALE) 2 sigmoid(-rate * max(0, d - start))

Up to `start` (the distance 95% of the hold-out stays under) the probabilities are the calibrated
ones; beyond it they flatten toward even, which the none-score (idenprof.predict.ood) reads. The scale
never reaches 0, so the order of the classes never changes and no answer changes. Built from
standard Keras layers only (Dense, Multiply, Add, Rescaling, Activation, Reshape,
GlobalMaxPooling1D), so `keras.models.load_model` needs no custom objects and LiteRT and ONNX
convert it.
idenprof.predict.ood.distance_tempered_probabilities is the same computation in numpy (bench/ood.py).

The head, by layer name, after `predictions` (the logits) and `avg_pool` (the features [N, D]):
`none_whiten` .. `none_distance` (d [N, 1]), `none_scale` [N, 1], `none_tempered` (logits times the
scale), then `temperature` and `probabilities` as in idenprof.predict.calibration.
"""

from __future__ import annotations

import numpy as np

from idenprof.predict.ood import MIN_SCALE, MahalanobisFit

FEATURES_LAYER = "avg_pool"
START_QUANTILE = 0.95
RATE_TIMES_MEDIAN = 4.0  # rate = this / the hold-out's median distance


def tempering_for(fit: MahalanobisFit, holdout_features: np.ndarray) -> tuple[float, float]:
    """(start, rate) from the hold-out's distances (see the module doc)."""
    distances = fit.distance(holdout_features)
    return float(np.quantile(distances, START_QUANTILE)), RATE_TIMES_MEDIAN / float(np.median(distances))


def with_distance_tempering(calibrated, fit: MahalanobisFit, start: float, rate: float):
    """The calibrated Keras model (ending in `predictions`, `temperature`, `probabilities`) with the
    distance-tempered head between its logits and its temperature; weights shared."""
    import keras
    from keras import layers

    from idenprof.predict.calibration import LOGITS_LAYER, PROBABILITIES_LAYER, TEMPERATURE_LAYER, temperature_of

    temperature = temperature_of(calibrated)
    features = calibrated.get_layer(FEATURES_LAYER).output
    logits = calibrated.get_layer(LOGITS_LAYER).output
    dims, classes = fit.cholesky.shape[0], fit.means.shape[0]
    whitened_means = fit.means @ fit.cholesky  # [K, D]

    def dense(units, kernel, bias=None, name=None):
        layer = layers.Dense(units, use_bias=bias is not None, name=name, dtype="float32")
        layer.build((None, kernel.shape[0]))
        layer.set_weights([kernel.astype(np.float32)] + ([bias.astype(np.float32)] if bias is not None else []))
        return layer

    u = dense(dims, fit.cholesky, name="none_whiten")(features)
    squared = layers.Multiply(name="none_square")([u, u])
    norms = dense(classes, np.ones((dims, classes)), name="none_norm")(squared)  # ||u||^2, K times
    cross = dense(classes, -2.0 * whitened_means.T, (whitened_means**2).sum(axis=1), name="none_cross")(u)
    distances = layers.Add(name="none_distances")([norms, cross])  # [N, K]
    negated = layers.Reshape((classes, 1), name="none_negated")(layers.Rescaling(-1.0)(distances))
    nearest = layers.Rescaling(-1.0, name="none_distance")(layers.GlobalMaxPooling1D()(negated))  # [N, 1]
    excess = layers.Activation("relu")(layers.Rescaling(1.0, offset=-start)(nearest))
    scale = layers.Rescaling(2.0 * (1.0 - MIN_SCALE), offset=MIN_SCALE, name="none_scale")(
        layers.Activation("sigmoid")(layers.Rescaling(-rate)(excess)))
    tempered = layers.Multiply(name="none_tempered")([logits, scale])
    scaled = layers.Rescaling(1.0 / temperature, name=TEMPERATURE_LAYER, dtype="float32")(tempered)
    probabilities = layers.Activation("softmax", name=PROBABILITIES_LAYER, dtype="float32")(scaled)
    return keras.Model(calibrated.input, probabilities, name=calibrated.name)


def has_distance_tempering(model) -> bool:
    return any(layer.name == "none_tempered" for layer in model.layers)
