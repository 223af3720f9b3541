"""Evaluate a trained IdenProf model on a folder of labelled photos (one subfolder per class).

    python evaluate.py data/idenprof/test                      # best model of the latest run
    python evaluate.py --model idenprof/pretrained/model.int8.tflite my_photos/ --out my_eval --tta

Writes report.json, confusion_matrix.png, reliability_diagram.png, top_mistakes.png and
predictions.csv to --out and prints a summary. Exit code 0 when every image was evaluated, 1 when
some could not be read (each named on stderr; the rest are evaluated), 2 for usage, model and
folder errors (such as a class folder the model does not know).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# Before anything can import TensorFlow: keep its C++ start-up log off the user's terminal.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from idenprof.cli import add_threshold_flags  # noqa: E402
from idenprof.errors import IdenprofError  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.split("\n")[1:]))
    parser.add_argument("data_dir", type=Path, help="folder with one subfolder of photos per class")
    parser.add_argument(
        "--model",
        help="a .keras/.h5/.tflite file, SavedModel folder or run folder "
        "(default: as infer.py: the latest finished run under runs/, else the pretrained model)",
    )
    parser.add_argument("--out", type=Path, default=Path("evaluation"),
                        help="output folder (default: evaluation)")
    parser.add_argument("--tta", action="store_true", help="average each image with its mirror")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"), help="default: runs")
    parser.add_argument("--labels", type=Path, help="class index JSON (default: beside the model)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per model call")
    parser.add_argument("--unknown", type=Path, metavar="DIR",
                        help="a folder of photos of none of the classes: report how well the none-score "
                        "flags them (AUROC, FPR at 95%% TPR)")
    add_threshold_flags(parser, min_confidence=False)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """`evaluate.py` / `idenprof-evaluate`: evaluate, write the report, print a summary."""
    args = parse_args(argv)
    from idenprof.predict.classifier import checked_coverage, checked_unit
    from idenprof.predict.evaluation import evaluate_folder, summary_lines
    from idenprof.predict.loaders import load_predictor
    from idenprof.predict.model_finding import resolve_model_path

    try:
        if args.batch_size < 1:
            raise IdenprofError(f"--batch-size must be at least 1, got {args.batch_size}")
        options = {}
        if args.none_threshold is not None:
            options["none_threshold"] = checked_unit(args.none_threshold, "none_threshold", "score",
                                                     "--none-threshold")
        if args.coverage is not None:
            options["coverage"] = checked_coverage(args.coverage, "--coverage")
        predictor = load_predictor(resolve_model_path(args.model, args.runs_dir), args.labels)
        print(f"model: {predictor.model_path}")
        report = evaluate_folder(predictor, args.data_dir, args.out, unknown_dir=args.unknown, **options,
                                 tta=args.tta,
                                 batch_size=args.batch_size, split_name=args.data_dir.name,
                                 progress=sys.stderr.isatty())
    except IdenprofError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # e.g. an unwritable --out
        print(f"error: {e.filename or args.out}: {e.strerror}", file=sys.stderr)
        return 2
    for line in summary_lines(report):
        print(line)
    print(f"report: {args.out / 'report.json'} (and the pictures beside it)")
    for item in report["unreadable"]:
        print(f"error: {args.data_dir / item['path']}: {item['reason']}", file=sys.stderr)
    return 1 if report["unreadable"] else 0
