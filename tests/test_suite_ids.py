"""The suite collects the same test IDs in every process: pytest-xdist's workers each collect the
suite and refuse to run ("Different tests were collected") when their lists differ, which a
parameter holding the time (gzip's header), a random value or a hash-ordered set would cause."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from archive_subsets import REPO_ROOT


def collected_ids(hash_seed: str) -> list[str]:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-n", "0", "-m", "", "-p", "no:cacheprovider"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return [line for line in result.stdout.splitlines() if "::" in line]


def test_two_collections_seconds_apart_with_other_hash_seeds_agree():
    first = collected_ids("1")
    time.sleep(1.1)  # a parameter carrying the wall-clock second must differ between the two
    second = collected_ids("2")
    assert len(first) > 500  # the whole suite, slow tests included
    assert first == second, sorted(set(first) ^ set(second))[:10]
