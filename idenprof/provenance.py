"""Where a model came from: the command line and the git commit of the code that trained it."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

SOURCE_DIR = Path(__file__).resolve().parents[1]


def command_line(argv: list[str] | None = None) -> str:
    """The command as typed: `python train.py --preset cpu` (or `idenprof-train --preset cpu`)."""
    argv = list(sys.argv if argv is None else argv)
    if argv and argv[0].endswith(".py"):
        return shlex.join(["python", Path(argv[0]).name, *argv[1:]])
    return shlex.join([Path(argv[0]).name if argv else "python", *argv[1:]])


def git_commit(folder: Path = SOURCE_DIR) -> dict | None:
    """{"commit": 40 hex digits, "dirty": uncommitted changes to tracked files} of the checkout
    holding `folder`; None outside a git checkout or without git."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True,
                              check=True, timeout=20).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": dirty}
