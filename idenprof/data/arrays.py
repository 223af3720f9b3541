"""Datasets shipped as pixel arrays (Fashion-MNIST, CIFAR-10), served like a folder of photos.

`ArrayLayout` is a `DatasetLayout` whose samples are keys ("train/00042") instead of file paths, so
the hold-out split, --max-per-class and the train/test duplicate check are the folder datasets'
own. Its `decode` resizes the chosen images with the resize infer.py applies to photos
(`imaging.resize_square`) into the same `DecodedImages` the tf.data pipeline reads; grayscale
images become RGB by repeating their one channel, so every model, export and infer.py take them
unchanged.
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from idenprof.data.dataset import DatasetLayout, Sample
from idenprof.data.decoded import DecodedImages, memory_budget_bytes
from idenprof.data.imaging import resize_square
from idenprof.errors import ConfigError, DatasetError


def sample_key(split: str, index: int) -> str:
    """The sample "path" of image `index` of `split`, e.g. "train/00042"."""
    return f"{split}/{index:05d}"


@dataclass
class ArrayLayout(DatasetLayout):
    """A DatasetLayout over in-memory arrays.

    Attributes:
        images: per split, uint8 [N, H, W] (grayscale) or [N, H, W, 3] (RGB) at the native size.
    """

    images: dict[str, np.ndarray] = field(default_factory=dict)

    def decode(self, samples: list[Sample], image_size: int, *, cache_dir: Path | None = None,
               progress: bool = True) -> DecodedImages:
        """The samples' images resized to uint8 [N, S, S, 3], S = `image_size` (`cache_dir` is
        unused: resizing arrays is quicker than reading a cache)."""
        shape = (len(samples), image_size, image_size, 3)
        if math.prod(shape) > memory_budget_bytes():
            raise ConfigError(f"{len(samples)} images at {image_size}x{image_size} need {math.prod(shape) / 1e9:.1f} GB, "
                              "more than a quarter of this machine's memory; use a smaller --image-size or "
                              "--max-per-class")
        out = np.empty(shape, dtype=np.uint8)
        for i, (key, _) in enumerate(tqdm(samples, desc="resizing images", unit="img", disable=not progress)):
            split, index = key.rsplit("/", 1)
            pixels = self.images[split][int(index)]
            if pixels.shape[:2] != (image_size, image_size):
                pixels = np.asarray(resize_square(Image.fromarray(pixels), image_size))
            out[i] = pixels[..., None] if pixels.ndim == 2 else pixels  # gray: one channel repeated
        return DecodedImages(images=out, labels=np.array([label for _, label in samples], dtype=np.int32),
                             paths=[key for key, _ in samples], skipped=[])


def _identical_pairs(first: list[str], first_images: np.ndarray, second: list[str], second_images: np.ndarray):
    """(a, b) key pairs of byte-identical images, a from the first split and b from the second, sorted."""
    by_digest: dict[bytes, list[str]] = defaultdict(list)
    for key, pixels in zip(first, first_images, strict=True):
        by_digest[hashlib.blake2b(pixels.tobytes(), digest_size=16).digest()].append(key)
    pairs = []
    for key, pixels in zip(second, second_images, strict=True):
        pairs.extend((match, key) for match in by_digest.get(hashlib.blake2b(pixels.tobytes(), digest_size=16).digest(), []))
    return sorted(pairs)


def array_layout(root: Path, class_names: list[str], splits: dict[str, tuple[np.ndarray, np.ndarray]]) -> ArrayLayout:
    """An ArrayLayout of `splits` ({"train": (images, labels), "test": ...}; images uint8 [N, H, W]
    or [N, H, W, 3], labels integer [N] indexing `class_names`), read from `root`.

    Raises:
        DatasetError: a split whose images and labels differ in number, or a label outside the classes.
    """
    samples, images = {}, {}
    for split, (pixels, labels) in splits.items():
        if len(pixels) != len(labels):
            raise DatasetError(f"{root}: the {split} split has {len(pixels)} images but {len(labels)} labels")
        if len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < len(class_names):
            raise DatasetError(f"{root}: the {split} split has labels outside 0..{len(class_names) - 1} "
                               f"({len(class_names)} classes)")
        samples[split] = [(sample_key(split, i), int(label)) for i, label in enumerate(labels)]
        images[split] = pixels
    duplicates = []
    if "train" in splits and "test" in splits:
        duplicates = _identical_pairs([k for k, _ in samples["train"]], images["train"],
                                      [k for k, _ in samples["test"]], images["test"])
    return ArrayLayout(Path(root), list(class_names), samples, duplicates, images=images)
