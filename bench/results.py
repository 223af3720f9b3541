"""What a benchmark keeps besides its printed table: its results as JSON (--json PATH)."""

from __future__ import annotations

import json
from pathlib import Path


def write_results(path: Path | None, results: dict) -> None:
    """Write `results` as indented JSON to `path` (its folder made); nothing when `path` is None."""
    if path is None:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
