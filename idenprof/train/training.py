"""Training: from a config to a run folder with the best model, its report and its exports.

`train` tells the whole story in named steps; what the run folder holds is listed in
idenprof.run_folder.
"""

from __future__ import annotations

import dataclasses
import json
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from idenprof.class_index import write_class_index
from idenprof.config import TrainConfig, size_notes
from idenprof.data.dataset import select_samples
from idenprof.errors import ConfigError, DatasetError, ModelFileError
from idenprof.files import BackgroundWriter, write_json_atomically
from idenprof.run_folder import RunFolder
from idenprof.train.multiworker import is_chief, prepare_for_multi_worker, worker_output_dir
from idenprof.train.recipe import make_learning_rate, make_optimizer
from idenprof.train.resume import discard_uncommitted, lock_run_folder
from idenprof.train.runtime import RuntimePlan, cluster_workers, strategy_for
from idenprof.train.speed_probe import adopt_recorded_choice, probe_training_side

# Settings that change how, not what, a run trains: they may differ when a run is resumed.
RESUMABLE_WITH_OTHER = {"progress", "download_only", "data_url", "run_dir", "fused_batch_norm"}


@dataclass
class TrainResult:
    run_dir: Path
    best_model: Path | None
    test_metrics: dict | None
    epochs_run: int
    train_seconds: float


def train(config: TrainConfig, log=print) -> TrainResult:
    """Run the whole job described by `config` (already validated by `resolve_config`)."""
    start = time.monotonic()
    layout = prepare_dataset(config, log)
    if config.download_only:
        return TrainResult(layout.root, None, None, 0, 0.0)

    if config.teacher:
        from idenprof.predict.model_finding import resolve_model_path

        resolve_model_path(config.teacher)  # a missing teacher fails before the run folder exists
    plan, tf_config = plan_training(config, log)
    run = open_run_folder(config, tf_config)
    config = adopt_recorded_choice(config, recorded_speed_probe(run))  # a resumed run keeps its probe's side
    with lock_run_folder(run):
        return train_in(run, config, plan, tf_config, layout, start, log)


def train_in(run: RunFolder, config: TrainConfig, plan: RuntimePlan, tf_config, layout, start: float, log):
    """`train`, holding the run folder: resume (or start) training, then evaluate and export."""
    epochs_done = discard_uncommitted(run)
    write_class_index(layout.class_names, run.class_index_path)
    save_run_config(run, config, plan)
    for note in size_notes(config):
        log(f"note: {note}")

    seed_everything(config.seed)
    train_samples, val_samples, test_samples = select_samples(layout, config)
    if "val" in layout.samples and config.validate_on == "holdout":
        log(f"validation: the val/ folder ({len(val_samples)} images) instead of a hold-out of train/")
    if run.is_training_done():
        log(f"training had finished in {run.path}: evaluating and exporting its kept checkpoint")
        done = json.loads(run.training_done_path.read_text())
        test_data = decode_split(config, layout, "test", test_samples, log)
        return finish_run(config, run, layout, test_data, done["train_seconds"], epochs_done, log)
    train_data, val_data, test_data = decode_splits(config, layout, train_samples, val_samples, test_samples, log)
    config = batch_fitted_to_data(config, len(train_data.labels), plan.replicas, log)
    steps = steps_per_epoch_for(len(train_data.labels), config.batch_size)
    num_classes = len(layout.class_names)
    targets = None
    if config.teacher:
        from idenprof.train.distill import teacher_targets

        targets = teacher_targets(config, layout, train_data, log)
    # After the teacher's pass: the probe predicts epochs from the time it leaves.
    config = fit_training_side(config, plan, run, num_classes, steps, len(train_data.labels), start, log, tf_config)

    strategy = strategy_for(plan)
    with strategy.scope():
        model = compile_model(config, plan, num_classes, steps)
    prepare_for_multi_worker(model, strategy)
    whole_images = whole_image_flag(config)
    train_ds, val_ds = make_inputs(config, train_data, val_data, layout.class_names, train_samples, whole_images,
                                   targets)
    weights = class_weights(train_data.labels, num_classes, config.class_weight, layout.class_names, log)
    # The epochs' files are flushed and renamed on a background thread: a slow disk must not stop
    # training (docs/BENCHMARKS.md, "CPU share"). Leaving the block waits for them.
    with BackgroundWriter() as writer:
        callbacks = make_callbacks(config, run, num_classes, steps, start, whole_images, log, writer, val_data)
        # shuffle=False: the tf.data pipeline shuffles (seeded) itself.
        # steps_per_epoch: the tf.data input repeats (make_inputs), the generator ends each epoch.
        history = model.fit(train_ds, validation_data=val_ds, epochs=config.epochs, callbacks=callbacks,
                            steps_per_epoch=steps if config.loader == "tfdata" else None,
                            class_weight=weights, verbose=1 if config.progress else 2, shuffle=False)
    train_seconds = time.monotonic() - start
    epochs_run = len(history.history.get("loss", []))
    if not is_chief(tf_config):
        log(f"worker finished {epochs_run} epoch(s); the chief writes the report and exports")
        best = run.kept_checkpoint()
        return TrainResult(run.path, best.path if best else None, None, epochs_run, train_seconds)
    return finish_run(config, run, layout, test_data, train_seconds, epochs_run, log,
                      stop_reason=why_training_stopped(callbacks))


