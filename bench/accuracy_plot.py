#!/usr/bin/env python
"""Plot test top-1 against training minutes for finished runs, with the original recipe's result.

    python bench/accuracy_plot.py runs/cpu-*/ --out docs/accuracy.png

Each run folder's metrics.json gives its test top-1 and training time (from the command's start
to the end of training); the folder's name labels the point. The
original IdenProf recipe (ResNet-50 at 224 px, 79.33% after 61 GPU epochs) has no CPU time, so it
is drawn as a horizontal line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ORIGINAL_TOP1 = 0.7933


def run_point(run_dir: Path) -> tuple[str, float, float]:
    """(label, training minutes, test top-1) of a finished run folder."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return run_dir.name, metrics["train_seconds"] / 60, metrics["top1"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, help="finished run folders (holding metrics.json)")
    p.add_argument("--out", type=Path, default=Path("docs/accuracy.png"), help="PNG to write")
    args = p.parse_args(argv)
    points = []
    for run in args.runs:
        try:
            points.append(run_point(run))
        except (OSError, KeyError, ValueError) as e:
            print(f"error: {run} is not a finished run ({e}); pass folders train.py has finished", file=sys.stderr)
            return 2

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, minutes, top1 in points:
        ax.scatter([minutes], [100 * top1], label=label, s=40)
    ax.axhline(100 * ORIGINAL_TOP1, color="gray", linestyle="--",
               label="original recipe: ResNet-50, 224 px, 61 GPU epochs")
    ax.set_xlabel("training minutes on 2 CPU cores (command start to end of training)")
    ax.set_ylabel("IdenProf test top-1 (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out} ({len(points)} runs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
