"""One flat training configuration: defaults reproduce the original IdenProf recipe; presets and
command-line flags override them. The resolved config is saved with every run.

Each setting is declared once, as a TrainConfig field with its flag's help, group and parser
(`setting`): train.py's flags and docs/TRAINING.md's flag table are made from those fields."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field

from idenprof.errors import ConfigError
from idenprof.run_folder import KEEP_RULES


def setting(default, help: str, group: str, *, parse=None, choices=None, negated: str | None = None,
            factory=None):
    """A TrainConfig field and its train.py flag, declared once: `help` and `group` for --help and
    docs/TRAINING.md's table, `parse` (a type or a parser of the flag's text), `choices`, and for a
    boolean that is on by default the `negated` flag that turns it off (e.g. --no-flip)."""
    metadata = {"help": help, "group": group, "parse": parse, "choices": choices, "negated": negated}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def comma_floats(text: str) -> list[float]:
    """A flag's 'A,B' as [A, B]."""
    return [float(v) for v in text.split(",") if v.strip()]


def comma_ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


# Precision and XLA choices (idenprof.train.runtime turns them into a plan).
PRECISIONS = ("auto", "float32", "float16", "bfloat16", "mixed")
XLA_MODES = ("auto", "on", "off")

DATA, MODEL, OPTIMISATION, AUGMENTATION, MACHINERY = ("data", "model", "optimisation", "augmentation",
                                                      "machinery and output")


