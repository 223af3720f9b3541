"""The dataset on disk: <root>/<split>/<class>/<image files>, scanned and checked.

Class indices follow sorted class-folder names, as Keras' flow_from_directory assigns them.
This module deals with files and folders only; images are decoded (and corrupt ones reported)
by the input pipeline.
"""

from __future__ import annotations

import hashlib
import os
import random
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from idenprof.errors import DatasetError
from idenprof.data.imaging import IMAGE_EXTENSIONS, is_image_filename, is_listed_image

Sample = tuple[str, int]  # (image file path, class index)
# Scanned when present: a validation split of the user's own, used instead of a hold-out.
OPTIONAL_SPLITS = ("val",)


@dataclass
class DatasetLayout:
    """A scanned dataset.

    Attributes:
        root: the folder holding the split folders.
        class_names: class-folder names in index order (sorted).
        samples: per split, (path, class index) pairs sorted by path.
        duplicates: (train path, test path) pairs of byte-identical files.
        warnings: what the scan left out that the user may not expect (one line each).
    """

    root: Path
    class_names: list[str]
    samples: dict[str, list[Sample]]
    duplicates: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def counts(self, split: str) -> list[int]:
        """Number of images per class index in `split`."""
        per_class = [0] * len(self.class_names)
        for _, label in self.samples[split]:
            per_class[label] += 1
        return per_class

    def report(self) -> str:
        """A multi-line summary: root, classes, per-split per-class counts, duplicates."""
        splits = list(self.samples)
        width = max(len(name) for name in self.class_names + ["total"])
        counts = {split: self.counts(split) for split in splits}
        lines = [
            f"dataset: {self.root}",
            f"classes ({len(self.class_names)}): {', '.join(self.class_names)}",
            f"{'':{width}}  " + "  ".join(f"{split:>7}" for split in splits),
        ]
        for index, name in enumerate(self.class_names):
            lines.append(f"{name:{width}}  " + "  ".join(f"{counts[s][index]:>7}" for s in splits))
        lines.append(f"{'total':{width}}  " + "  ".join(f"{sum(counts[s]):>7}" for s in splits))
        train_files = len({a for a, _ in self.duplicates})
        test_files = len({b for _, b in self.duplicates})
        lines.append(
            f"train/test duplicates: {len(self.duplicates)} byte-identical pairs "
            f"({train_files} train files, {test_files} test files)"
        )
        return "\n".join(lines)

    def decode(self, samples: list[Sample], image_size: int, *, cache_dir: Path | None = None,
               progress: bool = True):
        """The samples' images as `DecodedImages` (uint8 [N, S, S, 3], S = `image_size`): image files
        decoded once (see idenprof.data.decoded); an array dataset overrides this."""
        from idenprof.data.decoded import decode_images

        return decode_images(samples, image_size, cache_dir=cache_dir, progress=progress)

    def train_without_test_duplicates(self) -> list[Sample]:
        """Train samples whose bytes do not also appear in test."""
        in_test = {train_path for train_path, _ in self.duplicates}
        return [s for s in self.samples["train"] if s[0] not in in_test]

    def test_without_train_duplicates(self) -> list[Sample]:
        """Test samples whose bytes do not also appear in train."""
        in_train = {test_path for _, test_path in self.duplicates}
        return [s for s in self.samples["test"] if s[0] not in in_train]


