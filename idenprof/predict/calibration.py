"""Temperature scaling: make the model's probabilities mean what they say, and store it inside.

A model trained with label smoothing and heavy augmentation is rarely calibrated: among the photos
it calls 80% sure, far more or far fewer than 80% are right. Temperature scaling (Guo et al.,
2017) divides the logits by one number T, fitted on the hold-out split by minimising the negative
log-likelihood of softmax(logits / T). It changes no single-view prediction (the order of the
classes is kept), only how sure the model says it is.

The calibrated model is plain Keras, so every export carries T and `keras.models.load_model`
needs no custom objects. Its head, by layer name:

    predictions    Dense, linear activation: the logits [N, C] (float32)
    temperature    Rescaling(scale=1/T): logits / T
    probabilities  Activation("softmax"), float32: the output [N, C], in class index order

`calibration.json`, written beside the model, holds T, the expected calibration error (ECE) before
and after on the hold-out, `min_confidence` (see `confidence_threshold`), `none_threshold` for a
model with a none detector (idenprof.predict.ood) and `conformal`, the hold-out scores prediction sets are
made from (idenprof.predict.conformal).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from idenprof.errors import ModelFileError
from idenprof.files import write_json_atomically

CALIBRATION_FILENAME = "calibration.json"
LOGITS_LAYER = "predictions"
TEMPERATURE_LAYER = "temperature"
PROBABILITIES_LAYER = "probabilities"
ECE_BINS = 15
# min_confidence: predictions at or above it were at least this accurate on the hold-out.
TARGET_ACCURACY = 0.90


@dataclass
class Calibration:
    """What calibration.json holds (ECE: 15 equal-width bins, on the hold-out split)."""

    temperature: float
    min_confidence: float
    min_confidence_rule: str
    accuracy_at_min_confidence: float | None  # hold-out accuracy of predictions >= min_confidence
    coverage_at_min_confidence: float  # fraction of the hold-out at or above it
    ece_before: float
    ece_after: float
    nll_before: float  # mean negative log-likelihood, nats per image
    nll_after: float
    holdout_images: int
    holdout_accuracy: float
    ece_bins: int = ECE_BINS
    # "None of these" (idenprof.predict.ood): set only for a model taught it by outlier exposure.
    none_threshold: float | None = None
    none_rule: str | None = None
    # Prediction sets (idenprof.predict.conformal.ConformalSets.to_json): the hold-out's sorted scores.
    conformal: dict | None = None
    # {file name: {field: value}}: what differs for another file of the same model, fitted on that
    # file's own hold-out answers (the int8 LiteRT model rounds its probabilities).
    models: dict | None = None

    def write(self, path: Path) -> Path:
        return write_json_atomically(asdict(self), path)


def calibration_beside(model_path: Path) -> dict | None:
    """The calibration.json beside a model file (inside a SavedModel folder, else beside it), as a
    dict, with the entries of its `models[<file name>]` over the rest; None when there is none or
    it cannot be read. The one reader of that file."""
    model_path = Path(model_path)
    for candidate in (model_path / CALIBRATION_FILENAME, model_path.parent / CALIBRATION_FILENAME):
        if candidate.is_file():
            try:
                data = json.loads(candidate.read_text())
            except (OSError, ValueError):
                return None
            if not isinstance(data, dict):
                return None
            own = (data.get("models") or {}).get(model_path.name)
            return {**data, **own} if isinstance(own, dict) else data
    return None


def number_beside(model_path: Path, key: str) -> float | None:
    """calibration.json's `key` beside a model when it is a number; None otherwise."""
    value = (calibration_beside(model_path) or {}).get(key)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def read_min_confidence(model_path: Path) -> float | None:
    """`min_confidence` from the calibration.json beside a model; None when there is none."""
    return number_beside(model_path, "min_confidence")


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of float [N, C], computed in float64."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def negative_log_likelihood(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean -log softmax(logits / temperature)[label] over the N rows, in nats."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(z).sum(axis=1))
    return float(np.mean(log_norm - z[np.arange(len(z)), np.asarray(labels)]))


def fit_temperature(logits: np.ndarray, labels: np.ndarray, lowest: float = 0.01,
                    highest: float = 100.0, iterations: int = 100) -> float:
    """The T in [lowest, highest] minimising the NLL of softmax(logits / T).

    The NLL is convex in 1/T (a log-sum-exp of terms linear in it, minus a linear term), hence
    unimodal in log T, so a golden-section search over log T finds the minimum; no optimiser
    library needed for one number.
    """
    a, b = np.log(lowest), np.log(highest)
    ratio = (np.sqrt(5) - 1) / 2

    def loss(log_t):
        return negative_log_likelihood(logits, labels, float(np.exp(log_t)))

    c, d = b - ratio * (b - a), a + ratio * (b - a)
    loss_c, loss_d = loss(c), loss(d)
    for _ in range(iterations):
        if loss_c < loss_d:
            b, d, loss_d = d, c, loss_c
            c = b - ratio * (b - a)
            loss_c = loss(c)
        else:
            a, c, loss_c = c, d, loss_d
            d = a + ratio * (b - a)
            loss_d = loss(d)
    return float(np.exp((a + b) / 2))


