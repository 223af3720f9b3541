"""The training recipe's optimizer and its one learning-rate schedule.

The schedules (TrainConfig `schedule`): step (the original: `lr`, times `lr_decay_factor` after
each of `lr_boundaries` epochs), cosine (linear warm-up, cosine decay to zero at the last step),
constant. With a time budget the cosine follows the clock instead of the step count
(`budget_cosine_lr`, applied each batch by callbacks.TimeBudget), so it ends when the time does.
"""

from __future__ import annotations

import math

from idenprof.config import TrainConfig


def make_learning_rate(config: TrainConfig, steps_per_epoch: int, total_epochs: int | None = None):
    """A Keras learning-rate schedule indexed by optimizer step.

    step: `lr` until `lr_boundaries[0]` epochs are done, then times `lr_decay_factor` after each
    boundary (the original recipe: 1e-3, /10 after epochs 80, 120, 160, 180).
    cosine: linear warm-up over `warmup_epochs` to `lr`, then cosine decay to 0 at the last step;
    with a time budget the rate follows the clock instead (see callbacks.TimeBudget), and this
    returns the peak rate as the optimizer's starting value.
    """
    import keras

    total_epochs = total_epochs or config.epochs
    if config.schedule == "constant" or (config.schedule == "cosine" and config.time_budget_min):
        return config.lr
    if config.schedule == "step":
        # Keras uses values[i+1] once step > boundaries[i]; the first step of epoch b (0-based
        # iterations == b * steps_per_epoch) must already use the decayed rate.
        boundaries = [b * steps_per_epoch - 1 for b in config.lr_boundaries]
        values = [config.lr * config.lr_decay_factor**i for i in range(len(boundaries) + 1)]
        return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)
    total_steps = total_epochs * steps_per_epoch
    warmup_steps = min(int(round(config.warmup_epochs * steps_per_epoch)), total_steps - 1)
    if warmup_steps > 0:
        return keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=0.0,
            decay_steps=max(1, total_steps - warmup_steps),
            warmup_target=config.lr,
            warmup_steps=warmup_steps,
        )
    return keras.optimizers.schedules.CosineDecay(config.lr, decay_steps=max(1, total_steps))


def budget_cosine_lr(peak_lr: float, step: int, warmup_steps: int, progress: float) -> float:
    """Learning rate of a schedule fitted to a time budget: a linear warm-up over the first
    `warmup_steps` optimizer steps times a cosine decay over the fraction of the budget spent
    (`progress`, 0..1), so the rate reaches zero when the time does."""
    warmup = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
    return peak_lr * warmup * 0.5 * (1.0 + math.cos(math.pi * min(1.0, max(0.0, progress))))


def make_optimizer(config: TrainConfig, learning_rate):
    import keras

    # use_ema: the optimizer keeps the average beside the weights it trains (see `averaged_weights`).
    ema = dict(use_ema=True, ema_momentum=config.ema_momentum) if config.ema_momentum else {}
    if config.optimizer == "adam":
        return keras.optimizers.Adam(learning_rate=learning_rate, **ema)
    if config.optimizer == "adamw":
        return keras.optimizers.AdamW(learning_rate=learning_rate, weight_decay=config.weight_decay, **ema)
    return keras.optimizers.SGD(
        learning_rate=learning_rate, momentum=config.momentum, nesterov=True,
        weight_decay=config.weight_decay or None, **ema,
    )