def _subfolders(folder: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


def _image_files(folder: Path) -> list[str]:
    return sorted(e.path for e in os.scandir(folder) if e.is_file() and is_image_filename(e.name))


def _content_key(path: str) -> bytes:
    with open(path, "rb") as f:
        return hashlib.blake2b(f.read(), digest_size=16).digest()


def find_cross_duplicates(first: list[str], second: list[str]) -> list[tuple[str, str]]:
    """(a, b) pairs with a in `first` and b in `second` holding identical bytes, sorted.

    Only files whose size occurs in both lists are read and hashed, which keeps this to about
    a second for IdenProf's 11,000 files.
    """
    sizes = [{os.path.getsize(p) for p in paths} for paths in (first, second)]
    shared_sizes = sizes[0] & sizes[1]
    by_key: dict[bytes, list[str]] = defaultdict(list)
    for path in first:
        if os.path.getsize(path) in shared_sizes:
            by_key[_content_key(path)].append(path)
    pairs = []
    for path in second:
        if os.path.getsize(path) in shared_sizes:
            pairs.extend((match, path) for match in by_key.get(_content_key(path), []))
    return sorted(pairs)


def scan_dataset(root: Path, splits: tuple[str, ...] = ("train", "test")) -> DatasetLayout:
    """List and check a class-folder dataset.

    Class names are the sorted subfolders of the first split (train/); every split must have
    exactly those class folders, each with at least one image file (by extension; Thumbs.db and
    other non-images are ignored). Hidden folders are ignored; a subfolder of a class folder is
    ignored with a warning. The OPTIONAL_SPLITS folders (val/) are scanned too when present.
    Cross-split duplicates are found between "train" and "test" when both are scanned.

    Raises DatasetError naming the folder at fault.
    """
    root = Path(root)
    fix = "point --data-dir at the folder holding " + ", ".join(f"{s}/" for s in splits)
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist; {fix}")
    if not any(root.iterdir()):
        raise DatasetError(f"dataset folder {root} is empty; {fix}")
    for split in splits:
        if not (root / split).is_dir():
            raise DatasetError(f"{root} has no {split}/ folder; {fix}")
    splits = tuple(splits) + tuple(s for s in OPTIONAL_SPLITS if s not in splits and (root / s).is_dir())
    class_names = _subfolders(root / splits[0])
    if not class_names:
        raise DatasetError(
            f"{root / splits[0]} has no class folders; put each class's images in its own subfolder"
        )
    samples: dict[str, list[Sample]] = {}
    warnings = []
    for split in splits:
        found = _subfolders(root / split)
        missing = [name for name in class_names if name not in found]
        if missing:
            raise DatasetError(
                f"{root / split} has no folder for class(es) {', '.join(missing)} "
                f"(present in {splits[0]}/); every split needs the same class folders"
            )
        extra = [name for name in found if name not in class_names]
        if extra:
            raise DatasetError(
                f"{root / split} has class folder(s) {', '.join(extra)} that {splits[0]}/ lacks; "
                "every split needs the same class folders"
            )
        samples[split] = []
        for index, name in enumerate(class_names):
            files = _image_files(root / split / name)
            if not files:
                raise DatasetError(
                    f"{root / split / name} has no image files ({', '.join(IMAGE_EXTENSIONS)}); "
                    "add images or remove the class folder from every split"
                )
            samples[split].extend((path, index) for path in files)
            for nested in _subfolders(root / split / name):
                warnings.append(f"{root / split / name / nested}/ is ignored: images of class {name} must be "
                                f"directly in {root / split / name}/, not in a subfolder")
    duplicates = []
    if "train" in samples and "test" in samples:
        duplicates = find_cross_duplicates(
            [p for p, _ in samples["train"]], [p for p, _ in samples["test"]]
        )
    return DatasetLayout(root, class_names, samples, duplicates, warnings)


def scan_class_folders(root: Path) -> dict[str, list[str]]:
    """{class folder name: its image files, sorted} for a folder with one subfolder per class
    (IdenProf's test/, or your own photos). Hidden folders and non-image files are ignored; a
    class folder may be empty. Raises DatasetError when `root` is missing or has no subfolder."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: no such folder; give a folder with one subfolder of photos per class")
    classes = _subfolders(root)
    if not classes:
        raise DatasetError(f"{root} has no class folders; put each class's photos in a subfolder named after it")
    # Dangling links named like images are listed: evaluation then names each as unreadable.
    return {name: sorted(str(p) for p in (root / name).iterdir() if is_listed_image(p)) for name in classes}


def stratified_split(
    samples: list[Sample], val_fraction: float, seed: int
) -> tuple[list[Sample], list[Sample]]:
    """Hold out `val_fraction` of each class, chosen at random with `seed`.

    Each class of n samples gives round(n * val_fraction) of them to validation, at least 1
    when val_fraction > 0, and at most n - 1 (a class with one sample stays in training). Both lists keep the input order; together
    they are exactly `samples`.

    Returns:
        (train, val).
    """
    by_class: dict[int, list[int]] = defaultdict(list)
    for position, (_, label) in enumerate(samples):
        by_class[label].append(position)
    rng = random.Random(seed)
    val_positions: set[int] = set()
    for label in sorted(by_class):
        positions = by_class[label]
        n_val = round(len(positions) * val_fraction)
        if val_fraction > 0:
            n_val = max(n_val, 1)
        n_val = min(n_val, len(positions) - 1)  # a class never leaves training entirely
        val_positions.update(rng.sample(positions, n_val))
    train = [s for i, s in enumerate(samples) if i not in val_positions]
    val = [s for i, s in enumerate(samples) if i in val_positions]
    return train, val


def select_samples(layout: DatasetLayout, config) -> tuple[list[Sample], list[Sample], list[Sample]]:
    """(train, validation, test) sample lists for a TrainConfig: train without the test duplicates
    (`exclude_test_duplicates`), at most `max_per_class` per class (seeded), and validation the
    layout's own val/ split, the test split (`validate_on` "test"), or a stratified hold-out of
    `val_fraction` of train (seeded): what training, packaging and the benchmarks all split by."""
    train = layout.train_without_test_duplicates() if config.exclude_test_duplicates else layout.samples["train"]
    if config.max_per_class:
        rng = random.Random(config.seed)
        by_class: dict[int, list] = {}
        for sample in train:
            by_class.setdefault(sample[1], []).append(sample)
        train = []
        for label in sorted(by_class):
            group = list(by_class[label])
            rng.shuffle(group)
            train.extend(sorted(group[: config.max_per_class]))
    test = layout.samples["test"]
    if config.validate_on == "test":
        return list(train), list(test), list(test)
    if "val" in layout.samples:  # the user's own validation split
        return list(train), list(layout.samples["val"]), list(test)
    train, val = stratified_split(train, config.val_fraction, config.seed)
    return train, val, list(test)
