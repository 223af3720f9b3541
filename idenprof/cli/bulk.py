"""Classify a folder, a glob or a list of files and URLs in bulk, on this machine or a cluster.

    python bulk.py photos/ --output rows/                        # Apache Beam's DirectRunner, here
    python bulk.py urls.txt more/ --output rows/ --format parquet --rows-per-shard 50000
    python bulk.py /shared/photos --output /shared/rows --runner FlinkRunner --flink_master=HOST:8081 \\
        --environment_type=DOCKER --sdk_container_image=IMAGE      # any other Beam option passes through

Writes the rows `infer.py --output` writes (path, top classes, unsure, none-score, none of these,
prediction set, error) to shards rows-NNNNN-of-NNNNN.jsonl (or .parquet) in the --output folder. An
input that cannot be read (missing, not an image, a failed URL) is a row with its error; the job
goes on. Exit code 0 when the job ran (error rows included), 2 for usage, input and model errors.
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
from idenprof.predict.bulk import OUTPUT_FORMATS, BulkJob, run_bulk  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    # No abbreviations: a Beam option must never be taken for a prefix of ours.
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False,
                                     epilog="Other --options go to Apache Beam as pipeline options.")
    parser.add_argument("sources", nargs="+",
                        help="folders (subfolders included), globs, image files, http(s) URLs, and .txt files "
                        "listing files or URLs one a line")
    parser.add_argument("--output", "-o", type=Path, required=True, metavar="FOLDER",
                        help="a new or empty folder for the shards")
    parser.add_argument("--format", choices=OUTPUT_FORMATS, default="jsonl", help="shard format (default jsonl)")
    parser.add_argument("--rows-per-shard", type=int, default=BulkJob.rows_per_shard,
                        help=f"about this many rows per shard (default {BulkJob.rows_per_shard})")
    parser.add_argument("--runner", default="DirectRunner",
                        help="Beam runner: DirectRunner (default: in this process), FlinkRunner, SparkRunner, "
                        "DataflowRunner, PortableRunner, ... with its own options")
    parser.add_argument("--model", help="as infer.py's --model (default: its default)")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"), help="default: runs")
    parser.add_argument("--labels", help="class index JSON (default: beside the model)")
    parser.add_argument("--top", type=int, default=5, help="classes per row (default 5)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per model call")
    parser.add_argument("--tta", action="store_true", help="average each image with its horizontal mirror")
    add_threshold_flags(parser)
    args, beam_options = parser.parse_known_args(argv)
    strays = [option for option in beam_options if not option.startswith("--")]
    if strays:
        parser.error(f"unrecognized arguments: {' '.join(strays)} (Beam options are --name=value)")
    args.pipeline_args = [f"--runner={args.runner}", *beam_options]
    return args


def main(argv: list[str] | None = None) -> int:
    """`bulk.py` / `idenprof-bulk`: run the job, print a summary; the exit code."""
    args = parse_args(argv)
    job = BulkJob(sources=args.sources, output=args.output, output_format=args.format,
                  rows_per_shard=args.rows_per_shard, pipeline_args=args.pipeline_args,
                  batch_size=args.batch_size, model=args.model, labels=args.labels, runs_dir=args.runs_dir,
                  top=args.top, tta=args.tta, min_confidence=args.min_confidence,
                  none_threshold=args.none_threshold, coverage=args.coverage)
    try:
        summary = run_bulk(job)
    except IdenprofError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{summary.rows} rows ({summary.errors} errors) in {len(summary.shards)} shards in {args.output}")
    return 0
