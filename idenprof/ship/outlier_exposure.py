"""Outlier exposure (Hendrycks et al. 2019): teach a trained classifier what "none of these" is.

Fine-tuning mixes each batch of training photos with a batch of outlier images (idenprof.ship.outliers)
whose target is the even distribution over the classes:

    loss = CE(training photos, their labels) + weight * CE(outliers, uniform 1/C)

so the model keeps its answers for the ten professions and learns to spread its probability for
anything else, which the none-score (idenprof.predict.ood) reads. Training photos are flipped and
zoom-cropped; outliers are cropped harder (their variety is small). Batch normalisation is frozen
(inference mode, its statistics kept): batches half outliers would otherwise move the statistics
the photos are normalised with (it cost 1.65 test points, single view, in docs/OOD.md).
"""

from __future__ import annotations

import time

import numpy as np

from idenprof.files import write_json_atomically


def fine_tune_with_outliers(
    model,
    images: np.ndarray,
    labels: np.ndarray,
    outliers: np.ndarray,
    *,
    epochs: int = 4,
    batch_size: int = 64,
    outlier_batch_size: int = 32,
    learning_rate: float = 1e-4,
    outlier_weight: float = 0.5,
    label_smoothing: float = 0.1,
    seed: int = 0,
    freeze_batch_norm: bool = True,
    log=print,
):
    """Fine-tune `model` (a Keras classifier ending in `predictions`, calibrated or not) in place
    and return it as an uncalibrated classifier (logits, then softmax at T = 1) for
    idenprof.predict.calibration.calibrate to fit its temperature.

    Args:
        images: uint8 RGB [N, S, S, 3] training photos, S the model's input side.
        labels: int [N] their classes.
        outliers: uint8 RGB [M, S2, S2, 3] outlier images (any side S2 >= S; cropped to S).
        epochs: passes over `images`; the learning rate follows a cosine to 0.
        freeze_batch_norm: keep batch normalisation in inference mode with its statistics.
    """
    import keras
    import tensorflow as tf

    from idenprof.predict.calibration import logits_model, with_temperature

    logits = logits_model(model)
    frozen = [layer for layer in logits.layers
              if freeze_batch_norm and isinstance(layer, keras.layers.BatchNormalization) and layer.trainable]
    for layer in frozen:
        layer.trainable = False  # Keras 3: a frozen BatchNormalization runs in inference mode
    side = int(logits.input_shape[1])
    classes = int(logits.output_shape[-1])
    steps = max(1, len(images) // batch_size)
    total = weight_total = batch_size + outlier_batch_size
    id_weight = weight_total / batch_size
    out_weight = outlier_weight * total / outlier_batch_size

    def zoom(image, lowest_scale, rng_seed):
        """A random square crop of `lowest_scale`..1 of the side, resized to `side`, maybe mirrored."""
        scale = tf.random.stateless_uniform([], rng_seed, lowest_scale, 1.0)
        offset = tf.random.stateless_uniform([2], rng_seed + 1, 0.0, 1.0) * (1.0 - scale)
        box = tf.stack([offset[0], offset[1], offset[0] + scale, offset[1] + scale])[None]
        crop = tf.image.crop_and_resize(tf.cast(image, tf.float32)[None], box, [0], [side, side])[0]
        flip = tf.random.stateless_uniform([], rng_seed + 2) < 0.5
        return tf.where(flip, crop[:, ::-1], crop)

    def photos(index, image, label):
        seeds = tf.stack([tf.cast(index, tf.int32), tf.constant(seed)])
        target = tf.one_hot(label, classes) * (1.0 - label_smoothing) + label_smoothing / classes
        return zoom(image, 0.7, seeds), target

    def others(index, image):
        seeds = tf.stack([tf.cast(index, tf.int32), tf.constant(seed + 7)])
        return zoom(image, 0.3, seeds), tf.fill([classes], 1.0 / classes)

    def joined(a, b):
        (xa, ya), (xb, yb) = a, b
        weights = tf.concat([tf.fill([tf.shape(xa)[0]], id_weight), tf.fill([tf.shape(xb)[0]], out_weight)], 0)
        return tf.concat([xa, xb], 0), tf.concat([ya, yb], 0), weights

    labels = np.asarray(labels, np.int32)
    id_data = (tf.data.Dataset.from_tensor_slices((images, labels)).enumerate()
               .shuffle(len(images), seed=seed).repeat()
               .map(lambda i, x: photos(i, x[0], x[1]), num_parallel_calls=2).batch(batch_size, drop_remainder=True))
    out_data = (tf.data.Dataset.from_tensor_slices(outliers).enumerate()
                .shuffle(len(outliers), seed=seed + 1).repeat()
                .map(others, num_parallel_calls=2).batch(outlier_batch_size, drop_remainder=True))
    data = tf.data.Dataset.zip((id_data, out_data)).map(joined).prefetch(4)

    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, steps * epochs)
    logits.compile(optimizer=keras.optimizers.AdamW(schedule, weight_decay=0.01),
                   loss=keras.losses.CategoricalCrossentropy(from_logits=True))
    started = time.monotonic()
    logits.fit(data, epochs=epochs, steps_per_epoch=steps, verbose=2)
    for layer in frozen:
        layer.trainable = True
    log(f"outlier exposure: {epochs} epochs of {steps} steps ({batch_size} photos + {outlier_batch_size} "
        f"outliers each) in {time.monotonic() - started:.0f} s")
    return with_temperature(logits, 1.0)


def record(path, **facts) -> None:
    """What a fine-tune did, as JSON (the model card reads it)."""
    write_json_atomically(facts, path)
