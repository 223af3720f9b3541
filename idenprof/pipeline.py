"""Input pipelines: photos on disk to batches of (images, one-hot labels) for `model.fit`.

The fast path decodes every file once (`decode_images`, a thread pool over
`idenprof.imaging.load_image_rgb`) into one uint8 array, then serves shuffled, augmented batches
from it with tf.data (`make_dataset`): no Python runs per batch, and augmentation is vectorised
over the whole batch. The original Keras path, `ImageDataGenerator(horizontal_flip=True)` reading
files every epoch, stays available as `make_generator` for comparison.

Neither path rescales pixels: images stay float32 in 0..255 and the model does its own
preprocessing, so inference cannot forget it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from idenprof.dataset import Sample
from idenprof.errors import ConfigError
from idenprof.imaging import ImageError, load_image_rgb

# Bump when the decoded pixels of a file would change (e.g. a new resize method), so old caches
# are not reused.
CACHE_VERSION = 1
# Records per contiguous block read from an on-disk cache; blocks are shuffled, then records
# within a window of blocks, which keeps disk reads sequential.
_STREAM_BLOCK_RECORDS = 256
_STREAM_CYCLE_BLOCKS = 4


@dataclass
class DecodedImages:
    """Every readable image of a sample list, decoded once at one size.

    Attributes:
        images: uint8 [N, S, S, 3] RGB; an np.ndarray in memory, or an np.memmap of a whole
            `.npy` cache file when the array is too large to hold comfortably.
        labels: int32 [N], class index of each image.
        paths: the N file paths, in sample order.
        skipped: (path, reason) of each unreadable or corrupt file, left out of the arrays.
    """

    images: np.ndarray
    labels: np.ndarray
    paths: list[str]
    skipped: list[tuple[str, str]]


@dataclass(frozen=True)
class AugmentConfig:
    """Random training augmentation, applied per batch by `make_dataset` (all seeded).

    Attributes:
        flip: mirror left-right with probability 1/2.
        crop_scale: random-resized-crop area fraction range (lo, hi) in (0, 1], aspect ratio
            3/4..4/3, resized back to S x S; None for no crop.
        shift: maximum translation in each direction, as a fraction of S.
        rotation: maximum rotation in degrees (either way).
        mixup_alpha: Beta(alpha, alpha) mixup of image pairs and their labels; 0 for none.
        cutmix_alpha: Beta(alpha, alpha) cutmix; when both alphas are > 0, each batch uses one
            of the two, chosen at random.
        output_size: side of the training images handed to the model; None keeps S. The crop
            (or, without one, the whole image) is resized to it: training on crops smaller than
            the evaluation size is cheaper and, with random-resized crops, more accurate
            ("FixRes", Touvron et al. 2019).
    """

    flip: bool = True
    crop_scale: tuple[float, float] | None = None
    shift: float = 0.0
    rotation: float = 0.0
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    output_size: int | None = None

    def __post_init__(self):
        if self.output_size is not None and self.output_size < 1:
            raise ConfigError(f"training image size {self.output_size} must be at least 1 pixel")
        if self.crop_scale is not None:
            lo, hi = self.crop_scale
            if not 0.0 < lo <= hi <= 1.0:
                raise ConfigError(
                    f"crop scale {lo}..{hi} is not a range of area fractions; use 0 < lo <= hi <= 1"
                )
        if not 0.0 <= self.shift < 1.0:
            raise ConfigError(f"shift {self.shift} must be a fraction of the image in [0, 1)")
        if self.rotation < 0.0 or self.mixup_alpha < 0.0 or self.cutmix_alpha < 0.0:
            raise ConfigError("rotation, mixup alpha and cutmix alpha must be >= 0")


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, not the machine's count)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def memory_budget_bytes() -> int:
    """A quarter of physical RAM: the most decoded pixels we hold in memory."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4


