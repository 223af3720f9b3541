"""Training: from a config to a run folder with the best model, its report and its exports.

    run_dir/
      config.json            the resolved config and runtime plan
      class_index.json       {"0": "chef", ...}: output position -> class name
      model-eEEE-valA.AAAA.keras / .h5   the best checkpoint by validation accuracy
      metrics.csv            per-epoch metrics (Keras CSVLogger)
      metrics.json           test-split report of the best checkpoint
      training_curves.png, confusion_matrix.png
      logs/                  TensorBoard
      export/                .keras, .h5, SavedModel, LiteRT
      backup/                resume state while a run is unfinished
"""

from __future__ import annotations

import dataclasses
import json
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from idenprof.class_index import CLASS_INDEX_FILENAME, write_class_index
from idenprof.config import TrainConfig
from idenprof.errors import ConfigError, DatasetError
from idenprof.multiworker import is_chief, prepare_for_multi_worker, worker_output_dir
from idenprof.report import METRICS_FILENAME
from idenprof.runtime import RuntimePlan


@dataclass
class TrainResult:
    run_dir: Path
    best_model: Path | None
    test_metrics: dict | None
    epochs_run: int
    train_seconds: float


def steps_per_epoch_for(train_images: int, batch_size: int) -> int:
    steps = train_images // batch_size
    if steps < 1:
        raise ConfigError(
            f"--batch-size {batch_size} is larger than the {train_images} training images; "
            "use a smaller batch or more images"
        )
    return steps


def batch_fitted_to_data(config: TrainConfig, train_images: int, replicas: int, log=print) -> TrainConfig:
    """`config`, with the batch lowered to the training set (a multiple of `replicas`) when the set
    is smaller than one batch: a quick trial on a few images per class still trains."""
    if train_images >= config.batch_size:
        return config
    smaller = train_images // replicas * replicas
    if smaller < 1:
        raise ConfigError(f"only {train_images} training images for {replicas} replicas; use more images per class")
    log(f"note: only {train_images} training images: batch size lowered from {config.batch_size} to {smaller}")
    return dataclasses.replace(config, batch_size=smaller)


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
        # With a time budget the cosine schedule follows the clock: TimeBudget sets the rate.
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


def make_optimizer(config: TrainConfig, learning_rate):
    import keras

    if config.optimizer == "adam":
        return keras.optimizers.Adam(learning_rate=learning_rate)
    if config.optimizer == "adamw":
        return keras.optimizers.AdamW(learning_rate=learning_rate, weight_decay=config.weight_decay)
    return keras.optimizers.SGD(
        learning_rate=learning_rate, momentum=config.momentum, nesterov=True,
        weight_decay=config.weight_decay or None,
    )


def trains_at_other_size(config: TrainConfig) -> bool:
    return config.train_image_size is not None and config.train_image_size != config.image_size


def build_classifier(config: TrainConfig, num_classes: int, image_size: int | None = None):
    """The network for `config` with preprocessing inside and a float32 softmax head.

    Its input is `image_size` (default `config.image_size`) square; `image_size=0` leaves height and
    width open, for training on one size and validating on another.
    """
    from idenprof.weights import build_from_imagenet
    from models import build_model

    size = config.image_size if image_size is None else image_size or None
    if config.weights == "imagenet":
        return build_from_imagenet(config, num_classes, image_size=image_size)
    return build_model(
        config.model,
        input_shape=(size, size, 3),
        classes=num_classes,
        weights=config.weights,
        width=config.width,
        stem=config.stem,
        zero_init_residual=config.zero_init_residual,
    )


def seed_everything(seed: int) -> None:
    import keras

    random.seed(seed)
    np.random.seed(seed)
    keras.utils.set_random_seed(seed)


def select_samples(layout, config: TrainConfig):
    """(train, validation, test) sample lists for the config (see idenprof.dataset)."""
    from idenprof.dataset import stratified_split

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
    train, val = stratified_split(train, config.val_fraction, config.seed)
    return train, val, list(test)


