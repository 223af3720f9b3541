"""ResNet building blocks as plain functions `block(x, filters, ..., name) -> tensor`.

Tensors are channels_last float tensors [batch, height, width, channels]. Layer names follow
keras.applications `resnet.py` (`{name}_0_conv` is the projection shortcut, `{name}_1_conv` ...
the residual branch, then `{name}_add` and `{name}_out`), so the bottleneck networks load
keras.applications weights by name.

Shortcut options of He et al. 2015 (section 4.1), given per block as `shortcut`:
  "A"  parameter-free: identity; when the shape changes, strided subsampling plus zero channels;
  "B"  projection (1x1 conv + batch norm) only when the shape changes, identity otherwise;
  "C"  projection in every block;
  None no shortcut at all (the plain network of the degradation experiment).
"""

from __future__ import annotations

from keras import layers

SHORTCUTS = ("A", "B", "C")
BN_EPSILON = 1.001e-5  # keras.applications' value, kept so its batch-norm statistics transfer.
# He et al. initialise convolutions with their fan-in normal init (the paper's reference [13]).
KERNEL_INITIALIZER = "he_normal"


def conv_bn(
    x,
    filters,
    kernel_size,
    stride=1,
    use_bias=True,
    gamma_zero=False,
    relu=True,
    padding=None,
    name=None,
):
    """Conv2D then BatchNormalization, then ReLU if `relu`: layers `{name}_conv/_bn/_relu`.

    Args:
        x: [batch, H, W, C] tensor.
        filters: output channels.
        kernel_size: square kernel side in pixels.
        stride: the conv's stride.
        use_bias: give the conv a bias (keras.applications does; torchvision does not).
        gamma_zero: initialise the batch norm's scale to 0 (zero-init of a residual branch).
        relu: append the ReLU.
        padding: "valid" or "same"; by default "valid" for 1x1 kernels and "same" otherwise,
            so the output side is ceil(H / stride).
        name: prefix of the layer names.

    Returns:
        [batch, H', W', filters] tensor; H' = ceil(H / stride) with the default padding.
    """
    x = layers.Conv2D(
        filters,
        kernel_size,
        strides=stride,
        padding=padding or ("valid" if kernel_size == 1 else "same"),
        use_bias=use_bias,
        kernel_initializer=KERNEL_INITIALIZER,
        name=f"{name}_conv",
    )(x)
    x = layers.BatchNormalization(
        epsilon=BN_EPSILON,
        gamma_initializer="zeros" if gamma_zero else "ones",
        name=f"{name}_bn",
    )(x)
    if relu:
        x = layers.Activation("relu", name=f"{name}_relu")(x)
    return x


def add_stem(x, stem, filters, use_bias, pool_name):
    """The stem both families share: "imagenet" = 7x7/2 conv + 3x3/2 max-pool (downsamples 4x),
    "small" = 3x3/1 conv (1x), "small_pool" = 3x3/1 conv + 2x2/2 max-pool (2x). Layers
    `conv1_pad`, `conv1_*`, `pool1_pad` and the pool `pool_name` (keras.applications calls it
    `pool1_pool` in ResNets and `pool1` in DenseNets; weights load by these names).

    Args:
        x: [batch, H, W, 3] preprocessed image.
        stem: one of STEMS.
        filters: conv1 channels.
        use_bias: conv1 bias (ResNet-50/101/152 as keras.applications: yes; the others: no).
        pool_name: name of the max-pool layer.

    Returns:
        [batch, H / s, W / s, filters] tensor, s the stem's downsampling (rounded up).
    """
    if stem == "imagenet":
        x = layers.ZeroPadding2D(3, name="conv1_pad")(x)
        x = conv_bn(x, filters, 7, 2, use_bias=use_bias, padding="valid", name="conv1")
        x = layers.ZeroPadding2D(1, name="pool1_pad")(x)
        return layers.MaxPooling2D(3, strides=2, name=pool_name)(x)
    x = conv_bn(x, filters, 3, use_bias=use_bias, name="conv1")
    if stem == "small_pool":
        x = layers.MaxPooling2D(2, name=pool_name)(x)
    return x


