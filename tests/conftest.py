"""Shared fixtures: small real-data subsets of IdenProf, made once per test session."""

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