@dataclass
class TrainConfig:
    """Every training setting, its default (the original IdenProf recipe) and its flag's help."""

    # Data
    dataset: str = setting("idenprof", "the dataset: {datasets}", DATA)
    data_dir: str | None = setting(None, "the dataset's folder (IdenProf: train/ and test/ class folders; others: "
                                   "their official files); downloaded here when missing (default: data/<dataset>)",
                                   DATA)
    data_url: str | None = setting(None, "where to download from: a mirror's base URL, the archive's URL, or a local "
                                   "file or folder (default: the official source; for IdenProf $IDENPROF_URL first)",
                                   DATA)
    data_sha256: str | None = setting(None, "expected SHA-256 of a one-archive dataset (replaces the published "
                                      "checksum)", DATA)
    download_only: bool = setting(False, "download, verify and extract the dataset, print its layout, and stop",
                                  DATA)
    max_per_class: int | None = setting(None, "use at most N training images per class (quick trials)", DATA,
                                        parse=int)
    val_fraction: float = setting(0.1, "stratified hold-out fraction of train, for checkpoint selection and "
                                  "calibration", DATA, parse=float)
    validate_on: str = setting("holdout", "validate on the hold-out, or on test as the original code did", DATA,
                               choices=("holdout", "test"))
    exclude_test_duplicates: bool = setting(False, "leave out training images whose bytes also appear in test", DATA)
    loader: str = setting("tfdata", "input pipeline: tf.data (decode once, cached), or the original "
                          "ImageDataGenerator", DATA, choices=("tfdata", "generator"))
    cache_dir: str | None = setting(None, "keep decoded images here between runs (default: in memory)", DATA)
    # Model
    model: str = setting("resnet50", "the network: {models}", MODEL)
    weights: str | None = setting(None, "start from 'imagenet' (ResNet-50/101/152, keras.applications' weights) "
                                  "or a weights file (default: from scratch)", MODEL)
    weights_origin: str | None = setting(None, "mirror URL or local path for the ImageNet weights file", MODEL)
    weights_hash: str | None = setting(None, "MD5 or SHA-256 the ImageNet weights file must have (default: Keras' "
                                       "published hash)", MODEL)
    image_size: int = setting(224, "the model's input side in pixels: evaluation, export and inference (best a "
                              "multiple of the network's total stride: 32 with the imagenet stem, 16 with "
                              "small_pool, 8 with small)", MODEL, parse=int)
    train_image_size: int | None = setting(None, "train on images (or random crops) of this side, cheaper than "
                                           "--image-size (default: --image-size)", MODEL, parse=int)
    whole_image_fraction: float = setting(0.0, "train the last FRACTION of the run (time or epochs) on whole images "
                                          "at --image-size, flips only", AUGMENTATION, parse=float)
    width: float = setting(1.0, "filter-count multiplier for every stage", MODEL, parse=float)
    stem: str = setting("imagenet", "input stem: imagenet (7x7/2 conv + max-pool), small (3x3/1) or small_pool "
                        "(3x3/1 + 2x2 max-pool), for 32..128 px images", MODEL)
    zero_init_residual: bool = setting(False, "start each residual branch's last batch norm at zero", MODEL)
    stochastic_depth: float = setting(0.0, "ResNets: in training, drop the last residual branch of each image with "
                                      "this probability, earlier ones with linearly less (0: off)", MODEL, parse=float)
    # Optimisation (the original: Adam 1e-3, /10 after epochs 80, 120, 160, 180; 200 epochs)
    epochs: int = setting(200, "training epochs", OPTIMISATION, parse=int)
    batch_size: int = setting(32, "images per step, across all devices (a multiple of their number)", OPTIMISATION,
                              parse=int)
    optimizer: str = setting("adam", "the optimizer (sgd: with Nesterov momentum)", OPTIMISATION,
                             choices=("adam", "adamw", "sgd"))
    lr: float = setting(1e-3, "base (peak) learning rate", OPTIMISATION, parse=float)
    schedule: str = setting("step", "learning-rate schedule", OPTIMISATION, choices=("step", "cosine", "constant"))
    lr_boundaries: list[int] = setting(None, "step schedule: epochs after which the rate is multiplied by "
                                       "--lr-decay-factor", OPTIMISATION, parse=comma_ints,
                                       factory=lambda: [80, 120, 160, 180])
    lr_decay_factor: float = setting(0.1, "step schedule: factor at each boundary", OPTIMISATION, parse=float)
    warmup_epochs: float = setting(0.0, "cosine schedule: linear warm-up length in epochs", OPTIMISATION, parse=float)
    momentum: float = setting(0.9, "SGD momentum (Nesterov)", OPTIMISATION, parse=float)
    weight_decay: float = setting(0.0, "decoupled weight decay (adamw, sgd)", OPTIMISATION, parse=float)
    label_smoothing: float = setting(0.0, "label smoothing", OPTIMISATION, parse=float)
    teacher: str | None = setting(None, "knowledge distillation: a trained model (file or run folder, e.g. "
                                  "idenprof/pretrained) whose probabilities on each whole training photo are "
                                  "mixed into its label", OPTIMISATION)
    teacher_weight: float = setting(0.5, "with --teacher: the teacher's share of each training target, 0..1",
                                    OPTIMISATION, parse=float)
    class_weight: str | None = setting(None, "balanced: weight each class's loss by total / (classes x its count), "
                                       "for imbalanced folders", OPTIMISATION, choices=("balanced",))
    patience: int | None = setting(None, "stop when validation accuracy has not improved for N epochs (counts "
                                   "across a resume)", OPTIMISATION, parse=int)
    keep: str = setting("best", "the checkpoint evaluated and exported: best (highest hold-out accuracy) or last "
                        "(the final epoch, for schedules that anneal to zero)", OPTIMISATION, choices=KEEP_RULES)
    ema_momentum: float | None = setting(None, "keep an exponential moving average of the weights with this "
                                         "momentum per step (e.g. 0.999); validation, the checkpoint and the "
                                         "exports use the average", OPTIMISATION, parse=float)
    # Augmentation (the original: horizontal flips)
    flip: bool = setting(True, "random horizontal flips", AUGMENTATION, negated="--no-flip")
    crop_scale: list[float] | None = setting(None, "random-resized-crop area range MIN,MAX, e.g. 0.35,1",
                                             AUGMENTATION, parse=comma_floats)
    shift: float = setting(0.0, "random shift, fraction of the image size", AUGMENTATION, parse=float)
    rotation: float = setting(0.0, "random rotation, degrees", AUGMENTATION, parse=float)
    color_jitter: float = setting(0.0, "scale each image's brightness, contrast and saturation by random factors "
                                  "in [1-S, 1+S] (0: off)", AUGMENTATION, parse=float)
    mixup_alpha: float = setting(0.0, "mixup strength (0: off; with --cutmix-alpha too, each batch gets one of "
                                 "them at random)", AUGMENTATION, parse=float)
    cutmix_alpha: float = setting(0.0, "cutmix strength (0: off)", AUGMENTATION, parse=float)
    tta: bool = setting(False, "evaluate with the mean of each image and its mirror", AUGMENTATION)
    record_validation: bool = setting(False, "save the hold-out's class probabilities after every epoch in the "
                                      "run's validation/ (one extra prediction pass per epoch; for "
                                      "bench/checkpoint_rule.py)", MACHINERY)
    # Machinery
    precision: str = setting("auto", "auto (float16 on GPU, bfloat16 on CPUs with native bf16, else float32), "
                             "float32, float16, bfloat16, or mixed", MACHINERY, choices=PRECISIONS)
    xla: str = setting("auto", "XLA compilation: auto (on for one GPU), on, off", MACHINERY, choices=XLA_MODES)
    fused_batch_norm: bool = setting(True, "train with TensorFlow's fused batch-norm kernel (saved models use "
                                     "Keras' layer either way)", MACHINERY, negated="--no-fused-batch-norm")
    int8: bool = setting(False, "also export model.int8.tflite (LiteRT computing in int8: a quarter of the size, "
                         "faster on CPUs) and report its test top-1", MACHINERY)
    cpu_replicas: int | None = setting(None, "split the CPU into N devices under MirroredStrategy (tests the "
                                       "multi-GPU path)", MACHINERY, parse=int)
    time_budget_min: float | None = setting(None, "end training when this many minutes (from the start) are spent; "
                                            "with --schedule cosine the schedule ends with the budget",
                                            OPTIMISATION, parse=float)
    target_epochs: int | None = setting(None, "with --time-budget-min: a speed probe at the start times training "
                                        "steps at --train-image-size and smaller sides (down by the network's "
                                        "stride to --min-train-image-size) and trains on the largest side that "
                                        "fits about N epochs in the budget (the fastest when none does); the "
                                        "choice is printed and saved in config.json (default: off)",
                                        OPTIMISATION, parse=int)
    min_train_image_size: int = setting(64, "with --target-epochs: the smallest training side the speed probe may "
                                        "choose", OPTIMISATION, parse=int)
    mixing_min_epochs: int | None = setting(None, "with --target-epochs: train without mixup and cutmix when the "
                                            "speed probe's chosen side fits fewer than N epochs (mixing pays "
                                            "in long runs only); the choice is saved in config.json (default: "
                                            "keep them)", OPTIMISATION, parse=int)
    run_dir: str | None = setting(None, "output folder (default: runs/<preset or model>-<size>px-seed<seed>)",
                                  MACHINERY)
    seed: int = setting(0, "random seed for splits, initialisation, shuffling and augmentation", MACHINERY,
                        parse=int)
    preset: str | None = setting(None, "a named recipe: {presets}; other flags override it", MACHINERY)
    progress: bool = setting(True, "progress bars", MACHINERY, negated="--quiet")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    def default_run_name(self) -> str:
        prefix = self.preset or self.model
        if self.dataset != "idenprof":
            prefix = f"{self.dataset}-{prefix}"
        return f"{prefix}-{self.image_size}px-seed{self.seed}"


