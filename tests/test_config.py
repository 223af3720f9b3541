"""Config resolution: defaults are the original recipe; presets, then flags, override."""

import json

import pytest

from idenprof.config import PRESETS, TrainConfig, resolve_config, size_notes
from idenprof.errors import ConfigError


def test_defaults_reproduce_the_original_recipe():
    c = resolve_config(None, {})
    assert (c.model, c.image_size, c.batch_size, c.epochs) == ("resnet50", 224, 32, 200)
    assert (c.optimizer, c.lr, c.schedule, c.lr_boundaries, c.lr_decay_factor) == (
        "adam", 1e-3, "step", [80, 120, 160, 180], 0.1)
    assert c.flip and c.weights is None


def test_preset_then_flags():
    c = resolve_config("cpu", {"epochs": 3})
    assert c.model == PRESETS["cpu"]["model"] and c.image_size == PRESETS["cpu"]["image_size"]
    assert c.epochs == 3 and c.preset == "cpu"
    assert c.default_run_name().startswith("cpu-")


def test_config_round_trips_as_json():
    c = resolve_config("cpu-long", {"seed": 7})
    assert TrainConfig(**json.loads(c.to_json())) == c


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"batch_size": 0}, "--batch-size must be positive"),
        ({"epochs": -1}, "--epochs must be positive"),
        ({"image_size": 0}, "--image-size must be positive"),
        ({"optimizer": "rmsprop"}, "--optimizer 'rmsprop' is unknown"),
        ({"schedule": "linear"}, "--schedule 'linear' is unknown"),
        ({"val_fraction": 1.0}, "--val-fraction"),
        ({"lr_boundaries": [120, 80]}, "--lr-boundaries"),
        ({"crop_scale": [0.0, 1.0]}, "--crop-scale"),
        ({"crop_scale": [0.5]}, "--crop-scale must be two area fractions MIN,MAX"),
        ({"crop_scale": [0.2, 0.5, 1.0]}, "--crop-scale must be two"),
        ({"mixup_alpha": -0.2}, "--mixup-alpha must be 0 or more"),
        ({"cutmix_alpha": -1.0}, "--cutmix-alpha must be 0 or more"),
        ({"weight_decay": -0.05}, "--weight-decay must be 0 or more"),
        ({"warmup_epochs": -1.0}, "--warmup-epochs must be 0 or more"),
        ({"rotation": -5.0}, "--rotation must be 0 or more"),
        ({"shift": 1.5}, "--shift is a fraction"),
        ({"lr_decay_factor": 0.0}, "--lr-decay-factor must be in"),
        ({"loader": "generator", "mixup_alpha": 0.2}, "--loader generator"),
        ({"precision": "float8"}, "--precision 'float8' is unknown"),
        ({"xla": "maybe"}, "--xla 'maybe' is unknown"),
        ({"keep": "first"}, "--keep 'first' is unknown; choose one of best, last"),
        ({"val_fraction": float("nan")}, "--val-fraction must be a finite number"),
        ({"lr": float("nan")}, "--lr must be a finite number"),
        ({"lr": float("inf")}, "--lr must be a finite number"),
        ({"crop_scale": [0.5, float("nan")]}, "--crop-scale must be a finite number"),
        ({"model": "resnet21"}, "--model 'resnet21' is unknown; choose one of resnet18, resnet34"),
        ({"stem": "tiny"}, "--stem 'tiny' is unknown"),
        ({"image_size": 8}, "--image-size 8 is too small for resnet50 with the imagenet stem; use at least 32"),
        ({"stem": "small", "train_image_size": 4}, "--train-image-size 4 is too small"),
    ],
)
def test_bad_values_are_one_line_config_errors(overrides, message):
    with pytest.raises(ConfigError, match=message) as info:
        resolve_config(None, overrides)
    assert "\n" not in str(info.value)


def test_cpu_long_is_the_cpu_recipe_at_a_larger_size_for_longer_with_mixing_and_stochastic_depth():
    cpu, long = PRESETS["cpu"], PRESETS["cpu-long"]
    differing = {k for k in cpu if cpu[k] != long[k]}
    assert differing == {"image_size", "train_image_size", "crop_scale", "epochs", "time_budget_min",
                         "target_epochs"}
    assert long["target_epochs"] > cpu["target_epochs"]  # the speed probe aims at more epochs (runs 39-40)
    assert long["image_size"] > cpu["image_size"] and long["time_budget_min"] > cpu["time_budget_min"]
    # The regularisation of runs 23-24 (docs/ACCURACY.md), dropped where few epochs fit (runs 39-40);
    # the epoch-limited cpu preset has none.
    assert {k: long[k] for k in set(long) - set(cpu)} == {"mixup_alpha": 0.2, "cutmix_alpha": 1.0,
                                                         "stochastic_depth": 0.1, "min_train_image_size": 80,
                                                         "mixing_min_epochs": 50}
    cpu_config = resolve_config("cpu", {})
    assert cpu_config.mixup_alpha == cpu_config.cutmix_alpha == cpu_config.stochastic_depth == 0


