"""Fused batch normalization for training speed, and the swap between it and Keras' own layer.

Keras 3's `BatchNormalization` computes batch statistics and the normalisation as separate
element-wise TensorFlow ops, in float32 even under a bfloat16/float16 policy: without XLA that is
several passes over every activation plus two casts. `FusedBatchNormalization` runs the same
maths as TensorFlow's single fused kernel (`FusedBatchNormV3`: oneDNN on CPUs, cuDNN on GPUs),
directly on bfloat16/float16 activations with float32 statistics: one pass and no casts, so
training is faster, most of all in bfloat16/float16 (measurements: docs/BENCHMARKS.md).

The fused layer is a subclass with the same variables, in the same order, under the same names,
so weights move between the two freely. It is meant for the training model only: saved models
use Keras' own layer (see `use_fused_batch_norm`), so they load anywhere without this project.

One difference from Keras' layer: the moving variance is updated with the unbiased batch variance
(n / (n - 1) times the biased one, n = batch * height * width), as TensorFlow's fused kernel and
Keras 2 did; with n in the thousands the difference is below 0.1%.
"""

from __future__ import annotations

import keras
from keras import layers, ops


@keras.saving.register_keras_serializable(package="idenprof")
class FusedBatchNormalization(layers.BatchNormalization):
    """`keras.layers.BatchNormalization` computed by TensorFlow's fused kernel.

    Takes the same arguments. Inputs [batch, H, W, C] normalised over the last axis use the fused
    kernel; any other case (another axis or rank, a mask, renorm, `synchronized=True` for
    multi-worker training) falls back to Keras' computation, unchanged.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        # The fused kernel wants the float32 variables as they are, beside bfloat16/float16 inputs.
        self.autocast = False

    def _fuses(self, inputs, mask) -> bool:
        return (
            mask is None
            and len(inputs.shape) == 4
            and self.axis in (-1, 3)
            and self.scale
            and self.center
            and not self.renorm
            and not self.synchronized
            and keras.backend.backend() == "tensorflow"
        )

    def call(self, inputs, training=None, mask=None):
        if not self._fuses(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        inputs = ops.cast(inputs, self.compute_dtype)
        updates_statistics = bool(training and self.trainable)
        outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            inputs,
            self.gamma.value,
            self.beta.value,
            mean=self.moving_mean.value,
            variance=self.moving_variance.value,
            epsilon=self.epsilon,
            is_training=updates_statistics,
            # In training the kernel returns the moving averages already updated with this factor.
            exponential_avg_factor=1.0 - self.momentum if updates_statistics else 1.0,
        )
        if updates_statistics:
            self.moving_mean.assign(mean)
            self.moving_variance.assign(variance)
        return outputs


def use_fused_batch_norm(model: keras.Model) -> keras.Model:
    """A copy of the functional `model` whose BatchNormalization layers are fused, with the same
    weights. Other layers are recreated from their configs (same names, dtypes and weights).

    Build it inside the distribution strategy's scope when there is one; save `model`'s
    architecture (Keras' layers) with these weights, not this copy, to keep saved files portable.
    """

    def swap(layer):
        if type(layer) is layers.BatchNormalization:
            return FusedBatchNormalization.from_config(layer.get_config())
        return layer.__class__.from_config(layer.get_config())

    fused = keras.models.clone_model(model, clone_function=swap)
    fused.set_weights(model.get_weights())
    return fused
