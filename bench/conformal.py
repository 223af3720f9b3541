"""Benchmark: which prediction sets, at what penalty, and how they do on the test split.

    python bench/conformal.py                               # the shipped model (hold-out: seed 2)
    python bench/conformal.py --model runs/x/export/model.keras --seed 0 --json runs/conformal/x.json

Single-view probabilities of the run's hold-out (a stratified 10% of train, `--seed`) and of the
IdenProf test split. Compared (idenprof.predict.conformal, docs/CONFORMAL.md):
  - LAC: the classes with p >= 1 - q (Sadinle et al. 2019; the smallest sets on average, but a
    doubtful photo is treated like a sure one);
  - APS and RAPS at several penalties (Angelopoulos et al. 2021), deterministic (U = 0).
The penalty is chosen on the hold-out alone: over 200 random halvings, the smallest mean set size
on the other half, averaged over 80%, 90% and 95% (a penalty that only suits one coverage is not
the default for every coverage a user may ask). Each method is then calibrated on the whole hold-out and measured on the
test split at 80%, 90% and 95%; and, to show the guarantee itself, over 200 random halvings of the
test split (calibrate on one half, measure on the other). Never run in CI.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from results import write_results  # noqa: E402

PENALTIES = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5)
COVERAGES = (0.8, 0.9, 0.95)
HALVINGS = 200


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=REPO / "idenprof" / "pretrained" / "model.keras")
    parser.add_argument("--data-dir", type=Path, default=REPO / "data" / "idenprof")
    parser.add_argument("--seed", type=int, default=2, help="the run's seed: which 10%% of train is the hold-out")
    parser.add_argument("--json", type=Path, help="also write the results here")
    return parser.parse_args(argv)


def lac_masks(calibration_p, calibration_y, p, coverage):
    """LAC sets: classes with 1 - p at most the conformal quantile of the true classes' 1 - p."""
    from idenprof.predict.conformal import threshold

    q = threshold(1.0 - calibration_p[np.arange(len(calibration_y)), calibration_y], coverage)
    masks = (1.0 - p) <= q
    masks[np.arange(len(p)), p.argmax(axis=1)] = True
    return masks


def measure(masks, p, y) -> dict:
    sizes = masks.sum(axis=1)
    single = sizes == 1
    return {"coverage": float(masks[np.arange(len(y)), y].mean()), "mean_size": float(sizes.mean()),
            "singletons": float(single.mean()),
            "singleton_accuracy": float((p.argmax(axis=1) == y)[single].mean()) if single.any() else None}


def main(argv=None) -> int:
    args = parse_args(argv)
    from idenprof.config import resolve_config
    from idenprof.data.dataset import scan_dataset, select_samples
    from idenprof.data.decoded import decode_images
    from idenprof.predict.conformal import ConformalSets
    from idenprof.predict.loaders import load_predictor

    predictor = load_predictor(args.model)
    layout = scan_dataset(args.data_dir)
    config = resolve_config("cpu", {"seed": args.seed, "data_dir": str(args.data_dir)})
    _, holdout, test = select_samples(layout, config)

    def probabilities(samples):
        decoded = decode_images(samples, predictor.image_size, progress=False)
        return np.asarray(predictor.predict(decoded.images, 64), np.float64), decoded.labels

    hp, hy = probabilities(holdout)
    tp, ty = probabilities(test)
    methods = {"LAC": lambda cp, cy, p, c: lac_masks(cp, cy, p, c)}
    for penalty in PENALTIES:
        name = "APS" if penalty == 0 else f"RAPS, penalty {penalty:g}"
        methods[name] = (lambda pen: lambda cp, cy, p, c: ConformalSets.fit(cp, cy, pen).masks(p, c))(penalty)

    rng = np.random.default_rng(0)

    def halvings(p, y, method, coverage):
        rows = []
        for _ in range(HALVINGS):
            order = rng.permutation(len(y))
            a, b = order[: len(y) // 2], order[len(y) // 2:]
            rows.append(measure(method(p[a], y[a], p[b], coverage), p[b], y[b]))
        return rows

    results = {"model": str(args.model), "holdout_images": len(hy), "test_images": len(ty),
               "holdout_top1": float((hp.argmax(1) == hy).mean()), "test_top1": float((tp.argmax(1) == ty).mean()),
               "methods": {}}
    print(f"model {args.model}: hold-out {len(hy)} photos, top-1 {results['holdout_top1']:.2%}; "
          f"test {len(ty)}, top-1 {results['test_top1']:.2%} (single view)")
    print("| method | hold-out halves: size at 80/90/95%, mean | test coverage 80 / 90 / 95% | mean size 80 / 90 / 95% "
          "| singletons at 90% | their accuracy | test halves: coverage at 90%, mean (5th percentile) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, method in methods.items():
        cv = [r["mean_size"] for c in COVERAGES for r in halvings(hp, hy, method, c)]
        on_test = {f"{c:g}": measure(method(hp, hy, tp, c), tp, ty) for c in COVERAGES}
        test_halves = [r["coverage"] for r in halvings(tp, ty, method, 0.9)]
        row = {"holdout_halves_size": float(np.mean(cv)),
               "test": on_test, "test_halves_coverage_90": {"mean": float(np.mean(test_halves)),
                                                            "p5": float(np.percentile(test_halves, 5))}}
        results["methods"][name] = row
        t = on_test
        print(f"| {name} | {row['holdout_halves_size']:.3f} | "
              + " / ".join(f"{t[f'{c:g}']['coverage']:.1%}" for c in COVERAGES) + " | "
              + " / ".join(f"{t[f'{c:g}']['mean_size']:.2f}" for c in COVERAGES)
              + f" | {t['0.9']['singletons']:.1%} | {t['0.9']['singleton_accuracy']:.1%} | "
              f"{row['test_halves_coverage_90']['mean']:.1%} ({row['test_halves_coverage_90']['p5']:.1%}) |")
    raps = {k: v for k, v in results["methods"].items() if k != "LAC"}
    chosen = min(raps, key=lambda k: (round(raps[k]["holdout_halves_size"], 3), k))
    results["chosen"] = chosen
    print(f"smallest sets on the hold-out halves (APS/RAPS): {chosen}")
    write_results(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
