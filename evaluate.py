#!/usr/bin/env python
"""Evaluate a model on a folder of labelled photos: `python evaluate.py --help`. The command is
idenprof.cli.evaluate (also installed as `idenprof-evaluate`)."""

import os
import sys

# Before anything can import TensorFlow: keep its C++ start-up log off the user's terminal.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from idenprof.cli.evaluate import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