def prepare_run_dir(config: TrainConfig, tf_config: dict | None = None) -> Path:
    """Create (or reopen for resume) the run folder; refuse a finished run or a different config.
    In a multi-worker cluster only the chief writes the run folder; each other worker gets its own
    `workertemp_<index>` inside it (see idenprof.multiworker)."""
    run_dir = worker_output_dir(config.run_dir or Path("runs") / config.default_run_name(), tf_config)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"cannot write to run folder {run_dir} ({e.strerror}); pass a writable --run-dir") from None
    saved = run_dir / "config.json"
    if (run_dir / METRICS_FILENAME).exists():
        raise ConfigError(
            f"{run_dir} already holds a finished run; pass a new --run-dir (or delete that folder) to train again"
        )
    if saved.exists():
        previous = json.loads(saved.read_text()).get("config", {})
        ours = dataclasses.asdict(config)
        # Settings that change how, not what, a run trains may differ on resume.
        ignore = {"progress", "download_only", "data_url", "run_dir", "fused_batch_norm"}
        changed = sorted(k for k in ours if k not in ignore and previous.get(k) != ours[k])
        if changed:
            raise ConfigError(
                f"{run_dir} holds an unfinished run with different settings ({', '.join(changed)}); "
                "repeat that run's command to resume it, or pass a new --run-dir"
            )
    return run_dir


def save_run_config(run_dir: Path, config: TrainConfig, plan: RuntimePlan) -> None:
    from idenprof.report import write_json_atomically

    write_json_atomically({"config": dataclasses.asdict(config), "runtime": plan.to_dict()}, run_dir / "config.json")


def train(config: TrainConfig, log=print) -> TrainResult:
    """Run the whole job described by `config`; see the module docstring for what it writes."""
    start = time.monotonic()
    from idenprof.dataset import scan_dataset
    from idenprof.download import ensure_dataset, resolve_data_url

    if not config.download_only:
        check_model_choice(config)  # fail on a bad flag before any download or decoding
    data_root = ensure_dataset(Path(config.data_dir), resolve_data_url(config.data_url),
                               sha256=config.data_sha256, progress=config.progress)
    layout = scan_dataset(data_root)
    log(layout.report())
    if config.download_only:
        return TrainResult(Path(data_root), None, None, 0, 0.0)

    from idenprof.runtime import (
        apply_runtime,
        cluster_workers,
        detect_environment,
        multi_worker_strategy,
        plan_runtime,
        split_cpu_into_logical_devices,
        tf_config_from_env,
    )

    if config.cpu_replicas:
        split_cpu_into_logical_devices(config.cpu_replicas)
    tf_config = tf_config_from_env()
    if cluster_workers(tf_config) > 1:
        multi_worker_strategy()  # must exist before TensorFlow initialises its devices

    plan = plan_runtime(detect_environment(), precision=config.precision, xla=config.xla,
                        batch_size=config.batch_size)
    log(plan.summary())
    for note in plan.notes:
        log(f"note: {note}")
    run_dir = prepare_run_dir(config, tf_config)
    class_names = layout.class_names
    write_class_index(class_names, run_dir / CLASS_INDEX_FILENAME)
    save_run_config(run_dir, config, plan)
    for note in size_notes(config):
        log(f"note: {note}")
    if plan.device == "cpu":
        hint = "" if (config.preset or "").startswith("cpu") else "; try --preset cpu for a recipe sized for CPUs"
        log(f"no GPU found: training on the CPU (the first epoch prints an estimate of its length{hint})")

    seed_everything(config.seed)
    train_samples, val_samples, test_samples = select_samples(layout, config)
    train_data, val_data, test_data = decode_splits(config, train_samples, val_samples, test_samples, run_dir, log)
    config = batch_fitted_to_data(config, len(train_data.labels), plan.replicas, log)
    steps = steps_per_epoch_for(len(train_data.labels), config.batch_size)

    strategy = apply_runtime(plan)
    with strategy.scope():
        model = compile_model(config, plan, len(class_names), steps)
    prepare_for_multi_worker(model, strategy)
    import keras
    import tensorflow as tf

    # Read by the input pipeline; WholeImagePhase sets it for the last part of the run.
    whole_images = tf.Variable(False, trainable=False) if config.whole_image_fraction else None
    train_ds, val_ds = make_inputs(config, train_data, val_data, class_names, train_samples, whole_images)

    from idenprof.callbacks import (
        BestModelCheckpoint,
        EpochTimeEstimate,
        LearningRateLogger,
        TimeBudget,
        WholeImagePhase,
        find_best_checkpoint,
    )

    callbacks = [
        LearningRateLogger(),
        keras.callbacks.BackupAndRestore(str(run_dir / "backup"), double_checkpoint=True),
        BestModelCheckpoint(run_dir, to_saved=saved_model_for(config, len(class_names))),
        keras.callbacks.CSVLogger(str(run_dir / "metrics.csv"), append=True),
        keras.callbacks.TensorBoard(str(run_dir / "logs"), write_graph=False),
        EpochTimeEstimate(steps, log=log),
    ]
    budget = None
    if config.time_budget_min:
        fitted = config.schedule == "cosine"  # the cosine schedule then ends with the budget
        budget = TimeBudget(
            config.time_budget_min * 60, start, run_dir / "time_budget.json",
            peak_lr=config.lr if fitted else None,
            warmup_steps=int(round(config.warmup_epochs * steps)),
        )
        callbacks.append(budget)
    if whole_images is not None:
        callbacks.append(WholeImagePhase(whole_images, config.whole_image_fraction, config.epochs,
                                         progress=budget.progress if budget else None))
    # shuffle=False: the tf.data pipeline shuffles (seeded) itself.
    history = model.fit(train_ds, validation_data=val_ds, epochs=config.epochs, callbacks=callbacks,
                        verbose=1 if config.progress else 2, shuffle=False)
    train_seconds = time.monotonic() - start
    epochs_run = len(history.history.get("loss", []))
    if not is_chief(tf_config):
        log(f"worker finished {epochs_run} epoch(s); the chief writes the report and exports")
        return TrainResult(run_dir, find_best_checkpoint(run_dir)[0], None, epochs_run, train_seconds)
    return finish_run(config, run_dir, class_names, test_data, test_samples, layout, train_seconds, epochs_run, log)


