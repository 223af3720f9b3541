"""The Python API: load a trained model once, then ask it about photos.

    import idenprof
    classifier = idenprof.load()                 # the latest finished run, else the shipped model
    classifier.predict("photo.jpg")              # [("police", 0.97), ("firefighter", 0.01), ...]

One implementation for every front end: infer.py, the web server and your own programs all go
through `Classifier`, which is built on idenprof.predict.inference (finding and loading the model, any
format) and idenprof.data.imaging (turning any photo into model pixels, as training does).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from idenprof.data.imaging import load_image_rgb, rgb_pixels
from idenprof.errors import ConfigError, IdenprofError, ModelFileError
from idenprof.predict.calibration import read_min_confidence
from idenprof.predict.conformal import DEFAULT_COVERAGE, ConformalSets, check_coverage, read_conformal
from idenprof.predict.inference import FilePrediction, predict_files, predict_views, top_predictions
from idenprof.predict.inputs import InputError
from idenprof.predict.loaders import Predictor, load_predictor
from idenprof.predict.model_finding import resolve_model_path
from idenprof.predict.ood import none_score, read_none_threshold
from idenprof.run_folder import EXPORT_FILENAMES

# What `predict` accepts as one image: a file path, encoded file bytes, a PIL image, or pixels
# [H, W, 3] / [H, W] (uint8, or float 0..255).
ImageInput = str | Path | bytes | Image.Image | np.ndarray
Predictions = list[tuple[str, float]]


def unsure_message(class_count: int) -> str:
    """What infer.py says under a prediction below the confidence threshold."""
    return f"not sure — maybe none of these {class_count} professions"


def none_message(class_count: int, score: float) -> str:
    """What infer.py says under a prediction flagged as none of the classes."""
    return f"none of the {class_count} professions (score {score:.2f})"


def set_message(names: list[str], coverage: float) -> str:
    """What infer.py says under a prediction: its set, e.g. "chef or waiter (90% sets)"."""
    shown = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
    return f"{shown} ({coverage:.0%} sets)"


@dataclass(frozen=True)
class HeatMap:
    """Grad-CAM of one photo for one class: `png` is the photo (at most `max_side` pixels a side)
    with the heat map blended over it."""

    class_name: str
    png: bytes


class Classifier:
    """A loaded model with its class names and confidence threshold.

    Attributes:
        class_names: class name of each model output, in output order.
        image_size: S of the model's input [N, S, S, 3] (pixels); any photo is resized to it.
        model_path: the model file or folder predictions come from.
        min_confidence: a top probability below this (0..1) means "not sure" (`is_unsure`).
        none_threshold: a none-score above this (0..1) means "none of these" (`is_none_of_these`,
            see idenprof.predict.ood); None: the model has no detector and flags nothing.
        conformal: the hold-out scores prediction sets are made from (idenprof.predict.conformal); None:
            the model has none, and `prediction_set` gives None.
        coverage: the default share of photos whose set holds the true class (0..1).
    """

    def __init__(self, predictor: Predictor, min_confidence: float = 0.0,
                 none_threshold: float | None = None, conformal: ConformalSets | None = None,
                 coverage: float = DEFAULT_COVERAGE):
        self.predictor = predictor
        self.min_confidence = min_confidence
        self.none_threshold = none_threshold
        self.conformal = conformal
        self.coverage = coverage
        # One model call at a time: the LiteRT interpreter is not thread-safe, and on a few CPU
        # cores overlapping Keras calls (each using every core) gains nothing.
        self._model_lock = threading.Lock()
        self._gradcam = None

    @property
    def class_names(self) -> list[str]:
        return self.predictor.class_names

    @property
    def image_size(self) -> int:
        return self.predictor.image_size

    @property
    def model_path(self) -> Path:
        return self.predictor.model_path

    def __repr__(self) -> str:
        return (f"Classifier({str(self.model_path)!r}, {len(self.class_names)} classes, "
                f"{self.image_size} px, min_confidence={self.min_confidence}, "
                f"none_threshold={self.none_threshold}, coverage={self.coverage})")

    def pixels(self, image: ImageInput) -> np.ndarray:
        """The model's input for one image: uint8 RGB [S, S, 3]. Raises ImageError (an
        IdenprofError) for an unreadable image, TypeError for an unsupported kind of input."""
        if isinstance(image, (str, Path, bytes)):
            return load_image_rgb(image, size=self.image_size)
        if isinstance(image, (Image.Image, np.ndarray)):
            return rgb_pixels(image, size=self.image_size)
        raise TypeError(
            f"cannot predict a {type(image).__name__}: pass a file path, image file bytes, "
            "a PIL image or pixels [H, W, 3]"
        )

    def probabilities(self, pixels: np.ndarray, tta: bool = False) -> np.ndarray:
        """Probabilities float32 [N, C] for model pixels [N, S, S, 3]; with `tta`, the mean of
        each image and its mirror."""
        with self._model_lock:
            return predict_views(self.predictor.predict, pixels, mirror=tta).mean()

    def predict(
        self, images: ImageInput | Sequence[ImageInput], top: int = 5, tta: bool = False
    ) -> Predictions | list[Predictions]:
        """The `top` most likely (class name, probability 0..1) of a photo, most likely first.

        `images` is one image (see ImageInput) or a list of them (or a 4-D array [N, H, W, 3]),
        which gives a list of results in the same order. With `tta`, each image's probabilities
        are the mean over it and its horizontal mirror.
        """
        top = checked_top(top)
        batch = isinstance(images, (list, tuple)) or (
            isinstance(images, np.ndarray) and images.ndim == 4
        )
        items = list(images) if batch else [images]
        if not items:
            return []
        results = self.ranked(np.stack([self.pixels(item) for item in items]), top, tta)
        return results if batch else results[0]

    def ranked(self, pixels: np.ndarray, top: int, tta: bool) -> list[Predictions]:
        """The `top` (class name, probability) of each of model pixels [N, S, S, 3], in one model call."""
        return [top_predictions(row, self.class_names, top) for row in self.probabilities(pixels, tta)]

    def predict_each(self, images: Sequence[ImageInput], top: int = 5, tta: bool = False,
                     ) -> list[Predictions | IdenprofError]:
        """`predict` for many images in one model call, each image's result or, for one that could
        not be read, its error (an ImageError), in order."""
        top = checked_top(top)
        outcomes: list[Predictions | IdenprofError] = []
        pixels = []
        for image in images:
            try:
                pixels.append(self.pixels(image))
                outcomes.append([])
            except IdenprofError as e:
                outcomes.append(e)
        if pixels:
            answers = iter(self.ranked(np.stack(pixels), top, tta))
            outcomes = [o if isinstance(o, IdenprofError) else next(answers) for o in outcomes]
        return outcomes

    def is_unsure(self, predictions: Predictions) -> bool:
        """Whether a `predict` result's top probability is below `min_confidence`: the photo may
        show none of the professions the model knows."""
        return bool(predictions) and predictions[0][1] < self.min_confidence

    def none_score(self, predictions: Predictions) -> float | None:
        """How far a `predict` result is from every class the model knows, 0..1 (idenprof.predict.ood):
        0 when all the probability is on one class, 1 when it is spread evenly; None for []."""
        return none_score(predictions[0][1], len(self.class_names)) if predictions else None

    def is_none_of_these(self, predictions: Predictions) -> bool:
        """Whether a `predict` result's none-score is above `none_threshold`: the photo most
        likely shows none of the classes. Always False for a model without a threshold."""
        return self.none_threshold is not None and bool(predictions) and (
            self.none_score(predictions) > self.none_threshold)

    def prediction_set(self, predictions: Predictions, coverage: float | None = None) -> list[str] | None:
        """The classes a photo is among, most likely first, in sets that hold the true class for
        a share `coverage` (default `self.coverage`) of photos like the model's hold-out
        (idenprof.predict.conformal); None for a model without conformal scores.

        `predictions` is a `predict` result; ask for every class (`top=len(class_names)`), as a
        set can be longer than a short top list. Raises ConfigError when it is too short to tell.
        """
        if self.conformal is None or not predictions:
            return None
        coverage = self.coverage if coverage is None else checked_coverage(coverage)
        length, goes_on = self.conformal.ranked_set_length([p for _, p in predictions], coverage)
        if goes_on and len(predictions) < len(self.class_names):
            raise ConfigError(f"the {coverage:.0%} set of this photo is longer than the top {len(predictions)} "
                              f"classes asked for; predict with top={len(self.class_names)}")
        return [name for name, _ in predictions[:length]]

    def predict_set(self, image: ImageInput, coverage: float | None = None, tta: bool = False) -> list[str] | None:
        """`prediction_set` of one photo: e.g. ["chef", "waiter"]."""
        return self.prediction_set(self.predict(image, top=len(self.class_names), tta=tta), coverage)

    def prediction_json(self, predictions: Predictions, top: int | None = None,
                        coverage: float | None = None) -> dict:
        """One image's result as infer.py --json prints it and the web API answers it:
        {"predictions": [{"class": name, "probability": p}, ...] (the first `top`), "unsure": bool,
        "none_score": 0..1, "none_of_these": bool, "prediction_set": {"classes": [name, ...],
        "coverage": 0..1} or None (a model without conformal scores)}. Pass every class's
        prediction for the set (see `prediction_set`)."""
        classes = self.prediction_set(predictions, coverage)
        return {
            "predictions": [
                {"class": name, "probability": probability} for name, probability in predictions[:top]
            ],
            "unsure": self.is_unsure(predictions),
            "none_score": self.none_score(predictions),
            "none_of_these": self.is_none_of_these(predictions),
            "prediction_set": None if classes is None else {
                "classes": classes, "coverage": self.coverage if coverage is None else coverage},
        }

    def predict_files(
        self, paths: Sequence[str | Path], top: int = 5, tta: bool = False, batch_size: int = 32,
        progress: bool = False,
    ) -> tuple[list[FilePrediction], list[InputError]]:
        """`predict` for many files or http(s) URLs, `batch_size` at a time: unreadable ones become
        InputErrors and the rest are still predicted (what infer.py needs for folders)."""
        with self._model_lock:
            return predict_files(self.predictor, paths, top_k=top, batch_size=batch_size, tta=tta,
                                 progress=progress)

    @property
    def heatmap_model_path(self) -> Path | None:
        """The Keras model Grad-CAM runs on (LiteRT and SavedModels have no gradients here): the
        model itself when it is .keras/.h5, else the model.keras exported beside it; None when
        there is none."""
        path = self.model_path
        if path.is_file() and path.suffix.lower() in (".keras", ".h5"):
            return path
        beside = path.parent / EXPORT_FILENAMES["keras"]
        return beside if beside.is_file() else None

    def class_activation(
        self, image: ImageInput, class_name: str | None = None
    ) -> tuple[str, np.ndarray]:
        """(class name, Grad-CAM map float32 [h, w] in 0..1) of `image` for `class_name`
        (default: the top class): where in the model's view of the image the evidence for that
        class lies, on the grid of its last convolutional stage.

        Loads the Keras model on first use (imports TensorFlow). Raises ConfigError for an
        unknown class, ModelFileError when no Keras model is available."""
        from idenprof.predict.gradcam import GradCam

        if class_name is not None and class_name not in self.class_names:
            raise ConfigError(
                f"unknown class {class_name!r}; the model knows {', '.join(self.class_names)}"
            )
        pixels = self.pixels(image)[None]
        if class_name is None:
            class_index = int(np.argmax(self.probabilities(pixels)[0]))
        else:
            class_index = self.class_names.index(class_name)
        with self._model_lock:
            if self._gradcam is None:
                keras_path = self.heatmap_model_path
                if keras_path is None:
                    raise ModelFileError(
                        f"heat maps need a Keras model (.keras) and there is none beside "
                        f"{self.model_path}"
                    )
                self._gradcam = GradCam.from_file(keras_path)
            cam = self._gradcam(pixels, [class_index])[0]
        return self.class_names[class_index], cam

    def heatmap(
        self, image: ImageInput, class_name: str | None = None, max_side: int = 512
    ) -> HeatMap:
        """`class_activation` upsampled bilinearly to the photo (shrunk to at most `max_side`
        pixels a side) and blended over it, as a PNG."""
        from idenprof.predict.gradcam import overlay_png

        name, cam = self.class_activation(image, class_name)
        return HeatMap(name, overlay_png(display_pixels(image, max_side), cam))

    def warm_up(self, heatmaps: bool = False) -> None:
        """One prediction (and heat map) on a blank image, so the first real request does not pay
        for model initialisation."""
        blank = np.full((self.image_size, self.image_size, 3), 128, np.uint8)
        self.predict(blank)
        if heatmaps:
            self.heatmap(blank)


def display_pixels(image: ImageInput, max_side: int) -> np.ndarray:
    """The whole photo as uint8 RGB [H, W, 3], shrunk to at most `max_side` a side."""
    if isinstance(image, (str, Path, bytes)):
        photo = Image.fromarray(load_image_rgb(image))
    else:
        photo = Image.fromarray(rgb_pixels(image))
    photo.thumbnail((max_side, max_side), Image.BILINEAR)
    return np.asarray(photo)


def checked_top(top: int) -> int:
    if isinstance(top, bool) or not isinstance(top, (int, np.integer)) or top < 1:
        raise ConfigError(f"top must be a whole number at least 1, got {top!r}")
    return int(top)


def checked_unit(value, name: str, kind: str, source: str | None = None) -> float:
    """`value` as a float in 0..1; ConfigError naming `source` (default `name`) otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
        math.isfinite(value) and 0 <= value <= 1
    ):
        raise ConfigError(f"{source or name}: {name} must be a {kind} 0..1, got {value!r}")
    return float(value)


