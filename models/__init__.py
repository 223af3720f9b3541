"""The model family: ResNet-18/34/50/101/152 and DenseNet-121/169/201, Keras 3 Functional API.

    from models import ResNet50, DenseNet121, build_model
    model = build_model("densenet121", classes=10, input_shape=(224, 224, 3))

Each family has one generic builder reading a row of its spec table (`ResNet` with
RESNET_SPECS, `DenseNet` with DENSENET_SPECS); the public variants have keras.applications'
signature plus keyword options, and keep its layer names and weight order where it has the
network (ResNet-50/101/152, DenseNet-121/169/201), so its weight files load. MODEL_BUILDERS maps
each name to its builder. Models take float32 RGB pixels in 0..255 (preprocessing is inside) and
end with a float32 classifier. Bad arguments raise ValueError, as keras.applications does.

This package imports only Keras (and TensorFlow for `models.batch_norm`): copy the folder into
another project and it works there.
"""

from models.blocks import (
    basic_block,
    bottleneck_block,
    conv_block,
    identity_block,
    stack_blocks,
)
from models.common import STEMS, check_input_size, minimum_input_size
from models.densenet import (
    DENSENET_SPECS,
    DenseNet,
    DenseNet121,
    DenseNet169,
    DenseNet201,
)
from models.densenet_blocks import dense_block, transition_block
from models.preprocessing import PREPROCESS_PREFIX, PREPROCESSING_MODES, add_preprocessing
from models.registry import MODEL_BUILDERS, build_model, last_conv_layer_name
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
    "DENSENET_SPECS",
    "MODEL_BUILDERS",
    "PREPROCESSING_MODES",
    "PREPROCESS_PREFIX",
    "RESNET_SPECS",
    "STEMS",
    "DenseNet",
    "DenseNet121",
    "DenseNet169",
    "DenseNet201",
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
    "dense_block",
    "identity_block",
    "last_conv_layer_name",
    "minimum_input_size",
    "stack_blocks",
    "transition_block",
]
