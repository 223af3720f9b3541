"""Helpers for the web server tests: a tiny exported model and a real `serve.py` process."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from archive_subsets import REPO_ROOT

URL_LINE = re.compile(r"on (http://127\.0\.0\.1:\d+/)")
# The trained model shipped in idenprof/pretrained/ (int8 LiteRT, model.keras beside it for heat maps).
# Tests that need a model that really recognises professions use it; IDENPROF_TEST_MODEL overrides.
SHIPPED_MODEL = Path(
    os.environ.get("IDENPROF_TEST_MODEL", REPO_ROOT / "idenprof" / "pretrained" / "model.int8.tflite")
)


def export_tiny_model(out_dir: Path) -> Path:
    """The tests' tiny ResNet-18 (32 px, random weights) exported as model.tflite with
    model.keras and class_index.json beside it; returns the .tflite path."""
    from test_export import CLASS_NAMES, tiny_model

    from idenprof.ship.export import export_model

    export_model(tiny_model(), out_dir, CLASS_NAMES, formats=("keras", "tflite"))
    return out_dir / "model.tflite"


@contextlib.contextmanager
def running_server(*args: str, timeout_s: float = 180):
    """Start `python serve.py --port 0 *args` (127.0.0.1, a free port); yield (base URL,
    process) once it prints that it serves; stop it afterwards."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "serve.py"), "--port", "0", "--log-level", "warning",
         *args],
        cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + timeout_s
        url = None
        while url is None and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                raise RuntimeError(f"serve.py exited ({process.wait()}): {process.stderr.read()}")
            match = URL_LINE.search(line)
            url = match.group(1) if match else None
        if url is None:
            raise RuntimeError("serve.py did not start in time")
        yield url, process
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
