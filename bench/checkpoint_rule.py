#!/usr/bin/env python
"""Which epoch should a run keep? Compares checkpoint rules on the hold-out without fooling itself.

A run keeps the epoch with the best hold-out accuracy. That accuracy is then biased upwards (it
was picked for being high), and with 900 images its noise (about 1.4 points) is as large as the
differences between late epochs, so "best" may pick a lucky epoch rather than a good one. This
script replays runs trained with `--record-validation` (the hold-out's probabilities after every
epoch, in each run's validation/) and scores each rule fairly: the hold-out is split at random
into two stratified halves, the rule picks an epoch on one half and is scored on the other, then
the halves swap; averaged over many splits. A score on images the pick did not see is an
unbiased estimate of the rule's accuracy on new images (the pick sees half the hold-out, so
"best" chooses a little worse than with all of it). It still carries the luck of this one
hold-out: compare rules over several seeds.

    python bench/checkpoint_rule.py runs/cpu-s0 runs/cpu-s1 runs/cpu-s2 [--splits 500]

Rules: best (the first epoch with the highest accuracy: train.py's `--keep best`), last (the
last epoch: `--keep last`), best-of-last-N (the best among the last N epochs). The printed table
(markdown) gives, per run and averaged, each rule's mean accuracy on the unseen half and the
epoch it picks on the whole hold-out.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from idenprof.run_folder import RunFolder  # noqa: E402  (after the path insert)


def rule_pickers(last_n: tuple[int, ...] = (3, 5)) -> dict:
    """{rule name: picker}; a picker maps per-epoch accuracies [E] to the index of the kept epoch."""
    pickers = {"best": lambda acc: int(np.argmax(acc)),  # argmax: the first of equal ones, as the callback
               "last": lambda acc: len(acc) - 1}
    for n in last_n:
        pickers[f"best-of-last-{n}"] = lambda acc, n=n: max(0, len(acc) - n) + int(np.argmax(acc[-n:]))
    return pickers


def load_record(run_dir: Path) -> tuple[list[int], np.ndarray, np.ndarray]:
    """(epochs, probabilities [E, N, C], labels [N]) of a run trained with --record-validation.

    Raises:
        ValueError: the run has no record, or its epochs are not 1..E.
    """
    run = RunFolder(run_dir)
    recorded = run.recorded_validation()
    labels_path = run.validation_dir / "labels.npy"
    if not recorded or not labels_path.is_file():
        raise ValueError(f"{run_dir} has no validation record; train it with --record-validation")
    epochs = list(recorded)
    if epochs != list(range(1, len(epochs) + 1)):
        raise ValueError(f"{run_dir}: recorded epochs {epochs} are not 1..{len(epochs)}")
    probs = np.stack([np.load(path).astype(np.float32) for path in recorded.values()])
    return epochs, probs, np.load(labels_path)


def stratified_halves(labels: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks (A, B) splitting each class's images at random into two halves."""
    half_a = np.zeros(len(labels), dtype=bool)
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        half_a[members[: len(members) // 2]] = True
    return half_a, ~half_a


def split_half_scores(probs: np.ndarray, labels: np.ndarray, pickers: dict, splits: int,
                      seed: int = 0) -> dict[str, np.ndarray]:
    """{rule: accuracies [2 * splits]}: for each random split, each rule picks an epoch on one half
    and is scored on the other, both ways round."""
    correct = probs.argmax(axis=-1) == labels[None, :]  # [E, N]
    rng = np.random.default_rng(seed)
    scores = {name: [] for name in pickers}
    for _ in range(splits):
        half_a, half_b = stratified_halves(labels, rng)
        for choose, score in ((half_a, half_b), (half_b, half_a)):
            chosen_on = correct[:, choose].mean(axis=1)
            scored_on = correct[:, score].mean(axis=1)
            for name, pick in pickers.items():
                scores[name].append(scored_on[pick(chosen_on)])
    return {name: np.array(values) for name, values in scores.items()}


def compare(run_dirs: list[Path], splits: int, seed: int = 0) -> str:
    """The markdown table: per run and on average, each rule's accuracy on the unseen half (mean
    over splits, %) and the epoch it keeps on the whole hold-out."""
    pickers = rule_pickers()
    header = "| run | epochs | hold-out images | " + " | ".join(pickers) + " |"
    lines = [header, "|" + "---|" * (3 + len(pickers))]
    means = {name: [] for name in pickers}
    for run_dir in run_dirs:
        epochs, probs, labels = load_record(run_dir)
        scores = split_half_scores(probs, labels, pickers, splits, seed)
        accuracy = (probs.argmax(axis=-1) == labels[None, :]).mean(axis=1)
        cells = []
        for name, pick in pickers.items():
            means[name].append(scores[name].mean())
            cells.append(f"{100 * scores[name].mean():.2f} (e{epochs[pick(accuracy)]})")
        lines.append(f"| {Path(run_dir).name} | {len(epochs)} | {len(labels)} | " + " | ".join(cells) + " |")
    if len(run_dirs) > 1:
        lines.append(f"| mean of {len(run_dirs)} runs | | | "
                     + " | ".join(f"{100 * np.mean(v):.2f}" for v in means.values()) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, help="run folders trained with --record-validation")
    p.add_argument("--splits", type=int, default=500, help="random half splits per run (default: 500)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.splits < 1:
        print("error: --splits must be at least 1", file=sys.stderr)
        return 2
    try:
        print(compare(args.runs, args.splits, args.seed), end="")
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
