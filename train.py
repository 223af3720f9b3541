#!/usr/bin/env python
"""Train a ResNet on IdenProf: `python train.py --help`. The command is idenprof.cli.train (also
installed as `idenprof-train`)."""

import sys

from idenprof.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
