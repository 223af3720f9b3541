"""Import TensorFlow without its native start-up chatter on stderr.

TensorFlow 2.21 prints INFO lines from C++ (oneDNN notes, CUDA probing) before its logging is
initialised, so TF_CPP_MIN_LOG_LEVEL cannot hide them; they would bury our one-line errors.
We hide the process's stderr while TensorFlow starts, unless TF_CPP_MIN_LOG_LEVEL is "0"
(set it to see everything, e.g. when debugging a CUDA install).
"""

from __future__ import annotations

import contextlib
import os
import sys


@contextlib.contextmanager
def native_stderr_silenced():
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0") == "0":
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def import_tensorflow_quietly():
    """Import TensorFlow and let it probe its devices with native stderr hidden; returns the module."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with native_stderr_silenced():
        import tensorflow as tf

        tf.config.list_physical_devices()
    return tf
