"""Input preprocessing as the first layers of a model, so saved models take raw RGB pixels.

Only built-in, weight-free Keras layers are used: a saved model then loads with plain
`keras.models.load_model(path)` (.keras or .h5) in a program that does not import this project,
and parameter counts and weight order stay those of the network itself. Every layer is named
`preprocess_*`; preprocessing runs in float32 even under a mixed-precision policy.
"""

from __future__ import annotations

from keras import layers

from idenprof.errors import ConfigError

PREPROCESSING_MODES = ("scale", "caffe", None)
PREPROCESS_PREFIX = "preprocess_"
# ImageNet channel means in BGR order, as in keras.applications.imagenet_utils (mode "caffe").
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


def check_preprocessing(mode):
    """Raise ConfigError unless `mode` is one of PREPROCESSING_MODES."""
    if mode not in PREPROCESSING_MODES:
        raise ConfigError(
            f"unknown preprocessing {mode!r}; choose 'scale' (pixels/255), "
            "'caffe' (BGR minus ImageNet mean, for ImageNet weights) or None"
        )


def add_preprocessing(x, mode):
    """Apply preprocessing `mode` to raw pixels.

    Args:
        x: float32 [batch, H, W, 3] RGB pixels in 0..255.
        mode: "scale" -> x / 255 in 0..1 (the original IdenProf code);
            "caffe" -> channels reversed to BGR, then the ImageNet BGR mean subtracted
            (what keras.applications ResNet ImageNet weights expect);
            None -> x unchanged.

    Returns:
        float32 [batch, H, W, 3] tensor.
    """
    check_preprocessing(mode)
    if mode == "scale":
        return layers.Rescaling(1.0 / 255, dtype="float32", name=f"{PREPROCESS_PREFIX}scale")(x)
    if mode == "caffe":
        if x.shape[-1] != 3:
            raise ConfigError(
                f"'caffe' preprocessing needs 3 RGB channels, the input has {x.shape[-1]}"
            )
        # channels_first makes Cropping2D crop the (W, C) axes of our channels_last tensor,
        # so each crop keeps one channel: a built-in, weight-free RGB -> BGR flip.
        channels = [
            layers.Cropping2D(
                ((0, 0), (index, 2 - index)),
                data_format="channels_first",
                dtype="float32",
                name=f"{PREPROCESS_PREFIX}{colour}",
            )(x)
            for index, colour in ((2, "blue"), (1, "green"), (0, "red"))
        ]
        x = layers.Concatenate(dtype="float32", name=f"{PREPROCESS_PREFIX}bgr")(channels)
        return layers.Normalization(
            mean=CAFFE_MEAN_BGR,
            variance=(1.0, 1.0, 1.0),
            dtype="float32",
            name=f"{PREPROCESS_PREFIX}mean",
        )(x)
    return x