def decode_images(
    samples: list[Sample],
    image_size: int,
    *,
    cache_dir: Path | None = None,
    workers: int | None = None,
    progress: bool = True,
    memory_limit_bytes: int | None = None,
) -> DecodedImages:
    """Decode every sample's file once, resized to image_size x image_size.

    Files are decoded in parallel threads (PIL releases the GIL while decoding). Unreadable files
    are reported in `skipped` and left out. With `cache_dir`, the pixels are also saved there as
    a `.npy` file keyed by the files' paths, sizes and mtimes and `image_size`, and a later call
    with the same files loads that instead of decoding.

    Args:
        samples: (file path, class index) pairs.
        image_size: side S of the square output, in pixels.
        cache_dir: folder for the on-disk cache; required when the pixels would not fit in
            `memory_limit_bytes`, since they are then memory-mapped from there.
        workers: decoding threads; default: the available CPU cores.
        progress: show a tqdm progress bar while decoding.
        memory_limit_bytes: the most pixel bytes kept in memory; default a quarter of RAM.

    Returns:
        DecodedImages with images uint8 [N, S, S, 3] and labels int32 [N].

    Raises:
        ConfigError: image_size < 1, or the pixels do not fit in memory and no cache_dir is given.
    """
    if image_size < 1:
        raise ConfigError(f"image size {image_size} must be at least 1 pixel")
    paths = [str(path) for path, _ in samples]
    labels = np.array([label for _, label in samples], dtype=np.int32)
    shape = (len(paths), image_size, image_size, 3)
    limit = memory_budget_bytes() if memory_limit_bytes is None else memory_limit_bytes
    in_memory = math.prod(shape) <= limit
    if cache_dir is None and not in_memory:
        raise ConfigError(
            f"{len(paths)} images at {image_size}x{image_size} need {math.prod(shape) / 1e9:.1f} GB, "
            "more than a quarter of this machine's memory; give a cache directory to keep them on disk"
        )
    decode = _Decoder(paths, image_size, workers or available_cores(), progress)
    if cache_dir is None:
        images, failures = _decode_in_memory(decode, shape)
    else:
        images, failures = _cached_decode(decode, shape, Path(cache_dir), in_memory)
    keep = _kept_indices(len(paths), failures)
    return DecodedImages(
        images=images,
        labels=labels[keep],
        paths=[paths[i] for i in keep],
        skipped=[(paths[i], reason) for i, reason in sorted(failures.items())],
    )


@dataclass
class _Decoder:
    paths: list[str]
    image_size: int
    workers: int
    progress: bool

    def into(self, out: np.ndarray) -> dict[int, str]:
        """Decode paths[i] into out[i] for every i; returns {index: reason} of the failures."""

        def decode_one(i: int) -> str | None:
            try:
                out[i] = load_image_rgb(self.paths[i], size=self.image_size)
            except ImageError as e:
                return str(e).removeprefix(f"{self.paths[i]}: ")
            return None

        failures = {}
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            reasons = pool.map(decode_one, range(len(self.paths)))
            bar = tqdm(
                reasons,
                total=len(self.paths),
                desc="decoding images",
                unit="img",
                disable=not self.progress,
            )
            for i, reason in enumerate(bar):
                if reason is not None:
                    failures[i] = reason
        return failures

    def cache_key(self) -> str:
        """Hash of everything the decoded pixels depend on: files (path, size, mtime) and size."""
        entries = []
        for path in self.paths:
            try:
                st = os.stat(path)
                entries.append((path, st.st_size, st.st_mtime_ns))
            except OSError:
                entries.append((path, -1, -1))
        blob = json.dumps([CACHE_VERSION, self.image_size, entries]).encode()
        return hashlib.sha256(blob).hexdigest()[:24]


def _decode_in_memory(
    decode: _Decoder, shape: tuple[int, ...]
) -> tuple[np.ndarray, dict[int, str]]:
    """(uint8 images of the readable files, {index: reason} of the others)."""
    images = np.empty(shape, dtype=np.uint8)
    failures = decode.into(images)
    if failures:
        images = images[_kept_indices(shape[0], failures)]
    return images, failures


def _kept_indices(count: int, failures: dict[int, str]) -> np.ndarray:
    return np.array([i for i in range(count) if i not in failures], dtype=np.int64)