def fit_training_side(config: TrainConfig, plan: RuntimePlan, run: RunFolder, num_classes: int, steps: int,
                      train_images: int, start: float, log, tf_config: dict | None = None) -> TrainConfig:
    """With `target_epochs`, the config training on the side the speed probe chooses
    (idenprof.train.speed_probe), saved to config.json with the probe's record; else `config`.
    Not in a multi-worker cluster, whose workers must all train on one side."""
    if config.target_epochs and cluster_workers(tf_config) > 1:
        log("note: no speed probe in a multi-worker cluster (each machine would choose for itself): training on "
            f"{config.train_image_size or config.image_size} px; give --train-image-size to choose")
        return config

    def build_twin(probe_config):
        with strategy_for(plan).scope():
            return compile_model(probe_config, plan, num_classes, steps)

    def seconds_left():
        return config.time_budget_min * 60 - (time.monotonic() - start)

    decided, probe = probe_training_side(config, build_twin, train_images, seconds_left, log)
    if probe is None:
        return config
    seed_everything(decided.seed)  # the twin drew from the seeded generators: the run starts as its replay would
    save_run_config(run, decided, plan, speed_probe=probe.to_dict())
    return decided


def recorded_speed_probe(run: RunFolder) -> dict | None:
    """The `speed_probe` record of the run's config.json (None for a new run or one without)."""
    if not run.config_path.exists():
        return None
    return json.loads(run.config_path.read_text()).get("speed_probe")


def why_training_stopped(callbacks) -> str:
    """What ended `fit`, for the report: early stopping, the time budget, or the last epoch."""
    from idenprof.train.callbacks import Patience, TimeBudget

    for callback in callbacks:
        if isinstance(callback, Patience) and callback.stopped_epoch is not None:
            return f"early stop: validation accuracy did not improve for {callback.patience} epochs"
        if isinstance(callback, TimeBudget) and callback.progress() >= 1.0:
            return "time budget spent"
    return "all epochs run"


def prepare_dataset(config: TrainConfig, log):
    """Download (and verify, and extract) the dataset when missing, load it, print its layout."""
    from idenprof.data.catalog import load_dataset

    layout = load_dataset(config.dataset, Path(config.data_dir), config.data_url,
                          sha256=config.data_sha256, progress=config.progress)
    log(layout.report())
    for warning in layout.warnings:
        log(f"warning: {warning}")
    return layout


