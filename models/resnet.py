"""ResNet-18/34/50/101/152 (He et al. 2015) built with the Keras 3 Functional API.

One generic builder, `ResNet`, does everything the variants share (input, preprocessing, stem,
head, pooling, weights); each variant is a local `stack_fn` listing its four stages. The
bottleneck variants reproduce keras.applications ResNet50/101/152 layer for layer (names, weight
order, conv biases), so its weight files load into them. ResNet18/34 match torchvision's
(no conv biases, projection shortcut = 1x1 conv + batch norm).

Models take float32 [batch, H, W, 3] RGB pixels in 0..255; preprocessing is inside the model.
"""

from __future__ import annotations

import functools
import os

import keras
from keras import layers

from idenprof.errors import ConfigError, ModelFileError
from models.blocks import BLOCKS, SHORTCUTS, conv_bn, scale_filters, stack_blocks
from models.preprocessing import add_preprocessing, check_preprocessing

# Each stem's downsampling times the 8 of the three strided stages: the smallest image side
# for which the last stage's feature map is 1x1 without reading only padding.
MINIMUM_INPUT_SIZE = {"imagenet": 32, "small_pool": 16, "small": 8}
STEMS = tuple(MINIMUM_INPUT_SIZE)
POOLINGS = (None, "avg", "max")
STEM_FILTERS = 64


def check_stem(stem):
    """Raise ConfigError unless `stem` is one of STEMS."""
    if stem not in STEMS:
        raise ConfigError(f"unknown stem {stem!r}; choose one of: {', '.join(STEMS)}")


def minimum_input_size(stem="imagenet"):
    """The smallest image side in pixels a network with this stem accepts (32 for "imagenet")."""
    check_stem(stem)
    return MINIMUM_INPUT_SIZE[stem]


def check_input_size(image_size, stem="imagenet"):
    """Raise ConfigError if an image side of `image_size` pixels is too small for `stem`."""
    minimum = minimum_input_size(stem)
    if image_size < minimum:
        raise ConfigError(
            f"image size {image_size} px is too small for the {stem!r} stem, which downsamples "
            f"by {minimum}: use an image size of at least {minimum} px"
        )


def check_weights(weights):
    """Raise ConfigError unless `weights` is None or the path of an existing file."""
    if weights is None or os.path.isfile(weights):
        return
    if weights == "imagenet":
        raise ConfigError(
            "the model builders do not download ImageNet weights: pass the path of the "
            "keras.applications ResNet weights .h5 file, or let train.py fetch it"
        )
    raise ConfigError(
        f"weights file not found: {weights!r}; pass None for random initialisation "
        "or the path of a .weights.h5 / .h5 / .keras file"
    )


def load_weights(model, path):
    """Load a weights file into `model`; legacy .h5/.hdf5 files load by layer name.

    Raises:
        ModelFileError: the file does not fit the model (other layers or shapes) or is unreadable.
    """
    path = str(path)
    legacy_h5 = path.endswith((".h5", ".hdf5")) and not path.endswith(".weights.h5")
    try:
        model.load_weights(path, **({"by_name": True} if legacy_h5 else {}))
    except (ValueError, OSError, KeyError) as error:
        # Keras' messages span lines and can print whole tensors: keep one line, its start.
        reason = " ".join(str(error).split())[:300] or type(error).__name__
        raise ModelFileError(
            f"cannot load weights {path!r} into {model.name}: {reason}; "
            "use a file saved from the same architecture and options"
        ) from error


def add_stem(x, stem, filters, use_bias):
    """The stem: "imagenet" = 7x7/2 conv + 3x3/2 max-pool (downsamples 4x), "small" = 3x3/1
    conv (1x), "small_pool" = 3x3/1 conv + 2x2/2 max-pool (2x); layers `conv1_*` and `pool1_*`.

    Args:
        x: [batch, H, W, 3] preprocessed image.
        stem: one of STEMS.
        filters: conv1 channels.
        use_bias: conv1 bias.

    Returns:
        [batch, H / s, W / s, filters] tensor, s the stem's downsampling (rounded up).
    """
    if stem == "imagenet":
        x = layers.ZeroPadding2D(3, name="conv1_pad")(x)
        x = conv_bn(x, filters, 7, 2, use_bias=use_bias, padding="valid", name="conv1")
        x = layers.ZeroPadding2D(1, name="pool1_pad")(x)
        return layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
    x = conv_bn(x, filters, 3, use_bias=use_bias, name="conv1")
    if stem == "small_pool":
        x = layers.MaxPooling2D(2, name="pool1_pool")(x)
    return x