# Two CPU cores, 20 minutes: a half-width ResNet-18 trained on 80 px crops of 96 px images, the
# last quarter on whole 96 px images, evaluated at 96 px (see docs/ACCURACY.md), with a cosine
# schedule that ends when the time budget does; bfloat16 where the CPU has it (precision auto).
_CPU_PRESET = dict(
    model="resnet18", width=0.5, stem="small_pool", zero_init_residual=True,
    image_size=96, train_image_size=80, crop_scale=[0.6, 1.0], whole_image_fraction=0.25,
    batch_size=64, epochs=100, time_budget_min=19.5,
    optimizer="adamw", lr=2e-3, weight_decay=0.05, schedule="cosine", warmup_epochs=1.5,
    label_smoothing=0.1, tta=True, int8=True,
    # A CPU that fits fewer than 20 epochs of 80 px crops (float32 only, or a slow hour) trains on
    # 64 px crops of the same images: runs 31-32 and 35-37 in docs/ACCURACY.md.
    target_epochs=20,
    # The schedule anneals to zero with the budget: its last epoch scored better than the best one
    # on the unseen half of the hold-out in each of three seeds (docs/ACCURACY.md).
    keep="last",
)

# Presets change the recipe, not the data or output flags; explicit flags still override them.
PRESETS: dict[str, dict] = {
    # The original IdenProf recipe (the defaults), named for clarity.
    "original": {},
    "cpu": _CPU_PRESET,
    # Two CPU cores, two hours: the cpu recipe at 112 px crops of 128 px images, each cropped batch
    # mixed by mixup or cutmix, with stochastic depth: +1.6 and +2.05 test points in two seeds where
    # about 70 epochs fit, the hold-out too small to tell (docs/ACCURACY.md, runs 22-24).
    "cpu-long": {
        **_CPU_PRESET,
        "image_size": 128, "train_image_size": 112, "crop_scale": [0.5, 1.0],
        "epochs": 300, "time_budget_min": 118,
        "mixup_alpha": 0.2, "cutmix_alpha": 1.0, "stochastic_depth": 0.1,
        # A CPU that fits fewer than 40 epochs of 112 px crops (float32 only) trains on 96 or 80 px
        # crops, and without the mixing when fewer than 50 epochs fit (they underfit): runs 39-40.
        "target_epochs": 40, "min_train_image_size": 80, "mixing_min_epochs": 50,
    },
}


