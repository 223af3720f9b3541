"""Benchmark: the bulk job (bulk.py, Apache Beam) against infer.py --output on the same photos.

    python bench/bulk.py [--photos-per-class 200] [--rounds 3] [--model idenprof/pretrained/model.tflite]
                         [--archive ../shared/datasets/idenprof-jpg.zip] [--json results.json]

Extracts the first --photos-per-class IdenProf test photos of each class (200: the whole test split,
2,000 photos) into one folder, then in each round runs, in turn (the order swapped every other round,
so a change in the machine's load hits both alike):
  - `python infer.py FOLDER --model M --output rows.jsonl` (one process, as infer.py predicts folders);
  - `python bulk.py FOLDER --model M --output rows/` (Beam's DirectRunner, in that process).
Each is timed from process start to exit, start-up included, as images/s = photos / wall time;
medians over --rounds, and their ratio (the issue's target: the bulk job at 80% of infer.py or more).
Then checks the last round's rows: the same photos, the same top-1 class for every one, and the
largest difference of any probability. Never run in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from archive_photos import archive_test_photos  # noqa: E402
from results import write_results  # noqa: E402

from idenprof.predict.bulk import read_rows  # noqa: E402
from idenprof.predict.model_finding import PRETRAINED_MODEL  # noqa: E402

TARGET_RATIO = 0.8


def timed(args: list[str], cwd: Path) -> float:
    """Seconds from start to exit of `python args...`; raises on a non-zero exit."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed (exit {done.returncode}): {done.stderr[-2000:]}")
    return seconds


def compare(infer_rows: list[dict], bulk_rows: list[dict]) -> dict:
    """How the two jobs' rows agree: photos, top-1 classes, largest probability difference."""
    bulk = {row["path"]: row for row in bulk_rows}
    same_photos = sorted(bulk) == sorted(row["path"] for row in infer_rows)
    top1_same = sum(bulk[row["path"]]["predictions"][0]["class"] == row["predictions"][0]["class"]
                    for row in infer_rows if row["path"] in bulk)
    largest = max(abs(a["probability"] - b["probability"])
                  for row in infer_rows if row["path"] in bulk
                  for a, b in zip(row["predictions"], bulk[row["path"]]["predictions"], strict=True))
    return {"same_photos": same_photos, "top1_identical": top1_same, "rows": len(infer_rows),
            "largest_probability_difference": largest}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--photos-per-class", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3, help="turns of each job (median)")
    parser.add_argument("--model", type=Path, default=PRETRAINED_MODEL)
    parser.add_argument("--archive", type=Path, default=REPO.parent / "shared" / "datasets" / "idenprof-jpg.zip")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bulk-bench-") as tmp:
        work = Path(tmp)
        folder = work / "photos"
        folder.mkdir()
        for name, data in archive_test_photos(args.archive, args.photos_per_class):
            (folder / name).write_bytes(data)
        photos = len(list(folder.iterdir()))
        model = str(args.model.resolve())
        jobs = {
            "infer.py": lambda r: timed([str(REPO / "infer.py"), str(folder), "--model", model,
                                         "--output", str(work / f"infer-{r}.jsonl")], work),
            "bulk.py": lambda r: timed([str(REPO / "bulk.py"), str(folder), "--model", model,
                                        "--output", str(work / f"bulk-{r}")], work),
        }
        seconds: dict[str, list[float]] = {label: [] for label in jobs}
        loads = []
        for round_number in range(args.rounds):
            order = list(jobs) if round_number % 2 == 0 else list(reversed(jobs))
            for label in order:
                seconds[label].append(jobs[label](round_number))
                loads.append(os.getloadavg()[0])
                print(f"round {round_number + 1} {label:9s} {seconds[label][-1]:.1f} s "
                      f"({photos / seconds[label][-1]:.1f} images/s), load average {loads[-1]:.1f}", flush=True)
        rates = {label: photos / statistics.median(times) for label, times in seconds.items()}
        ratio = rates["bulk.py"] / rates["infer.py"]
        last = args.rounds - 1
        infer_rows = [json.loads(line) for line in (work / f"infer-{last}.jsonl").read_text().splitlines()]
        agreement = compare(infer_rows, read_rows(work / f"bulk-{last}"))

    for label, times in seconds.items():
        print(f"{label:9s} median {statistics.median(times):.1f} s, {rates[label]:.1f} images/s  "
              f"runs {' '.join(f'{t:.1f}' for t in times)}")
    per_round = [infer / bulk for infer, bulk in zip(seconds["infer.py"], seconds["bulk.py"], strict=True)]
    print(f"rows: {agreement['top1_identical']} of {agreement['rows']} top-1 identical, same photos "
          f"{agreement['same_photos']}, largest probability difference "
          f"{agreement['largest_probability_difference']:.2g}")
    print(f"bulk/infer images/s each round: {' '.join(f'{r:.2f}' for r in per_round)}; of the medians: "
          f"{ratio:.2f} (target >= {TARGET_RATIO}: {'met' if ratio >= TARGET_RATIO else 'missed'})")
    write_results(args.json, {"photos": photos, "model": str(args.model), "rounds": args.rounds,
                              "seconds": seconds, "images_per_s": rates, "ratio": ratio, "ratio_each_round": per_round,
                              "target_ratio": TARGET_RATIO, "load_average": loads, **agreement})
    print(f"ratio: {ratio:.2f}")


if __name__ == "__main__":
    main()