def _cached_decode(
    decode: _Decoder, shape: tuple[int, ...], cache_dir: Path, in_memory: bool
) -> tuple[np.ndarray, dict[int, str]]:
    """Load the cache for these files if present, else decode and write it (atomically)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    stem = f"images-{decode.image_size}px-{decode.cache_key()}"
    npy_path, meta_path = cache_dir / f"{stem}.npy", cache_dir / f"{stem}.json"
    cached = _read_cache(npy_path, meta_path, shape, in_memory)
    if cached is not None:
        return cached
    if in_memory:
        images, failures = _decode_in_memory(decode, shape)
        _atomic_write(npy_path, lambda tmp: np.save(tmp, images))
    else:
        # Too big for memory: decode straight into a memory-mapped scratch file.
        scratch = _temp_name(cache_dir / f"{stem}-scratch.npy")
        try:
            full = np.lib.format.open_memmap(scratch, mode="w+", dtype=np.uint8, shape=shape)
            failures = decode.into(full)
            full.flush()
            if failures:
                keep = _kept_indices(shape[0], failures)
                _atomic_write(npy_path, lambda tmp: _copy_rows(full, keep, tmp))
            else:
                os.replace(scratch, npy_path)
            del full
        finally:
            scratch.unlink(missing_ok=True)
        images = np.load(npy_path, mmap_mode="r")
    meta = {"shape": list(shape), "failures": {str(i): r for i, r in failures.items()}}
    _atomic_write(meta_path, lambda tmp: tmp.write_text(json.dumps(meta)))
    return images, failures


def _read_cache(
    npy_path: Path, meta_path: Path, shape: tuple[int, ...], in_memory: bool
) -> tuple[np.ndarray, dict[int, str]] | None:
    """The cached (images, failures), or None when missing or not for these files."""
    try:
        meta = json.loads(meta_path.read_text())
        failures = {int(i): reason for i, reason in meta["failures"].items()}
        images = np.load(npy_path, mmap_mode="r")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    expected = (shape[0] - len(failures), *shape[1:])
    if tuple(meta["shape"]) != tuple(shape) or images.shape != expected or images.dtype != np.uint8:
        return None
    return (np.array(images) if in_memory else images), failures


def _copy_rows(source: np.ndarray, rows: np.ndarray, dest: Path) -> None:
    """Write source[rows] to a new .npy at dest, a block at a time (source may exceed RAM)."""
    out = np.lib.format.open_memmap(
        dest, mode="w+", dtype=source.dtype, shape=(len(rows), *source.shape[1:])
    )
    for start in range(0, len(rows), _STREAM_BLOCK_RECORDS):
        block = rows[start : start + _STREAM_BLOCK_RECORDS]
        out[start : start + len(block)] = source[block]
    out.flush()


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """write(tmp) then rename tmp over path, so readers never see a half-written file."""
    tmp = _temp_name(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _temp_name(path: Path) -> Path:
    """A hidden sibling of path, unique to this process, with the same suffix (np.save appends
    ".npy" to names without it)."""
    return path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")


def make_dataset(
    decoded: DecodedImages,
    num_classes: int,
    *,
    batch_size: int,
    training: bool,
    augment: AugmentConfig | None = None,
    seed: int = 0,
    whole_images: tf.Variable | None = None,
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

    Returns:
        Dataset of (images float32 [B, S, S, 3] in 0..255, labels float32 [B, num_classes]);
        training batches are [B, T, T, 3] when `augment.output_size` is T.

    Raises:
        ConfigError: batch_size < 1, or training with fewer images than one batch.
    """
    count = len(decoded.labels)
    if batch_size < 1:
        raise ConfigError(f"batch size {batch_size} must be at least 1")
    if training and count < batch_size:
        raise ConfigError(
            f"only {count} training images for batch size {batch_size}; use a smaller batch size"
        )
    stream_file = _whole_npy_file(decoded.images)
    if stream_file is None:
        batches = _batches_in_memory(decoded, batch_size, training, seed)
    else:
        batches = _batches_from_file(stream_file, decoded, batch_size, training, seed)

    def to_model_inputs(images, labels):
        return tf.cast(images, tf.float32), tf.one_hot(labels, num_classes, dtype=tf.float32)

    def to_augmented_inputs(batch, batch_seed):
        images, labels = batch
        one_hot = tf.one_hot(labels, num_classes, dtype=tf.float32)
        if whole_images is None:
            return augment_batch(images, one_hot, batch_seed, augment)
        flips_only = AugmentConfig(flip=augment.flip)
        return tf.cond(
            whole_images,
            lambda: augment_batch(images, one_hot, batch_seed, flips_only),
            lambda: augment_batch(images, one_hot, batch_seed, augment),
        )

    if training and augment is not None:
        # One fresh [2] seed per batch, different every epoch but fixed by `seed`: stateless ops
        # stay deterministic even with parallel map calls.
        batch_seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        batches = tf.data.Dataset.zip(batches, batch_seeds).map(
            to_augmented_inputs, num_parallel_calls=tf.data.AUTOTUNE
        )
    else:
        batches = batches.map(to_model_inputs, num_parallel_calls=tf.data.AUTOTUNE)
    return batches.prefetch(tf.data.AUTOTUNE)


