"""Package a trained run as the model shipped inside idenprof (idenprof.ship.packaging): calibrated,
with prediction sets and an optional "none of these" detector, evaluated, documented.

    python -m idenprof.cli.package runs/cpu-long-128px-seed2 --none-detector mahalanobis
    idenprof-package RUN_DIR [--out idenprof/pretrained] [--outlier-exposure EPOCHS]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from idenprof.errors import ConfigError, IdenprofError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from idenprof.ship.packaging import DEFAULT_OUT, NONE_DETECTORS

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.split("\n")[1:]))
    parser.add_argument("run_dir", type=Path, help="the training run folder (runs/...)")
    parser.add_argument("--data-dir", type=Path, help="dataset with train/ and test/ (default: the run's)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default: {DEFAULT_OUT})")
    parser.add_argument("--git-commit", help="commit that trained the run, when config.json lacks it")
    parser.add_argument("--none-detector", choices=NONE_DETECTORS,
                        help="add a detector to the model's own probabilities: mahalanobis, the distance-tempered "
                        "head (idenprof.predict.ood_head)")
    parser.add_argument("--outlier-exposure", type=int, default=0, metavar="EPOCHS",
                        help="first fine-tune this many epochs with outlier exposure, so that the model can say "
                        "'none of these' (default 0: off; needs the outlier packages docs/OOD.md lists)")
    parser.add_argument("--int8", action="store_true",
                        help="ship model.int8.tflite (LiteRT computing in int8) as infer.py's model instead of the "
                        "float32 model.tflite; evaluated, with thresholds fitted on its own hold-out answers")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """`idenprof-package` / `python -m idenprof.cli.package`: package a run; the exit code (2 for a bad
    run or data)."""
    args = parse_args(argv)
    from idenprof.ship.packaging import package_run
    from idenprof.tf_quiet import import_tensorflow_quietly

    import_tensorflow_quietly()
    try:
        if args.outlier_exposure < 0:
            raise ConfigError(f"--outlier-exposure takes a number of epochs, 0 or more; got {args.outlier_exposure}")
        package_run(args.run_dir, args.data_dir, args.out, git_commit=args.git_commit,
                    outlier_exposure=args.outlier_exposure, none_detector=args.none_detector, int8=args.int8)
    except IdenprofError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
