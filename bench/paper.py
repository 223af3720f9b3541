#!/usr/bin/env python
"""He et al. 2015's three ImageNet experiments, reproduced at CPU scale on IdenProf (or CIFAR-10):

  degradation  plain-18 and plain-34 against ResNet-18 and ResNet-34 (option A shortcuts, so the
               ResNets have no parameters the plain networks lack): Table 2 and Fig. 4
  shortcuts    ResNet-34 with shortcut options A (zero-padding), B (projections where the shape
               changes) and C (projections everywhere): error, parameters, time (Table 3)
  blocks       basic (ResNet-34) against bottleneck (ResNet-50) blocks at comparable cost (Table 3)

    python bench/paper.py                          # about 2 hours on 2 CPU cores (docs/PAPER.md)
    python bench/paper.py --dataset cifar10 --image-size 32 --stem small --max-per-class 1000

Every network is trained with one recipe and the same number of epochs, from the same seed, on the
same data (SGD with Nesterov momentum, cosine schedule with warm-up, flips and shifts; the app's
own data path, schedule and optimizer). Writes to --out: results.csv (one row per network),
epochs.csv (training and validation error per epoch), degradation.png (the Fig. 4 curves) and
paper.md (the tables for docs/PAPER.md). Running the same command again after an interruption
keeps the networks already finished.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@dataclass(frozen=True)
class Network:
    """One trained network: `model` is a name in models.MODEL_BUILDERS."""

    name: str
    model: str
    shortcut: str = "B"
    plain: bool = False


NETWORKS = {
    n.name: n
    for n in (
        Network("plain-18", "resnet18", plain=True),
        Network("plain-34", "resnet34", plain=True),
        Network("ResNet-18 A", "resnet18", shortcut="A"),
        Network("ResNet-34 A", "resnet34", shortcut="A"),
        Network("ResNet-34 B", "resnet34", shortcut="B"),
        Network("ResNet-34 C", "resnet34", shortcut="C"),
        Network("ResNet-50 B", "resnet50", shortcut="B"),
    )
}
EXPERIMENTS = {
    "degradation": ("plain-18", "plain-34", "ResNet-18 A", "ResNet-34 A"),
    "shortcuts": ("ResNet-34 A", "ResNet-34 B", "ResNet-34 C"),
    "blocks": ("ResNet-34 B", "ResNet-50 B"),
}
# The paper's ImageNet top-1 validation error (%, 10-crop): Table 2 (plain and option-A ResNets) and
# Table 3 (ResNet-34 A/B/C, ResNet-50 with option B); parameters and mult-adds from Tables 1 and 3.
PAPER_TOP1_ERROR = {"plain-18": 27.94, "plain-34": 28.54, "ResNet-18 A": 27.88, "ResNet-34 A": 25.03,
                    "ResNet-34 B": 24.52, "ResNet-34 C": 24.19, "ResNet-50 B": 22.85}
PAPER_COST = {"ResNet-34 B": "21.8M params, 3.6G mult-adds", "ResNet-50 B": "25.6M params, 3.8G mult-adds"}
RESULT_COLUMNS = ["network", "model", "shortcut", "plain", "params", "mult_adds", "epochs", "train_error",
                  "val_error", "test_error", "best_val_error", "minutes"]
EPOCH_COLUMNS = ["network", "epoch", "train_error", "val_error", "seconds"]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="idenprof", help="a dataset train.py knows (default: idenprof)")
    p.add_argument("--data-dir", help="the dataset's folder (default: data/<dataset>)")
    p.add_argument("--data-url", help="mirror or local file/folder, as for train.py")
    p.add_argument("--experiments", default=",".join(EXPERIMENTS), help="comma-separated: " + ", ".join(EXPERIMENTS))
    p.add_argument("--image-size", type=int, default=64, help="pixels (default: 64)")
    p.add_argument("--stem", default="small_pool", help="network stem (default: small_pool, for 32..128 px)")
    p.add_argument("--width", type=float, default=0.5, help="filter multiplier (default: 0.5)")
    p.add_argument("--epochs", type=int, default=15, help="epochs per network (default: 15)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.05, help="peak SGD learning rate (default: 0.05)")
    p.add_argument("--weight-decay", type=float, default=5e-5, help="decoupled weight decay (default: 5e-5)")
    p.add_argument("--max-per-class", type=int, help="at most N training images per class")
    p.add_argument("--precision", default="auto", help="auto (bfloat16 on CPUs that have it), float32, bfloat16")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("runs/paper"), help="output folder (default: runs/paper)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p.parse_args(argv)


def study_config(args):
    """The app's TrainConfig for the shared recipe: data, hold-out, schedule, optimizer, augmentation."""
    from idenprof.config import resolve_config

    settings = dict(dataset=args.dataset, data_url=args.data_url, image_size=args.image_size, stem=args.stem,
                    width=args.width, epochs=args.epochs, batch_size=args.batch_size, optimizer="sgd", lr=args.lr,
                    momentum=0.9, weight_decay=args.weight_decay, schedule="cosine", warmup_epochs=1.0,
                    flip=True, shift=0.125, max_per_class=args.max_per_class, precision=args.precision,
                    seed=args.seed, model="resnet18", cache_dir=str(args.out / "cache"), progress=not args.quiet)
    if args.data_dir:
        settings["data_dir"] = args.data_dir
    return resolve_config(None, settings)


