"""Predict the top professions of photos with a trained IdenProf model.

    python infer.py photo.jpg                  # best model of the most recent finished run under runs/
    python infer.py photos/ more/*.jpg --top 3 --json
    python infer.py photo.jpg --model runs/resnet50/export/model.tflite

Prints `class : percent` lines, most likely first (a `==> file <==` header before each block when
there are several images). Exit code 0 when all went well, 1 when some images failed (each is
reported on stderr, the others are still predicted), 2 for usage and model errors.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

# Before anything can import TensorFlow: keep its C++ start-up log off the user's terminal.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from idenprof.errors import IdenprofError  # noqa: E402
from idenprof.inference import (  # noqa: E402
    expand_inputs,
    load_predictor,
    predict_files,
    resolve_model_path,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("inputs", nargs="+", help="image files, folders (not recursive) or globs")
    parser.add_argument("--top", type=int, default=5, help="how many classes to show (default 5)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.add_argument(
        "--model",
        help="a .keras/.h5/.tflite/.onnx file, SavedModel folder or run folder "
        "(default: best model of the most recent finished run under runs/)",
    )
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"), help="default: runs")
    parser.add_argument("--labels", type=Path, help="class index JSON (default: beside the model)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per model call")
    parser.add_argument(
        "--tta", action="store_true", help="average each image with its horizontal mirror"
    )
    return parser.parse_args(argv)


def print_text(results, with_headers: bool) -> None:
    for number, result in enumerate(results):
        if with_headers:
            if number:
                print()
            print(f"==> {result.path} <==")
        for name, probability in result.predictions:
            print(f"{name} : {probability * 100:.2f}")


def print_json(results) -> None:
    records = [
        {
            "path": result.path,
            "predictions": [
                {"class": name, "probability": probability}
                for name, probability in result.predictions
            ],
        }
        for result in results
    ]
    print(json.dumps(records, indent=2))


def main(argv: list[str] | None = None) -> int:
    """`infer.py` / `idenprof-infer`: predict and print; the exit code."""
    args = parse_args(argv)
    try:
        image_paths, errors = expand_inputs(args.inputs)
        results = []
        if image_paths:
            predictor = load_predictor(resolve_model_path(args.model, args.runs_dir), args.labels)
            results, load_errors = predict_files(
                predictor, image_paths, top_k=args.top, batch_size=args.batch_size, tta=args.tta
            )
            errors += load_errors
    except IdenprofError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print_json(results)
    else:
        # Headers whenever several images were asked for, so a failed one cannot shift blocks.
        print_text(results, with_headers=len(image_paths) > 1)
    for error in errors:
        print(f"error: {error.message}", file=sys.stderr)
    return 1 if errors else 0
