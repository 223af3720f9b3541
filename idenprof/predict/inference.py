"""Predict professions for photos with a loaded model: top-k lists, test-time mirrors, folders of files.

    predictor = load_predictor(resolve_model_path(None))    # idenprof.predict.loaders, idenprof.predict.model_finding
    results, errors = predict_files(predictor, ["photo.jpg"], top_k=5)

Finding the model (idenprof.predict.model_finding), loading its format (idenprof.predict.loaders) and expanding
the command line's inputs (idenprof.predict.inputs) live apart.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from idenprof.data.imaging import load_image_rgb
from idenprof.errors import ConfigError, IdenprofError
from idenprof.predict.inputs import InputError
from idenprof.predict.loaders import Predictor


@dataclass(frozen=True)
class FilePrediction:
    """Top-k predictions for one image, most likely first: (class name, probability 0..1)."""

    path: str
    predictions: list[tuple[str, float]]


@dataclass(frozen=True)
class Views:
    """Probabilities float32 [N, C] of images and, with test-time augmentation, of their
    horizontal mirrors (None without)."""

    single: np.ndarray
    mirrored: np.ndarray | None

    def mean(self) -> np.ndarray:
        """The test-time-augmented probabilities: the mean of the views."""
        return self.single if self.mirrored is None else (self.single + self.mirrored) / 2


def predict_views(
    predict: Callable[[np.ndarray], np.ndarray], images: np.ndarray, mirror: bool
) -> Views:
    """`predict` (RGB [N, S, S, 3] -> probabilities [N, C]) on images and, with `mirror`, on
    their left-right mirrors: one pass per view, so a caller can report both single-view and
    test-time-augmented results."""
    single = np.asarray(predict(images), dtype=np.float32)
    mirrored = np.asarray(predict(images[:, :, ::-1]), dtype=np.float32) if mirror else None
    return Views(single, mirrored)


def predict_files(
    predictor: Predictor,
    paths: Iterable[str | Path],
    *,
    top_k: int = 5,
    batch_size: int = 32,
    tta: bool = False,
    progress: bool = False,
) -> tuple[list[FilePrediction], list[InputError]]:
    """Top-k predictions for each image file or http(s) URL; unreadable ones become errors, the
    rest are still predicted. Images are decoded and resized by idenprof.data.imaging, as training
    does, and loaded `batch_size` at a time (memory stays bounded for large folders).

    With `tta`, each image's probabilities are the mean over it and its horizontal mirror. With
    `progress`, a progress bar on stderr when it is a terminal.
    """
    from tqdm import tqdm

    from idenprof.predict.remote import fetch_image, is_url

    if top_k < 1:
        raise ConfigError(f"--top must be at least 1, got {top_k}")
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {batch_size}")
    top_k = min(top_k, len(predictor.class_names))
    paths = [str(p) for p in paths]
    results: list[FilePrediction] = []
    errors: list[InputError] = []
    bar = tqdm(total=len(paths), unit="img", desc="predicting", disable=None if progress else True)
    for start in range(0, len(paths), batch_size):
        loaded_paths, images = [], []
        for path in paths[start : start + batch_size]:
            try:
                source = fetch_image(path) if is_url(path) else path
                images.append(load_image_rgb(source, size=predictor.image_size))
                loaded_paths.append(path)
            except IdenprofError as e:
                errors.append(InputError(path, str(e).replace("<bytes>", path)))
        bar.update(len(paths[start : start + batch_size]))
        if not images:
            continue
        probabilities = predict_views(
            lambda x: predictor.predict(x, batch_size), np.stack(images), tta
        ).mean()
        for path, row in zip(loaded_paths, probabilities, strict=True):
            results.append(FilePrediction(path, top_predictions(row, predictor.class_names, top_k)))
    bar.close()
    return results, errors


def top_predictions(
    probabilities: np.ndarray, class_names: list[str], top_k: int
) -> list[tuple[str, float]]:
    """The `top_k` most likely (class name, probability) of one image's probabilities [C], most
    likely first; ties keep class index order."""
    order = np.argsort(-probabilities, kind="stable")[:top_k]
    return [(class_names[i], float(probabilities[i])) for i in order]


