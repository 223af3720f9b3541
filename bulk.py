#!/usr/bin/env python
"""Classify many photos on Ray Data, on this machine or a cluster: `python bulk.py --help`. The
command is idenprof.cli.bulk (also installed as `idenprof-bulk`)."""

import os
import sys

# Before anything can import TensorFlow: keep its C++ start-up log off the user's terminal.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from idenprof.cli.bulk import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
