"""A speed probe for time-budgeted runs: time a few training steps at each candidate training side
and train on the largest side at which the budget fits about `target_epochs` epochs.

A slow CPU (float32 only, or a slow hour of a VM) fits fewer epochs in the same minutes; smaller
training crops buy them back (docs/ACCURACY.md). With `mixing_min_epochs`, a run predicted to fit
fewer epochs than that also trains without mixup and cutmix, which underfit a short run. The
decision is written into the run's config (`train_image_size` and the mixing, with `target_epochs`
and `mixing_min_epochs` cleared) and config.json's `speed_probe` record, so replaying the saved
config trains the same way without probing again.
"""

from __future__ import annotations

import dataclasses
import gc
import time
from dataclasses import dataclass

import numpy as np

from idenprof.config import TrainConfig

# Timed steps per side after one untimed step (tracing): about 30 s on two cores for the cpu preset.
PROBE_STEPS = 3


@dataclass
class SpeedProbe:
    """What the probe measured and chose: training images/s at each side (pixels square), the
    epochs each would fit in the time left (seconds), and the chosen side."""

    target_epochs: int
    seconds_left: float
    images_per_second: dict[int, float]
    predicted_epochs: dict[int, float]
    chosen_side: int
    probe_seconds: float
    mixing_min_epochs: int | None = None  # mixup and cutmix off when the chosen side fits fewer epochs

    @property
    def mixing_dropped(self) -> bool:
        return drops_mixing(self.mixing_min_epochs, self.predicted_epochs[self.chosen_side])

    def to_dict(self) -> dict:
        # JSON object keys are strings; sides stay readable as "80", "64".
        record = dataclasses.asdict(self)
        for key in ("images_per_second", "predicted_epochs"):
            record[key] = {str(side): round(value, 2) for side, value in record[key].items()}
        record["seconds_left"] = round(self.seconds_left, 1)
        record["probe_seconds"] = round(self.probe_seconds, 1)
        record["mixing_dropped"] = self.mixing_dropped
        return record

    def summary(self) -> str:
        sides = ", ".join(f"{side} px {self.images_per_second[side]:.1f} images/s (about "
                          f"{self.predicted_epochs[side]:.0f} epochs)" for side in self.predicted_epochs)
        reached = self.predicted_epochs[self.chosen_side] >= self.target_epochs
        why = (f"the largest side that fits about {self.target_epochs} epochs" if reached else
               f"none fits {self.target_epochs} epochs: the fastest side")
        mixing = (f"; without mixup and cutmix (fewer than {self.mixing_min_epochs} epochs)"
                  if self.mixing_dropped else "")
        return (f"speed probe ({self.probe_seconds:.0f} s): {sides} in the {self.seconds_left / 60:.1f} min left; "
                f"training on {self.chosen_side} px crops, {why}{mixing}")


def candidate_sides(config: TrainConfig, stride: int) -> list[int]:
    """Training sides the probe chooses from, largest first: `train_image_size` (or `image_size`),
    then smaller by the network's total `stride` (pixels) down to `min_train_image_size`. Empty
    when the probe is off or there is nothing to choose."""
    if not config.target_epochs or not config.time_budget_min:
        return []
    start = config.train_image_size or config.image_size
    sides = list(range(start, config.min_train_image_size - 1, -stride))
    return sides if len(sides) > 1 else []


def predicted_epochs(rate: float, whole_rate: float, whole_fraction: float, seconds_left: float,
                     budget_seconds: float, train_images: int) -> float:
    """Epochs a run fits: cropped images at `rate` (images/s) until the whole-image phase (the last
    `whole_fraction` of `budget_seconds`) starts, whole images at `whole_rate` after."""
    whole_seconds = min(seconds_left, whole_fraction * budget_seconds)
    crop_seconds = max(0.0, seconds_left - whole_seconds)
    return (crop_seconds * rate + whole_seconds * whole_rate) / train_images


def choose_side(epochs_by_side: dict[int, float], target_epochs: int) -> int:
    """The largest side at which `target_epochs` fit; the side fitting the most when none does."""
    fitting = [side for side, epochs in epochs_by_side.items() if epochs >= target_epochs]
    if fitting:
        return max(fitting)
    return max(epochs_by_side, key=lambda side: (epochs_by_side[side], -side))


