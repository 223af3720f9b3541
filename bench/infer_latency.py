"""Benchmark: how long `python infer.py photo.jpg` takes, and images/s, for each model format.

    python bench/infer_latency.py [--rounds 5] [--archive ../shared/datasets/idenprof-jpg.zip]
    python bench/infer_latency.py --model resnet18 --width 0.5 --stem small_pool --image-size 128
    python bench/infer_latency.py --formats tflite,onnx     # leave out the (slow) Keras runs
    python bench/infer_latency.py --trained idenprof/pretrained/model.keras --photos-per-class 200 \
        --formats keras,tflite,tflite_int8                # a trained model: test top-1 per format too

Builds a network (random weights: latency does not depend on them; default ResNet-50, 224x224,
10 classes), or takes the trained Keras model --trained, in a temporary run folder with train.py's
layout (best checkpoint .keras + export/ with model.tflite, model.onnx and model.int8.tflite, its
value ranges from 20 training photos per class), then measures, the formats taking turns in each round so that
a change in the machine's load hits them all alike:
  - cold start: process start to the fifth printed line of `python infer.py photo.jpg --model X`
    for the .keras checkpoint (Keras), .tflite (LiteRT) and .onnx (ONNX Runtime), and the default
    (no --model: the run folder's preferred export); median of --rounds;
  - where the .keras time goes: import, load, first and second prediction (with keras);
  - throughput in one process, load and one warm-up call excluded: model only (decoded pixels,
    batch --batch-size) and decode + resize + model (predict_files over a folder of real IdenProf
    test photos, --photos-per-class per class); median of --rounds;
  - `python infer.py <folder> --model X` wall time, start-up included (--folder-rounds turns);
  - with --trained, each format's top-1 on the photos (single view) and its agreement with float32.
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
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from archive_photos import archive_test_photos  # noqa: E402

from idenprof.data.imaging import load_image_rgb  # noqa: E402
from idenprof.predict.inference import predict_files  # noqa: E402
from idenprof.predict.loaders import load_predictor  # noqa: E402
from idenprof.run_folder import EXPORT_FILENAMES, RunFolder  # noqa: E402

CLASS_NAMES = ["chef", "doctor", "engineer", "farmer", "firefighter",
               "judge", "mechanic", "pilot", "police", "waiter"]
CHECKPOINT = "model-e001-val0.1000.keras"
# label -> the runtime it measures; the exported formats and the checkpoint.
RUNTIMES = {"keras": "Keras", "tflite": "LiteRT", "onnx": "ONNX Runtime", "tflite_int8": "LiteRT int8"}
REPRESENTATIVE_PER_CLASS = 20  # training photos per class setting the int8 model's value ranges
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
size = model.input_shape[1]
pixels = np.asarray(Image.open(sys.argv[2]).convert("RGB").resize((size, size)), np.float32)[None]
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


def time_folder(folder: Path, model_path: Path, cwd: Path) -> float:
    """Seconds for `python infer.py <folder> --model model_path`, start-up included."""
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, str(REPO / "infer.py"), str(folder), "--model", str(model_path)],
        cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - start


def in_turns(jobs: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """Each job once per round, in turn; {label: [result of each round]}."""
    results: dict[str, list[float]] = {label: [] for label in jobs}
    for _ in range(rounds):
        for label, job in jobs.items():
            results[label].append(job())
    return results


def extract_photos(archive: Path, dest: Path, per_class: int) -> Path:
    """`per_class` test photos per class into dest/photos/ (flat); returns the folder."""
    folder = dest / "photos"
    folder.mkdir()
    for name, data in archive_test_photos(archive, per_class):
        (folder / name).write_bytes(data)
    return folder


def make_run(workdir: Path, args: argparse.Namespace) -> Path:
    """workdir/runs/bench/ in train.py's layout, holding a random-weight network or --trained."""
    import keras

    from idenprof.class_index import write_class_index
    from idenprof.ship.export import export_model
    from models import build_model

    run = workdir / "runs" / "bench"
    run.mkdir(parents=True)
    if args.trained:
        model = keras.models.load_model(args.trained, compile=False)
        args.image_size = int(model.input_shape[1])
    else:
        model = build_model(args.model, input_shape=(args.image_size, args.image_size, 3),
                            classes=len(CLASS_NAMES), width=args.width, stem=args.stem)
    model.save(run / CHECKPOINT)
    write_class_index(CLASS_NAMES, run / "class_index.json")
    representative = None
    if "tflite_int8" in args.formats:
        representative = np.stack([load_image_rgb(data, size=args.image_size) for _, data in
                                   archive_test_photos(args.archive, REPRESENTATIVE_PER_CLASS, split="train")])
    exports = tuple(f for f in ("tflite", "onnx", "tflite_int8") if f in args.formats)
    export_model(model, run / "export", CLASS_NAMES, formats=exports, representative=representative)
    return run


def model_rate(predictor, pixels: np.ndarray, batch_size: int) -> float:
    start = time.perf_counter()
    predictor.predict(pixels, batch_size)
    return len(pixels) / (time.perf_counter() - start)


def pipeline_rate(predictor, photos: list[Path], batch_size: int) -> float:
    start = time.perf_counter()
    results, errors = predict_files(predictor, photos, batch_size=batch_size)
    assert len(results) == len(photos) and not errors
    return len(photos) / (time.perf_counter() - start)