def checked_coverage(value, source: str = "coverage") -> float:
    """`value` as a coverage strictly between 0 and 1; ConfigError naming `source` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{source}: coverage must be a number between 0 and 1 (e.g. 0.9), got {value!r}")
    try:
        check_coverage(float(value))
    except ValueError:
        raise ConfigError(f"{source}: coverage must be between 0 and 1, both excluded (e.g. 0.9), "
                          f"got {value!r}") from None
    return float(value)


def checked_min_confidence(value, source: str = "min_confidence") -> float:
    return checked_unit(value, "min_confidence", "probability", source)


def load(
    model: str | Path | None = None,
    *,
    labels: str | Path | None = None,
    runs_dir: str | Path = "runs",
    min_confidence: float | None = None,
    none_threshold: float | None = None,
    coverage: float | None = None,
) -> Classifier:
    """Load a classifier.

    Args:
        model: a .keras/.h5/.tflite file, a SavedModel folder or a run folder; None for the
            default of idenprof.predict.model_finding.resolve_model_path (the best model of the most recent
            finished run under `runs_dir`, else the shipped model).
        labels: class index JSON; default: class_index.json beside the model.
        min_confidence: "not sure" threshold 0..1; default: calibration.json beside the model,
            else 0 (never unsure).
        none_threshold: "none of these" threshold on the none-score 0..1; default:
            calibration.json beside the model, else None (never flagged).
        coverage: default coverage of the prediction sets, 0..1 exclusive (default 0.9); the sets
            need conformal scores in calibration.json beside the model.
    Raises ModelFileError (an IdenprofError) when there is no usable model.
    """
    model_path = resolve_model_path(None if model is None else str(model), Path(runs_dir))
    predictor = load_predictor(model_path, None if labels is None else Path(labels))
    if min_confidence is None:
        min_confidence = read_min_confidence(model_path) or 0.0
    if none_threshold is None:
        none_threshold = read_none_threshold(model_path)
    else:
        none_threshold = checked_unit(none_threshold, "none_threshold", "score")
    coverage = DEFAULT_COVERAGE if coverage is None else checked_coverage(coverage)
    return Classifier(predictor, checked_min_confidence(min_confidence), none_threshold,
                      read_conformal(model_path), coverage)
