"""ResNet-18/34/50/101/152 (He et al. 2015) built with the Keras 3 Functional API.

The variants are rows of one table, `RESNET_SPECS` (block type and blocks per stage), read by one
generic builder, `ResNet`, which does everything they share (input, preprocessing, stem, stages,
head, pooling, weights); each public variant is a wrapper with keras.applications' signature. The
bottleneck variants reproduce keras.applications ResNet50/101/152 layer for layer (names, weight
order, conv biases), so its weight files load into them. ResNet18/34 match torchvision's
(no conv biases, projection shortcut = 1x1 conv + batch norm).

Models take float32 [batch, H, W, 3] RGB pixels in 0..255; preprocessing is inside the model.
"""

from __future__ import annotations

from models.blocks import BLOCKS, SHORTCUTS, add_stem, scale_filters, stack_blocks
from models.common import (
    STEM_FILTERS,
    add_head,
    applications_variant,
    check_choice,
    check_common_options,
    check_stages,
    check_weights,
    make_input,
    make_model,
)
from models.preprocessing import add_preprocessing, check_preprocessing

# name -> (block type, blocks in each of the stages conv2..conv5).
RESNET_SPECS = {
    "resnet18": ("basic", [2, 2, 2, 2]),
    "resnet34": ("basic", [3, 4, 6, 3]),
    "resnet50": ("bottleneck", [3, 4, 6, 3]),
    "resnet101": ("bottleneck", [3, 4, 23, 3]),
    "resnet152": ("bottleneck", [3, 8, 36, 3]),
}
# Filters of the stages conv2..conv5 at width 1 (a bottleneck stage outputs 4x as many).
STAGE_FILTERS = (64, 128, 256, 512)
# Conv biases: keras.applications' bottleneck networks have them (so its weights load);
# torchvision's basic-block networks do not.
USE_BIAS = {"basic": False, "bottleneck": True}




def ResNet(
    spec,
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
    stochastic_depth=0.0,
    preprocessing="scale",
):
    """Build a ResNet from a row of RESNET_SPECS.

    Args:
        spec: (block, blocks): "basic" (ResNet-18/34) or "bottleneck" (ResNet-50/101/152)
            blocks, and the number of blocks in each of the four stages conv2..conv5,
            e.g. ("bottleneck", [3, 4, 6, 3]).
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
        stochastic_depth: in training, drop the last block's residual branch with this
            probability, earlier blocks' with linearly less (Huang et al. 2016); 0: off.
        preprocessing: "scale" (x / 255), "caffe" (BGR minus ImageNet mean, what
            keras.applications' ResNet weights expect), "torch" or None;
            see models.preprocessing.

    Returns:
        A keras.Model from float32 RGB pixels in 0..255 to float32 class probabilities
        [batch, classes] (or features without top).

    Raises:
        ValueError: an option has a value that cannot work (the message says which), or
            `weights` is missing or does not fit the model (the message names the file).
    """
    if isinstance(spec, str) or len(spec) != 2:
        raise ValueError(
            f"spec must be (block, blocks), e.g. ('bottleneck', [3, 4, 6, 3]); got {spec!r}"
        )
    block, blocks = spec
    check_choice("block", block, tuple(BLOCKS))
    check_stages(blocks)
    check_choice("shortcut", shortcut, SHORTCUTS)
    check_common_options(include_top, pooling, classes, width, stem)
    if plain and zero_init_residual:
        raise ValueError("zero_init_residual needs shortcuts: a plain block would output zeros")
    if not 0.0 <= stochastic_depth < 1.0:
        raise ValueError(f"stochastic_depth must be in [0, 1), got {stochastic_depth}")
    if plain and stochastic_depth:
        raise ValueError("stochastic_depth drops residual branches: a plain network has none")
    check_preprocessing(preprocessing)
    check_weights(weights, "ResNet")
    # Block k of n (1-based, across stages) is dropped with probability k / n * stochastic_depth.
    total = sum(blocks)
    drop_rates = [stochastic_depth * (k + 1) / total for k in range(total)]

    image = make_input(input_tensor, input_shape, include_top, stem)
    use_bias = USE_BIAS[block]
    x = add_preprocessing(image, preprocessing)
    x = add_stem(x, stem, scale_filters(STEM_FILTERS, width), use_bias, pool_name="pool1_pool")
    for index, (filters, count) in enumerate(zip(STAGE_FILTERS, blocks, strict=True)):
        x = stack_blocks(
            x,
            filters,
            count,
            # The first stage follows the stem's pool: no stride of its own.
            stride1=1 if index == 0 else 2,
            name=f"conv{index + 2}",
            block=block,
            shortcut=shortcut,
            plain=plain,
            width=width,
            use_bias=use_bias,
            zero_init_residual=zero_init_residual,
            drop_rates=drop_rates[sum(blocks[:index]):sum(blocks[: index + 1])],
        )
    x = add_head(x, include_top, pooling, classes, classifier_activation)
    return make_model(image, input_tensor, x, weights, name)


# The variants: keras.applications' constructors, one row of the spec table each.
ResNet18 = applications_variant(
    ResNet, RESNET_SPECS["resnet18"], "resnet18",
    "ResNet-18: basic blocks [2, 2, 2, 2]. `options`: keyword options of `ResNet`.",
)
ResNet34 = applications_variant(
    ResNet, RESNET_SPECS["resnet34"], "resnet34",
    "ResNet-34: basic blocks [3, 4, 6, 3]. `options`: keyword options of `ResNet`.",
)
ResNet50 = applications_variant(
    ResNet, RESNET_SPECS["resnet50"], "resnet50",
    "ResNet-50: bottleneck blocks [3, 4, 6, 3]. `options`: keyword options of `ResNet`.",
)
ResNet101 = applications_variant(
    ResNet, RESNET_SPECS["resnet101"], "resnet101",
    "ResNet-101: bottleneck blocks [3, 4, 23, 3]. `options`: keyword options of `ResNet`.",
)
ResNet152 = applications_variant(
    ResNet, RESNET_SPECS["resnet152"], "resnet152",
    "ResNet-152: bottleneck blocks [3, 8, 36, 3]. `options`: keyword options of `ResNet`.",
)
