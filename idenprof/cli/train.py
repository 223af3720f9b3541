"""Train a ResNet or DenseNet on IdenProf (or any train/test image-folder dataset), Fashion-MNIST or CIFAR-10.

    python train.py                      # the original recipe: ResNet-50, 224 px, 200 epochs
    python train.py --preset cpu         # about 20 minutes on two CPU cores
    python train.py --dataset fashion-mnist --preset cpu
    python train.py --download-only      # fetch, verify and extract the dataset, then stop

Running the same command again after an interruption resumes from the last finished epoch.
"""

from __future__ import annotations

import argparse
import signal
import sys

from idenprof.config import CLASS_WEIGHTS, LOADERS, OPTIMIZERS, PRESETS, SCHEDULES, VALIDATE_ON, TrainConfig
from idenprof.data.catalog import DATASETS
from idenprof.run_folder import KEEP_RULES
from idenprof.runtime import PRECISIONS, XLA_MODES

DEFAULTS = TrainConfig()


def floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def build_parser() -> argparse.ArgumentParser:
    # The model registry and stems are models/' own lists (importing it loads Keras).
    from models import MODEL_BUILDERS

    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS,  # only flags given on the command line override a preset
    )
    d = DEFAULTS

    def add(group, flag, help, **kw):
        default = getattr(d, flag.lstrip("-").replace("-", "_"), None)
        if "action" not in kw and default is not None:
            help += f" (default: {','.join(map(str, default)) if isinstance(default, list) else default})"
        group.add_argument(flag, help=help, **kw)

    g = p.add_argument_group("data")
    add(g, "--dataset", "; ".join(f"{name}: {spec.description}" for name, spec in DATASETS.items()))
    add(g, "--data-dir", "the dataset's folder (IdenProf: train/ and test/ class folders; others: their official "
        "files); downloaded here when missing (default: data/<dataset>)")
    add(g, "--data-url", "where to download from: a mirror's base URL, the archive's URL, or a local file or folder "
        "(default: the official source; for IdenProf $IDENPROF_URL first)")
    add(g, "--data-sha256", "expected SHA-256 of a one-archive dataset (replaces the published checksum)")
    add(g, "--download-only", "download, verify and extract the dataset, print its layout, and stop",
        action="store_true")
    add(g, "--max-per-class", "use at most N training images per class (quick trials)", type=int)
    add(g, "--val-fraction", "hold-out fraction of train used for checkpoint selection", type=float)
    add(g, "--validate-on", "validate on the hold-out, or on test as the original code did", choices=VALIDATE_ON)
    add(g, "--exclude-test-duplicates", "leave out training images whose bytes also appear in test",
        action="store_true")
    add(g, "--loader", "input pipeline: tf.data, or the original ImageDataGenerator", choices=LOADERS)
    add(g, "--cache-dir", "keep decoded images here between runs (default: in memory)")

    g = p.add_argument_group("model")
    add(g, "--model", f"network: {', '.join(MODEL_BUILDERS)}")
    add(g, "--weights", "start from 'imagenet' (ResNet-50/101/152) or a weights file (default: from scratch)")
    add(g, "--weights-origin", "mirror URL or local path for the ImageNet weights file")
    add(g, "--weights-hash", "MD5 or SHA-256 the ImageNet weights file must have (default: Keras' published hash)")
    add(g, "--image-size", "the model's input height and width in pixels (evaluation, export, inference)", type=int)
    add(g, "--train-image-size", "train on images (or random crops) of this side, cheaper than --image-size "
        "(default: --image-size)", type=int)
    add(g, "--width", "filter-count multiplier for every stage", type=float)
    add(g, "--stem", "input stem: imagenet (7x7/2 conv + max-pool), small (3x3/1) or small_pool (3x3/1 + 2x2 max-pool)")
    add(g, "--zero-init-residual", "start each residual branch's last batch norm at zero", action="store_true")
    add(g, "--stochastic-depth", "ResNets: in training, drop the last residual branch with this probability, "
        "earlier ones with linearly less (0: off)", type=float)

    g = p.add_argument_group("optimisation")
    add(g, "--epochs", "training epochs", type=int)
    add(g, "--batch-size", "images per step, across all devices", type=int)
    add(g, "--optimizer", "optimizer", choices=OPTIMIZERS)
    add(g, "--lr", "base (peak) learning rate", type=float)
    add(g, "--schedule", "learning-rate schedule", choices=SCHEDULES)
    add(g, "--lr-boundaries", "step schedule: epochs after which the rate is multiplied by --lr-decay-factor",
        type=ints)
    add(g, "--lr-decay-factor", "step schedule: factor at each boundary", type=float)
    add(g, "--warmup-epochs", "cosine schedule: linear warm-up length in epochs", type=float)
    add(g, "--momentum", "SGD momentum (Nesterov)", type=float)
    add(g, "--weight-decay", "decoupled weight decay (adamw, sgd)", type=float)
    add(g, "--label-smoothing", "label smoothing", type=float)
    add(g, "--class-weight", "balanced: weight each class's loss by its rarity (for imbalanced folders)",
        choices=CLASS_WEIGHTS)
    add(g, "--patience", "stop when validation accuracy has not improved for N epochs", type=int)
    add(g, "--keep", "the checkpoint evaluated and exported: best (highest hold-out accuracy) or last (the "
        "final epoch, for schedules that anneal to zero)", choices=KEEP_RULES)
    add(g, "--ema-momentum", "keep an exponential moving average of the weights with this momentum per step "
        "(e.g. 0.999); validation, the checkpoint and the exports use the average", type=float)
    add(g, "--time-budget-min", "end training when this many minutes (from the start) are spent; "
        "with --schedule cosine the schedule ends with the budget", type=float)

    g = p.add_argument_group("augmentation")
    add(g, "--no-flip", "turn off random horizontal flips", dest="flip", action="store_false")
    add(g, "--crop-scale", "random-resized-crop area range MIN,MAX, e.g. 0.35,1", type=floats)
    add(g, "--shift", "random shift, fraction of the image size", type=float)
    add(g, "--rotation", "random rotation, degrees", type=float)
    add(g, "--color-jitter", "scale each image's brightness, contrast and saturation by random factors in "
        "[1-S, 1+S] (0: off)", type=float)
    add(g, "--mixup-alpha", "mixup strength (0: off)", type=float)
    add(g, "--cutmix-alpha", "cutmix strength (0: off)", type=float)
    add(g, "--whole-image-fraction", "train the last FRACTION of the run (time or epochs) on whole images at "
        "--image-size, flips only", type=float)
    add(g, "--tta", "evaluate with the mean of each image and its mirror", action="store_true")

    g = p.add_argument_group("machinery and output")
    add(g, "--preset", f"a named recipe: {', '.join(PRESETS)}; other flags override it")
    add(g, "--config", "replay a run: its runs/<run>/config.json; other flags override it")
    add(g, "--precision", "auto (float16 on GPU, bfloat16 on CPUs with native bf16, else float32), "
        "float32, float16, bfloat16, or mixed", choices=PRECISIONS)
    add(g, "--xla", "XLA compilation: auto (on for GPUs), on, off", choices=XLA_MODES)
    add(g, "--no-fused-batch-norm", "train with Keras' own BatchNormalization instead of TensorFlow's fused "
        "kernel (slower; saved models use Keras' layer either way)", dest="fused_batch_norm", action="store_false")
    add(g, "--cpu-replicas", "split the CPU into N devices under MirroredStrategy (tests the multi-GPU path)", type=int)
    add(g, "--record-validation", "save the hold-out's class probabilities after every epoch in the run's "
        "validation/ (one extra prediction pass per epoch; for bench/checkpoint_rule.py)", action="store_true")
    add(g, "--run-dir", "output folder (default: runs/<preset or model>-<size>px-seed<seed>)")
    add(g, "--seed", "random seed for splits, initialisation, shuffling and augmentation", type=int)
    add(g, "--quiet", "no progress bars", dest="progress", action="store_false")
    return p


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
        from idenprof.training import train

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