def plan_training(config: TrainConfig, log) -> tuple[RuntimePlan, dict | None]:
    """Decide devices, precision, XLA and strategy (see idenprof.train.runtime) and print the decision;
    also returns the parsed TF_CONFIG."""
    from idenprof.train.runtime import (
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
    if plan.device == "cpu":
        hint = "" if (config.preset or "").startswith("cpu") else "; try --preset cpu for a recipe sized for CPUs"
        log(f"no GPU found: training on the CPU (the first epoch prints an estimate of its length{hint})")
    return plan, tf_config


def open_run_folder(config: TrainConfig, tf_config: dict | None = None) -> RunFolder:
    """Create (or reopen for resume) the run folder; refuse a finished run or a different config.
    In a multi-worker cluster only the chief writes the run folder; each other worker gets its own
    `workertemp_<index>` inside it (see idenprof.train.multiworker)."""
    run = RunFolder(worker_output_dir(config.run_dir or Path("runs") / config.default_run_name(), tf_config))
    try:
        run.path.mkdir(parents=True, exist_ok=True)
        probe = run.path / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"cannot write to run folder {run.path} ({e.strerror}); pass a writable --run-dir") from None
    if run.is_finished():
        raise ConfigError(
            f"{run.path} already holds a finished run; pass a new --run-dir (or delete that folder) to train again"
        )
    if run.config_path.exists():
        saved = json.loads(run.config_path.read_text())
        previous = saved.get("config", {})
        ours = dataclasses.asdict(adopt_recorded_choice(config, saved.get("speed_probe")))
        # A setting newer than the run's config.json had its default value in that run.
        defaults = dataclasses.asdict(TrainConfig())
        theirs = {k: previous.get(k, defaults[k]) for k in ours}
        changed = sorted(k for k in ours if k not in RESUMABLE_WITH_OTHER and theirs[k] != ours[k])
        if changed:
            # The values, not only the names: a preset can change between versions of idenprof
            # (cpu's keep went from best to last), and the run's value as a flag resumes it.
            details = "; ".join(f"{k}: {theirs[k]!r} in the run, {ours[k]!r} now" for k in changed)
            raise ConfigError(
                f"{run.path} holds an unfinished run with different settings ({details}); "
                "give those settings the run's values (or repeat its command) to resume it, or pass a new --run-dir"
            )
    return run


def save_run_config(run: RunFolder, config: TrainConfig, plan: RuntimePlan, speed_probe: dict | None = None) -> None:
    """config.json: the resolved config, the runtime plan, the speed probe's record (see
    idenprof.train.speed_probe; kept across a resume), and the command and git commit that started
    (or last resumed) the run, for the model card (idenprof.ship.packaging)."""
    from idenprof.provenance import command_line, git_commit

    git = git_commit() or {}
    record = {"config": dataclasses.asdict(config), "runtime": plan.to_dict(),
              "speed_probe": speed_probe or recorded_speed_probe(run),
              "command": command_line(), "git_commit": git.get("commit"), "git_dirty": git.get("dirty")}
    if record["speed_probe"] is None:
        del record["speed_probe"]
    write_json_atomically(record, run.config_path)


def seed_everything(seed: int) -> None:
    import keras

    random.seed(seed)
    np.random.seed(seed)
    keras.utils.set_random_seed(seed)


def decode_splits(config: TrainConfig, layout, train_samples, val_samples, test_samples, log):
    """The three splits decoded once at `config.image_size` by the layout (see `decode_split`)."""
    decoded = []
    for name, samples in (("train", train_samples), ("validation", val_samples), ("test", test_samples)):
        if name == "test" and config.validate_on == "test":
            decoded.append(decoded[1])
            continue
        decoded.append(decode_split(config, layout, name, samples, log))
    return decoded


def decode_split(config: TrainConfig, layout, name: str, samples, log):
    """One split decoded at `config.image_size` by the layout (image files once, see
    idenprof.data.decoded; array datasets resized). Unreadable files are named on the terminal; a
    class left without a readable image is an error in train, a warning elsewhere."""
    class_names = layout.class_names
    cache_dir = Path(config.cache_dir) if config.cache_dir else None
    data = layout.decode(samples, config.image_size, cache_dir=cache_dir, progress=config.progress)
    for path, reason in data.skipped:
        log(f"skipped unreadable image {path}: {reason}")
    if len(data.labels) == 0:
        raise DatasetError(f"the {name} split has no readable images; check {config.data_dir}")
    present = set(np.unique(data.labels).tolist())
    empty = sorted({label for _, label in samples} - present)
    if empty and class_names:
        classes = ", ".join(class_names[label] for label in empty)
        if name == "train":
            raise DatasetError(
                f"class(es) {classes} have no readable training image in {config.data_dir}; "
                "replace the unreadable files (named above) or remove the class from every split"
            )
        log(f"warning: class(es) {classes} have no readable image in the {name} split")
    return data


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