def reliability_bins(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS):
    """Per confidence bin ((k/bins, (k+1)/bins], the first also holding 0): image count [bins],
    mean confidence [bins] and accuracy [bins] (0 where a bin is empty). Confidence is the top-1
    probability."""
    probs = np.asarray(probs, dtype=np.float64)
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == np.asarray(labels)
    index = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    counts = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.where(counts, np.bincount(index, confidence, bins) / counts, 0.0)
        accuracy = np.where(counts, np.bincount(index, correct, bins) / counts, 0.0)
    return counts, mean_confidence, accuracy


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE: sum over bins of (share of images) x |accuracy - mean confidence|, 0..1."""
    counts, confidence, accuracy = reliability_bins(probs, labels, bins)
    total = counts.sum()
    return float((counts / total * np.abs(accuracy - confidence)).sum()) if total else 0.0


def confidence_threshold(probs: np.ndarray, labels: np.ndarray,
                         target_accuracy: float = TARGET_ACCURACY):
    """The smallest confidence P such that the predictions with top-1 probability >= P are at
    least `target_accuracy` correct: (P, their accuracy, their share of the images).

    Candidates are the confidences that occur, so P keeps the largest confident set meeting the
    target. When no set does, P is 1.0 (every prediction counts as unsure), accuracy None.
    """
    probs = np.asarray(probs)
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == np.asarray(labels)
    order = np.argsort(-confidence, kind="stable")
    confidence, correct = confidence[order], correct[order]
    prefix_accuracy = np.cumsum(correct) / np.arange(1, len(correct) + 1)
    # A threshold keeps whole groups of equal confidence: only the last of each group counts.
    group_end = np.append(confidence[1:] < confidence[:-1], True)
    meets = np.flatnonzero(group_end & (prefix_accuracy >= target_accuracy))
    if len(meets) == 0:
        return 1.0, None, 0.0
    last = meets[-1]
    return float(confidence[last]), float(prefix_accuracy[last]), float((last + 1) / len(correct))


def threshold_rule(target_accuracy: float = TARGET_ACCURACY) -> str:
    return (f"the smallest calibrated top-1 probability P such that the hold-out predictions with "
            f"probability >= P are at least {target_accuracy:.0%} correct")


def logits_model(model):
    """`model` (ending in the softmax Dense `predictions`, or already calibrated) with that Dense
    made linear: output the logits [N, C]. Weights are copied into a float32 copy (a temperature
    fitted on bfloat16 logits would be off by their rounding)."""
    import keras

    if is_calibrated(model):
        return keras.Model(model.input, model.get_layer(LOGITS_LAYER).output)
    try:
        head = model.get_layer(LOGITS_LAYER)
    except ValueError:
        raise ModelFileError(f"the model has no {LOGITS_LAYER!r} Dense layer to calibrate") from None
    if model.outputs[0] is not head.output or head.get_config().get("activation") != "softmax":
        raise ModelFileError(f"the model must end in the softmax Dense {LOGITS_LAYER!r} to be calibrated")

    def linear_head(layer):
        config = layer.get_config()
        config["dtype"] = "float32"
        if layer.name == LOGITS_LAYER:
            config["activation"] = "linear"
        return layer.__class__.from_config(config)

    linear = keras.models.clone_model(model, clone_function=linear_head)
    linear.set_weights(model.get_weights())
    return linear


def with_temperature(logits: object, temperature: float):
    """The calibrated model: `logits` (a logits model) followed by the layers `temperature`
    (x / T) and `probabilities` (float32 softmax)."""
    import keras

    scaled = keras.layers.Rescaling(1.0 / temperature, name=TEMPERATURE_LAYER, dtype="float32")(
        logits.outputs[0])
    probabilities = keras.layers.Activation("softmax", name=PROBABILITIES_LAYER, dtype="float32")(scaled)
    return keras.Model(logits.input, probabilities, name=logits.name)


def is_calibrated(model) -> bool:
    return any(layer.name == TEMPERATURE_LAYER for layer in model.layers)


def temperature_of(model) -> float | None:
    """T stored in a calibrated model, None for an uncalibrated one."""
    if not is_calibrated(model):
        return None
    return 1.0 / float(model.get_layer(TEMPERATURE_LAYER).scale)


def predict_logits(logits, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """float32 logits [N, C] of uint8/float RGB images [N, S, S, 3], `batch_size` at a time."""
    import keras

    out = [keras.ops.convert_to_numpy(logits(np.asarray(images[i:i + batch_size], np.float32),
                                             training=False))
           for i in range(0, len(images), batch_size)]
    return np.concatenate(out).astype(np.float32)


def calibrate(model, images: np.ndarray, labels: np.ndarray,
              target_accuracy: float = TARGET_ACCURACY):
    """Fit T on hold-out images and put it in the model.

    Args:
        model: a float32 or mixed-precision Keras classifier ending in the softmax Dense
            `predictions` (train.py's models), or a calibrated one (then refitted).
        images: uint8 RGB [N, S, S, 3], S the model's input side.
        labels: int [N] class indices.

    Returns:
        (calibrated Keras model, Calibration, logits float32 [N, C]).
    """
    logits = logits_model(model)
    z = predict_logits(logits, images)
    labels = np.asarray(labels)
    temperature = fit_temperature(z, labels)
    before, after = softmax(z), softmax(z / temperature)
    threshold, accuracy, coverage = confidence_threshold(after, labels, target_accuracy)
    result = Calibration(
        temperature=temperature,
        min_confidence=threshold,
        min_confidence_rule=threshold_rule(target_accuracy),
        accuracy_at_min_confidence=accuracy,
        coverage_at_min_confidence=coverage,
        ece_before=expected_calibration_error(before, labels),
        ece_after=expected_calibration_error(after, labels),
        nll_before=negative_log_likelihood(z, labels),
        nll_after=negative_log_likelihood(z, labels, temperature),
        holdout_images=int(len(labels)),
        holdout_accuracy=float((before.argmax(axis=1) == labels).mean()),
    )
    return with_temperature(logits, temperature), result, z
