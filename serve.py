#!/usr/bin/env python
"""Serve the model as a web page and JSON API: `python serve.py --help`. The command is
idenprof.cli.serve (also installed as `idenprof-serve`)."""

import os
import sys

# Before anything can import TensorFlow: keep its C++ start-up log off the user's terminal.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from idenprof.cli.serve import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