def make_input(input_tensor, input_shape, include_top):
    """The model's input tensor, following keras.applications: a given Keras tensor is used as
    is; otherwise `input_shape`, by default (224, 224, 3) with the classifier, (None, None, 3)
    without."""
    if input_tensor is not None:
        # Keras 3 cannot wrap backend tensors in an Input, unlike keras.applications' Keras 2 code.
        if not keras.backend.is_keras_tensor(input_tensor):
            raise ConfigError("input_tensor must be a Keras tensor (keras.Input or a layer output)")
        return input_tensor
    if input_shape is None:
        input_shape = (224, 224, 3) if include_top else (None, None, 3)
    if len(input_shape) != 3:
        raise ConfigError(f"input_shape {tuple(input_shape)} is not (height, width, channels)")
    return layers.Input(shape=tuple(input_shape), dtype="float32")


def ResNet(
    stack_fn,
    block="bottleneck",
    use_bias=True,
    include_top=True,
    weights=None,
    input_tensor=None,
    input_shape=None,
    pooling=None,
    classes=1000,
    classifier_activation="softmax",
    name="resnet",
    *,
    shortcut="B",
    plain=False,
    stem="imagenet",
    width=1.0,
    zero_init_residual=False,
    preprocessing="scale",
):
    """Build a ResNet from its stages.

    Args:
        stack_fn: `stack_fn(x, stack) -> tensor` lists the stages by calling
            `stack(x, filters, blocks, stride1=2, name="convN")`; `stack` already carries the
            block type and the options below.
        block: "basic" (ResNet-18/34) or "bottleneck" (ResNet-50/101/152).
        use_bias: conv biases (keras.applications: yes; torchvision: no).
        include_top: end with global average pooling and the `predictions` Dense.
        weights: None (random initialisation) or the path of a weights file.
        input_tensor: optional Keras tensor to use as the image input.
        input_shape: (height, width, 3); default (224, 224, 3), or (None, None, 3) without top.
        pooling: without top: None (4D feature map), "avg" or "max" (2D features).
        classes: number of classes of the classifier.
        classifier_activation: activation of `predictions`; None for logits.
        name: model name.
        shortcut: "A" (parameter-free, zero-padded), "B" (projection when the shape changes),
            "C" (projection everywhere).
        plain: no shortcuts at all (the degradation experiment).
        stem: "imagenet" (7x7/2 conv + 3x3/2 max-pool), "small" (3x3/1 conv, for 32..96 px)
            or "small_pool" (3x3/1 conv + 2x2/2 max-pool).
        width: multiplier of every stage's filters and of the stem's (0.5: 32 instead of 64).
        zero_init_residual: last batch norm of each residual block starts at gamma=0.
        preprocessing: "scale" (x / 255), "caffe" (BGR minus ImageNet mean) or None;
            see models.preprocessing.

    Returns:
        A keras.Model from float32 RGB pixels in 0..255 to float32 class probabilities
        [batch, classes] (or features without top).

    Raises:
        ConfigError: an option has a value that cannot work (the message says which).
        ModelFileError: `weights` does not fit the model.
    """
    if block not in BLOCKS:
        raise ConfigError(f"unknown block {block!r}; choose one of: {', '.join(BLOCKS)}")
    if shortcut not in SHORTCUTS:
        raise ConfigError(f"unknown shortcut {shortcut!r}; choose one of: {', '.join(SHORTCUTS)}")
    if pooling not in POOLINGS:
        raise ConfigError(f"unknown pooling {pooling!r}; choose None, 'avg' or 'max'")
    if not width > 0:
        raise ConfigError(f"width must be a positive number, got {width!r}")
    if include_top and classes < 1:
        raise ConfigError(f"classes must be at least 1, got {classes!r}")
    if plain and zero_init_residual:
        raise ConfigError("zero_init_residual needs shortcuts: a plain block would output zeros")
    check_stem(stem)
    check_preprocessing(preprocessing)
    check_weights(weights)

    img_input = make_input(input_tensor, input_shape, include_top)
    for side in img_input.shape[1:3]:
        if side is not None:
            check_input_size(side, stem)

    x = add_preprocessing(img_input, preprocessing)
    x = add_stem(x, stem, scale_filters(STEM_FILTERS, width), use_bias)
    stack = functools.partial(
        stack_blocks,
        block=block,
        shortcut=shortcut,
        plain=plain,
        width=width,
        use_bias=use_bias,
        zero_init_residual=zero_init_residual,
    )
    x = stack_fn(x, stack)

    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        # float32 classifier: softmax in float16/bfloat16 overflows or loses probability mass.
        x = layers.Dense(
            classes, activation=classifier_activation, dtype="float32", name="predictions"
        )(x)
    elif pooling == "avg":
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    elif pooling == "max":
        x = layers.GlobalMaxPooling2D(name="max_pool")(x)

    inputs = keras.utils.get_source_inputs(input_tensor) if input_tensor is not None else img_input
    model = keras.Model(inputs, x, name=name)
    if weights is not None:
        load_weights(model, weights)
    return model