def mult_adds(model) -> int:
    """Multiply-adds of one forward pass of one image through the convolutions and the classifier
    (what the paper counts as FLOPs)."""
    from keras import layers

    total = 0
    for layer in model.layers:
        if isinstance(layer, layers.Conv2D):
            total += math.prod(layer.output.shape[1:3]) * math.prod(layer.kernel.shape)
        elif isinstance(layer, layers.Dense):
            total += math.prod(layer.kernel.shape)
    return total


def train_network(network: Network, config, data, plan, log):
    """Train one network with the shared recipe; returns (result row, epoch rows)."""
    import keras

    from idenprof.data.batches import make_dataset
    from idenprof.precision import computing_in
    from idenprof.train.recipe import make_learning_rate, make_optimizer
    from idenprof.train.training import make_inputs, seed_everything
    from models import build_model
    from models.batch_norm import use_fused_batch_norm

    train_data, val_data, test_data, class_names = data
    steps = len(train_data.labels) // config.batch_size
    seed_everything(config.seed)  # every network starts from the same seed
    with computing_in(plan.dtype_policy):
        model = build_model(network.model, input_shape=(config.image_size,) * 2 + (3,), classes=len(class_names),
                            width=config.width, stem=config.stem, shortcut=network.shortcut, plain=network.plain)
        training_model = use_fused_batch_norm(model)
    training_model.compile(optimizer=make_optimizer(config, make_learning_rate(config, steps)),
                           loss="categorical_crossentropy", metrics=["accuracy"], jit_compile=plan.xla)
    train_ds, val_ds = make_inputs(config, train_data, val_data, class_names, [])
    ends = []
    timer = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: ends.append(time.monotonic()))
    start = time.monotonic()
    # The training input repeats (one iterator for the whole run): steps_per_epoch ends each epoch.
    history = training_model.fit(train_ds, validation_data=val_ds, epochs=config.epochs, callbacks=[timer],
                                 steps_per_epoch=steps, verbose=1 if config.progress else 0, shuffle=False).history
    minutes = (time.monotonic() - start) / 60
    test_ds = make_dataset(test_data, len(class_names), batch_size=config.batch_size, training=False)
    test_accuracy = training_model.evaluate(test_ds, verbose=0, return_dict=True)["accuracy"]
    epochs = [{"network": network.name, "epoch": e + 1, "train_error": round(1 - history["accuracy"][e], 4),
               "val_error": round(1 - history["val_accuracy"][e], 4),
               "seconds": round(end - (ends[e - 1] if e else start), 1)} for e, end in enumerate(ends)]
    row = {"network": network.name, "model": network.model, "shortcut": "" if network.plain else network.shortcut,
           "plain": network.plain, "params": model.count_params(), "mult_adds": mult_adds(model),
           "epochs": len(epochs), "train_error": epochs[-1]["train_error"], "val_error": epochs[-1]["val_error"],
           "test_error": round(1 - test_accuracy, 4), "best_val_error": min(e["val_error"] for e in epochs),
           "minutes": round(minutes, 2)}
    log(f"{network.name}: test error {row['test_error']:.2%}, {row['params']:,} parameters, {minutes:.1f} min")
    return row, epochs


def read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def append_rows(path: Path, columns: list[str], rows: list[dict]) -> None:
    new = not path.is_file()
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        if new:
            writer.writeheader()
        writer.writerows(rows)


