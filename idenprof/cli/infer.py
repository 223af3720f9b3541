"""Predict the top professions of photos with a trained IdenProf model.

    python infer.py photo.jpg                  # best model of the most recent finished run under runs/
                                               # (the pretrained model shipped in idenprof/ without one)
    python infer.py photos/ more/*.jpg --top 3 --json
    python infer.py photo.jpg --model runs/resnet50/export/model.tflite
    python infer.py photo.jpg --min-confidence 0.5

Prints `class : percent` lines, most likely first (a `==> file <==` header before each block when
there are several images), then "none of the 10 professions (score S)" under a block whose photo
most likely shows none of them (the none-score above --none-threshold, default from calibration.json
beside the model), or else "not sure — ..." under one whose top probability is below the confidence
threshold (--min-confidence, default from calibration.json too).
Exit code 0 when all went well, 1 when some images failed (each is reported on stderr, the
others are still predicted), 2 for usage and model errors.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

# Before anything can import TensorFlow: keep its C++ start-up log off the user's terminal.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from idenprof.cli import add_threshold_flags  # noqa: E402
from idenprof.errors import ConfigError, IdenprofError  # noqa: E402
from idenprof.predict.classifier import (  # noqa: E402
    Classifier,
    checked_coverage,
    load,
    none_message,
    set_message,
    unsure_message,
)
from idenprof.predict.inputs import expand_inputs  # noqa: E402
from idenprof.predict.outputs import check_output_path, prediction_rows, write_predictions  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("inputs", nargs="+", help="image files, folders, globs or http(s) URLs")
    parser.add_argument("--recursive", "-r", action="store_true",
                        help="take the images of folders' subfolders too (folders of folders)")
    parser.add_argument("--output", "-o", type=Path, metavar="FILE",
                        help="also write one row per image to FILE.csv, FILE.json or FILE.jsonl")
    parser.add_argument("--top", type=int, default=5, help="how many classes to show (default 5)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.add_argument(
        "--model",
        help="a .keras/.h5/.tflite/.onnx file, SavedModel folder, export/ folder or run folder "
        "(default: best model of the most recent finished run under runs/, else the pretrained "
        "model in idenprof/pretrained/)",
    )
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"), help="default: runs")
    parser.add_argument("--labels", type=Path, help="class index JSON (default: beside the model)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per model call")
    parser.add_argument(
        "--tta", action="store_true", help="average each image with its horizontal mirror"
    )
    add_threshold_flags(parser)
    return parser.parse_args(argv)


def print_text(classifier: Classifier, results, with_headers: bool, top: int) -> None:
    for number, result in enumerate(results):
        if with_headers:
            if number:
                print()
            print(f"==> {result.path} <==")
        for name, probability in result.predictions[:top]:
            print(f"{name} : {probability * 100:.2f}")
        if classifier.is_none_of_these(result.predictions):
            print(none_message(len(classifier.class_names), classifier.none_score(result.predictions)))
            continue
        classes = classifier.prediction_set(result.predictions)
        if classes is not None:
            print(set_message(classes, classifier.coverage))
        if classifier.is_unsure(result.predictions):
            print(unsure_message(len(classifier.class_names)))


def print_json(classifier: Classifier, results, top: int) -> None:
    records = [
        {"path": result.path, **classifier.prediction_json(result.predictions, top)}
        for result in results
    ]
    print(json.dumps(records, indent=2, ensure_ascii=False))


def main(argv: list[str] | None = None) -> int:
    """`infer.py` / `idenprof-infer`: predict and print; the exit code."""
    args = parse_args(argv)
    try:
        if args.top < 1:
            raise ConfigError(f"--top must be at least 1, got {args.top}")
        if args.output is not None:
            check_output_path(args.output)
        image_paths, errors = expand_inputs(args.inputs, recursive=args.recursive)
        results, classifier = [], None
        if image_paths:
            classifier = load(args.model, labels=args.labels, runs_dir=args.runs_dir,
                              min_confidence=args.min_confidence, none_threshold=args.none_threshold,
                              coverage=None if args.coverage is None else checked_coverage(args.coverage, "--coverage"))
            # Every class is predicted: a prediction set may reach past the top shown.
            results, load_errors = classifier.predict_files(
                image_paths, top=len(classifier.class_names), tta=args.tta, batch_size=args.batch_size,
                progress=True
            )
            errors += load_errors
        if args.output is not None:
            rows = prediction_rows(image_paths, results, errors, classifier, args.top)
            write_predictions(args.output, rows, top=min(args.top, len(classifier.class_names)) if classifier
                              else args.top)
    except IdenprofError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print_json(classifier, results, args.top)
    else:
        # Headers whenever several images were asked for, so a failed one cannot shift blocks.
        print_text(classifier, results, with_headers=len(image_paths) > 1, top=args.top)
    for error in errors:
        print(f"error: {error.message}", file=sys.stderr)
    return 1 if errors else 0
