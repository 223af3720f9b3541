"""The original recipe's input path: Keras' ImageDataGenerator reading files every epoch.

Kept for comparison with the tf.data path (`--loader generator`, bench/pipeline.py).
"""

from __future__ import annotations

import os
import tempfile

import tensorflow as tf
from PIL import Image

from idenprof.data.dataset import Sample
from idenprof.data.imaging import PIL_FORMATS, load_image_rgb

# Modes Keras' loader (PIL's convert("RGB")) gets wrong: 16-bit and float images clip to white,
# alpha is dropped instead of composited on white. Such files are converted as the tf.data path
# reads them (idenprof.data.imaging.to_rgb) once, at the start.
MODES_KERAS_MISREADS = ("I;16", "I;16B", "I;16L", "I", "F", "RGBA", "LA", "PA")


def keras_misreads(path: str) -> bool:
    """Whether Keras' own loader would read `path` differently from load_image_rgb (header only)."""
    try:
        with Image.open(path, formats=PIL_FORMATS) as image:
            return image.mode in MODES_KERAS_MISREADS or (image.mode == "P" and "transparency" in image.info)
    except (OSError, SyntaxError, ValueError):
        return False  # unreadable: Keras reports it as it always did

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
        if keras_misreads(path):
            converted = os.path.join(links.name, class_names[label], os.path.splitext(name)[0] + ".png")
            Image.fromarray(load_image_rgb(path)).save(converted)
        else:
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
