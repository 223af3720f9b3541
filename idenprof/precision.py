"""Precision of a model's computation.

Training may run in bfloat16 or float16 (mixed precision: float32 weights, lower-precision compute;
idenprof.train.runtime chooses). Only the training model is built in that precision, inside
`computing_in`; the process's policy stays float32, so every other model (checkpoints, calibrated
and exported models) is float32 as built. `float32_copy` is for models that come from elsewhere
(a caller's mixed-precision model handed to the export or to Grad-CAM).
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import keras


@contextlib.contextmanager
def computing_in(policy: str):
    """Within the block, new layers take the Keras dtype policy `policy` ("float32",
    "mixed_bfloat16", "mixed_float16"); the process's policy before it is restored on leaving."""
    import keras

    before = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(before)


def float32_copy(model: keras.Model) -> keras.Model:
    """The same model with every layer computing in float32 (weights copied); `model` itself
    when it already does. Mixed-precision layers keep float32 weights, so nothing is lost."""
    import keras  # noqa: F811  (imported when called: this module stays free of Keras until then)

    if all(layer.dtype_policy.compute_dtype == "float32" for layer in model.layers):
        return model

    def as_float32(layer):
        config = layer.get_config()
        config["dtype"] = "float32"
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=as_float32)
    copy.set_weights(model.get_weights())
    return copy
