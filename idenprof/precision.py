"""Precision of a model's computation: copies that compute in float32 whatever the training policy.

Training may run in bfloat16 or float16 (mixed precision: float32 weights, lower-precision compute;
idenprof.train.runtime sets the policy); every model handed on (checkpoints, exports, calibration,
heat maps) computes in float32.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import keras


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
