"""Benchmark: how well each detector tells photos of none of the professions from IdenProf's.

    python bench/ood.py                                            # the shipped model
    python bench/ood.py --model runs/x/export/model.keras --seed 0 --json runs/ood/x.json
    python bench/ood.py --model runs/open-set/waiter-chef/export/model.keras --seed 0 \
        --data-dir data/open-set/waiter-chef --held-out-from data/idenprof     # near-OOD

Scores, side by side, on the same photos (docs/OOD.md):
  - none-score: (1 - max softmax probability) / (1 - 1/C), the one infer.py ships (idenprof.predict.ood);
  - max logit, energy (Liu et al. 2020);
  - Mahalanobis (class means and shared covariance of --feature-photos training photos' pooled
    features; Lee et al. 2018) and k-nearest-neighbour cosine distance (k=10; Sun et al. 2022).
Knowns: the IdenProf test split. Unknowns: the far-OOD photos of idenprof.ship.outliers.BENCHMARK_SOURCES
(installed packages only) and, reported apart, the synthetic inputs. For each: AUROC, FPR at 95%
TPR, and at the threshold that lets 95% of the hold-out pass, the share of unknowns and of the test
split flagged. Near-OOD (open set): a model trained with some classes held out (`--data-dir` a copy
of IdenProf without them, `--held-out-from` the whole dataset); the held-out classes' test photos
are the unknowns, the known classes' the knowns. The hold-out is the run's (a stratified 10% of
train, `--seed`; the shipped model's is seed 2). Never run in CI; needs a Keras model (.keras/.h5)
for logits and features.
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


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=REPO / "idenprof" / "pretrained" / "model.keras")
    parser.add_argument("--data-dir", type=Path, default=REPO / "data" / "idenprof")
    parser.add_argument("--seed", type=int, default=2, help="the run's seed: which 10%% of train is the hold-out")
    parser.add_argument("--feature-photos", type=int, default=2000, help="training photos for Mahalanobis and kNN")
    parser.add_argument("--held-out-from", type=Path, metavar="DIR",
                        help="the whole dataset: its test photos of classes --data-dir lacks are near-OOD unknowns")
    parser.add_argument("--json", type=Path, help="also write the results here")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import keras

    from idenprof.config import resolve_config
    from idenprof.data.dataset import scan_dataset, select_samples
    from idenprof.predict import ood
    from idenprof.predict.calibration import is_calibrated, logits_model, temperature_of
    from idenprof.ship import outliers

    model = keras.models.load_model(args.model, compile=False)
    side = int(model.input_shape[1])
    temperature = temperature_of(model) if is_calibrated(model) else 1.0
    logits = logits_model(model)
    features = keras.Model(logits.input, logits.get_layer("avg_pool").output)
    layout = scan_dataset(args.data_dir)
    train, holdout, test = select_samples(layout, resolve_config("cpu", {"seed": args.seed,
                                                                          "data_dir": str(args.data_dir)}))
    rng = np.random.default_rng(0)
    feature_train = [train[i] for i in sorted(rng.choice(len(train), min(args.feature_photos, len(train)),
                                                         replace=False))]

    def decode(samples):
        data = layout.decode(samples, side, progress=False)
        return data.images, data.labels

    names, far = outliers.benchmark_photos(side, log=lambda m: print(m, file=sys.stderr))
    synthetic = np.stack([image for _, image in outliers.synthetic_images(side)])
    sets = {"holdout": decode(holdout)[0], "far": far, "synthetic": synthetic}
    sets["test"], test_labels = decode(test)
    held_out_classes = []
    if args.held_out_from:
        whole = scan_dataset(args.held_out_from)
        held_out_classes = [name for name in whole.class_names if name not in layout.class_names]
        sets["near"] = decode([s for s in whole.samples["test"] if whole.class_names[s[1]] in held_out_classes])[0]
    train_images, train_labels = decode(feature_train)

    def run(images):
        z, f = [], []
        for start in range(0, len(images), 64):
            batch = np.asarray(images[start:start + 64], np.float32)
            z.append(np.asarray(logits.predict_on_batch(batch)))
            f.append(np.asarray(features.predict_on_batch(batch)))
        return np.concatenate(z).astype(np.float64), np.concatenate(f).astype(np.float64)

    outputs = {name: run(images) for name, images in sets.items()}
    train_features = run(train_images)[1]
    mahalanobis = ood.MahalanobisFit.from_features(train_features, train_labels).distance
    knn = ood.NearestNeighbourScore(train_features)

    def softmax(z):
        e = np.exp(z / temperature - (z / temperature).max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    holdout_distance = mahalanobis(outputs["holdout"][1])
    start = float(np.quantile(holdout_distance, 0.95))
    rate = 4.0 / float(np.median(holdout_distance))

    def tempered(z, f):
        return ood.none_scores(ood.distance_tempered_probabilities(z, mahalanobis(f), temperature, start, rate))

    detectors = {
        "none-score (max softmax)": lambda z, f: ood.none_scores(softmax(z)),
        "none-score, Mahalanobis-tempered": tempered,
        "max logit": lambda z, f: ood.max_logit_score(z),
        "energy": lambda z, f: ood.energy_score(z),
        "Mahalanobis": lambda z, f: mahalanobis(f),
        "kNN (k=10)": lambda z, f: knn(f),
    }
    test_top1 = float((outputs["test"][0].argmax(axis=1) == test_labels).mean())
    results = {"model": str(args.model), "test_top1_single_view": test_top1, "far_photos": len(names),
               "synthetic": len(synthetic), "held_out_classes": held_out_classes,
               "near_photos": len(sets.get("near", [])), "detectors": {}}
    print(f"model {args.model}: test top-1 {test_top1:.2%} (single view); {len(names)} far-OOD photos, "
          f"{len(synthetic)} synthetic")
    near = " | near-OOD AUROC | near FPR95 | near flagged" if "near" in sets else ""
    print(f"| detector | far-OOD AUROC | FPR95 | far-OOD flagged | synthetic flagged | test flagged{near} |")
    print("|---|---:|---:|---:|---:|---:|" + "---:|" * (3 if near else 0))
    for name, score in detectors.items():
        scores = {key: score(*outputs[key]) for key in outputs}
        threshold = ood.fit_none_threshold(scores["holdout"])
        row = {"auroc": ood.auroc(scores["test"], scores["far"]),
               "fpr95": ood.fpr_at_tpr(scores["test"], scores["far"]),
               "far_flagged": ood.flagged_share(scores["far"], threshold),
               "synthetic_flagged": ood.flagged_share(scores["synthetic"], threshold),
               "test_flagged": ood.flagged_share(scores["test"], threshold), "threshold": threshold}
        cells = ""
        if "near" in scores:
            row.update({"near_auroc": ood.auroc(scores["test"], scores["near"]),
                        "near_fpr95": ood.fpr_at_tpr(scores["test"], scores["near"]),
                        "near_flagged": ood.flagged_share(scores["near"], threshold)})
            cells = f" {row['near_auroc']:.3f} | {row['near_fpr95']:.1%} | {row['near_flagged']:.1%} |"
        results["detectors"][name] = row
        print(f"| {name} | {row['auroc']:.3f} | {row['fpr95']:.1%} | {row['far_flagged']:.1%} | "
              f"{row['synthetic_flagged']:.1%} | {row['test_flagged']:.1%} |{cells}")
    none = ood.none_scores(softmax(outputs["far"][0]))
    results["far_photo_scores"] = dict(zip(names, map(float, none), strict=True))
    write_results(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