def plot_degradation(epochs: list[dict], out: Path) -> None:
    """Fig. 4: training (thin, dashed) and validation (bold) error per epoch, plain networks on
    the left, ResNets on the right."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, names, title in ((axes[0], EXPERIMENTS["degradation"][:2], "plain"),
                             (axes[1], EXPERIMENTS["degradation"][2:], "ResNet (option A)")):
        for name, color in zip(names, ("tab:orange", "tab:red"), strict=True):
            rows = [r for r in epochs if r["network"] == name]
            x = [int(r["epoch"]) for r in rows]
            ax.plot(x, [100 * float(r["train_error"]) for r in rows], "--", color=color, lw=1, label=f"{name} train")
            ax.plot(x, [100 * float(r["val_error"]) for r in rows], "-", color=color, lw=2.5, label=f"{name} val")
        ax.set(title=title, xlabel="epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    axes[0].set_ylabel("error (%)")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def markdown(results: dict[str, dict], settings: str) -> str:
    """The tables for docs/PAPER.md: ours beside the paper's ImageNet numbers."""

    def pct(name, column):
        return f"{100 * float(results[name][column]):.2f}" if name in results else "not run"

    def cost(name):
        if name not in results:
            return "not run", "not run", "not run"
        r = results[name]
        return f"{int(r['params']) / 1e6:.3f}M", f"{int(r['mult_adds']) / 1e6:.1f}M", f"{float(r['minutes']):.1f}"

    lines = [f"Settings: {settings}", ""]
    lines += ["**Degradation** (paper: Table 2, Fig. 4; ours: degradation.png)", "",
              "| network | paper top-1 err (ImageNet) | ours train err | ours val err | ours test err |",
              "|---|---|---|---|---|"]
    lines += [f"| {n} | {PAPER_TOP1_ERROR[n]} | {pct(n, 'train_error')} | {pct(n, 'val_error')} | "
              f"{pct(n, 'test_error')} |" for n in EXPERIMENTS["degradation"]]
    lines += ["", "**Shortcut options** (paper: Table 3)", "",
              "| network | paper top-1 err (ImageNet) | ours test err | ours parameters | ours mult-adds "
              "| ours minutes |",
              "|---|---|---|---|---|---|"]
    lines += [f"| {n} | {PAPER_TOP1_ERROR[n]} | {pct(n, 'test_error')} | {' | '.join(cost(n))} |"
              for n in EXPERIMENTS["shortcuts"]]
    lines += ["", "**Basic against bottleneck blocks** (paper: Tables 1 and 3)", "",
              "| network | block | paper top-1 err (ImageNet) | paper cost | ours test err | ours parameters | "
              "ours mult-adds | ours minutes |", "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {n} | {'bottleneck' if NETWORKS[n].model == 'resnet50' else 'basic'} | {PAPER_TOP1_ERROR[n]} | "
              f"{PAPER_COST[n]} | {pct(n, 'test_error')} | {' | '.join(cost(n))} |" for n in EXPERIMENTS["blocks"]]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    from idenprof.tf_quiet import import_tensorflow_quietly

    import_tensorflow_quietly()
    from idenprof.data.dataset import select_samples
    from idenprof.errors import ConfigError, IdenprofError
    from idenprof.train.runtime import detect_environment, plan_runtime
    from idenprof.train.training import decode_splits, prepare_dataset

    try:
        wanted = [e.strip() for e in args.experiments.split(",") if e.strip()]
        unknown = [e for e in wanted if e not in EXPERIMENTS]
        if unknown or not wanted:
            raise ConfigError(f"--experiments {args.experiments!r}: choose from {', '.join(EXPERIMENTS)}")
        config = study_config(args)
        settings = {k: v for k, v in vars(args).items() if k not in ("out", "quiet", "experiments", "data_url")}
        args.out.mkdir(parents=True, exist_ok=True)
        settings_path = args.out / "settings.json"
        if settings_path.is_file() and json.loads(settings_path.read_text()) != settings:
            raise ConfigError(f"{args.out} holds a study with other settings ({settings_path}); pass a new --out")
        settings_path.write_text(json.dumps(settings, indent=2))
        layout = prepare_dataset(config, print)
        splits = select_samples(layout, config)
        train_data, val_data, test_data = decode_splits(config, layout, *splits, print)
        plan = plan_runtime(detect_environment(), precision=config.precision, xla="off", batch_size=config.batch_size)
        print(plan.summary())
        names = list(dict.fromkeys(n for e in wanted for n in EXPERIMENTS[e]))
        done = {r["network"] for r in read_rows(args.out / "results.csv")}
        for name in names:
            if name in done:
                print(f"{name}: finished earlier, kept")
                continue
            row, epochs = train_network(NETWORKS[name], config, (train_data, val_data, test_data, layout.class_names),
                                        plan, print)
            append_rows(args.out / "epochs.csv", EPOCH_COLUMNS, epochs)
            append_rows(args.out / "results.csv", RESULT_COLUMNS, [row])  # last: marks the network finished
    except IdenprofError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    results = {r["network"]: r for r in read_rows(args.out / "results.csv")}
    if "degradation" in wanted:
        plot_degradation(read_rows(args.out / "epochs.csv"), args.out / "degradation.png")
    described = (f"{args.dataset}, {len(train_data.labels)} training / {len(val_data.labels)} validation / "
                 f"{len(test_data.labels)} test images at {args.image_size} px, width {args.width}, {args.stem} stem, "
                 f"{args.epochs} epochs, batch {args.batch_size}, SGD lr {args.lr} cosine, {plan.precision}")
    (args.out / "paper.md").write_text(markdown(results, described))
    print(f"wrote {args.out / 'results.csv'}, {args.out / 'epochs.csv'}, {args.out / 'paper.md'}"
          + (f", {args.out / 'degradation.png'}" if "degradation" in wanted else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
