#!/usr/bin/env python
"""Augmentation images/s: ours (idenprof.data.augment, stateless and seeded per batch) against
Keras 3's own layers for the same jobs, in one run on the same machine.

    python bench/augment.py                          # batch 64 of 112 px images, 30 batches per turn
    python bench/augment.py --image-size 32 --batches 2 --rounds 1   # quick check

Pairs: shift + rotation (ours) vs keras.layers.RandomTranslation + RandomRotation; mixup vs
keras.layers.MixUp; cutmix vs keras.layers.CutMix. Each runs inside a tf.data map over the same
uint8 batches, as training does; the pairs take turns for several rounds and each rate is the
median turn. Prints `name: X images/s` lines, then `ratio <job>: R` (ours over Keras) per job.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--image-size", type=int, default=112)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--batches", type=int, default=30, help="batches per turn")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)

    import keras
    import numpy as np
    import tensorflow as tf

    from idenprof.data.augment import AugmentConfig, augment_batch
    from idenprof.train.runtime import cpu_model_name

    rng = np.random.default_rng(0)
    size, batch = args.image_size, args.batch_size
    images = rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
    labels = np.eye(10, dtype=np.float32)[rng.integers(0, 10, batch)]
    source = tf.data.Dataset.from_tensors((images, labels)).repeat(args.batches)
    seeds = tf.data.Dataset.random(seed=0).batch(2)

    def ours(config):
        def fn(batch_, seed):
            return augment_batch(batch_[0], batch_[1], seed, config)

        return tf.data.Dataset.zip(source, seeds).map(fn, num_parallel_calls=tf.data.AUTOTUNE)

    def theirs(*layers):
        def fn(images_, labels_):
            data = {"images": tf.cast(images_, tf.float32), "labels": labels_}
            for layer in layers:
                out = layer(data if layer.__class__.__name__ in ("MixUp", "CutMix") else data["images"],
                            training=True)
                data = out if isinstance(out, dict) else {**data, "images": out}
            return data["images"], data["labels"]

        return source.map(fn, num_parallel_calls=tf.data.AUTOTUNE)

    pipelines = {
        "ours shift+rotation": ours(AugmentConfig(flip=False, shift=0.1, rotation=15.0)),
        "keras RandomTranslation+RandomRotation": theirs(
            keras.layers.RandomTranslation(0.1, 0.1, fill_mode="reflect", seed=1),
            keras.layers.RandomRotation(15 / 360, fill_mode="reflect", seed=2)),
        "ours mixup": ours(AugmentConfig(flip=False, mixup_alpha=0.4)),
        "keras MixUp": theirs(keras.layers.MixUp(alpha=0.4, seed=3)),
        "ours cutmix": ours(AugmentConfig(flip=False, cutmix_alpha=1.0)),
        "keras CutMix": theirs(keras.layers.CutMix(factor=1.0, seed=4)),
    }
    for dataset in pipelines.values():  # trace every map function before timing
        for _ in dataset.take(1):
            pass
    rates: dict[str, list[float]] = {name: [] for name in pipelines}
    for _ in range(args.rounds):
        for name, dataset in pipelines.items():
            start = time.perf_counter()
            for _ in dataset:
                pass
            rates[name].append(args.batches * batch / (time.perf_counter() - start))
    print(f"machine: {cpu_model_name()}, {os.cpu_count()} cores; batch {batch} of {size} px")
    median = {name: statistics.median(values) for name, values in rates.items()}
    for name, rate in median.items():
        print(f"{name}: {rate:.0f} images/s")
    names = list(median)
    for job, (mine, keras_name) in zip(("shift+rotation", "mixup", "cutmix"),
                                       zip(names[0::2], names[1::2], strict=True), strict=True):
        print(f"ratio {job}: {median[mine] / median[keras_name]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
