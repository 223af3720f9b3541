"""The command lines: train.py, infer.py, evaluate.py and serve.py parse flags here and call the library."""


def add_threshold_flags(parser, min_confidence: bool = True) -> None:
    """The answer thresholds, declared once for every command that answers: --none-threshold S,
    --coverage P (and --min-confidence P); they default to the calibration.json beside the model."""
    if min_confidence:
        parser.add_argument(
            "--min-confidence", type=float, metavar="P",
            help="say 'not sure' when the top probability is below P (0..1; default: "
            "min_confidence in calibration.json beside the model, else 0)")
    parser.add_argument(
        "--none-threshold", type=float, metavar="S",
        help="say 'none of the professions' when the none-score is above S (0..1; default: "
        "none_threshold in calibration.json beside the model, else never)")
    parser.add_argument(
        "--coverage", type=float, metavar="P",
        help="prediction sets that hold the true profession for a share P of photos like the "
        "model's hold-out (0..1, exclusive; default 0.9); needs conformal scores in "
        "calibration.json beside the model")
