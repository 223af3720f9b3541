"""Real test photos for the benchmarks, read straight from the IdenProf release archive."""

from __future__ import annotations

import zipfile
from pathlib import Path


def archive_test_photos(archive: Path, per_class: int, split: str = "test") -> list[tuple[str, bytes]]:
    """(file name, bytes) of the first `per_class` photos of each class of `split` (test or train),
    in archive order. File names start with their class: chef-12.jpg."""
    taken: dict[str, int] = {}
    photos = []
    with zipfile.ZipFile(archive) as z:
        for name in sorted(z.namelist()):
            parts = name.split("/")
            if len(parts) == 4 and parts[1] == split and name.endswith(".jpg"):
                if taken.get(parts[2], 0) < per_class:
                    taken[parts[2]] = taken.get(parts[2], 0) + 1
                    photos.append((parts[3], z.read(name)))
    return photos
