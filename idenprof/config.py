"""One flat training configuration: defaults reproduce the original IdenProf recipe; presets and
command-line flags override them. The resolved config is saved with every run."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field

from idenprof.errors import ConfigError
from idenprof.run_folder import KEEP_RULES
from idenprof.runtime import PRECISIONS, XLA_MODES

CLASS_WEIGHTS = ("balanced",)
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("step", "cosine", "constant")
LOADERS = ("tfdata", "generator")
VALIDATE_ON = ("holdout", "test")


@dataclass
class TrainConfig:
    # Data
    dataset: str = "idenprof"  # a name in idenprof.data.catalog.DATASETS
    data_dir: str | None = None  # None: data/<dataset>
    data_url: str | None = None  # None: the dataset's official source (IdenProf: $IDENPROF_URL first)
    data_sha256: str | None = None
    download_only: bool = False
    max_per_class: int | None = None  # train on a subset (quick trials and tests)
    val_fraction: float = 0.1  # stratified hold-out carved from train, for checkpoint selection
    validate_on: str = "holdout"  # "test" reproduces the original code (validates on test)
    exclude_test_duplicates: bool = False  # drop train images whose bytes also appear in test
    loader: str = "tfdata"
    cache_dir: str | None = None  # decoded-image cache on disk; None: memory when it fits
    # Model
    model: str = "resnet50"
    weights: str | None = None  # None (from scratch), "imagenet", or a weights file
    weights_origin: str | None = None  # mirror URL or local path for the ImageNet weights file
    weights_hash: str | None = None  # MD5 or SHA-256 of that file (default: keras.applications')
    image_size: int = 224  # the model's input: evaluation, export and inference
    train_image_size: int | None = None  # training crops' side; None: image_size
    whole_image_fraction: float = 0.0  # last fraction of training on whole image_size images
    width: float = 1.0
    stem: str = "imagenet"
    zero_init_residual: bool = False
    stochastic_depth: float = 0.0  # ResNets: drop probability of the last residual branch in training
    # Optimisation (the original: Adam 1e-3, /10 after epochs 80, 120, 160, 180; 200 epochs)
    epochs: int = 200
    batch_size: int = 32
    optimizer: str = "adam"
    lr: float = 1e-3
    schedule: str = "step"
    lr_boundaries: list[int] = field(default_factory=lambda: [80, 120, 160, 180])
    lr_decay_factor: float = 0.1
    warmup_epochs: float = 0.0
    momentum: float = 0.9  # SGD
    weight_decay: float = 0.0  # AdamW and SGD (decoupled)
    label_smoothing: float = 0.0
    class_weight: str | None = None  # "balanced": weight each class's loss by total / (classes x its count)
    patience: int | None = None  # stop when validation accuracy has not improved for this many epochs
    keep: str = "best"  # the checkpoint evaluated and exported: "best" on the hold-out, or "last" epoch
    ema_momentum: float | None = None  # average the weights per step; validation and checkpoints use the average
    # Augmentation (the original: horizontal flips)
    flip: bool = True
    crop_scale: list[float] | None = None  # random-resized-crop area range, e.g. [0.35, 1.0]
    shift: float = 0.0
    rotation: float = 0.0
    color_jitter: float = 0.0  # brightness, contrast and saturation factors in [1 - s, 1 + s] per image
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    tta: bool = False  # evaluate with the mean of the image and its mirror
    record_validation: bool = False  # save the hold-out's probabilities per epoch (checkpoint-rule study)
    # Machinery
    precision: str = "auto"
    xla: str = "auto"
    fused_batch_norm: bool = True  # train with TensorFlow's fused kernel; saved models use Keras' layer
    cpu_replicas: int | None = None  # split the CPU into N logical devices (tests the multi-GPU path)
    time_budget_min: float | None = None  # stop (and end the schedule) when the budget is spent
    run_dir: str | None = None  # None: runs/<model>-<image_size>px-seed<seed>
    seed: int = 0
    preset: str | None = None
    progress: bool = True

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    def default_run_name(self) -> str:
        prefix = self.preset or self.model
        if self.dataset != "idenprof":
            prefix = f"{self.dataset}-{prefix}"
        return f"{prefix}-{self.image_size}px-seed{self.seed}"

    def trains_at_other_size(self) -> bool:
        """Whether training images differ in size from the model's input (FixRes crops)."""
        return self.train_image_size is not None and self.train_image_size != self.image_size


# Two CPU cores, 20 minutes: a half-width ResNet-18 trained on 80 px crops of 96 px images, the
# last quarter on whole 96 px images, evaluated at 96 px (see docs/ACCURACY.md), with a cosine
# schedule that ends when the time budget does; bfloat16 where the CPU has it (precision auto).
_CPU_PRESET = dict(
    model="resnet18", width=0.5, stem="small_pool", zero_init_residual=True,
    image_size=96, train_image_size=80, crop_scale=[0.6, 1.0], whole_image_fraction=0.25,
    batch_size=64, epochs=100, time_budget_min=19.5,
    optimizer="adamw", lr=2e-3, weight_decay=0.05, schedule="cosine", warmup_epochs=1.5,
    label_smoothing=0.1, tta=True,
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
    # mixed by mixup or cutmix, with stochastic depth: +1.6 and +2.05 test points in two seeds, the
    # hold-out too small to tell (docs/ACCURACY.md, runs 22-24).
    "cpu-long": {
        **_CPU_PRESET,
        "image_size": 128, "train_image_size": 112, "crop_scale": [0.5, 1.0],
        "epochs": 300, "time_budget_min": 118,
        "mixup_alpha": 0.2, "cutmix_alpha": 1.0, "stochastic_depth": 0.1,
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
    for name, value, choices in (
        ("optimizer", c.optimizer, OPTIMIZERS),
        ("schedule", c.schedule, SCHEDULES),
        ("loader", c.loader, LOADERS),
        ("validate-on", c.validate_on, VALIDATE_ON),
        ("keep", c.keep, KEEP_RULES),
        ("class-weight", c.class_weight, (None, *CLASS_WEIGHTS)),
        ("precision", c.precision, PRECISIONS),
        ("xla", c.xla, XLA_MODES),
    ):
        if value not in choices:
            raise ConfigError(f"--{name} {value!r} is unknown; choose one of {', '.join(c for c in choices if c)}")
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
    if c.loader == "generator" and (c.mixup_alpha or c.cutmix_alpha or c.crop_scale or c.train_image_size
                                    or c.color_jitter
                                    or c.whole_image_fraction):
        raise ConfigError("--loader generator supports flips only; use --loader tfdata for other augmentation "
                          "and --train-image-size / --whole-image-fraction")
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
    for flag, size in (("--image-size", c.image_size), ("--train-image-size", c.train_image_size)):
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