def saved_run_settings(path) -> tuple[str | None, dict]:
    """(preset, settings) of a run's saved config.json, to replay that run: `resolve_config(preset,
    {**settings, **flags})` gives the same config, with flags given on the command line winning.

    Raises:
        ConfigError: the file is missing, not JSON, or not a run's config.
    """
    from pathlib import Path

    try:
        saved = json.loads(Path(path).read_text())
    except OSError as e:
        raise ConfigError(f"--config {path}: cannot read it ({e.strerror}); give a run's config.json") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ConfigError(f"--config {path} is not JSON; give a run's config.json") from None
    settings = saved.get("config", saved) if isinstance(saved, dict) else None
    if not isinstance(settings, dict) or "model" not in settings:
        raise ConfigError(f"--config {path} is not a run's config.json (no model setting)")
    settings = dict(settings)
    return settings.pop("preset", None), settings


def resolve_config(preset: str | None, overrides: dict) -> TrainConfig:
    """Defaults, then the preset, then explicit overrides (flags). Validates the result."""
    if preset is not None and preset not in PRESETS:
        raise ConfigError(f"--preset {preset!r} is unknown; choose one of {', '.join(PRESETS)}")
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = set(overrides) - known
    if unknown:
        raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")
    values = {**PRESETS.get(preset or "", {}), **overrides, "preset": preset}
    config = TrainConfig(**values)
    if config.data_dir is None:
        from idenprof.data.catalog import default_data_dir

        config.data_dir = default_data_dir(config.dataset)
    validate_config(config)
    if config.train_image_size == config.image_size:
        # The one decision on sizes: a training size is kept only when it differs from the
        # model's input; everything downstream reads `train_image_size is None` as "same size".
        config.train_image_size = None
    return config


# What each annotation of TrainConfig accepts (a config file can hold any JSON).
_KINDS = {
    "int": ("a whole number", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    "float": ("a number", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)),
    "bool": ("true or false", lambda v: isinstance(v, bool)),
    "str": ("a string", lambda v: isinstance(v, str)),
}
SEED_RANGE = (0, 2**32 - 1)  # what numpy's and TensorFlow's seeding accept


def check_setting_types(values: dict) -> None:
    """Each value has its TrainConfig field's type (JSON's true is not 1, "0.001" is not a number).

    Raises:
        ConfigError: one line naming the first setting of the wrong type.
    """
    annotations = {f.name: f.type for f in dataclasses.fields(TrainConfig)}
    for name, value in values.items():
        annotation = annotations.get(name)
        if annotation is None:
            continue
        optional = annotation.endswith(" | None")
        base = annotation.removesuffix(" | None")
        if value is None and optional:
            continue
        if base.startswith("list["):
            word, accepts = _KINDS[base[5:-1]]
            ok = isinstance(value, list) and all(accepts(item) for item in value)
            wanted = f"a list of {word.removeprefix('a ')}s"
        else:
            wanted, accepts = _KINDS[base]
            ok = accepts(value)
        if not ok:
            raise ConfigError(f"setting {name!r} (--{name.replace('_', '-')}) must be {wanted}"
                              f"{' or null' if optional else ''}, got {json.dumps(value)}")


