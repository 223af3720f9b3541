"""The ResNet model family: `from models import ResNet50, build_model`."""

from models.blocks import (
    basic_block,
    bottleneck_block,
    conv_block,
    identity_block,
    stack_blocks,
)
from models.preprocessing import PREPROCESS_PREFIX, PREPROCESSING_MODES, add_preprocessing
from models.resnet import (
    MODEL_BUILDERS,
    STEMS,
    ResNet,
    ResNet18,
    ResNet34,
    ResNet50,
    ResNet101,
    ResNet152,
    build_model,
    check_input_size,
    minimum_input_size,
)

__all__ = [
    "MODEL_BUILDERS",
    "PREPROCESSING_MODES",
    "PREPROCESS_PREFIX",
    "STEMS",
    "ResNet",
    "ResNet18",
    "ResNet34",
    "ResNet50",
    "ResNet101",
    "ResNet152",
    "add_preprocessing",
    "basic_block",
    "bottleneck_block",
    "build_model",
    "check_input_size",
    "conv_block",
    "identity_block",
    "minimum_input_size",
    "stack_blocks",
]