def test_the_original_recipe_keeps_the_best_epoch_and_the_annealed_presets_the_last():
    assert resolve_config(None, {}).keep == "best"  # the original code's ModelCheckpoint(save_best_only)
    assert resolve_config("cpu", {}).keep == resolve_config("cpu-long", {}).keep == "last"
    assert resolve_config("cpu", {"keep": "best"}).keep == "best"


def test_unknown_preset():
    with pytest.raises(ConfigError, match="--preset 'gpu-fast' is unknown"):
        resolve_config("gpu-fast", {})


def test_sizes_off_the_network_stride_get_a_note_naming_the_nearest_good_sizes():
    assert size_notes(resolve_config("cpu", {})) == []
    [note] = size_notes(resolve_config("cpu", {"image_size": 90}))
    assert note.startswith("--image-size 90 is not a multiple of 16") and "80 or 96" in note
    [note] = size_notes(resolve_config(None, {"image_size": 200}))  # imagenet stem: stride 32
    assert "192 or 224" in note


@pytest.mark.parametrize("overrides, message", [
    ({"epochs": "two"}, "setting 'epochs' (--epochs) must be a whole number, got \"two\""),
    ({"epochs": 2.7}, "'epochs' (--epochs) must be a whole number, got 2.7"),
    ({"epochs": True}, "'epochs' (--epochs) must be a whole number, got true"),
    ({"lr": "0.001"}, "'lr' (--lr) must be a number, got \"0.001\""),
    ({"lr_boundaries": [[80], 120]}, "'lr_boundaries' (--lr-boundaries) must be a list of whole numbers"),
    ({"data_dir": 123}, "'data_dir' (--data-dir) must be a string or null, got 123"),
    ({"flip": "no"}, "'flip' (--flip) must be true or false, got \"no\""),
    ({"crop_scale": "0.5,1"}, "'crop_scale' (--crop-scale) must be a list of numbers or null"),
    ({"seed": -1}, "--seed must be a whole number from 0 to 4294967295, got -1"),
    ({"seed": 99999999999999999999}, "--seed must be a whole number from 0 to 4294967295"),
], ids=["epochs-word", "epochs-fraction", "epochs-bool", "lr-string", "nested-list", "data-dir-number",
        "flip-string", "crop-scale-string", "seed-negative", "seed-huge"])
def test_every_setting_is_type_checked_in_one_line(overrides, message):
    with pytest.raises(ConfigError) as err:
        resolve_config("cpu", overrides)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_every_setting_has_exactly_one_flag_and_the_parser_reaches_every_field():
    import dataclasses

    from idenprof.cli.train import build_parser, flag_name

    parser = build_parser()
    flags = {option: action for action in parser._actions for option in action.option_strings}
    for field in dataclasses.fields(TrainConfig):
        assert field.metadata["help"] and field.metadata["group"], field.name
        action = flags[flag_name(field)]
        assert action.dest == field.name, (field.name, action.dest)
    own = {a.dest for a in parser._actions} - {"help", "config"}
    assert own == {f.name for f in dataclasses.fields(TrainConfig)}
    # Every parsed value resolves: the flag's parser gives what the setting's type check accepts.
    args = vars(parser.parse_args(["--crop-scale", "0.5,1", "--lr-boundaries", "3,5", "--no-flip", "--quiet",
                                   "--keep", "last", "--max-per-class", "4", "--width", "0.5"]))
    c = resolve_config(None, args)
    assert (c.crop_scale, c.lr_boundaries, c.flip, c.progress, c.keep, c.max_per_class, c.width) == (
        [0.5, 1.0], [3, 5], False, False, "last", 4, 0.5)
    with pytest.raises(SystemExit):
        parser.parse_args(["--optimizer", "rmsprop"])


def test_the_flag_table_in_docs_training_is_generated_from_the_fields():
    from idenprof.cli.flag_table import FLAG_TABLE_END, FLAG_TABLE_START, TRAINING_DOC, with_table
    from idenprof.cli.train import flag_table

    document = TRAINING_DOC.read_text()
    assert document.count(FLAG_TABLE_START) == 1 and document.count(FLAG_TABLE_END) == 1
    assert with_table(document, flag_table()) == document, (
        "docs/TRAINING.md's flag table is stale: run python -m idenprof.cli.flag_table")
    for flag in ("--preset", "--config", "--no-flip", "--quiet", "--time-budget-min", "--keep"):
        assert f"| `{flag}`" in document
