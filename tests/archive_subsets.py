"""Small IdenProf subsets built at test time from the real archive (never committed)."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
REAL_ARCHIVE = Path(
    os.environ.get(
        "IDENPROF_TEST_ARCHIVE",
        REPO_ROOT.parent / "shared" / "datasets" / "idenprof-jpg.zip",
    )
)
CLASS_NAMES = [
    "chef", "doctor", "engineer", "farmer", "firefighter",
    "judge", "mechanic", "pilot", "police", "waiter",
]


def real_archive() -> Path:
    if not REAL_ARCHIVE.is_file():
        raise FileNotFoundError(
            f"the real IdenProf archive is not at {REAL_ARCHIVE}; "
            "set IDENPROF_TEST_ARCHIVE to its path"
        )
    return REAL_ARCHIVE


def make_subset_archive(
    dest: Path,
    per_class_train: int,
    per_class_test: int,
    classes: list[str] | None = None,
    keep_thumbs_db: bool = True,
) -> Path:
    """Write a zip with the release layout (idenprof/<split>/<class>/...) holding the first
    `per_class_*` JPEGs of each class (sorted by name) from the real archive."""
    classes = classes or CLASS_NAMES
    wanted: dict[tuple[str, str], int] = {}
    with zipfile.ZipFile(real_archive()) as src, zipfile.ZipFile(dest, "w") as out:
        names = sorted(n for n in src.namelist() if not n.endswith("/"))
        for name in names:
            parts = name.split("/")
            if len(parts) != 4:
                continue
            _, split, cls, fname = parts
            if cls not in classes:
                continue
            if fname == "Thumbs.db":
                if keep_thumbs_db:
                    out.writestr(name, src.read(name))
                continue
            limit = per_class_train if split == "train" else per_class_test
            if wanted.get((split, cls), 0) < limit:
                wanted[(split, cls)] = wanted.get((split, cls), 0) + 1
                out.writestr(name, src.read(name))
    return dest


def extract_subset(archive: Path, target_parent: Path) -> Path:
    """Extract a subset archive made above; returns the dataset root (holding train/ and test/)."""
    with zipfile.ZipFile(archive) as z:
        z.extractall(target_parent)
    return target_parent / "idenprof"
