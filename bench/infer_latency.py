"""Benchmark: how long `python infer.py photo.jpg` takes, and images/s for a folder of photos.

    python bench/infer_latency.py [--runs 5] [--archive ../shared/datasets/idenprof-jpg.zip]

Builds a ResNet-50 (random weights: latency does not depend on them; 224x224, 10 classes) in a
temporary run folder with train.py's layout (best checkpoint .keras + export/), then measures:
  - cold start: process start to the fifth printed line, for --model .keras, --model .tflite
    and the default (no --model, which resolves the run to export/model.tflite); median of --runs;
  - where the .keras time goes: import, load, first and second prediction;
  - throughput: images/s over a folder of 200 real IdenProf photos (20 per class, extracted from
    the archive to a temporary folder), start-up excluded and included.
Never run in CI. The last line is `cold_start_s: X` for the default path.
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
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from idenprof.inference import load_predictor, predict_files  # noqa: E402

PHOTOS_PER_CLASS = 20
# Run in a fresh process: what the first `infer.py` call with a .keras model pays.
KERAS_BREAKDOWN = """
import json, os, sys, time
start = time.perf_counter()
import keras
import numpy as np
from PIL import Image
imported = time.perf_counter()
model = keras.models.load_model(sys.argv[1], compile=False)
loaded = time.perf_counter()
pixels = np.asarray(Image.open(sys.argv[2]).convert("RGB").resize((224, 224)), np.float32)[None]
model(pixels, training=False)
first = time.perf_counter()
model(pixels, training=False)
second = time.perf_counter()
print(json.dumps({"import_s": imported - start, "load_s": loaded - imported,
                  "first_predict_s": first - loaded, "second_predict_s": second - first}))
"""


def time_infer(args: list[str], cwd: Path) -> float:
    """Seconds from process start to the fifth prediction line on stdout."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    start = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, str(REPO / "infer.py"), *args],
        cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
    )
    lines = 0
    for line in process.stdout:
        lines += " : " in line
        if lines == 5:
            break
    answered = time.perf_counter() - start
    process.communicate()
    if process.returncode != 0 or lines < 5:
        raise RuntimeError(f"infer.py {' '.join(args)} failed (exit {process.returncode})")
    return answered


def median_runs(args: list[str], cwd: Path, runs: int) -> tuple[float, list[float]]:
    times = [time_infer(args, cwd) for _ in range(runs)]
    return statistics.median(times), times


def extract_photos(archive: Path, dest: Path) -> tuple[Path, Path]:
    """20 test photos per class into dest/photos/ (flat); returns (folder, one photo)."""
    folder = dest / "photos"
    folder.mkdir()
    taken: dict[str, int] = {}
    with zipfile.ZipFile(archive) as z:
        for name in sorted(z.namelist()):
            parts = name.split("/")
            if len(parts) == 4 and parts[1] == "test" and name.endswith(".jpg"):
                if taken.get(parts[2], 0) < PHOTOS_PER_CLASS:
                    taken[parts[2]] = taken.get(parts[2], 0) + 1
                    (folder / parts[3]).write_bytes(z.read(name))
    photos = sorted(folder.iterdir())
    return folder, photos[0]


def make_run(workdir: Path) -> Path:
    """workdir/runs/bench/ in train.py's layout, holding a random-weight ResNet-50."""
    from idenprof.class_index import write_class_index
    from idenprof.export import export_model
    from models import ResNet50

    class_names = ["chef", "doctor", "engineer", "farmer", "firefighter",
                   "judge", "mechanic", "pilot", "police", "waiter"]
    run = workdir / "runs" / "bench"
    run.mkdir(parents=True)
    model = ResNet50(input_shape=(224, 224, 3), classes=len(class_names))
    model.save(run / "model-e001-val0.1000.keras")
    write_class_index(class_names, run / "class_index.json")
    export_model(model, run / "export", class_names, formats=("keras", "tflite"))
    return run


def throughput(model_path: Path, photos: list[Path], batch_size: int) -> float:
    """Images/s of predict_files (decode, resize, model), after loading and one warm-up."""
    predictor = load_predictor(model_path)
    predict_files(predictor, photos[:1])
    start = time.perf_counter()
    results, errors = predict_files(predictor, photos, batch_size=batch_size)
    assert len(results) == len(photos) and not errors
    return len(photos) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="cold starts per model (median)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--archive", type=Path, default=REPO.parent / "shared" / "datasets" / "idenprof-jpg.zip"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="infer-bench-") as tmp:
        workdir = Path(tmp)
        started = time.perf_counter()
        run = make_run(workdir)
        print(f"built ResNet-50 run folder in {time.perf_counter() - started:.1f} s: "
              f"{sorted(p.name for p in run.iterdir())}", flush=True)
        folder, photo = extract_photos(args.archive, workdir)
        photos = sorted(folder.iterdir())
        checkpoint = run / "model-e001-val0.1000.keras"
        tflite = run / "export" / "model.tflite"

        results = {}
        for label, model_args in (("keras", ["--model", str(checkpoint)]),
                                  ("tflite", ["--model", str(tflite)]),
                                  ("default", [])):
            median, times = median_runs([str(photo), *model_args], workdir, args.runs)
            results[label] = median
            print(f"cold start {label:8s} median {median:.2f} s  runs {[round(t, 2) for t in times]}",
                  flush=True)

        breakdown = subprocess.run(
            [sys.executable, "-c", KERAS_BREAKDOWN, str(checkpoint), str(photo)],
            capture_output=True, text=True, check=True,
        )
        parts = json.loads(breakdown.stdout.strip().splitlines()[-1])
        print("keras breakdown: " + ", ".join(f"{k} {v:.2f}" for k, v in parts.items()), flush=True)

        for label, model_path in (("tflite", tflite), ("keras", checkpoint)):
            rate = throughput(model_path, photos, args.batch_size)
            print(f"throughput {label:6s} {rate:.1f} images/s over {len(photos)} photos "
                  f"(batch {args.batch_size}, load excluded)", flush=True)
            whole = time_folder(folder, model_path, workdir)
            print(f"  python infer.py <folder of {len(photos)}> --model {model_path.name}: "
                  f"{whole:.1f} s wall, {len(photos) / whole:.1f} images/s", flush=True)
        print(f"cold_start_s: {results['default']:.2f}")


def time_folder(folder: Path, model_path: Path, cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, str(REPO / "infer.py"), str(folder), "--model", str(model_path)],
        cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
