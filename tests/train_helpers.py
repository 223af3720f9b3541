"""Running train.py as a user would (a subprocess), for the training tests."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from archive_subsets import REPO_ROOT

TRAIN_PY = REPO_ROOT / "train.py"
# Small and quick: a quarter-width ResNet-18 with the small stem on 32 px images.
TINY = ["--model", "resnet18", "--width", "0.25", "--stem", "small", "--image-size", "32",
        "--batch-size", "16", "--precision", "float32", "--quiet"]


def train_env(extra=None) -> dict:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(extra or {})}


def run_train(args, cwd=None, timeout=600, env_extra=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TRAIN_PY), *map(str, args)], cwd=cwd,
                          env=train_env(env_extra), capture_output=True, text=True, timeout=timeout)


def metrics_rows(run_dir: Path) -> list[dict]:
    with open(Path(run_dir) / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def kill_during_epoch(args, run_dir: Path, finished_epochs: int, timeout_s: float = 300) -> int:
    """Start train.py, SIGKILL it shortly after `finished_epochs` epochs are logged (inside the
    next epoch). Returns how many epochs the CSV holds after the kill."""
    proc = subprocess.Popen([sys.executable, str(TRAIN_PY), *map(str, args)], env=train_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and proc.poll() is None:
            if (run_dir / "metrics.csv").exists() and len(metrics_rows(run_dir)) >= finished_epochs:
                time.sleep(0.5)  # now inside the next epoch
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.2)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    return len(metrics_rows(run_dir))