def report(kind: str, label: str, times: list[float], unit: str, fmt: str) -> float:
    median = statistics.median(times)
    runs = " ".join(format(t, fmt) for t in times)
    print(f"{kind} {label:8s} median {median:{fmt}} {unit}  runs {runs}", flush=True)
    return median


def formats_arg(text: str) -> list[str]:
    formats = text.split(",")
    if not formats or not set(formats) <= set(RUNTIMES):
        raise argparse.ArgumentTypeError(f"choose from {','.join(RUNTIMES)}, got {text!r}")
    return formats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="resnet50", help="a models.MODEL_BUILDERS name")
    parser.add_argument("--trained", type=Path, help="a trained .keras model to measure instead (sets the size)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--stem", default="imagenet")
    parser.add_argument("--formats", type=formats_arg, default=list(RUNTIMES),
                        help=f"comma-separated, of {','.join(RUNTIMES)} (default: all)")
    parser.add_argument("--rounds", type=int, default=5, help="turns of each measurement (median)")
    parser.add_argument("--folder-rounds", type=int, default=1, help="turns of the infer.py <folder> timing")
    parser.add_argument("--photos-per-class", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--archive", type=Path, default=REPO.parent / "shared" / "datasets" / "idenprof-jpg.zip"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="infer-bench-") as tmp:
        workdir = Path(tmp)
        started = time.perf_counter()
        run = make_run(workdir, args)
        models = {fmt: run / CHECKPOINT if fmt == "keras" else run / "export" / EXPORT_FILENAMES[fmt]
                  for fmt in args.formats}
        default = RunFolder(run).model_for_inference()
        built = args.trained or f"{args.model} (width {args.width}, stem {args.stem})"
        print(f"built {built}, {args.image_size} px, run "
              f"folder in {time.perf_counter() - started:.1f} s; sizes: "
              + ", ".join(f"{p.name} {p.stat().st_size / 1e6:.1f} MB" for p in models.values())
              + f"; default (no --model): {default.relative_to(run)}", flush=True)
        folder = extract_photos(args.archive, workdir, args.photos_per_class)
        photos = sorted(folder.iterdir())

        jobs = {label: (lambda p=path: time_infer([str(photos[0]), "--model", str(p)], workdir))
                for label, path in models.items()}
        jobs["default"] = lambda: time_infer([str(photos[0])], workdir)
        cold = {label: report("cold start", label, times, "s", ".2f")
                for label, times in in_turns(jobs, args.rounds).items()}

        if "keras" in models:
            breakdown = subprocess.run(
                [sys.executable, "-c", KERAS_BREAKDOWN, str(models["keras"]), str(photos[0])],
                capture_output=True, text=True, check=True,
            )
            parts = json.loads(breakdown.stdout.strip().splitlines()[-1])
            print("keras breakdown: " + ", ".join(f"{k} {v:.2f}" for k, v in parts.items()), flush=True)

        predictors = {label: load_predictor(path) for label, path in models.items()}
        pixels = np.stack([load_image_rgb(p, size=args.image_size) for p in photos])
        for predictor in predictors.values():
            predict_files(predictor, photos[:1])  # warm-up: first-call allocations, XNNPACK setup
        model_jobs = {label: (lambda p=predictor: model_rate(p, pixels, args.batch_size))
                      for label, predictor in predictors.items()}
        rates = {label: report("throughput model-only", label, values, "images/s", ".1f")
                 for label, values in in_turns(model_jobs, args.rounds).items()}
        file_jobs = {label: (lambda p=predictor: pipeline_rate(p, photos, args.batch_size))
                     for label, predictor in predictors.items()}
        for label, values in in_turns(file_jobs, args.rounds).items():
            report("throughput files", label, values, "images/s", ".1f")
        print(f"(over {len(photos)} photos, batch {args.batch_size}, load excluded; "
              "files = decode + resize + model)", flush=True)

        folder_jobs = {label: (lambda p=path: time_folder(folder, p, workdir)) for label, path in models.items()}
        for label, times in in_turns(folder_jobs, args.folder_rounds).items():
            median = statistics.median(times)
            print(f"python infer.py <folder of {len(photos)}> --model {models[label].name}: {median:.1f} s "
                  f"wall, {len(photos) / median:.1f} images/s", flush=True)

        if args.trained:
            labels = np.array([CLASS_NAMES.index(p.name.rsplit("-", 1)[0]) for p in photos])
            answers = {label: predictor.predict(pixels, args.batch_size) for label, predictor in predictors.items()}
            reference = answers.get("keras", answers.get("tflite"))
            for label, probabilities in answers.items():
                print(f"top-1 {label:11s} {(probabilities.argmax(1) == labels).mean():.2%} of {len(photos)} photos; "
                      f"same top-1 as float32 {(probabilities.argmax(1) == reference.argmax(1)).mean():.2%}, "
                      f"largest probability difference {np.abs(probabilities - reference).max():.3f}", flush=True)

        fastest_start = min(models, key=cold.get)
        fastest_rate = max(models, key=rates.get)
        print(f"fastest cold start: {fastest_start} ({RUNTIMES[fastest_start]}, {cold[fastest_start]:.2f} s)")
        print(f"fastest throughput: {fastest_rate} ({RUNTIMES[fastest_rate]}, "
              f"{rates[fastest_rate]:.1f} images/s model-only)")
        print(f"cold_start_s: {cold['default']:.2f}")


if __name__ == "__main__":
    main()
