"""DenseNet building blocks as plain functions `block(x, ..., name) -> tensor`.

Tensors are channels_last float tensors [batch, height, width, channels]. Layer names and weight
order follow keras.applications `densenet.py` (`{name}_0_bn` ... `{name}_2_conv`, `{name}_concat`
in a dense layer; `{name}_bn/_relu/_conv/_pool` in a transition), so its weight files load by
name. Kept apart from models.blocks, whose `conv_block` is ResNet-50's.
"""

from __future__ import annotations

from keras import layers

from models.blocks import BN_EPSILON, KERNEL_INITIALIZER


def bn_relu(x, name):
    """BatchNormalization `{name}_bn` then ReLU `{name}_relu` (DenseNet is pre-activation)."""
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_bn")(x)
    return layers.Activation("relu", name=f"{name}_relu")(x)


def conv(x, filters, kernel_size, name):
    """A bias-free Conv2D `{name}`, "same" padding, stride 1."""
    return layers.Conv2D(
        filters,
        kernel_size,
        padding="same",
        use_bias=False,
        kernel_initializer=KERNEL_INITIALIZER,
        name=name,
    )(x)


def conv_block(x, growth_rate, name):
    """One dense layer: BN-ReLU-1x1 conv (4 * growth_rate) - BN-ReLU-3x3 conv (growth_rate),
    its output concatenated to its input.

    Args:
        x: [batch, H, W, C] tensor.
        growth_rate: channels the layer adds.
        name: layer label, e.g. "conv2_block1".

    Returns:
        [batch, H, W, C + growth_rate] tensor.
    """
    y = bn_relu(x, f"{name}_0")
    y = conv(y, 4 * growth_rate, 1, f"{name}_1_conv")
    y = bn_relu(y, f"{name}_1")
    y = conv(y, growth_rate, 3, f"{name}_2_conv")
    return layers.Concatenate(name=f"{name}_concat")([x, y])


def dense_block(x, blocks, name, growth_rate=32):
    """A dense block: `blocks` dense layers `{name}_block1` ... `{name}_block{blocks}`.

    Args:
        x: [batch, H, W, C] tensor.
        blocks: number of dense layers.
        name: block label, e.g. "conv2".
        growth_rate: channels each layer adds.

    Returns:
        [batch, H, W, C + blocks * growth_rate] tensor.
    """
    for i in range(1, blocks + 1):
        x = conv_block(x, growth_rate, name=f"{name}_block{i}")
    return x


def transition_block(x, reduction, name):
    """A transition: BN-ReLU-1x1 conv keeping `reduction` of the channels, then 2x2/2 average
    pooling.

    Args:
        x: [batch, H, W, C] tensor.
        reduction: fraction of the channels kept (the paper's compression, 0.5 in DenseNet-BC).
        name: transition label, e.g. "pool2".

    Returns:
        [batch, H // 2, W // 2, int(C * reduction)] tensor (at least 1 channel).
    """
    x = bn_relu(x, name)
    x = conv(x, max(1, int(x.shape[-1] * reduction)), 1, f"{name}_conv")
    return layers.AveragePooling2D(2, strides=2, name=f"{name}_pool")(x)
