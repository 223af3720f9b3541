#!/usr/bin/env python
"""Input pipeline images/s on the real IdenProf train split: tf.data (decode once, then batches
from memory) against the original ImageDataGenerator (read and resize every file every epoch),
in one run on the same machine, both with the default augmentation (horizontal flip).

    python bench/pipeline.py                       # 224 px, batch 32 (a few minutes on 2 cores)
    python bench/pipeline.py --image-size 64 --generator-batches 20   # quick check

Measures the pipelines alone (no model). tf.data's first epoch includes decoding every file;
steady state is the following epochs. The last line reads `ratio: X` (steady-state tf.data
images/s over ImageDataGenerator images/s).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# ResNet-50 mixed-precision training on one A100 (NVIDIA DeepLearningExamples, TensorFlow).
GPU_IMAGES_PER_SECOND = 2500
# The generator's batches are timed in this many consecutive windows (median taken).
GENERATOR_WINDOWS = 5


def iterate(dataset) -> int:
    """Pull every batch of one epoch; returns the number of images delivered."""
    return sum(int(images.shape[0]) for images, _ in dataset)


def pull_batches(generator, indices) -> int:
    """Fetch generator[i] for each index, as model.fit does; returns the images delivered."""
    return sum(len(generator[i][0]) for i in indices)


def timed(function, *args) -> tuple[int, float]:
    """(images, seconds) of one call of function(*args), which returns an image count."""
    start = time.perf_counter()
    images = function(*args)
    return images, time.perf_counter() - start


def median_rate(measurements: list[tuple[int, float]]) -> float:
    """Median images/s over repeated measurements: robust to other processes' CPU bursts."""
    return float(statistics.median(images / seconds for images, seconds in measurements))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=Path("data/idenprof"),
                   help="dataset folder holding train/ and test/ (default: data/idenprof)")
    p.add_argument("--archive", type=Path, default=REPO_ROOT.parent / "shared" / "datasets" / "idenprof-jpg.zip",
                   help="IdenProf zip, extracted into --data-dir when that has no dataset")
    p.add_argument("--image-size", type=int, default=224, help="side of the square images, pixels")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steady-epochs", type=int, default=5,
                   help="tf.data epochs timed after the first (median taken)")
    p.add_argument("--generator-batches", type=int, default=100,
                   help="ImageDataGenerator batches timed (after one untimed batch)")
    args = p.parse_args(argv)

    from idenprof.data.augment import AugmentConfig
    from idenprof.data.batches import make_dataset
    from idenprof.data.dataset import scan_dataset
    from idenprof.data.decoded import available_cores, decode_images
    from idenprof.data.download import ensure_dataset
    from idenprof.data.generator import make_generator
    from idenprof.train.runtime import cpu_model_name

    root = ensure_dataset(args.data_dir, str(args.archive), progress=False)
    layout = scan_dataset(root)
    samples = layout.samples["train"]
    size, batch = args.image_size, args.batch_size
    cores = available_cores()
    ram_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    print(f"machine: {cpu_model_name()}, {cores} cores available, {ram_gb:.0f} GiB RAM")
    print(f"data: {len(samples)} train images from {root}; {size}x{size}, batch {batch}, flip")

    start = time.perf_counter()
    decoded = decode_images(samples, size, progress=False)
    decode_s = time.perf_counter() - start
    dataset = make_dataset(decoded, len(layout.class_names), batch_size=batch, training=True,
                           augment=AugmentConfig(), seed=0)
    delivered = iterate(dataset)
    cold_s = time.perf_counter() - start
    cold = delivered / cold_s
    print(f"tf.data first epoch: {delivered} images in {cold_s:.1f} s (decoding {decode_s:.1f} s)")

    steady = median_rate([timed(iterate, dataset) for _ in range(args.steady_epochs)])
    print(f"tf.data steady state: median of {args.steady_epochs} epochs")

    generator = make_generator(samples, layout.class_names, image_size=size, batch_size=batch,
                               training=True, augment_flip=True, seed=0)
    generator[0]
    per_window = max(1, args.generator_batches // GENERATOR_WINDOWS)
    windows = [range(1 + w * per_window, 1 + (w + 1) * per_window) for w in range(GENERATOR_WINDOWS)]
    flow = median_rate([timed(pull_batches, generator, window) for window in windows])
    print(f"ImageDataGenerator: median of {GENERATOR_WINDOWS} windows of "
          f"{per_window} batches")

    rows = [
        ("tf.data first epoch (decodes)", cold),
        ("tf.data steady state", steady),
        ("ImageDataGenerator flow", flow),
    ]
    print()
    print(f"{'pipeline':32} {'images/s':>10} {'per core':>10}")
    for name, rate in rows:
        print(f"{name:32} {rate:10.0f} {rate / cores:10.1f}")
    per_core = steady / cores
    print(f"\nestimate: {GPU_IMAGES_PER_SECOND} images/s (ResNet-50 AMP, one A100) needs "
          f"{GPU_IMAGES_PER_SECOND / per_core:.1f} cores at {per_core:.0f} images/s per core")
    print(f"ratio: {steady / flow:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
