#!/usr/bin/env python
"""Training images/s: our ResNet-50 as train.py configures it, against keras.applications.ResNet50
in float32 with the same batch, measured in one run on the same machine.

    python bench/train_throughput.py                      # 224 px, batch 32 (about 10 minutes on 2 CPU cores)
    python bench/train_throughput.py --keras-batch-norm   # also ours with Keras' BatchNormalization
    python bench/train_throughput.py --image-size 64 --steps 2 --rounds 1 --warmup-steps 1   # quick check
    python bench/train_throughput.py --anchor-only --rounds 3   # the speed of the day only (about 2 minutes)

Synthetic images (throughput does not depend on pixel values). The models take turns, a few steps
each, for several rounds, and each rate is the median step: a slow spell of the machine (this VM's
step times drift by up to 2x) then slows every model alike instead of biasing the ratio. Works
unchanged on a GPU, where train.py's `auto` precision means float16 and XLA. The last line reads `ratio: X`
(ours images/s over the keras.applications float32 images/s); with --anchor-only it reads
`anchor: X images/s`, the figure docs/ACCURACY.md records beside each time-budgeted run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


class StepTimes:
    """Wall time of each training step (one `fit` call of `steps` steps): a callback."""

    def __init__(self):
        import keras

        outer = self

        class Callback(keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                outer.ends.append(time.perf_counter())

        self.ends: list[float] = []
        self.callback = Callback()

    def durations(self) -> list[float]:
        return [b - a for a, b in zip(self.ends, self.ends[1:], strict=False)]


def synthetic_batches(image_size: int, batch_size: int):
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (batch_size, image_size, image_size, 3)).astype("float32")
    labels = np.eye(10, dtype="float32")[rng.integers(0, 10, batch_size)]
    return tf.data.Dataset.from_tensors((images, labels)).repeat().prefetch(2)


def step_seconds(model, data, steps: int) -> list[float]:
    """Durations of `steps` consecutive training steps (the first step of the call is excluded:
    it absorbs the call's own start-up)."""
    times = StepTimes()
    model.fit(data, steps_per_epoch=steps + 1, epochs=1, verbose=0, shuffle=False, callbacks=[times.callback])
    return times.durations()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=4, help="timed steps per model per round")
    p.add_argument("--rounds", type=int, default=5, help="rounds; each times every model in turn")
    p.add_argument("--warmup-steps", type=int, default=2, help="untimed steps first (tracing, compilation)")
    p.add_argument("--precision", default="auto", help="ours: as train.py's --precision")
    p.add_argument("--xla", default="auto", help="ours: as train.py's --xla")
    p.add_argument("--keras-batch-norm", action="store_true",
                   help="also time ours with Keras' own BatchNormalization (train.py --no-fused-batch-norm)")
    p.add_argument("--anchor-only", action="store_true",
                   help="time only keras.applications.ResNet50 float32: the machine's speed of the day")
    args = p.parse_args(argv)

    import keras
    import numpy as np

    from idenprof.config import resolve_config
    from idenprof.train.runtime import cpu_model_name, detect_environment, plan_runtime, strategy_for
    from idenprof.train.training import compile_model

    env = detect_environment()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"machine: {cpu_model_name()}, {cores} cores, gpus: {list(env.gpus) or 'none'}")
    print(f"settings: {args.image_size}x{args.image_size}, batch {args.batch_size}, {args.rounds} rounds of "
          f"{args.steps} timed steps per model, after {args.warmup_steps} warm-up steps; models take turns, "
          "so a slow minute of the machine slows each of them")

    reference = keras.applications.ResNet50(weights=None, input_shape=(args.image_size, args.image_size, 3), classes=10)
    reference.compile(optimizer=keras.optimizers.Adam(learning_rate=1e-3), loss="categorical_crossentropy")
    contenders = {"keras.applications.ResNet50 float32": reference}

    for fused in () if args.anchor_only else (True, False) if args.keras_batch_norm else (True,):
        config = resolve_config(None, {"image_size": args.image_size, "batch_size": args.batch_size,
                                       "precision": args.precision, "xla": args.xla, "fused_batch_norm": fused})
        plan = plan_runtime(env, precision=config.precision, xla=config.xla, batch_size=config.batch_size)
        with strategy_for(plan).scope():
            model = compile_model(config, plan, num_classes=10, steps_per_epoch=1000)
        runtime = f"{plan.precision}, xla {'on' if plan.xla else 'off'}"
        label = (f"ours ResNet-50 as train.py configures it ({runtime})" if fused
                 else f"ours with Keras' BatchNormalization ({runtime})")
        contenders[label] = model

    data = synthetic_batches(args.image_size, args.batch_size)
    durations = {label: [] for label in contenders}
    for model in contenders.values():
        step_seconds(model, data, args.warmup_steps)
    for _ in range(args.rounds):
        for label, model in contenders.items():
            durations[label] += step_seconds(model, data, args.steps)

    rates = {label: args.batch_size / float(np.median(d)) for label, d in durations.items()}
    for label, rate in rates.items():
        print(f"{label}: {rate:.2f} images/s (median of {len(durations[label])} steps)")
    if args.anchor_only:
        print(f"anchor: {list(rates.values())[0]:.2f} images/s")
        return 0
    reference_rate, ours_rate = list(rates.values())[:2]
    print(f"ratio: {ours_rate / reference_rate:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
