"""Every model by name, and where each family's last convolutional stage is.

MODEL_BUILDERS is the one registry the app derives its `--model` choices from.
"""

from __future__ import annotations

import re

from models.densenet import DenseNet121, DenseNet169, DenseNet201
from models.resnet import ResNet18, ResNet34, ResNet50, ResNet101, ResNet152

MODEL_BUILDERS = {
    "resnet18": ResNet18,
    "resnet34": ResNet34,
    "resnet50": ResNet50,
    "resnet101": ResNet101,
    "resnet152": ResNet152,
    "densenet121": DenseNet121,
    "densenet169": DenseNet169,
    "densenet201": DenseNet201,
}

# The last convolutional feature map of each family (what Grad-CAM reads): DenseNet ends its
# last dense block with keras.applications' `bn` then `relu`; a ResNet's stages end with
# `convN_blockM_out`, the last of which is the last stage's last block.
DENSENET_LAST_CONV_LAYER = "relu"
RESNET_STAGE_OUTPUT = re.compile(r"conv\d+_block\d+_out")


def build_model(name, **kwargs):
    """Build the model registered as `name` (a key of MODEL_BUILDERS) with the builder's kwargs.

    Raises:
        ValueError: `name` is not registered (the message lists the choices), or the builder
            rejects an option.
    """
    if name not in MODEL_BUILDERS:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(MODEL_BUILDERS)}")
    return MODEL_BUILDERS[name](**kwargs)


def last_conv_layer_name(model):
    """The name of the layer whose output is `model`'s last convolutional feature map
    [batch, h, w, channels], after its activation: `relu` in a DenseNet, the last
    `convN_blockM_out` in a ResNet (e.g. `conv5_block3_out` in ResNet-50).

    Works with or without the top and on models built with any of our options.

    Raises:
        ValueError: `model` is not one of our (or keras.applications') ResNets or DenseNets.
    """
    names = [layer.name for layer in model.layers]
    if DENSENET_LAST_CONV_LAYER in names and "bn" in names:
        return DENSENET_LAST_CONV_LAYER
    stage_outputs = [name for name in names if RESNET_STAGE_OUTPUT.fullmatch(name)]
    if stage_outputs:
        return stage_outputs[-1]
    raise ValueError(
        f"{model.name} has neither a DenseNet's final `relu` nor a ResNet's `convN_blockM_out` "
        "layers: it is not a ResNet or DenseNet built by models/ or keras.applications"
    )
