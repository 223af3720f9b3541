#!/usr/bin/env python
"""Predict the professions in photos: `python infer.py --help`. The command is idenprof.cli.infer
(also installed as `idenprof-infer`)."""

import os
import sys

# Before anything can import TensorFlow: keep its C++ start-up log off the user's terminal.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from idenprof.cli.infer import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
