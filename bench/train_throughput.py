#!/usr/bin/env python
"""Training images/s: our ResNet-50 as train.py configures it, against keras.applications.ResNet50
in float32 with the same batch, measured in one run on the same machine.

    python bench/train_throughput.py                      # 224 px, batch 32 (about 10 minutes on 2 CPU cores)
    python bench/train_throughput.py --image-size 64 --steps 3 --warmup-steps 1   # quick check

Synthetic images (throughput does not depend on pixel values). Works unchanged on a GPU, where
train.py's `auto` precision means float16 and XLA. The last line reads `ratio: X`
(ours images/s over the keras.applications float32 images/s).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


class StepTimer:
    """Wall time of the steps after the first `warmup` (tracing and compilation excluded)."""

    def __init__(self, warmup: int):
        import keras

        outer = self

        class Callback(keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                if batch + 1 == outer.warmup:
                    outer.start = time.perf_counter()
                outer.end = time.perf_counter()

        self.warmup = warmup
        self.start = self.end = None
        self.callback = Callback()


def images_per_second(model, image_size: int, batch_size: int, steps: int, warmup: int) -> float:
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (batch_size, image_size, image_size, 3)).astype("float32")
    labels = np.eye(10, dtype="float32")[rng.integers(0, 10, batch_size)]
    data = tf.data.Dataset.from_tensors((images, labels)).repeat().prefetch(2)
    timer = StepTimer(warmup)
    model.fit(data, steps_per_epoch=warmup + steps, epochs=1, verbose=0, shuffle=False,
              callbacks=[timer.callback])
    return steps * batch_size / (timer.end - timer.start)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=8, help="timed steps per model")
    p.add_argument("--warmup-steps", type=int, default=2, help="untimed steps first (tracing, compilation)")
    p.add_argument("--precision", default="auto", help="ours: as train.py's --precision")
    p.add_argument("--xla", default="auto", help="ours: as train.py's --xla")
    args = p.parse_args(argv)

    import keras

    from idenprof.config import resolve_config
    from idenprof.runtime import apply_runtime, cpu_model_name, detect_environment, plan_runtime
    from idenprof.training import compile_model

    env = detect_environment()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"machine: {cpu_model_name()}, {cores} cores, gpus: {list(env.gpus) or 'none'}")
    print(f"settings: {args.image_size}x{args.image_size}, batch {args.batch_size}, "
          f"{args.steps} timed steps after {args.warmup_steps} warm-up steps")

    keras.mixed_precision.set_global_policy("float32")
    reference = keras.applications.ResNet50(weights=None, input_shape=(args.image_size, args.image_size, 3), classes=10)
    reference.compile(optimizer=keras.optimizers.Adam(learning_rate=1e-3), loss="categorical_crossentropy")
    ref_rate = images_per_second(reference, args.image_size, args.batch_size, args.steps, args.warmup_steps)
    print(f"keras.applications.ResNet50 float32: {ref_rate:.2f} images/s")

    config = resolve_config(None, {"image_size": args.image_size, "batch_size": args.batch_size,
                                   "precision": args.precision, "xla": args.xla})
    plan = plan_runtime(env, precision=config.precision, xla=config.xla, batch_size=config.batch_size)
    with apply_runtime(plan).scope():
        ours = compile_model(config, plan, num_classes=10, steps_per_epoch=1000)
    ours_rate = images_per_second(ours, args.image_size, args.batch_size, args.steps, args.warmup_steps)
    print(f"ours ResNet-50 as train.py configures it ({plan.precision}, xla {'on' if plan.xla else 'off'}): "
          f"{ours_rate:.2f} images/s")
    print(f"ratio: {ours_rate / ref_rate:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
