"""Input preprocessing as the first layers of a model, so saved models take raw RGB pixels.

Only built-in, weight-free Keras layers are used: a saved model then loads with plain
`keras.models.load_model(path)` (.keras or .h5) in a program that does not import this project,
and parameter counts and weight order stay those of the network itself. Every layer is named
`preprocess_*`; preprocessing runs in float32 even under a mixed-precision policy.
"""

from __future__ import annotations

from keras import layers

PREPROCESSING_MODES = ("scale", "caffe", "torch", None)
PREPROCESS_PREFIX = "preprocess_"
# ImageNet channel means in BGR order, as in keras.applications.imagenet_utils (mode "caffe").
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
# ImageNet channel means and standard deviations of pixels / 255, RGB order (mode "torch").
TORCH_MEAN_RGB = (0.485, 0.456, 0.406)
TORCH_STD_RGB = (0.229, 0.224, 0.225)


def check_preprocessing(mode):
    """Raise ValueError unless `mode` is one of PREPROCESSING_MODES."""
    if mode not in PREPROCESSING_MODES:
        raise ValueError(
            f"unknown preprocessing {mode!r}; choose 'scale' (pixels/255), "
            "'caffe' (BGR minus ImageNet mean, for ResNet ImageNet weights), "
            "'torch' (pixels/255 normalised by ImageNet mean and std, for DenseNet ImageNet "
            "weights) or None"
        )


def add_preprocessing(x, mode):
    """Apply preprocessing `mode` to raw pixels.

    Args:
        x: float32 [batch, H, W, 3] RGB pixels in 0..255.
        mode: "scale" -> x / 255 in 0..1 (the original IdenProf code);
            "caffe" -> channels reversed to BGR, then the ImageNet BGR mean subtracted
            (what keras.applications ResNet ImageNet weights expect);
            "torch" -> (x / 255 - ImageNet mean) / ImageNet std per RGB channel
            (what keras.applications DenseNet ImageNet weights expect);
            None -> x unchanged.

    Returns:
        float32 [batch, H, W, 3] tensor.
    """
    check_preprocessing(mode)
    if mode == "scale":
        return layers.Rescaling(1.0 / 255, dtype="float32", name=f"{PREPROCESS_PREFIX}scale")(x)
    if mode in ("caffe", "torch") and x.shape[-1] != 3:
        raise ValueError(
            f"{mode!r} preprocessing needs 3 RGB channels, the input has {x.shape[-1]}"
        )
    if mode == "torch":
        # One weight-free layer: (x - 255 mean) / (255 std) = (x / 255 - mean) / std.
        return layers.Normalization(
            mean=[255 * m for m in TORCH_MEAN_RGB],
            variance=[(255 * s) ** 2 for s in TORCH_STD_RGB],
            dtype="float32",
            name=f"{PREPROCESS_PREFIX}normalize",
        )(x)
    if mode == "caffe":
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