def saved_model_for(config: TrainConfig, num_classes: int):
    """What a checkpoint saves of the training model: itself, or, when training used another
    image size or fused batch norm, the same weights in the model `build_classifier` makes: input
    `image_size` square (what inference reads), Keras' own layers (what loads anywhere)."""
    if not trains_at_other_size(config) and not config.fused_batch_norm:
        return None

    def portable_copy(model):
        portable = build_classifier(config, num_classes)
        portable.set_weights(model.get_weights())
        return portable

    return portable_copy


def size_notes(config: TrainConfig) -> list[str]:
    """Warnings for image sizes that work but cost accuracy: a side that is not a multiple of the
    network's total downsampling makes some stride-2 layers see odd feature maps, padded on one
    side only, so features shift between stages (measured: 71.7% test top-1 at 90 px against
    78.2% at 96 px for the same weights; docs/ACCURACY.md)."""
    from models import minimum_input_size

    stride = minimum_input_size(config.stem)  # the total downsampling of the network
    notes = []
    for flag, size in (("--image-size", config.image_size), ("--train-image-size", config.train_image_size)):
        if size is not None and size % stride:
            lower, upper = size // stride * stride, (size // stride + 1) * stride
            notes.append(f"{flag} {size} is not a multiple of {stride} (the network's total stride with the "
                         f"{config.stem} stem), which costs accuracy; {lower} or {upper} would not")
    return notes


def check_model_choice(config: TrainConfig) -> None:
    from models import MODEL_BUILDERS, minimum_input_size

    if config.model not in MODEL_BUILDERS:
        raise ConfigError(f"--model {config.model!r} is unknown; choose one of {', '.join(MODEL_BUILDERS)}")
    smallest = minimum_input_size(config.stem)
    for flag, size in (("--image-size", config.image_size), ("--train-image-size", config.train_image_size)):
        if size is not None and size < smallest:
            raise ConfigError(
                f"{flag} {size} is too small for {config.model} with the {config.stem} stem; "
                f"use at least {smallest}"
            )


def decode_splits(config, train_samples, val_samples, test_samples, run_dir, log):
    from idenprof.pipeline import decode_images

    cache_dir = Path(config.cache_dir) if config.cache_dir else None
    decoded = []
    for name, samples in (("train", train_samples), ("validation", val_samples), ("test", test_samples)):
        if name == "test" and config.validate_on == "test":
            decoded.append(decoded[1])
            continue
        data = decode_images(samples, config.image_size, cache_dir=cache_dir, progress=config.progress)
        for path, reason in data.skipped:
            log(f"skipped unreadable image {path}: {reason}")
        if len(data.labels) == 0:
            raise DatasetError(f"the {name} split has no readable images; check {config.data_dir}")
        decoded.append(data)
    return decoded


