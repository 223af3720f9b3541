"""Scanning and checking the class-folder layout; cross-split duplicates; stratified hold-out."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from archive_subsets import CLASS_NAMES
from PIL import Image

from idenprof.data.dataset import scan_dataset, stratified_split
from idenprof.data.download import extract_archive
from idenprof.errors import DatasetError


@pytest.fixture
def dataset_copy(small_dataset, tmp_path) -> Path:
    return Path(shutil.copytree(small_dataset, tmp_path / "idenprof"))


def test_class_names_are_sorted_folder_names_and_labels_follow_folders(small_dataset):
    layout = scan_dataset(small_dataset)
    assert layout.class_names == sorted(CLASS_NAMES)
    for split in ("train", "test"):
        for path, label in layout.samples[split]:
            assert Path(path).parent.name == layout.class_names[label]
            assert Path(path).parent.parent.name == split


def test_counts_per_split_and_class(small_dataset):
    layout = scan_dataset(small_dataset)
    assert layout.counts("train") == [8] * 10
    assert layout.counts("test") == [4] * 10


def test_thumbs_db_is_not_a_sample(small_dataset):
    assert list(small_dataset.glob("*/*/Thumbs.db"))  # the subset really has them
    layout = scan_dataset(small_dataset)
    all_paths = [p for split in layout.samples.values() for p, _ in split]
    assert all(p.endswith(".jpg") for p in all_paths)


def test_samples_are_sorted_and_scans_repeat(small_dataset):
    first, second = scan_dataset(small_dataset), scan_dataset(small_dataset)
    assert first.samples == second.samples
    assert first.samples["train"] == sorted(first.samples["train"])


def test_report_lists_root_classes_counts_and_totals(small_dataset):
    report = scan_dataset(small_dataset).report()
    assert str(small_dataset) in report
    lines = report.splitlines()
    assert any(line.split() == ["chef", "8", "4"] for line in lines)
    assert any(line.split() == ["total", "80", "40"] for line in lines)
    assert "duplicates: 0 " in report


def test_any_class_folder_dataset_works(tmp_path):
    for split, n in (("train", 3), ("test", 2)):
        for name in ("dogs", "cats"):
            (tmp_path / split / name).mkdir(parents=True)
            for i in range(n):
                pixels = np.full((8, 8, 3), i * 40 + len(name), dtype=np.uint8)
                Image.fromarray(pixels).save(tmp_path / split / name / f"{split}{i}.png")
    layout = scan_dataset(tmp_path)
    assert layout.class_names == ["cats", "dogs"]
    assert layout.counts("train") == [3, 3] and layout.counts("test") == [2, 2]


def test_copied_file_is_found_as_cross_split_duplicate(dataset_copy):
    source = sorted((dataset_copy / "train" / "judge").glob("*.jpg"))[2]
    copy = dataset_copy / "test" / "judge" / "copied-from-train.jpg"
    shutil.copyfile(source, copy)
    layout = scan_dataset(dataset_copy)
    assert layout.duplicates == [(str(source), str(copy))]
    assert "duplicates: 1 " in layout.report()
    train = layout.train_without_test_duplicates()
    test = layout.test_without_train_duplicates()
    assert len(train) == 79 and str(source) not in {p for p, _ in train}
    assert len(test) == 40 and str(copy) not in {p for p, _ in test}


def test_same_size_different_bytes_is_not_a_duplicate(dataset_copy):
    source = sorted((dataset_copy / "train" / "chef").glob("*.jpg"))[0]
    data = bytearray(source.read_bytes())
    data[-3] ^= 0x01
    (dataset_copy / "test" / "chef" / "almost.jpg").write_bytes(bytes(data))
    assert scan_dataset(dataset_copy).duplicates == []


@pytest.mark.parametrize(
    ("break_it", "named"),
    [
        (lambda root: shutil.rmtree(root), "does not exist"),
        (lambda root: [shutil.rmtree(p) for p in list(root.iterdir())], "is empty"),
        (lambda root: shutil.rmtree(root / "test"), "no test/ folder"),
        (lambda root: shutil.rmtree(root / "test" / "pilot"), "no folder for class(es) pilot"),
        (lambda root: (root / "test" / "astronaut").mkdir(), "astronaut that train/ lacks"),
        (
            lambda root: [p.unlink() for p in (root / "train" / "farmer").glob("*.jpg")],
            "farmer has no image files",
        ),
    ],
    ids=[
        "missing-root",
        "empty-root",
        "missing-split",
        "missing-class",
        "extra-class",
        "no-images",
    ],
)
def test_broken_layouts_name_the_problem(dataset_copy, break_it, named):
    break_it(dataset_copy)
    with pytest.raises(DatasetError) as err:
        scan_dataset(dataset_copy)
    assert named in str(err.value)
    assert "\n" not in str(err.value)


def test_a_subfolder_inside_a_class_folder_is_named_in_a_warning(dataset_copy):
    nested = dataset_copy / "train" / "chef" / "more"
    nested.mkdir()
    shutil.copy(next((dataset_copy / "train" / "chef").glob("*.jpg")), nested / "extra.jpg")
    layout = scan_dataset(dataset_copy)
    assert layout.warnings == [
        f"{nested}/ is ignored: images of class chef must be directly in {nested.parent}/, not in a subfolder"
    ]
    assert not any("more" in path for path, _ in layout.samples["train"])


def labels(n_per_class: dict[int, int]) -> list[tuple[str, int]]:
    return [(f"{c}/{i}.jpg", c) for c, n in n_per_class.items() for i in range(n)]


def test_stratified_split_is_complete_disjoint_and_stratified():
    samples = labels({0: 50, 1: 30, 2: 20})
    train, val = stratified_split(samples, 0.2, seed=1)
    assert sorted(train + val) == sorted(samples)
    assert not set(train) & set(val)
    assert Counter(label for _, label in val) == {0: 10, 1: 6, 2: 4}


def test_stratified_split_is_deterministic_per_seed():
    samples = labels({0: 40, 1: 40})
    assert stratified_split(samples, 0.25, seed=7) == stratified_split(samples, 0.25, seed=7)
    assert stratified_split(samples, 0.25, seed=7)[1] != stratified_split(samples, 0.25, seed=8)[1]


def test_every_class_with_two_samples_gets_a_validation_sample():
    train, val = stratified_split(labels({0: 2, 1: 3, 2: 1}), 0.05, seed=0)
    assert Counter(label for _, label in val) == {0: 1, 1: 1}
    assert Counter(label for _, label in train) == {0: 1, 1: 2, 2: 1}


def test_zero_val_fraction_keeps_everything_for_training():
    samples = labels({0: 5, 1: 5})
    assert stratified_split(samples, 0.0, seed=0) == (samples, [])



def test_split_of_real_subset_keeps_every_class_in_both(small_dataset):
    train, val = stratified_split(scan_dataset(small_dataset).samples["train"], 0.25, seed=0)
    assert Counter(label for _, label in val) == {c: 2 for c in range(10)}
    assert Counter(label for _, label in train) == {c: 6 for c in range(10)}


@pytest.mark.slow
def test_full_release_has_its_known_counts_and_duplicates(real_archive_path, tmp_path):
    layout = scan_dataset(extract_archive(real_archive_path, tmp_path / "idenprof"))
    assert layout.counts("train") == [900] * 10 and layout.counts("test") == [200] * 10
    # 41 groups of byte-identical images span train and test (dataset README): 50 pairs of
    # 46 train and 44 test files.
    assert len(layout.duplicates) == 50
    assert len(layout.train_without_test_duplicates()) == 9000 - 46
    assert len(layout.test_without_train_duplicates()) == 2000 - 44