def class_weights(labels, num_classes: int, mode: str | None, class_names: list[str], log=print):
    """{class index: loss weight} for `mode` "balanced" (total / (classes x count), printed), else
    None. Warns when the smallest class has under a tenth of the largest's images, whatever `mode`."""
    counts = np.bincount(np.asarray(labels), minlength=num_classes)
    if counts.min() * 10 < counts.max():
        log(f"warning: imbalanced training set: {class_names[int(counts.argmin())]} has {counts.min()} images, "
            f"{class_names[int(counts.argmax())]} {counts.max()}; consider --class-weight balanced")
    if mode != "balanced":
        return None
    weights = {i: float(len(labels) / (num_classes * count)) if count else 0.0 for i, count in enumerate(counts)}
    log("class weights: " + ", ".join(f"{class_names[i]} {w:.2f}" for i, w in weights.items()))
    return weights


def steps_per_epoch_for(train_images: int, batch_size: int) -> int:
    steps = train_images // batch_size
    if steps < 1:
        raise ConfigError(
            f"--batch-size {batch_size} is larger than the {train_images} training images; "
            "use a smaller batch or more images"
        )
    return steps


def averaged_weights(model) -> list:
    """`model.get_weights()` with each trained variable replaced by its exponential moving average
    when the optimizer keeps one (`use_ema`); the other weights (batch-norm statistics) as they are."""
    optimizer = getattr(model.optimizer, "inner_optimizer", model.optimizer)  # under loss scaling
    if not getattr(optimizer, "use_ema", False) or not optimizer.built:
        return model.get_weights()
    averages = {id(variable): average for variable, average in
                zip(optimizer._trainable_variables, optimizer._model_variables_moving_average, strict=True)}
    return [np.asarray(averages.get(id(w), w)) for w in model.weights]


def build_network(config: TrainConfig, num_classes: int, open_size: bool = False):
    """The config's network, randomly initialised, with preprocessing inside and a float32
    softmax head, in the current Keras dtype policy (float32 unless inside `computing_in`). Its
    input is `config.image_size` square, or with `open_size` of any height and width (the training
    model when it trains on `train_image_size` and validates on `image_size`)."""
    from models import RESNET_SPECS, build_model

    side = None if open_size else config.image_size
    if config.weights == "imagenet":
        from idenprof.weights import imagenet_classifier

        return imagenet_classifier(config.model, num_classes, side)
    options = dict(width=config.width, stem=config.stem)
    if config.model in RESNET_SPECS:  # only ResNets have residual branches to start at zero or drop
        options.update(zero_init_residual=config.zero_init_residual, stochastic_depth=config.stochastic_depth)
    try:
        return build_model(config.model, input_shape=(side, side, 3), classes=num_classes, **options)
    except ValueError as e:  # models/ says which option cannot work; the config checks catch most
        raise ConfigError(str(e)) from None


def load_starting_weights(model, config: TrainConfig) -> None:
    """Load `config.weights` into `model` once, before training: ImageNet (fetched and cached),
    a weights file, or nothing (from scratch)."""
    if config.weights is None:
        return
    if config.weights == "imagenet":
        from idenprof.weights import load_imagenet_weights

        load_imagenet_weights(model, config)
        return
    from models.common import load_weights

    try:
        load_weights(model, config.weights)
    except (ValueError, OSError) as e:
        raise ModelFileError(f"--weights {config.weights}: {' '.join(str(e).split())[:300]}") from None


def compile_model(config: TrainConfig, plan: RuntimePlan, num_classes: int, steps_per_epoch: int):
    """The training model: the network with its starting weights, computing in the plan's
    precision, with TensorFlow's fused batch norm when asked, compiled with the config's
    optimizer, schedule and loss (a float16 model gets loss scaling from Keras' compile)."""
    import keras

    from idenprof.precision import computing_in

    with computing_in(plan.dtype_policy):
        model = build_network(config, num_classes, open_size=config.train_image_size is not None)
        load_starting_weights(model, config)
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