def compile_model(config: TrainConfig, plan: RuntimePlan, num_classes: int, steps_per_epoch: int):
    import keras

    model = build_classifier(config, num_classes, image_size=0 if trains_at_other_size(config) else None)
    if config.fused_batch_norm:
        from models.batch_norm import use_fused_batch_norm

        model = use_fused_batch_norm(model)
    optimizer = make_optimizer(config, make_learning_rate(config, steps_per_epoch))
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
        metrics=["accuracy", keras.metrics.TopKCategoricalAccuracy(k=min(5, num_classes), name="top5")],
        jit_compile=plan.xla,
    )
    return model


def make_inputs(config, train_data, val_data, class_names, train_samples, whole_images=None):
    """(training, validation) datasets; `whole_images` is the flag of pipeline.make_dataset."""
    from idenprof.pipeline import AugmentConfig, make_dataset, make_generator

    n = len(class_names)
    val_ds = make_dataset(val_data, n, batch_size=config.batch_size, training=False, seed=config.seed)
    if config.loader == "generator":
        kept = set(train_data.paths)
        samples = [s for s in train_samples if s[0] in kept]
        train_ds = make_generator(samples, class_names, image_size=config.image_size,
                                  batch_size=config.batch_size, training=True,
                                  augment_flip=config.flip, seed=config.seed)
        return train_ds, val_ds
    augment = AugmentConfig(
        flip=config.flip, crop_scale=tuple(config.crop_scale) if config.crop_scale else None,
        shift=config.shift, rotation=config.rotation,
        mixup_alpha=config.mixup_alpha, cutmix_alpha=config.cutmix_alpha,
        output_size=config.train_image_size if trains_at_other_size(config) else None,
    )
    train_ds = make_dataset(train_data, n, batch_size=config.batch_size, training=True,
                            augment=augment, seed=config.seed, whole_images=whole_images)
    return train_ds, val_ds


def finish_run(config, run_dir, class_names, test_data, test_samples, layout, train_seconds, epochs_run, log):
    """Evaluate the best checkpoint once on the test split, write the report and the exports."""
    import keras

    from idenprof.callbacks import find_best_checkpoint
    from idenprof.export import export_model
    from idenprof.report import (
        classification_metrics,
        plot_confusion_matrix,
        plot_training_curves,
        predict_views,
        write_json_atomically,
    )

    best = find_best_checkpoint(run_dir)
    if best is None:
        raise DatasetError(f"training ended without a checkpoint in {run_dir} (no validation accuracy was recorded)")
    best_path, best_epoch, best_val = best
    model = keras.models.load_model(best_path, compile=False)
    single, mirrored = predict_views(model, test_data.images, batch_size=config.batch_size, mirror=config.tta)
    probs = (single + mirrored) / 2 if config.tta else single
    metrics = classification_metrics(probs, test_data.labels, class_names)
    if config.tta:  # what the mirror adds: the single-view accuracy too
        metrics["top1_without_tta"] = classification_metrics(single, test_data.labels, class_names)["top1"]
    duplicate_tests = {test for _, test in layout.duplicates}
    keep = np.array([p not in duplicate_tests for p in test_data.paths], dtype=bool)
    metrics["top1_without_train_duplicates"] = classification_metrics(
        probs[keep], test_data.labels[keep], class_names)["top1"] if keep.any() else None
    metrics.update(
        best_model=best_path.name, best_epoch=best_epoch, best_val_accuracy=best_val,
        epochs_run=epochs_run, train_seconds=round(train_seconds, 1), tta=config.tta,
        evaluated_on="test" if config.validate_on == "holdout" else "test (also used for validation)",
    )
    plot_training_curves(run_dir / "metrics.csv", run_dir / "training_curves.png")
    plot_confusion_matrix(metrics["confusion_matrix"], class_names, run_dir / "confusion_matrix.png")
    export_model(model, run_dir / "export", class_names)
    write_json_atomically(metrics, run_dir / METRICS_FILENAME)  # last: its presence marks a finished run
    log("")
    log(f"best model: {best_path} (epoch {best_epoch}, validation accuracy {best_val:.2%})")
    log(f"test top-1: {metrics['top1']:.2%}   top-5: {metrics['top5']:.2%}   "
        f"({metrics['images']} test images, {train_seconds / 60:.1f} min)")
    log(f"report: {run_dir / 'metrics.json'}, {run_dir / 'training_curves.png'}, {run_dir / 'confusion_matrix.png'}")
    log(f"try it: python infer.py --model {run_dir} photo.jpg")
    return TrainResult(run_dir, best_path, metrics, epochs_run, train_seconds)