def validate_config(c: TrainConfig) -> None:
    """Every check of a setting's value, in one place, with the flag's name in the message.

    Raises:
        ConfigError: the first setting that cannot work.
    """
    check_setting_types(dataclasses.asdict(c))
    if not SEED_RANGE[0] <= c.seed <= SEED_RANGE[1]:
        raise ConfigError(f"--seed must be a whole number from {SEED_RANGE[0]} to {SEED_RANGE[1]}, got {c.seed}")
    for f in dataclasses.fields(c):
        values = getattr(c, f.name)
        for value in values if isinstance(values, list) else [values]:
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"--{f.name.replace('_', '-')} must be a finite number, got {value}")

    def positive(name, value):
        if value is None or value <= 0:
            flag = "--" + name.replace("_", "-")
            raise ConfigError(f"{flag} must be positive, got {value}")

    positive("batch_size", c.batch_size)
    positive("epochs", c.epochs)
    positive("lr", c.lr)
    positive("image_size", c.image_size)
    if c.train_image_size is not None:
        positive("train_image_size", c.train_image_size)
    positive("width", c.width)
    if c.max_per_class is not None:
        positive("max_per_class", c.max_per_class)
    if c.patience is not None:
        positive("patience", c.patience)
    if c.time_budget_min is not None:
        positive("time_budget_min", c.time_budget_min)
    if c.target_epochs is not None:
        positive("target_epochs", c.target_epochs)
        if c.time_budget_min is None:
            raise ConfigError("--target-epochs fits epochs to a time budget; give --time-budget-min too")
    if c.mixing_min_epochs is not None:
        # Without --target-epochs it has nothing to act on, as --min-train-image-size: a replayed
        # run's config.json has the probe's choice made and target_epochs cleared.
        positive("mixing_min_epochs", c.mixing_min_epochs)
    positive("min_train_image_size", c.min_train_image_size)
    for name, f in FIELDS.items():
        choices = f.metadata["choices"]
        value = getattr(c, name)
        if choices and value not in choices and not (value is None and f.default is None):
            raise ConfigError(f"--{name.replace('_', '-')} {value!r} is unknown; choose one of {', '.join(choices)}")
    if not 0.0 <= c.val_fraction < 1.0:
        raise ConfigError(f"--val-fraction must be in [0, 1), got {c.val_fraction}")
    if c.validate_on == "holdout" and c.val_fraction == 0.0:
        raise ConfigError("--val-fraction 0 leaves no hold-out; use --validate-on test or a fraction > 0")
    if not 0.0 <= c.whole_image_fraction < 1.0:
        raise ConfigError(f"--whole-image-fraction must be in [0, 1), got {c.whole_image_fraction}")
    if not 0.0 <= c.label_smoothing < 1.0:
        raise ConfigError(f"--label-smoothing must be in [0, 1), got {c.label_smoothing}")
    if sorted(c.lr_boundaries) != list(c.lr_boundaries) or any(b <= 0 for b in c.lr_boundaries):
        raise ConfigError("--lr-boundaries must be increasing positive epoch numbers, e.g. 80,120,160,180")
    if c.crop_scale is not None and not (len(c.crop_scale) == 2 and 0 < c.crop_scale[0] <= c.crop_scale[1] <= 1):
        raise ConfigError(f"--crop-scale must be two area fractions MIN,MAX with 0 < MIN <= MAX <= 1, "
                          f"e.g. 0.35,1; got {','.join(map(str, c.crop_scale))}")
    for name in ("warmup_epochs", "weight_decay", "momentum", "rotation", "mixup_alpha", "cutmix_alpha"):
        if getattr(c, name) < 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be 0 or more, got {getattr(c, name)}")
    if c.ema_momentum is not None and not 0.0 < c.ema_momentum < 1.0:
        raise ConfigError(f"--ema-momentum is the weight of the old average per step, in (0, 1), e.g. 0.999; "
                          f"got {c.ema_momentum}")
    if not 0.0 <= c.color_jitter < 1.0:
        raise ConfigError(f"--color-jitter is the largest change of brightness, contrast and saturation, in [0, 1), "
                          f"e.g. 0.3; got {c.color_jitter}")
    if not 0.0 <= c.stochastic_depth < 1.0:
        raise ConfigError(f"--stochastic-depth is a drop probability in [0, 1), e.g. 0.1; got {c.stochastic_depth}")
    if not 0.0 <= c.shift < 1.0:
        raise ConfigError(f"--shift is a fraction of the image side in [0, 1), got {c.shift}")
    if not 0.0 < c.lr_decay_factor <= 1.0:
        raise ConfigError(f"--lr-decay-factor must be in (0, 1], got {c.lr_decay_factor}")
    if not 0.0 < c.teacher_weight <= 1.0:
        raise ConfigError(f"--teacher-weight is the teacher's share of each target, in (0, 1]; got {c.teacher_weight}")
    if c.loader == "generator" and (c.mixup_alpha or c.cutmix_alpha or c.crop_scale or c.train_image_size
                                    or c.color_jitter or c.teacher
                                    or c.whole_image_fraction or c.target_epochs):
        raise ConfigError("--loader generator supports flips only; use --loader tfdata for other augmentation, "
                          "--train-image-size / --whole-image-fraction / --target-epochs and --teacher")
    validate_dataset_choice(c)
    validate_model_choice(c)


