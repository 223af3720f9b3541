"""Train a ResNet or DenseNet on IdenProf (or any train/test image-folder dataset), Fashion-MNIST or CIFAR-10.

    python train.py                      # the original recipe: ResNet-50, 224 px, 200 epochs
    python train.py --preset cpu         # about 20 minutes on two CPU cores
    python train.py --dataset fashion-mnist --preset cpu
    python train.py --download-only      # fetch, verify and extract the dataset, then stop

Running the same command again after an interruption resumes from the last finished epoch.
"""

from __future__ import annotations

import argparse
import dataclasses
import signal
import sys

from idenprof.config import AUGMENTATION, DATA, MACHINERY, MODEL, OPTIMISATION, PRESETS, TrainConfig
from idenprof.data.catalog import DATASETS

GROUPS = (DATA, MODEL, OPTIMISATION, AUGMENTATION, MACHINERY)
CONFIG_HELP = "replay a run: its runs/<run>/config.json; other flags override it"


def flag_name(field: dataclasses.Field) -> str:
    return field.metadata["negated"] or "--" + field.name.replace("_", "-")


def help_text(field: dataclasses.Field) -> str:
    """The field's help with the lists it names filled in, and its default when it has one to say."""
    from models import MODEL_BUILDERS  # models/' own registry (importing it loads Keras)

    text = field.metadata["help"].format(
        datasets="; ".join(f"{name}: {spec.description}" for name, spec in DATASETS.items()),
        models=", ".join(MODEL_BUILDERS), presets=", ".join(PRESETS))
    default = field.default_factory() if field.default is dataclasses.MISSING else field.default
    if field.metadata["negated"]:
        return f"turn off: {text}"
    if default is not None and not isinstance(default, bool) and "(default:" not in text:
        text += f" (default: {','.join(map(str, default)) if isinstance(default, list) else default})"
    return text


def flag_fields() -> dict[str, list[dataclasses.Field]]:
    """TrainConfig's fields by flag group, in declaration order."""
    grouped = {group: [] for group in GROUPS}
    for field in dataclasses.fields(TrainConfig):
        grouped[field.metadata["group"]].append(field)
    return grouped


def build_parser() -> argparse.ArgumentParser:
    """train.py's flags, one per TrainConfig field (idenprof.config declares each once), and --config."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS,  # only flags given on the command line override a preset
    )
    for group, fields in flag_fields().items():
        g = p.add_argument_group(group)
        for field in fields:
            kw = {"help": help_text(field)}
            if field.metadata["negated"]:
                kw.update(dest=field.name, action="store_false")
            elif field.type in ("bool", bool):
                kw["action"] = "store_true"
            else:
                kw.update(type=field.metadata["parse"] or str, choices=field.metadata["choices"])
            g.add_argument(flag_name(field), **kw)
            if field.name == "preset":
                g.add_argument("--config", help=CONFIG_HELP)
    return p


def flag_table() -> str:
    """docs/TRAINING.md's flag tables (Markdown, one per group), from the same fields as the parser."""
    lines = []
    for group, fields in flag_fields().items():
        lines += [f"**{group.capitalize()}**", "", "| flag | default | what |", "|---|---|---|"]
        for field in fields:
            default = field.default_factory() if field.default is dataclasses.MISSING else field.default
            if field.metadata["negated"] or isinstance(default, bool) or default is None:
                shown = ""
            else:
                shown = f"`{','.join(map(str, default)) if isinstance(default, list) else default}`"
            choices = field.metadata["choices"]
            value = f" {{{','.join(choices)}}}" if choices else ""
            text = help_text(field).replace("|", "\\|")
            if shown and text.endswith(")") and " (default: " in text:
                text = text[: text.rindex(" (default: ")]
            lines.append(f"| `{flag_name(field)}`{value} | {shown} | {text} |")
            if field.name == "preset":
                lines.append(f"| `--config` |  | {CONFIG_HELP} |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    """`train.py` / `idenprof-train`: parse flags into one config and train; the exit code."""
    from idenprof.tf_quiet import import_tensorflow_quietly

    import_tensorflow_quietly()  # before models/ imports Keras for the --model choices
    args = vars(build_parser().parse_args(argv))
    preset = args.pop("preset", None)
    replayed = args.pop("config", None)
    # SIGTERM (a scheduler stopping the job) ends the run like Ctrl-C: resumable, no traceback.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    from idenprof.config import resolve_config, saved_run_settings
    from idenprof.errors import IdenprofError

    try:
        if replayed is not None:
            if preset is not None:
                raise IdenprofError("--preset and --config both name a recipe; give one of them")
            preset, settings = saved_run_settings(replayed)
            args = {**settings, **args}
        config = resolve_config(preset, args)
        from idenprof.train.training import train

        train(config)
    except IdenprofError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        from idenprof.files import is_disk_full

        if not is_disk_full(e):
            raise
        where = f" writing {e.filename}" if e.filename else ""
        print(f"error: disk full{where}; free some space and run the same command to resume", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: run the same command again to resume from the last finished epoch", file=sys.stderr)
        return 130
    return 0