def time_training_steps(model, sides, batch_size: int, steps: int = PROBE_STEPS) -> dict[int, float]:
    """Training images/s of `model` (compiled, any input size) at each side: the median of `steps`
    steps on synthetic batches after one untimed step (the computation's cost does not depend on
    the pixels' values)."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    classes = model.output_shape[-1]
    labels = np.eye(classes, dtype="float32")[rng.integers(0, classes, batch_size)]
    rates = {}
    for side in sides:
        images = tf.constant(rng.uniform(0, 255, (batch_size, side, side, 3)).astype("float32"))
        model.train_on_batch(images, labels)  # traces the step for this shape
        durations = []
        for _ in range(steps):
            begin = time.perf_counter()
            model.train_on_batch(images, labels)
            durations.append(time.perf_counter() - begin)
        rates[side] = batch_size / float(np.median(durations))
    return rates


def probe_training_side(config: TrainConfig, build_model, train_images: int, seconds_left, log=print):
    """(config, probe): `config` with the chosen `train_image_size` and `target_epochs` cleared,
    and the SpeedProbe record; (config, None) unchanged when there is nothing to choose.

    `build_model(config)` makes a throwaway twin of the training model (compiled, open input
    size); `seconds_left()` the budget's seconds left, read after the probe has spent its own."""
    from models import minimum_input_size

    sides = candidate_sides(config, minimum_input_size(config.stem))
    if not sides:
        return config, None
    begin = time.monotonic()
    twin = build_model(dataclasses.replace(config, train_image_size=sides[-1]))
    # The whole-image phase's side is timed only when the run has that phase.
    whole_side = {config.image_size} if config.whole_image_fraction else set()
    rates = time_training_steps(twin, sorted({*sides, *whole_side}, reverse=True), config.batch_size)
    del twin
    gc.collect()
    left = seconds_left()
    epochs = {side: predicted_epochs(rates[side], rates.get(config.image_size, 0.0), config.whole_image_fraction,
                                     left, config.time_budget_min * 60, train_images) for side in sides}
    chosen = choose_side(epochs, config.target_epochs)
    probe = SpeedProbe(config.target_epochs, left, {side: rates[side] for side in sides}, epochs, chosen,
                       time.monotonic() - begin, config.mixing_min_epochs)
    log(probe.summary())
    return decided(config, chosen, epochs[chosen]), probe


def drops_mixing(mixing_min_epochs: int | None, epochs: float) -> bool:
    """Whether a run predicted to fit `epochs` trains without mixup and cutmix. Decided on the
    prediction as config.json records it (two decimals), so a resume decides the same."""
    return mixing_min_epochs is not None and round(epochs, 2) < mixing_min_epochs


def decided(config: TrainConfig, side: int, epochs: float) -> TrainConfig:
    """`config` training on `side`, predicted to fit `epochs`, with the probe's choices made
    (`target_epochs` and `mixing_min_epochs` cleared, the mixing off when it falls short), in the
    form `resolve_config` gives (None when the side is the model's own)."""
    mixing = {"mixup_alpha": 0.0, "cutmix_alpha": 0.0} if drops_mixing(config.mixing_min_epochs, epochs) else {}
    return dataclasses.replace(config, target_epochs=None, mixing_min_epochs=None,
                               train_image_size=None if side == config.image_size else side, **mixing)


def adopt_recorded_choice(config: TrainConfig, record: dict | None) -> TrainConfig:
    """`config` as the run that recorded `record` (config.json's `speed_probe`) trained it, when
    its probe would choose between the same sides: a resumed run keeps its side instead of
    probing again (other sizes are another recipe, which resuming refuses)."""
    from models import minimum_input_size

    if not record or not config.target_epochs:
        return config
    if [str(side) for side in candidate_sides(config, minimum_input_size(config.stem))] != list(
            record.get("predicted_epochs", {})):
        return config
    side = int(record["chosen_side"])
    return decided(config, side, float(record["predicted_epochs"][str(side)]))