def shortcut_branch(x, out_channels, stride, shortcut, use_bias, name):
    """The shortcut of a block: the tensor added to the residual branch, or None (plain).

    Args:
        x: the block input, [batch, H, W, C].
        out_channels: channels of the block output.
        stride: the block's stride.
        shortcut: "A", "B", "C" or None (see the module docstring).
        use_bias: bias on the projection conv.
        name: the block name; shortcut layers are named `{name}_0_*`.

    Returns:
        [batch, ceil(H / stride), ceil(W / stride), out_channels] tensor, or None.
    """
    if shortcut is None:
        return None
    in_channels = x.shape[-1]
    changes_shape = stride != 1 or in_channels != out_channels
    if shortcut == "C" or (shortcut == "B" and changes_shape):
        return conv_bn(x, out_channels, 1, stride, use_bias=use_bias, relu=False, name=f"{name}_0")
    if stride != 1:
        # A 1x1 max-pool with a stride takes every stride-th pixel: the paper's subsampling.
        x = layers.MaxPooling2D(1, strides=stride, name=f"{name}_0_pool")(x)
    if out_channels > in_channels:
        # channels_first makes ZeroPadding2D pad the (W, C) axes of our channels_last tensor:
        # a parameter-free, built-in way to append zero channels that saves and loads anywhere.
        x = layers.ZeroPadding2D(
            ((0, 0), (0, out_channels - in_channels)),
            data_format="channels_first",
            name=f"{name}_0_pad",
        )(x)
    return x


def merge(x, shortcut, name, drop_rate=0.0):
    """Add the shortcut (unless plain) and apply the block's final ReLU `{name}_out`.

    `drop_rate` > 0: stochastic depth (Huang et al. 2016). In training, each image's residual
    branch is dropped with this probability (the block passes its shortcut alone) and kept ones
    are scaled by 1 / (1 - drop_rate); at inference the branch is always kept, unscaled. It is
    Keras' Dropout with one mask value per image (`{name}_drop`), so it has no weights and loads
    anywhere.
    """
    if shortcut is not None:
        if drop_rate > 0:
            x = layers.Dropout(drop_rate, noise_shape=(None, 1, 1, 1), name=f"{name}_drop")(x)
            # Keras orders a model's layers (and so its weights) by depth: one layer on each path
            # keeps the order of the same network without stochastic depth, so weights transfer.
            shortcut = layers.Identity(name=f"{name}_0_identity")(shortcut)
        x = layers.Add(name=f"{name}_add")([shortcut, x])
    return layers.Activation("relu", name=f"{name}_out")(x)


def basic_block(
    x,
    filters,
    kernel_size=3,
    stride=1,
    shortcut="B",
    use_bias=False,
    zero_init_residual=False,
    name=None,
    drop_rate=0.0,
):
    """The two-layer block of ResNet-18/34: 3x3 conv (strided) then 3x3 conv, expansion 1.

    Args:
        x: [batch, H, W, C] tensor.
        filters: channels of both convs and of the output.
        kernel_size: side of both convs.
        stride: stride of the first conv (and of the shortcut).
        shortcut: "A", "B", "C" or None for a plain block.
        use_bias: conv biases (torchvision's ResNet-18/34 have none).
        zero_init_residual: start the last batch norm at gamma=0, so the block starts as its shortcut.
        name: block label, e.g. "conv3_block1".
        drop_rate: stochastic depth, the probability of dropping the residual branch in training.

    Returns:
        [batch, ceil(H / stride), ceil(W / stride), filters] tensor.
    """
    short = shortcut_branch(x, filters, stride, shortcut, use_bias, name)
    x = conv_bn(x, filters, kernel_size, stride, use_bias=use_bias, name=f"{name}_1")
    x = conv_bn(
        x,
        filters,
        kernel_size,
        use_bias=use_bias,
        gamma_zero=zero_init_residual,
        relu=False,
        name=f"{name}_2",
    )
    return merge(x, short, name, drop_rate)


