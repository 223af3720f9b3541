"""DenseNet-121/169/201 (Huang et al. 2017, DenseNet-BC) built with the Keras 3 Functional API.

The variants are rows of one table, `DENSENET_SPECS` (dense layers in each of the four dense
blocks), read by one generic builder, `DenseNet`, which does everything they share (input,
preprocessing, stem, dense blocks and transitions, head, pooling, weights); each public variant
is a wrapper with keras.applications' signature. At the default options the networks reproduce
keras.applications DenseNet121/169/201 layer for layer (names, weight order), so its weight files
load into them; the stem's two ZeroPadding2D layers, unnamed there, are `conv1_pad` and
`pool1_pad` here, as in our ResNets.

Models take float32 [batch, H, W, 3] RGB pixels in 0..255; preprocessing is inside the model.
"""

from __future__ import annotations

from keras import layers

from models.blocks import BN_EPSILON, add_stem, scale_filters
from models.common import (
    STEM_FILTERS,
    add_head,
    applications_variant,
    check_common_options,
    check_stages,
    check_weights,
    make_input,
    make_model,
)
from models.densenet_blocks import dense_block, transition_block
from models.preprocessing import add_preprocessing, check_preprocessing

# name -> dense layers in each of the dense blocks conv2..conv5.
DENSENET_SPECS = {
    "densenet121": [6, 12, 24, 16],
    "densenet169": [6, 12, 32, 32],
    "densenet201": [6, 12, 48, 32],
}




def DenseNet(
    blocks,
    include_top=True,
    weights=None,
    input_tensor=None,
    input_shape=None,
    pooling=None,
    classes=1000,
    classifier_activation="softmax",
    name="densenet",
    *,
    stem="imagenet",
    growth_rate=32,
    compression=0.5,
    width=1.0,
    zero_init_residual=False,
    stochastic_depth=0.0,
    preprocessing="torch",
):
    """Build a DenseNet from a row of DENSENET_SPECS.

    Args:
        blocks: dense layers in each of the four dense blocks conv2..conv5, e.g. [6, 12, 24, 16].
        include_top: end with global average pooling and the `predictions` Dense.
        weights: None (random initialisation) or the path of a weights file.
        input_tensor: optional Keras tensor to use as the image input.
        input_shape: (height, width, 3); default (224, 224, 3), or (None, None, 3) without top.
        pooling: without top: None (4D feature map), "avg" or "max" (2D features).
        classes: number of classes of the classifier.
        classifier_activation: activation of `predictions`; None for logits.
        name: model name.
        stem: "imagenet" (7x7/2 conv + 3x3/2 max-pool), "small" (3x3/1 conv, for 32..96 px)
            or "small_pool" (3x3/1 conv + 2x2/2 max-pool).
        growth_rate: channels each dense layer adds, at width 1.
        compression: fraction of the channels each transition keeps, in (0, 1].
        width: multiplier of the growth rate and of the stem's filters (0.5: 16 and 32).
        zero_init_residual, stochastic_depth: accepted so one set of options builds either
            family; DenseNet has no residual branch, so only False and 0 work.
        preprocessing: "torch" (the default: pixels / 255 normalised by the ImageNet mean and
            std, what keras.applications' DenseNet weights expect, so a weights file trained
            there works here unchanged), "scale", "caffe" or None; see models.preprocessing.

    Returns:
        A keras.Model from float32 RGB pixels in 0..255 to float32 class probabilities
        [batch, classes] (or features without top).

    Raises:
        ValueError: an option has a value that cannot work (the message says which), or
            `weights` is missing or does not fit the model (the message names the file).
    """
    check_stages(blocks)
    check_common_options(include_top, pooling, classes, width, stem)
    if isinstance(growth_rate, bool) or not isinstance(growth_rate, int) or growth_rate < 1:
        raise ValueError(f"growth_rate must be a positive int, got {growth_rate!r}")
    if not 0 < compression <= 1:
        raise ValueError(f"compression must be in (0, 1], got {compression!r}")
    for option, value in (("zero_init_residual", zero_init_residual), ("stochastic_depth", stochastic_depth)):
        if value:
            raise ValueError(
                f"{option} applies to ResNets' residual blocks; DenseNet has none: leave it unset"
            )
    check_preprocessing(preprocessing)
    check_weights(weights, "DenseNet")

    image = make_input(input_tensor, input_shape, include_top, stem)
    x = add_preprocessing(image, preprocessing)
    x = add_stem(x, stem, scale_filters(STEM_FILTERS, width), use_bias=False, pool_name="pool1")
    growth = scale_filters(growth_rate, width)
    for index, count in enumerate(blocks):
        if index > 0:
            x = transition_block(x, compression, name=f"pool{index + 1}")
        x = dense_block(x, count, name=f"conv{index + 2}", growth_rate=growth)
    # Dense layers are pre-activation: the last block's output is normalised here.
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name="bn")(x)
    x = layers.Activation("relu", name="relu")(x)
    x = add_head(x, include_top, pooling, classes, classifier_activation)
    return make_model(image, input_tensor, x, weights, name)


# The variants: keras.applications' constructors, one row of the spec table each.
DenseNet121 = applications_variant(
    DenseNet, DENSENET_SPECS["densenet121"], "densenet121",
    "DenseNet-121: dense blocks [6, 12, 24, 16]. `options`: keyword options of `DenseNet`.",
)
DenseNet169 = applications_variant(
    DenseNet, DENSENET_SPECS["densenet169"], "densenet169",
    "DenseNet-169: dense blocks [6, 12, 32, 32]. `options`: keyword options of `DenseNet`.",
)
DenseNet201 = applications_variant(
    DenseNet, DENSENET_SPECS["densenet201"], "densenet201",
    "DenseNet-201: dense blocks [6, 12, 48, 32]. `options`: keyword options of `DenseNet`.",
)
