"""Grad-CAM: the right layer in ResNet and DenseNet-style models, maps that follow the evidence,
and (with the shipped model) a real photo's map that moves when the photo moves."""

from __future__ import annotations

import io

import keras
import numpy as np
import pytest
from PIL import Image
from serve_helpers import SHIPPED_MODEL
from test_export import tiny_model

from idenprof.predict.classifier import load
from idenprof.predict.gradcam import GradCam, centre_of_mass, last_conv_layer, overlay_png

SIZE = 32


def brightness_model() -> keras.Model:
    """Class 0 "bright", class 1 "dark": a 1x1 conv measures brightness and darkness per pixel,
    pooled 4x4 to an 8x8 map, then global pooling and a softmax Dense layer, all fixed weights.
    Its evidence for "bright" is exactly where the image is bright."""
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(2, 1, activation="relu", name="measure")(inputs)
    x = keras.layers.AveragePooling2D(4, name="stage_out")(x)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = keras.layers.Dense(2, activation="softmax", name="predictions")(x)
    model = keras.Model(inputs, outputs)
    kernel = np.zeros((1, 1, 3, 2), np.float32)
    kernel[..., 0], kernel[..., 1] = 1 / 765, -1 / 765  # mean of RGB / 255, and its negative
    model.get_layer("measure").set_weights([kernel, np.array([0, 1], np.float32)])
    model.get_layer("predictions").set_weights([np.eye(2, dtype=np.float32) * 10, np.zeros(2)])
    return model


def white_square_at(left: int) -> np.ndarray:
    pixels = np.zeros((1, SIZE, SIZE, 3), np.float32)
    pixels[0, 8:20, left:left + 10] = 255
    return pixels


def tiny_densenet() -> keras.Model:
    """DenseNet's shape in miniature: concatenating blocks, then BN and ReLU before pooling."""
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", name="conv1")(inputs)
    for block in range(2):
        y = keras.layers.BatchNormalization(name=f"block{block}_bn")(x)
        y = keras.layers.Activation("relu", name=f"block{block}_relu")(y)
        y = keras.layers.Conv2D(4, 3, padding="same", name=f"block{block}_conv")(y)
        x = keras.layers.Concatenate(name=f"block{block}_concat")([x, y])
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Activation("relu", name="relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return keras.Model(inputs, keras.layers.Dense(10, activation="softmax", name="predictions")(x))


def test_the_last_stage_is_found_in_a_resnet_and_a_densenet():
    assert last_conv_layer(tiny_model()).name == "conv5_block2_out"
    assert last_conv_layer(tiny_densenet()).name == "relu"


def test_the_map_is_where_the_class_evidence_is_and_moves_with_it():
    gradcam = GradCam(brightness_model())
    left = gradcam(white_square_at(2), [0])[0]
    right = gradcam(white_square_at(20), [0])[0]
    assert left.shape == (8, 8) and left.max() == pytest.approx(1)
    assert centre_of_mass(left)[0] < 0.3 and centre_of_mass(right)[0] > 0.7
    # The "dark" class looks everywhere but the square.
    dark = gradcam(white_square_at(2), [1])[0]
    assert centre_of_mass(dark)[0] > 0.5 and dark[3, 1] < 0.1 < dark[3, 7]


def test_maps_of_several_images_and_classes_come_in_one_call():
    gradcam = GradCam(tiny_densenet())
    maps = gradcam(np.random.default_rng(0).uniform(0, 255, (3, SIZE, SIZE, 3)), [0, 4, 9])
    assert maps.shape == (3, 16, 16) and maps.dtype == np.float32
    assert np.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1


def test_the_overlay_is_the_photo_tinted_hottest_where_the_map_is():
    photo = np.full((60, 90, 3), 128, np.uint8)
    cam = np.zeros((4, 4), np.float32)
    cam[:, 3] = 1  # hot on the right
    image = Image.open(io.BytesIO(overlay_png(photo, cam)))
    assert image.format == "PNG" and image.size == (90, 60)
    pixels = np.asarray(image, np.float32)
    change = np.abs(pixels - photo).sum(axis=2)
    assert change[:, -10:].mean() > 2 * change[:, :10].mean()
    assert np.abs(np.diff(change[30])).max() < 40  # bilinear: no hard block edges


@pytest.fixture(scope="module")
def shipped_classifier():
    if not SHIPPED_MODEL.is_file():
        pytest.fail(f"needs the shipped model at {SHIPPED_MODEL} (or IDENPROF_TEST_MODEL)")
    return load(SHIPPED_MODEL)  # heat maps from the model.keras beside it


def on_grey_canvas(photo: Image.Image, side: str) -> Image.Image:
    """The photo (square, S x S) on the left or right half of a grey 2S x 2S canvas."""
    size = photo.width
    canvas = Image.new("RGB", (2 * size, 2 * size), (128, 128, 128))
    canvas.paste(photo, (0 if side == "left" else size, size // 2))
    return canvas


def test_a_real_photos_heat_map_moves_with_the_photo(shipped_classifier, small_dataset):
    classifier = shipped_classifier
    # The photo (of the 4 test photos per class) the model recognises best on both canvases:
    # a heat map can only follow evidence the model finds.
    best, best_probability = None, 0.0
    for path in sorted((small_dataset / "test").glob("*/*.jpg")):
        photo = Image.open(path).convert("RGB").resize((224, 224))
        tops = [classifier.predict(on_grey_canvas(photo, side))[0] for side in ("left", "right")]
        if all(name == path.parent.name for name, _ in tops):
            probability = min(p for _, p in tops)
            if probability > best_probability:
                best, best_probability = (photo, path.parent.name), probability
    assert best is not None, "the model recognises none of the photos on a grey canvas"
    photo, true_class = best
    centres = {side: centre_of_mass(classifier.class_activation(
        on_grey_canvas(photo, side), true_class)[1])[0] for side in ("left", "right")}
    assert centres["left"] < 0.45 < 0.55 < centres["right"], (true_class, centres)
