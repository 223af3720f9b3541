"""The original recipe's input path: Keras' ImageDataGenerator reading files every epoch.

Kept for comparison with the tf.data path (`--loader generator`, bench/pipeline.py).
"""

from __future__ import annotations

import os
import tempfile

import tensorflow as tf

from idenprof.data.dataset import Sample

def make_generator(
    samples: list[Sample],
    class_names: list[str],
    *,
    image_size: int,
    batch_size: int,
    training: bool,
    augment_flip: bool,
    seed: int,
):
    """The original Keras input path: `ImageDataGenerator(horizontal_flip=...)` reading and
    resizing (PIL bilinear) each file every epoch. A `keras.utils.PyDataset`, usable in
    `model.fit`.

    It reads exactly `samples` (e.g. without the files `decode_images` skipped) through
    `flow_from_directory` over a private folder of symlinks, one class folder per name in
    `class_names` (which fixes the class indices). Files come out grouped by class in
    `class_names` order, in sample order within a class: for samples already grouped that way
    (as scanned datasets are), that is sample order.

    Args:
        samples: (file path, class index into class_names) pairs.
        class_names: class names, index order.
        image_size: side S of the square output, in pixels.
        batch_size: images per batch (the last batch may be smaller).
        training: shuffle every epoch (and flip when augment_flip).
        augment_flip: random horizontal flips (training only).
        seed: seeds the shuffle and flips.

    Returns:
        The DirectoryIterator, yielding (images float32 [B, S, S, 3] in 0..255,
        labels float32 one-hot [B, len(class_names)]).
    """
    links = tempfile.TemporaryDirectory(prefix="idenprof-generator-")
    for class_name in class_names:
        os.mkdir(os.path.join(links.name, class_name))
    for i, (path, label) in enumerate(samples):
        # The index prefix keeps sample order (the iterator sorts names) and unique names.
        name = f"{i:07d}-{os.path.basename(path)}"
        os.symlink(os.path.abspath(path), os.path.join(links.name, class_names[label], name))
    generator = tf.keras.preprocessing.image.ImageDataGenerator(
        horizontal_flip=augment_flip and training
    )
    iterator = generator.flow_from_directory(
        links.name,
        target_size=(image_size, image_size),
        classes=list(class_names),
        class_mode="categorical",
        batch_size=batch_size,
        shuffle=training,
        seed=seed,
        interpolation="bilinear",
    )
    # The symlink folder lives (and is deleted) with the iterator.
    iterator.link_dir = links
    return iterator
