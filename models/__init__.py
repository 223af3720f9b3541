"""The ResNet model family: `from models import ResNet50, build_model`."""

from models.blocks import (
    basic_block,
    bottleneck_block,
    conv_block,
    identity_block,
    stack_blocks,
)
from models.common import STEMS, check_input_size, minimum_input_size
from models.preprocessing import PREPROCESS_PREFIX, PREPROCESSING_MODES, add_preprocessing
from models.registry import MODEL_BUILDERS, build_model
from models.resnet import (
    RESNET_SPECS,
    ResNet,
    ResNet18,
    ResNet34,
    ResNet50,
    ResNet101,
    ResNet152,
)

__all__ = [
    "MODEL_BUILDERS",
    "PREPROCESSING_MODES",
    "PREPROCESS_PREFIX",
    "RESNET_SPECS",
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
