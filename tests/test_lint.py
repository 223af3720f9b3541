"""The code passes ruff with the project's configuration (pyproject.toml)."""

import subprocess
import sys

from archive_subsets import REPO_ROOT


def test_ruff_finds_nothing():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", str(REPO_ROOT)],
                            capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-1000:]