def ResNet18(
    include_top=True,
    weights=None,
    input_tensor=None,
    input_shape=None,
    pooling=None,
    classes=1000,
    classifier_activation="softmax",
    name="resnet18",
    **options,
):
    """ResNet-18: basic blocks [2, 2, 2, 2]. `options`: keyword options of `ResNet`."""

    def stack_fn(x, stack):
        x = stack(x, 64, 2, stride1=1, name="conv2")
        x = stack(x, 128, 2, name="conv3")
        x = stack(x, 256, 2, name="conv4")
        return stack(x, 512, 2, name="conv5")

    return ResNet(
        stack_fn,
        "basic",
        False,
        include_top,
        weights,
        input_tensor,
        input_shape,
        pooling,
        classes,
        classifier_activation,
        name,
        **options,
    )


def ResNet34(
    include_top=True,
    weights=None,
    input_tensor=None,
    input_shape=None,
    pooling=None,
    classes=1000,
    classifier_activation="softmax",
    name="resnet34",
    **options,
):
    """ResNet-34: basic blocks [3, 4, 6, 3]. `options`: keyword options of `ResNet`."""

    def stack_fn(x, stack):
        x = stack(x, 64, 3, stride1=1, name="conv2")
        x = stack(x, 128, 4, name="conv3")
        x = stack(x, 256, 6, name="conv4")
        return stack(x, 512, 3, name="conv5")

    return ResNet(
        stack_fn,
        "basic",
        False,
        include_top,
        weights,
        input_tensor,
        input_shape,
        pooling,
        classes,
        classifier_activation,
        name,
        **options,
    )


def ResNet50(
    include_top=True,
    weights=None,
    input_tensor=None,
    input_shape=None,
    pooling=None,
    classes=1000,
    classifier_activation="softmax",
    name="resnet50",
    **options,
):
    """ResNet-50: bottleneck blocks [3, 4, 6, 3]. `options`: keyword options of `ResNet`."""

    def stack_fn(x, stack):
        x = stack(x, 64, 3, stride1=1, name="conv2")
        x = stack(x, 128, 4, name="conv3")
        x = stack(x, 256, 6, name="conv4")
        return stack(x, 512, 3, name="conv5")

    return ResNet(
        stack_fn,
        "bottleneck",
        True,
        include_top,
        weights,
        input_tensor,
        input_shape,
        pooling,
        classes,
        classifier_activation,
        name,
        **options,
    )


def ResNet101(
    include_top=True,
    weights=None,
    input_tensor=None,
    input_shape=None,
    pooling=None,
    classes=1000,
    classifier_activation="softmax",
    name="resnet101",
    **options,
):
    """ResNet-101: bottleneck blocks [3, 4, 23, 3]. `options`: keyword options of `ResNet`."""

    def stack_fn(x, stack):
        x = stack(x, 64, 3, stride1=1, name="conv2")
        x = stack(x, 128, 4, name="conv3")
        x = stack(x, 256, 23, name="conv4")
        return stack(x, 512, 3, name="conv5")

    return ResNet(
        stack_fn,
        "bottleneck",
        True,
        include_top,
        weights,
        input_tensor,
        input_shape,
        pooling,
        classes,
        classifier_activation,
        name,
        **options,
    )


def ResNet152(
    include_top=True,
    weights=None,
    input_tensor=None,
    input_shape=None,
    pooling=None,
    classes=1000,
    classifier_activation="softmax",
    name="resnet152",
    **options,
):
    """ResNet-152: bottleneck blocks [3, 8, 36, 3]. `options`: keyword options of `ResNet`."""

    def stack_fn(x, stack):
        x = stack(x, 64, 3, stride1=1, name="conv2")
        x = stack(x, 128, 8, name="conv3")
        x = stack(x, 256, 36, name="conv4")
        return stack(x, 512, 3, name="conv5")

    return ResNet(
        stack_fn,
        "bottleneck",
        True,
        include_top,
        weights,
        input_tensor,
        input_shape,
        pooling,
        classes,
        classifier_activation,
        name,
        **options,
    )


MODEL_BUILDERS = {
    "resnet18": ResNet18,
    "resnet34": ResNet34,
    "resnet50": ResNet50,
    "resnet101": ResNet101,
    "resnet152": ResNet152,
}


def build_model(name, **kwargs):
    """Build the model registered as `name` (a key of MODEL_BUILDERS) with the builder's kwargs.

    Raises:
        ConfigError: `name` is not registered (the message lists the choices).
    """
    if name not in MODEL_BUILDERS:
        raise ConfigError(f"unknown model {name!r}; choose one of: {', '.join(MODEL_BUILDERS)}")
    return MODEL_BUILDERS[name](**kwargs)