def validate_dataset_choice(c: TrainConfig) -> None:
    """The dataset is registered and the data flags fit it (idenprof.data.catalog has the facts)."""
    from idenprof.data.catalog import dataset_spec

    spec = dataset_spec(c.dataset)
    if c.data_sha256 and len(spec.files) > 1:
        raise ConfigError(f"--data-sha256 checks a one-archive dataset; {c.dataset}'s {len(spec.files)} files are "
                          "checked against their published checksums")
    if c.loader == "generator" and not spec.image_files:
        raise ConfigError(f"--loader generator reads image files; {c.dataset} is stored as arrays: use --loader tfdata")


def validate_model_choice(c: TrainConfig) -> None:
    """The model, stem, image sizes and starting weights fit together (models/ has the facts)."""
    from idenprof.weights import IMAGENET_NOTOP_MD5
    from models import MODEL_BUILDERS, RESNET_SPECS, STEMS, minimum_input_size

    if c.model not in MODEL_BUILDERS:
        raise ConfigError(f"--model {c.model!r} is unknown; choose one of {', '.join(MODEL_BUILDERS)}")
    if c.stochastic_depth and c.model not in RESNET_SPECS:
        raise ConfigError(f"--stochastic-depth drops residual branches; {c.model} has none: choose a ResNet")
    if c.stem not in STEMS:
        raise ConfigError(f"--stem {c.stem!r} is unknown; choose one of {', '.join(STEMS)}")
    smallest = minimum_input_size(c.stem)
    for flag, size in (("--image-size", c.image_size), ("--train-image-size", c.train_image_size),
                       ("--min-train-image-size", c.min_train_image_size if c.target_epochs else None)):
        if size is not None and size < smallest:
            raise ConfigError(
                f"{flag} {size} is too small for {c.model} with the {c.stem} stem; use at least {smallest}"
            )
    if c.weights == "imagenet":
        if c.model not in IMAGENET_NOTOP_MD5:
            raise ConfigError(
                f"--weights imagenet is available for {', '.join(IMAGENET_NOTOP_MD5)}, not {c.model}"
            )
        if c.width != 1.0 or c.stem != "imagenet":
            raise ConfigError("--weights imagenet needs the standard network: drop --width and --stem")


def size_notes(config: TrainConfig) -> list[str]:
    """Warnings for image sizes that work but cost accuracy: a side that is not a multiple of the
    network's total downsampling makes some stride-2 layers see odd feature maps, padded on one
    side only, so features shift between stages (measured in docs/ACCURACY.md)."""
    from models import minimum_input_size

    stride = minimum_input_size(config.stem)  # the total downsampling of the network
    notes = []
    for flag, size in (("--image-size", config.image_size), ("--train-image-size", config.train_image_size)):
        if size is not None and size % stride:
            lower, upper = size // stride * stride, (size // stride + 1) * stride
            notes.append(f"{flag} {size} is not a multiple of {stride} (the network's total stride with the "
                         f"{config.stem} stem), which costs accuracy; {lower} or {upper} would not")
    return notes


def choices_of(name: str) -> tuple:
    """The allowed values of a TrainConfig setting with a fixed list (empty for the others)."""
    return tuple(FIELDS[name].metadata["choices"] or ())


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