def checkpoint_model_for(config: TrainConfig, num_classes: int):
    """`model -> model`: what a checkpoint saves of the training model. The same weights (their
    moving average with `ema_momentum`) in the network `build_network` makes (input `image_size`
    square, what inference reads; Keras' own batch-norm layers, what loads anywhere), computing in
    float32 whatever the training precision: a checkpoint is a model to hand to other programs,
    like the exports. The copy is built at the first call and refilled at each later one."""
    portable = None

    def portable_copy(model):
        nonlocal portable
        if portable is None:
            # Built outside the training model's precision scope: float32 as it is built.
            same = (model.input_shape[1] == config.image_size and not config.fused_batch_norm
                    and not config.ema_momentum and model.compute_dtype == "float32")
            portable = model if same else build_network(config, num_classes)
        if portable is not model:
            portable.set_weights(averaged_weights(model))
        return portable

    return portable_copy


def whole_image_flag(config: TrainConfig):
    """The boolean tf.Variable the input pipeline reads and callbacks.WholeImagePhase sets for the
    last part of the run; None without a whole-image phase."""
    if not config.whole_image_fraction:
        return None
    import tensorflow as tf

    return tf.Variable(False, trainable=False)


def make_inputs(config, train_data, val_data, class_names, train_samples, whole_images=None, targets=None):
    """(training, validation) datasets; `whole_images` is the flag of data.batches.make_dataset,
    `targets` the training photos' soft targets (idenprof.train.distill). The tf.data training
    input repeats without end: `fit` needs `steps_per_epoch`."""
    from idenprof.data.augment import AugmentConfig
    from idenprof.data.batches import make_dataset
    from idenprof.data.generator import make_generator

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
        shift=config.shift, rotation=config.rotation, color_jitter=config.color_jitter,
        mixup_alpha=config.mixup_alpha, cutmix_alpha=config.cutmix_alpha,
        output_size=config.train_image_size,
    )
    train_ds = make_dataset(train_data, n, batch_size=config.batch_size, training=True,
                            augment=augment, seed=config.seed, whole_images=whole_images, repeat=True,
                            targets=targets)
    return train_ds, val_ds


def make_callbacks(config, run: RunFolder, num_classes, steps, start, whole_images, log, writer=None,
                   val_data=None) -> list:
    """Divergence check, the kept checkpoint (and with `record_validation`, the hold-out's
    probabilities of `val_data`), logs, time budget, the whole-image phase and, last, the resume
    state. `writer` (a files.BackgroundWriter) finishes their files in order."""
    import keras

    from idenprof.train.callbacks import (
        CheckpointKeeper,
        EpochTimeEstimate,
        LearningRateLogger,
        Patience,
        ResumeState,
        StopOnNaN,
        TimeBudget,
        ValidationRecord,
        WholeImagePhase,
    )

    # With weight averaging, validation (hence the checkpoint choice) sees the average; Keras swaps
    # it in for each evaluation and back for training.
    callbacks = [keras.callbacks.SwapEMAWeights()] if config.ema_momentum else []
    to_saved = checkpoint_model_for(config, num_classes)  # one portable copy for the checkpoint and the record
    callbacks += [
        LearningRateLogger(),
        StopOnNaN(run, hint=f"lower --lr (now {config.lr:g})", writer=writer),
        CheckpointKeeper(run.path, to_saved=to_saved, writer=writer, keep=config.keep),
        *([ValidationRecord(run, val_data.images, val_data.labels, to_saved, config.batch_size, writer)]
          if config.record_validation and val_data is not None else []),
        keras.callbacks.CSVLogger(str(run.metrics_csv), append=True),
        keras.callbacks.TensorBoard(str(run.logs_dir), write_graph=False),
        EpochTimeEstimate(steps, log=log),
    ]
    budget = None
    if config.time_budget_min:
        fitted = config.schedule == "cosine"  # the cosine schedule then ends with the budget
        budget = TimeBudget(
            config.time_budget_min * 60, start, run.time_budget_path,
            peak_lr=config.lr if fitted else None,
            warmup_steps=int(round(config.warmup_epochs * steps)), writer=writer,
        )
        callbacks.append(budget)
    if whole_images is not None:
        callbacks.append(WholeImagePhase(whole_images, config.whole_image_fraction, config.epochs,
                                         progress=budget.progress if budget else None))
    if config.patience:
        callbacks.append(Patience(config.patience, run.metrics_csv, log=log))
    callbacks.append(ResumeState(run, start, writer))  # last: its save commits the epoch (see idenprof.train.resume)
    return callbacks