def _batches_in_memory(decoded, batch_size, training, seed) -> tf.data.Dataset:
    """(uint8 [B,S,S,3], int32 [B]) batches gathered from the array held as one tensor."""
    images = tf.constant(decoded.images)
    labels = tf.constant(decoded.labels)
    indices = tf.data.Dataset.range(len(decoded.labels))
    if training:
        indices = indices.shuffle(len(decoded.labels), seed=seed, reshuffle_each_iteration=True)
    return indices.batch(batch_size, drop_remainder=training).map(
        lambda i: (tf.gather(images, i), tf.gather(labels, i)),
        num_parallel_calls=tf.data.AUTOTUNE,
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
    return batches.map(to_pixels, num_parallel_calls=tf.data.AUTOTUNE)


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


def augment_batch(images, labels, seed, config: AugmentConfig):
    """Randomly augment one batch; every draw comes from `seed` (int [2]).

    Args:
        images: uint8 [B, S, S, 3].
        labels: float32 [B, C] one-hot labels.
        seed: int32/int64 [2] stateless seed.
        config: which augmentations to apply.

    Returns:
        (images float32 [B, T, T, 3] in 0..255, labels float32 [B, C] summing to 1 per row), where
        T is `config.output_size` or S.
    """
    flip_seed, crop_seed, affine_seed, mix_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, num=4)
    )
    if config.flip:
        images = _random_flip(images, flip_seed)
    images = tf.cast(images, tf.float32)
    if config.crop_scale is not None:
        images = _random_resized_crop(images, crop_seed, config.crop_scale, config.output_size)
    elif config.output_size is not None:
        images = tf.image.resize(images, [config.output_size, config.output_size], method="bilinear",
                                 antialias=True)
    if config.shift > 0 or config.rotation > 0:
        images = _random_shift_rotate(images, affine_seed, config.shift, config.rotation)
    if config.mixup_alpha > 0 and config.cutmix_alpha > 0:
        choice_seed, mix_seed = tf.unstack(tf.random.experimental.stateless_split(mix_seed, 2))
        return tf.cond(
            tf.random.stateless_uniform([], choice_seed) < 0.5,
            lambda: _mixup(images, labels, mix_seed, config.mixup_alpha),
            lambda: _cutmix(images, labels, mix_seed, config.cutmix_alpha),
        )
    if config.mixup_alpha > 0:
        return _mixup(images, labels, mix_seed, config.mixup_alpha)
    if config.cutmix_alpha > 0:
        return _cutmix(images, labels, mix_seed, config.cutmix_alpha)
    return images, labels


@tf.function(jit_compile=True)
def _random_flip(images, seed):
    """Mirror each uint8 image with probability 1/2.

    Compiled with XLA, which fuses the reverse and select into one pass: TensorFlow's own
    kernels for them made the flip cost more than the rest of the batch (bench/pipeline.py).
    """
    mirror = tf.random.stateless_uniform([tf.shape(images)[0], 1, 1, 1], seed) < 0.5
    return tf.where(mirror, tf.reverse(images, axis=[2]), images)


def _random_resized_crop(images, seed, crop_scale, output_size=None):
    """Crop a random box of area fraction in crop_scale, aspect 3/4..4/3; resize to
    output_size x output_size (default: back to S x S)."""
    batch = tf.shape(images)[0]
    size = tf.shape(images)[1] if output_size is None else tf.constant(output_size)
    area_seed, aspect_seed, y_seed, x_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, num=4)
    )
    area = tf.random.stateless_uniform([batch], area_seed, crop_scale[0], crop_scale[1])
    log_aspect = tf.random.stateless_uniform([batch], aspect_seed, math.log(3 / 4), math.log(4 / 3))
    aspect = tf.exp(log_aspect)
    # Height and width as fractions of the side; a box that would not fit is clipped to it.
    height = tf.minimum(tf.sqrt(area / aspect), 1.0)
    width = tf.minimum(tf.sqrt(area * aspect), 1.0)
    top = tf.random.stateless_uniform([batch], y_seed) * (1.0 - height)
    left = tf.random.stateless_uniform([batch], x_seed) * (1.0 - width)
    boxes = tf.stack([top, left, top + height, left + width], axis=1)
    return tf.image.crop_and_resize(
        images, boxes, tf.range(batch), tf.stack([size, size]), method="bilinear"
    )


