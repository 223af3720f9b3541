#!/usr/bin/env python
"""Plot test top-1 against training minutes for finished runs, with the original recipe's result.

    python bench/accuracy_plot.py docs/accuracy_runs.csv runs/cpu-*/ --out docs/accuracy.png

Each run folder's metrics.json gives its test top-1 and training time (from the command's start
to the end of training); the folder's name labels the point. A CSV file (columns label, minutes,
top1 as a fraction, and any others) gives recorded runs whose folders are gone: runs/ stays on the
machine that trained them, so docs/accuracy_runs.csv keeps every preset run we report. The
original IdenProf recipe (ResNet-50 at 224 px, 79.33% after 61 GPU epochs) has no CPU time, so it
is drawn as a horizontal line.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

ORIGINAL_TOP1 = 0.7933


def run_point(run_dir: Path) -> tuple[str, float, float]:
    """(label, training minutes, test top-1) of a finished run folder."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return run_dir.name, metrics["train_seconds"] / 60, metrics["top1"]


def csv_points(path: Path) -> list[tuple[str, float, float]]:
    """(label, training minutes, test top-1) of each row of a CSV of recorded runs."""
    with open(path, newline="") as f:
        return [(row["label"], float(row["minutes"]), float(row["top1"])) for row in csv.DictReader(f)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path,
                   help="finished run folders (holding metrics.json) or CSV files of recorded runs")
    p.add_argument("--out", type=Path, default=Path("docs/accuracy.png"), help="PNG to write")
    args = p.parse_args(argv)
    points = []
    for run in args.runs:
        try:
            points.extend(csv_points(run) if run.suffix == ".csv" else [run_point(run)])
        except (OSError, KeyError, ValueError, TypeError) as e:
            print(f"error: {run} is not a finished run nor a CSV of runs ({e}); pass folders train.py has "
                  "finished or a CSV with columns label, minutes, top1", file=sys.stderr)
            return 2

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # The legend beside the axes holds a row per run (and the original's line): the figure grows
    # with it, so no entry is cut off.
    fig, ax = plt.subplots(figsize=(11, max(5.0, 0.17 * (len(points) + 1) + 0.8)))
    markers = "os^Dv"  # the colour cycle has 10 colours: each further ten runs get another marker
    for i, (label, minutes, top1) in enumerate(points):
        ax.scatter([minutes], [100 * top1], label=label, s=40, marker=markers[i // 10 % len(markers)])
    ax.axhline(100 * ORIGINAL_TOP1, color="gray", linestyle="--",
               label="original recipe: ResNet-50, 224 px, 61 GPU epochs")
    ax.set_xlabel("training minutes on 2 CPU cores (command start to end of training)")
    ax.set_ylabel("IdenProf test top-1 (%)")
    ax.grid(alpha=0.3)
    ax.set_xlim(left=0)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))  # beside the axes: many runs
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out} ({len(points)} runs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