def finish_run(config, run: RunFolder, layout, test_data, train_seconds, epochs_run, log, stop_reason=None):
    """Evaluate the kept checkpoint once on the test split, write the report and the exports."""
    import keras

    from idenprof.predict.evaluation import DEDUPLICATED_TEST, write_evaluation
    from idenprof.predict.inference import predict_views
    from idenprof.predict.loaders import load_predictor, predict_in_batches
    from idenprof.predict.report import plot_training_curves
    from idenprof.ship.export import DEFAULT_FORMATS, export_model, representative_photos

    best = run.kept_checkpoint()
    if best is None:
        raise DatasetError(f"training ended without a checkpoint in {run.path} (no validation accuracy was recorded)")
    model = keras.models.load_model(best.path, compile=False)
    num_classes = model.output_shape[-1]
    views = predict_views(lambda x: predict_in_batches(model.predict_on_batch, x, config.batch_size, num_classes),
                          test_data.images, mirror=config.tta)
    class_names = layout.class_names
    plot_training_curves(run.metrics_csv, run.curves_png)
    int8 = {}
    if config.int8:
        train_samples = select_samples(layout, config)[0]
        int8 = dict(formats=(*DEFAULT_FORMATS, "tflite_int8"),
                    representative=representative_photos(layout, train_samples, config.image_size, config.seed))
    exported = export_model(model, run.export_dir, class_names, **int8)
    unique_tests = {path for path, _ in layout.test_without_train_duplicates()}
    training = dict(
        # best_*: the kept checkpoint's (names from before --keep, which existing reports use).
        best_model=best.path.name, best_epoch=best.epoch, best_val_accuracy=best.val_accuracy, keep=config.keep,
        epochs_run=epochs_run, train_seconds=round(train_seconds, 1), stop_reason=stop_reason,
        evaluated_on="test" if config.validate_on == "holdout" else "test (also used for validation)",
    )
    if "tflite_int8" in exported:
        int8_model = load_predictor(exported["tflite_int8"])
        int8_views = predict_views(int8_model.predict, test_data.images, mirror=config.tta)
        training["int8_top1"] = round(float((int8_views.mean().argmax(axis=1) == test_data.labels).mean()), 4)
    # The same report, files and code as evaluate.py; metrics.json is written last: its presence
    # marks a finished run.
    metrics = write_evaluation(views, test_data, class_names, run.path, model_name=best.path.name,
                               root=layout.root, subsets={DEDUPLICATED_TEST: unique_tests}, gallery=False,
                               split_name="test split", report_name=run.report_path.name, extra=training)
    log("")
    rule = "the best on the hold-out" if config.keep == "best" else "the last epoch"
    log(f"kept model ({rule}): {best.path} (epoch {best.epoch}, validation accuracy {best.val_accuracy:.2%})")
    log(f"test top-1: {metrics['top1']:.2%}   top-5: {metrics['top5']:.2%}   "
        f"({metrics['images']} test images, {train_seconds / 60:.1f} min)")
    if "int8_top1" in training:
        log(f"int8 LiteRT ({exported['tflite_int8'].name}) test top-1: {training['int8_top1']:.2%}")
    log(f"report: {run.report_path}, {run.curves_png}, {run.confusion_png}")
    log(f"try it: python infer.py --model {run.path} photo.jpg")
    return TrainResult(run.path, best.path, metrics, epochs_run, train_seconds)
