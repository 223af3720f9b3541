"""What every model family's builder shares: argument checks, the input, the head, weights.

The stems have the same downsampling in every family (ResNet, DenseNet), and both families
downsample 8x more after the stem (three strided stages or transitions), so input sizes are
checked here once. Every check raises ValueError, as keras.applications does, with a message
that names the argument and the values that work.
"""

from __future__ import annotations

import os

import keras
from keras import layers

# Each stem's downsampling times the 8 of the three strided stages (ResNet) or transitions
# (DenseNet): the smallest image side for which the last feature map is at least 1x1 without
# reading only padding.
MINIMUM_INPUT_SIZE = {"imagenet": 32, "small_pool": 16, "small": 8}
STEMS = tuple(MINIMUM_INPUT_SIZE)
POOLINGS = (None, "avg", "max")
STEM_FILTERS = 64


def check_choice(kind, value, choices):
    """Raise ValueError unless `value` is one of `choices`; the message lists them."""
    if value not in choices:
        listed = ", ".join(repr(c) if c is None else str(c) for c in choices)
        raise ValueError(f"unknown {kind} {value!r}; choose one of: {listed}")


def check_stem(stem):
    """Raise ValueError unless `stem` is one of STEMS."""
    check_choice("stem", stem, STEMS)


def minimum_input_size(stem="imagenet"):
    """The smallest image side in pixels a network with this stem accepts (32 for "imagenet").

    It is also the network's total downsampling: image sides that are multiples of it keep every
    strided layer's input even.
    """
    check_stem(stem)
    return MINIMUM_INPUT_SIZE[stem]


def check_input_size(image_size, stem="imagenet"):
    """Raise ValueError if an image side of `image_size` pixels is too small for `stem`."""
    minimum = minimum_input_size(stem)
    if image_size < minimum:
        raise ValueError(
            f"image size {image_size} px is too small for the {stem!r} stem, which downsamples "
            f"by {minimum}: use an image size of at least {minimum} px"
        )


def check_stages(blocks):
    """Raise ValueError unless `blocks` lists four positive block counts, one per stage."""
    if (
        isinstance(blocks, str)
        or len(blocks) != 4
        or not all(isinstance(n, int) and n > 0 for n in blocks)
    ):
        raise ValueError(
            f"blocks must be four positive block counts, one per stage, e.g. [3, 4, 6, 3]; "
            f"got {blocks!r}"
        )


def check_common_options(include_top, pooling, classes, width, stem):
    """Raise ValueError for the keras.applications arguments and options every family has."""
    check_choice("pooling", pooling, POOLINGS)
    if include_top and classes < 1:
        raise ValueError(f"classes must be at least 1, got {classes!r}")
    if not width > 0:
        raise ValueError(f"width must be a positive number, got {width!r}")
    check_stem(stem)


def check_weights(weights, family):
    """Raise ValueError unless `weights` is None or the path of an existing file.

    Args:
        weights: None or a path.
        family: the model family, e.g. "ResNet", named in the message about "imagenet".
    """
    if weights is None or os.path.isfile(weights):
        return
    if weights == "imagenet":
        raise ValueError(
            "the model builders do not download ImageNet weights: pass the path of "
            f"keras.applications' {family} weights .h5 file (idenprof's train.py "
            "--weights imagenet fetches it for ResNet-50/101/152)"
        )
    raise ValueError(
        f"weights file not found: {weights!r}; pass None for random initialisation "
        "or the path of a .weights.h5 / .h5 / .keras file"
    )


def load_weights(model, path):
    """Load a weights file into `model`; legacy .h5/.hdf5 files load by layer name.

    Raises:
        ValueError: the file does not fit the model (other layers or shapes) or is unreadable;
            the message names the file.
    """
    path = str(path)
    legacy_h5 = path.endswith((".h5", ".hdf5")) and not path.endswith(".weights.h5")
    try:
        model.load_weights(path, **({"by_name": True} if legacy_h5 else {}))
    except (ValueError, OSError, KeyError) as error:
        # Keras' messages span lines and can print whole tensors: keep one line, its start.
        reason = " ".join(str(error).split())[:300] or type(error).__name__
        raise ValueError(
            f"cannot load weights {path!r} into {model.name}: {reason}; "
            "use a file saved from the same architecture and options"
        ) from error


def make_input(input_tensor, input_shape, include_top, stem):
    """The model's input tensor, following keras.applications: a given Keras tensor is used as
    is; otherwise `input_shape`, by default (224, 224, 3) with the classifier, (None, None, 3)
    without. Known sides are checked against the stem's minimum."""
    if input_tensor is not None:
        # Keras 3 cannot wrap backend tensors in an Input, unlike keras.applications' Keras 2 code.
        if not keras.backend.is_keras_tensor(input_tensor):
            raise ValueError("input_tensor must be a Keras tensor (keras.Input or a layer output)")
        image = input_tensor
    else:
        if input_shape is None:
            input_shape = (224, 224, 3) if include_top else (None, None, 3)
        if len(input_shape) != 3:
            raise ValueError(f"input_shape {tuple(input_shape)} is not (height, width, channels)")
        image = layers.Input(shape=tuple(input_shape), dtype="float32")
    for side in image.shape[1:3]:
        if side is not None:
            check_input_size(side, stem)
    return image


def add_head(x, include_top, pooling, classes, classifier_activation):
    """keras.applications' head: with top, global average pooling `avg_pool` and the classifier
    `predictions`; without, the feature map, or its `avg_pool` / `max_pool` global pooling.

    Returns:
        float32 [batch, classes] with top; [batch, channels] pooled; else x unchanged.
    """
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        # float32 classifier: softmax in float16/bfloat16 overflows or loses probability mass.
        return layers.Dense(
            classes, activation=classifier_activation, dtype="float32", name="predictions"
        )(x)
    if pooling == "avg":
        return layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if pooling == "max":
        return layers.GlobalMaxPooling2D(name="max_pool")(x)
    return x


def make_model(image, input_tensor, outputs, weights, name):
    """The keras.Model from the image input (or `input_tensor`'s source inputs) to `outputs`,
    with `weights` loaded when given."""
    inputs = keras.utils.get_source_inputs(input_tensor) if input_tensor is not None else image
    model = keras.Model(inputs, outputs, name=name)
    if weights is not None:
        load_weights(model, weights)
    return model


def applications_variant(builder, spec, default_name, doc):
    """A keras.applications-style constructor for one row of a spec table: exactly the
    signature of keras.applications' `ResNet50` (include_top, weights, input_tensor,
    input_shape, pooling, classes, classifier_activation, name), plus `**options` passed on to
    `builder(spec, ...)`. Every variant of both families is one call of this."""

    def variant(
        include_top=True,
        weights=None,
        input_tensor=None,
        input_shape=None,
        pooling=None,
        classes=1000,
        classifier_activation="softmax",
        name=default_name,
        **options,
    ):
        return builder(
            spec,
            include_top=include_top,
            weights=weights,
            input_tensor=input_tensor,
            input_shape=input_shape,
            pooling=pooling,
            classes=classes,
            classifier_activation=classifier_activation,
            name=name,
            **options,
        )

    variant.__doc__ = doc
    return variant

