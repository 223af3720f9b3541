"""Shared fixtures: small real-data subsets of IdenProf, made once per pytest run."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Quiet TensorFlow's C++ start-up chatter in test output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from archive_subsets import extract_subset, make_subset_archive, real_archive  # noqa: E402


@pytest.fixture(scope="session")
def real_archive_path() -> Path:
    return real_archive()


@pytest.fixture(scope="session")
def small_archive(tmp_path_factory) -> Path:
    """A release-layout zip: 8 train and 4 test JPEGs per class, plus the Thumbs.db files."""
    return make_subset_archive(tmp_path_factory.mktemp("archive") / "idenprof-small.zip", 8, 4)


@pytest.fixture(scope="session")
def small_dataset(small_archive, tmp_path_factory) -> Path:
    """The small archive extracted: <root>/train/<class>/*.jpg and <root>/test/<class>/*.jpg.
    Treat as read-only; copy it (shutil.copytree) before modifying."""
    return extract_subset(small_archive, tmp_path_factory.mktemp("dataset"))


@pytest.fixture(scope="session")
def export_dir(tmp_path_factory) -> Path:
    """Every export format of a tiny (untrained) model with the IdenProf class names. Read-only."""
    from test_export import CLASS_NAMES, tiny_model

    from idenprof.ship.export import export_model

    out_dir = tmp_path_factory.mktemp("export")
    export_model(tiny_model(), out_dir, CLASS_NAMES)
    return out_dir


@pytest.fixture(scope="session")
def photos(small_dataset) -> list[Path]:
    """One real IdenProf test photo per class, in class order."""
    from test_export import one_test_image_per_class

    return one_test_image_per_class(small_dataset)