def bottleneck_block(
    x,
    filters,
    kernel_size=3,
    stride=1,
    shortcut="B",
    use_bias=True,
    zero_init_residual=False,
    name=None,
    drop_rate=0.0,
):
    """The bottleneck block of ResNet-50/101/152: 1x1 (strided) - 3x3 - 1x1 conv, expansion 4.

    The stride sits on the first 1x1 conv, as in the original paper and keras.applications.

    Args:
        x: [batch, H, W, C] tensor.
        filters: channels of the 1x1 and 3x3 bottleneck convs; the output has 4 * filters.
        kernel_size: side of the middle conv.
        stride: stride of the first conv (and of the shortcut).
        shortcut: "A", "B", "C" or None for a plain block.
        use_bias: conv biases (keras.applications has them).
        zero_init_residual: start the last batch norm at gamma=0, so the block starts as its shortcut.
        name: block label, e.g. "conv3_block1".
        drop_rate: stochastic depth, the probability of dropping the residual branch in training.

    Returns:
        [batch, ceil(H / stride), ceil(W / stride), 4 * filters] tensor.
    """
    short = shortcut_branch(x, 4 * filters, stride, shortcut, use_bias, name)
    x = conv_bn(x, filters, 1, stride, use_bias=use_bias, name=f"{name}_1")
    x = conv_bn(x, filters, kernel_size, use_bias=use_bias, name=f"{name}_2")
    x = conv_bn(
        x,
        4 * filters,
        1,
        use_bias=use_bias,
        gamma_zero=zero_init_residual,
        relu=False,
        name=f"{name}_3",
    )
    return merge(x, short, name, drop_rate)


def identity_block(x, filters, kernel_size=3, use_bias=True, zero_init_residual=False, name=None):
    """ResNet-50's identity block: a stride-1 bottleneck whose shortcut is the input itself.

    Args:
        x: [batch, H, W, 4 * filters] tensor.
        filters, kernel_size, use_bias, zero_init_residual, name: as in `bottleneck_block`.

    Returns:
        [batch, H, W, 4 * filters] tensor: the input shape.
    """
    return bottleneck_block(
        x, filters, kernel_size, 1, "A", use_bias, zero_init_residual, name=name
    )


def conv_block(
    x, filters, kernel_size=3, stride=2, use_bias=True, zero_init_residual=False, name=None
):
    """ResNet-50's conv block: a bottleneck with a strided 1x1 projection shortcut (option B).

    Args:
        x: [batch, H, W, C] tensor.
        filters, kernel_size, use_bias, zero_init_residual, name: as in `bottleneck_block`.
        stride: stride of the first conv and of the projection; 1 in the first stage.

    Returns:
        [batch, ceil(H / stride), ceil(W / stride), 4 * filters] tensor.
    """
    return bottleneck_block(
        x, filters, kernel_size, stride, "C", use_bias, zero_init_residual, name=name
    )


BLOCKS = {"basic": basic_block, "bottleneck": bottleneck_block}


def stack_blocks(
    x,
    filters,
    blocks,
    stride1=2,
    name=None,
    *,
    block="bottleneck",
    shortcut="B",
    plain=False,
    width=1.0,
    use_bias=True,
    zero_init_residual=False,
    drop_rates=None,
):
    """One stage: `blocks` blocks named `{name}_block1` ... `{name}_block{blocks}`.

    Args:
        x: [batch, H, W, C] tensor.
        filters: the stage's filters at width 1 (64, 128, 256, 512 in the paper).
        blocks: number of blocks.
        stride1: stride of the first block; 1 in the first stage, which follows the stem's pool.
        name: stage label, e.g. "conv3".
        block: "basic" or "bottleneck".
        shortcut: "A", "B" or "C"; ignored when `plain`.
        plain: drop the shortcuts.
        width: multiplier of `filters`, rounded to an int.
        use_bias, zero_init_residual: passed to every block.
        drop_rates: stochastic depth, one drop probability per block (default: none dropped).

    Returns:
        [batch, ceil(H / stride1), ceil(W / stride1), expansion * scaled filters] tensor.
    """
    block_fn = BLOCKS[block]
    drop_rates = drop_rates or [0.0] * blocks
    for i in range(1, blocks + 1):
        x = block_fn(
            x,
            scale_filters(filters, width),
            stride=stride1 if i == 1 else 1,
            shortcut=None if plain else shortcut,
            use_bias=use_bias,
            zero_init_residual=zero_init_residual,
            name=f"{name}_block{i}",
            drop_rate=drop_rates[i - 1],
        )
    return x


def scale_filters(filters, width):
    """`filters * width` rounded to the nearest int, at least 1."""
    return max(1, round(filters * width))