def _random_shift_rotate(images, seed, shift, rotation_degrees):
    """Translate by up to shift*S pixels each way and rotate by up to rotation_degrees, about
    the centre; uncovered pixels are filled by reflection."""
    batch = tf.shape(images)[0]
    side = tf.cast(tf.shape(images)[1], tf.float32)
    angle_seed, dx_seed, dy_seed = tf.unstack(tf.random.experimental.stateless_split(seed, num=3))
    max_angle = rotation_degrees * math.pi / 180.0
    angle = tf.random.stateless_uniform([batch], angle_seed, -max_angle, max_angle)
    dx = tf.random.stateless_uniform([batch], dx_seed, -shift, shift) * side
    dy = tf.random.stateless_uniform([batch], dy_seed, -shift, shift) * side
    cos, sin = tf.cos(angle), tf.sin(angle)
    # Output pixel p maps to input R(p - t) about the centre c: R p + (c - R c) - R t.
    centre = (side - 1.0) / 2.0
    x_offset = centre - (cos * centre - sin * centre) - (cos * dx - sin * dy)
    y_offset = centre - (sin * centre + cos * centre) - (sin * dx + cos * dy)
    zeros = tf.zeros([batch])
    transforms = tf.stack([cos, -sin, x_offset, sin, cos, y_offset, zeros, zeros], axis=1)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=transforms,
        output_shape=tf.shape(images)[1:3],
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="REFLECT",
    )


def _beta(seed, shape, alpha):
    """Beta(alpha, alpha) samples as G1 / (G1 + G2) of two Gamma(alpha) draws."""
    seed_1, seed_2 = tf.unstack(tf.random.experimental.stateless_split(seed, num=2))
    g1 = tf.random.stateless_gamma(shape, seed_1, alpha)
    g2 = tf.random.stateless_gamma(shape, seed_2, alpha)
    return g1 / tf.maximum(g1 + g2, 1e-12)


def _partners(seed, batch):
    """A random permutation of 0..batch-1: each image is mixed with another of its batch."""
    return tf.argsort(tf.random.stateless_uniform([batch], seed))


def _mixup(images, labels, seed, alpha):
    """images lam*x + (1-lam)*x[partner], labels likewise, one lam ~ Beta(alpha, alpha) per image."""
    batch = tf.shape(images)[0]
    lam_seed, partner_seed = tf.unstack(tf.random.experimental.stateless_split(seed, num=2))
    lam = _beta(lam_seed, [batch], alpha)
    partner = _partners(partner_seed, batch)
    lam_images, lam_labels = tf.reshape(lam, [-1, 1, 1, 1]), tf.reshape(lam, [-1, 1])
    images = lam_images * images + (1.0 - lam_images) * tf.gather(images, partner)
    labels = lam_labels * labels + (1.0 - lam_labels) * tf.gather(labels, partner)
    return images, labels


def _cutmix(images, labels, seed, alpha):
    """Paste a random box of a partner image (area 1-lam, lam ~ Beta(alpha, alpha)) into each
    image; labels are weighted by the pixel areas actually kept and pasted."""
    batch, size = tf.shape(images)[0], tf.shape(images)[1]
    side = tf.cast(size, tf.float32)
    lam_seed, partner_seed, y_seed, x_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, num=4)
    )
    lam = _beta(lam_seed, [batch], alpha)
    partner = _partners(partner_seed, batch)
    half = tf.sqrt(1.0 - lam) * side / 2.0
    centre_y = tf.random.stateless_uniform([batch], y_seed) * side
    centre_x = tf.random.stateless_uniform([batch], x_seed) * side
    top = tf.clip_by_value(tf.round(centre_y - half), 0.0, side)
    bottom = tf.clip_by_value(tf.round(centre_y + half), 0.0, side)
    left = tf.clip_by_value(tf.round(centre_x - half), 0.0, side)
    right = tf.clip_by_value(tf.round(centre_x + half), 0.0, side)
    coords = tf.range(side)
    rows = (coords >= top[:, None]) & (coords < bottom[:, None])  # [B, S]
    cols = (coords >= left[:, None]) & (coords < right[:, None])  # [B, S]
    pasted = rows[:, :, None, None] & cols[:, None, :, None]  # [B, S, S, 1]
    images = tf.where(pasted, tf.gather(images, partner), images)
    kept = 1.0 - (bottom - top) * (right - left) / (side * side)
    kept = tf.reshape(kept, [-1, 1])
    labels = kept * labels + (1.0 - kept) * tf.gather(labels, partner)
    return images, labels


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
