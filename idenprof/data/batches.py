"""Batches for `model.fit`: decoded images to shuffled, augmented tf.data batches.

No Python runs per batch: the decoded array is one tensor (or a `.npy` file read in blocks), and
augmentation (`idenprof.data.augment`) is vectorised over each batch. Images stay float32 in
0..255: the model does its own preprocessing, so inference cannot forget it.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import tensorflow as tf

from idenprof.data.augment import AugmentConfig, augment_batch
from idenprof.data.decoded import DecodedImages, available_cores
from idenprof.errors import ConfigError

# Batches made ahead of the model: enough to hide one slow augmentation call.
_PREFETCH_BATCHES = 4

# Records per contiguous block read from an on-disk cache; blocks are shuffled, then records
# within a window of blocks, which keeps disk reads sequential.
_STREAM_BLOCK_RECORDS = 256
_STREAM_CYCLE_BLOCKS = 4


def make_dataset(
    decoded: DecodedImages,
    num_classes: int,
    *,
    batch_size: int,
    training: bool,
    augment: AugmentConfig | None = None,
    seed: int = 0,
    whole_images: tf.Variable | None = None,
    repeat: bool = False,
    targets: np.ndarray | None = None,
) -> tf.data.Dataset:
    """Batches of decoded images for `model.fit` / `evaluate` / `predict`.

    Training: reshuffled every epoch, augmented per batch with `augment` (None: no
    augmentation), only full batches (static shapes). Evaluation: every image once, in sample
    order, never augmented. The same seed gives the same batches.

    Args:
        decoded: output of `decode_images`.
        num_classes: length of the one-hot labels.
        batch_size: images per batch.
        training: shuffle, augment and drop the last partial batch.
        augment: the training augmentation; ignored when not training.
        seed: seeds the shuffle and every augmentation draw.
        whole_images: a boolean tf.Variable; while it is True, training batches are whole images
            at the decoded size with flips only (`augment.flip`), whatever else `augment` says.
            Flipping it during `fit` switches the batches that follow (see
            callbacks.WholeImagePhase).
        repeat: training only: epoch after epoch without end, each reshuffled (fit then needs
            `steps_per_epoch`). One iterator then serves the whole run: Keras makes a new one
            per epoch for a finite dataset and drops the old one half-read, and tearing down a
            running pipeline stalled whole runs here for about 30 s at a time
            (docs/BENCHMARKS.md, "CPU share").
        targets: float32 [N, num_classes], each image's target in place of its one-hot label
            (soft labels, e.g. idenprof.train.distill's); mixup and cutmix mix them alike.

    Every map runs on all the process's cores and the last `_PREFETCH_BATCHES` are made ahead,
    without tf.data's autotuning: destroying an iterator waited for its autotuning thread, which
    left the CPU idle 1-4 s after each epoch's validation and up to 44 s after training
    (docs/BENCHMARKS.md, "CPU share").

    Returns:
        Dataset of (images float32 [B, S, S, 3] in 0..255, labels float32 [B, num_classes]);
        training batches are [B, T, T, 3] when `augment.output_size` is T.

    Raises:
        ConfigError: training with fewer images than one batch.
    """
    count = len(decoded.labels)
    if training and count < batch_size:
        raise ConfigError(
            f"only {count} training images for batch size {batch_size}; use a smaller batch size"
        )
    if targets is not None:
        # The batches then carry each image's index, looked up in the targets table.
        table = tf.constant(np.asarray(targets, np.float32))
        decoded = dataclasses.replace(decoded, labels=np.arange(count, dtype=np.int32))

        def label_vectors(indices):
            return tf.gather(table, indices)
    else:
        def label_vectors(labels):
            return tf.one_hot(labels, num_classes, dtype=tf.float32)

    stream_file = _whole_npy_file(decoded.images)
    if stream_file is None:
        batches = _batches_in_memory(decoded, batch_size, training, seed)
    else:
        batches = _batches_from_file(stream_file, decoded, batch_size, training, seed)

    def to_model_inputs(images, labels):
        return tf.cast(images, tf.float32), label_vectors(labels)

    def to_augmented_inputs(batch, batch_seed):
        images, labels = batch
        one_hot = label_vectors(labels)
        if whole_images is None:
            return augment_batch(images, one_hot, batch_seed, augment)
        flips_only = AugmentConfig(flip=augment.flip)
        return tf.cond(
            whole_images,
            lambda: augment_batch(images, one_hot, batch_seed, flips_only),
            lambda: augment_batch(images, one_hot, batch_seed, augment),
        )

    if training and repeat:
        batches = batches.repeat()
    if training and augment is not None:
        # One fresh [2] seed per batch, different every epoch but fixed by `seed`: stateless ops
        # stay deterministic even with parallel map calls.
        batch_seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        batches = tf.data.Dataset.zip(batches, batch_seeds).map(
            to_augmented_inputs, num_parallel_calls=available_cores()
        )
    else:
        batches = batches.map(to_model_inputs, num_parallel_calls=available_cores())
    options = tf.data.Options()
    options.autotune.enabled = False
    return batches.prefetch(_PREFETCH_BATCHES).with_options(options)


def _batches_in_memory(decoded, batch_size, training, seed) -> tf.data.Dataset:
    """(uint8 [B,S,S,3], int32 [B]) batches gathered from the array held as one tensor."""
    images = tf.constant(decoded.images)
    labels = tf.constant(decoded.labels)
    indices = tf.data.Dataset.range(len(decoded.labels))
    if training:
        indices = indices.shuffle(len(decoded.labels), seed=seed, reshuffle_each_iteration=True)
    return indices.batch(batch_size, drop_remainder=training).map(
        lambda i: (tf.gather(images, i), tf.gather(labels, i)),
        num_parallel_calls=available_cores(),
    )


def _batches_from_file(path, decoded, batch_size, training, seed) -> tf.data.Dataset:
    """(uint8 [B,S,S,3], int32 [B]) batches read from the .npy cache without loading it all.

    Training shuffles the order of blocks of consecutive images, then images within a window of
    a few blocks: not a full shuffle, but disk reads stay sequential.
    """
    count, size = len(decoded.labels), decoded.images.shape[1]
    record_bytes = size * size * 3
    header_bytes = decoded.images.offset
    labels = tf.constant(decoded.labels)

    def read_block(start):
        stop = tf.minimum(start + _STREAM_BLOCK_RECORDS, count)
        records = tf.data.FixedLengthRecordDataset(
            path,
            record_bytes,
            header_bytes=header_bytes + start * record_bytes,
            footer_bytes=(count - stop) * record_bytes,
        )
        return tf.data.Dataset.zip(records, tf.data.Dataset.from_tensor_slices(labels[start:stop]))

    starts = tf.data.Dataset.range(0, count, _STREAM_BLOCK_RECORDS)
    if training:
        starts = starts.shuffle(count, seed=seed, reshuffle_each_iteration=True)
        records = starts.interleave(read_block, cycle_length=_STREAM_CYCLE_BLOCKS)
        records = records.shuffle(_STREAM_BLOCK_RECORDS * _STREAM_CYCLE_BLOCKS, seed=seed)
    else:
        records = starts.flat_map(read_block)

    def to_pixels(raw, labels):
        pixels = tf.io.decode_raw(raw, tf.uint8)  # [B, S*S*3]
        # A shape built from tf.shape keeps the static batch size that -1 would lose.
        shape = tf.concat([tf.shape(pixels)[:1], [size, size, 3]], axis=0)
        return tf.reshape(pixels, shape), labels

    batches = records.batch(batch_size, drop_remainder=training)
    return batches.map(to_pixels, num_parallel_calls=available_cores())


def _whole_npy_file(images: np.ndarray) -> str | None:
    """The .npy file `images` maps in full, or None when it is (or must be read into) memory.

    A slice of a memmap is still an np.memmap but covers only part of its file.
    """
    if not isinstance(images, np.memmap) or images.filename is None:
        return None
    whole = images.flags.c_contiguous and images.offset + images.nbytes == os.path.getsize(
        images.filename
    )
    return images.filename if whole else None
