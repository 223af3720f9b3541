"""The dataset catalog: Fashion-MNIST's IDX files and CIFAR-10's pickle tarball, in their official
formats, fetched through the same verified download as IdenProf from a loopback server."""

from __future__ import annotations

import gzip
import hashlib
import pickle

import numpy as np
import pytest
from array_datasets import (
    CIFAR_NAMES,
    cifar10_archive,
    fashion_mnist_files,
    idx_bytes,
    pin_checksums,
)
from http_server import serve_files

from idenprof.config import resolve_config
from idenprof.data.catalog import DATASETS, load_dataset
from idenprof.data.download import checksum_mismatch, fetch_file
from idenprof.data.formats import read_cifar_archive, read_idx
from idenprof.errors import ConfigError, DatasetError, DownloadError

FASHION_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                 "Ankle boot"]


def test_idx_files_read_back_with_their_shapes(tmp_path):
    images = np.arange(2 * 28 * 28, dtype=np.uint64).astype(np.uint8).reshape(2, 28, 28)
    (tmp_path / "i.gz").write_bytes(idx_bytes(images))
    (tmp_path / "l.gz").write_bytes(idx_bytes(np.array([3, 9], np.uint8)))
    assert np.array_equal(read_idx(tmp_path / "i.gz", 3), images)
    assert read_idx(tmp_path / "l.gz", 1).tolist() == [3, 9]


@pytest.mark.parametrize("content, message", [
    (b"not gzip at all", "not a readable gzip file"),
    (gzip.compress(b"\x00\x00\x08\x01" + (2).to_bytes(4, "big") + b"\x01\x02", mtime=0),
     "magic number 0x00000801, expected 0x00000803"),
    (gzip.compress(b"\x00\x00\x08\x03" + b"".join(n.to_bytes(4, "big") for n in (2, 28, 28)) + b"\x00" * 99, mtime=0),
     "holds 99 data bytes, its header says 1568"),
], ids=["not-gzip", "wrong-magic", "short-data"])
def test_a_file_that_is_not_idx_images_is_named_in_one_line(tmp_path, content, message):
    (tmp_path / "bad.gz").write_bytes(content)
    with pytest.raises(DatasetError, match=message) as err:
        read_idx(tmp_path / "bad.gz", 3)
    assert "\n" not in str(err.value) and "bad.gz" in str(err.value)


def test_cifar_archive_gives_rgb_images_labels_and_label_names(tmp_path):
    (tmp_path / "c.tar.gz").write_bytes(cifar10_archive(2, 3))
    splits, names = read_cifar_archive(tmp_path / "c.tar.gz")
    assert names == CIFAR_NAMES
    (train, train_labels), (test, test_labels) = splits["train"], splits["test"]
    assert train.shape == (100, 32, 32, 3) and train.dtype == np.uint8 and test.shape == (30, 32, 32, 3)
    assert sorted(np.bincount(train_labels)) == [10] * 10 and len(test_labels) == 30


def test_cifar_rows_are_red_then_green_then_blue_planes(tmp_path):
    row = np.zeros((1, 3072), np.uint8)
    row[0, [32 + 5, 1024 + 32 + 5, 2048 + 32 + 5]] = (200, 100, 50)  # pixel (y=1, x=5)
    batch = pickle.dumps({b"data": row, b"labels": [0]}, protocol=2)
    (tmp_path / "c.tar.gz").write_bytes(cifar10_archive(1, 1, {"data_batch_1": batch}))
    first = read_cifar_archive(tmp_path / "c.tar.gz")[0]["train"][0][0]
    assert first[1, 5].tolist() == [200, 100, 50] and int(first.sum()) == 350


@pytest.mark.parametrize("damage, message", [
    (lambda a: a[: len(a) // 2], "not a readable tar.gz"),
    (lambda a: cifar10_archive(1, 1, {"test_batch": b"garbage"}), "test_batch is not a readable pickle"),
    (lambda a: cifar10_archive(1, 1, {"batches.meta": pickle.dumps({b"x": 1}, protocol=2)}), "no b'label_names'"),
    (lambda a: cifar10_archive(1, 1, {"data_batch_3": pickle.dumps({b"labels": [1]}, protocol=2)}), "no b'data'"),
    (lambda a: cifar10_archive(1, 1, {"data_batch_1": pickle.dumps(hashlib.sha256, protocol=2)}),
     "unexpected object _hashlib"),
])
def test_a_damaged_cifar_archive_is_named_in_one_line(tmp_path, damage, message):
    (tmp_path / "c.tar.gz").write_bytes(damage(cifar10_archive(1, 1)))
    with pytest.raises(DatasetError, match=message) as err:
        read_cifar_archive(tmp_path / "c.tar.gz")
    assert "\n" not in str(err.value)


def test_md5_and_sha256_checksums_are_both_checked(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    md5, sha = hashlib.md5(b"abc").hexdigest(), hashlib.sha256(b"abc").hexdigest()
    assert checksum_mismatch(path, md5=md5, sha256=sha) is None
    assert checksum_mismatch(path, md5="0" * 32) == f"MD5 {md5}, expected {'0' * 32}"
    with pytest.raises(DownloadError, match=f"has SHA-256 {sha}, expected f+; it is corrupt"):
        fetch_file(str(path), tmp_path / "dest", sha256="f" * 64, progress=False)


def test_fashion_mnist_downloads_from_a_mirror_with_the_datasets_class_names(tmp_path, monkeypatch):
    files = fashion_mnist_files(3, 2)
    pin_checksums(monkeypatch, "fashion-mnist", files)
    with serve_files({f"/mirror/{name}": data for name, data in files.items()}) as url:
        layout = load_dataset("fashion-mnist", tmp_path / "fm", url + "/mirror", progress=False)
        assert sorted(path for _, path, _ in url.log) == sorted(f"/mirror/{name}" for name in files)
        url.log.clear()
        load_dataset("fashion-mnist", tmp_path / "fm", url + "/mirror", progress=False)
        assert url.log == []  # kept on disk, verified, not fetched again
    assert layout.class_names == FASHION_NAMES
    assert [len(layout.samples[s]) for s in ("train", "test")] == [30, 20]
    assert sorted(p.name for p in (tmp_path / "fm").iterdir()) == sorted(files)
    decoded = layout.decode(layout.samples["test"][:4], 32, progress=False)
    assert decoded.images.shape == (4, 32, 32, 3)
    assert np.array_equal(decoded.images[..., 0], decoded.images[..., 2])  # gray repeated to RGB
    assert decoded.paths == ["test/00000", "test/00001", "test/00002", "test/00003"]


def test_cifar10_from_a_local_archive_keeps_its_native_pixels(tmp_path, monkeypatch):
    archive = cifar10_archive(1, 2)
    pin_checksums(monkeypatch, "cifar10", {"cifar-10-python.tar.gz": archive})
    (tmp_path / "my-copy.tar.gz").write_bytes(archive)
    layout = load_dataset("cifar10", tmp_path / "c10", str(tmp_path / "my-copy.tar.gz"), progress=False)
    assert layout.class_names == CIFAR_NAMES and len(layout.samples["train"]) == 50
    decoded = layout.decode(layout.samples["train"][:3], 32, progress=False)
    assert np.array_equal(decoded.images, read_cifar_archive(tmp_path / "my-copy.tar.gz")[0]["train"][0][:3])


def test_a_checksum_mismatch_is_one_line_naming_the_published_md5(tmp_path):
    files = fashion_mnist_files(1, 1)
    with serve_files({f"/{name}": data for name, data in files.items()}) as url:
        with pytest.raises(DownloadError) as err:
            load_dataset("fashion-mnist", tmp_path / "fm", url, progress=False)
    message = str(err.value)
    assert "expected 8d4fb7e6c68d591d4c3dfef9ec88bf0d" in message and "train-images-idx3-ubyte.gz" in message
    assert "\n" not in message and not (tmp_path / "fm" / "train-images-idx3-ubyte.gz").exists()


def test_the_dataset_flag_comes_from_the_catalog(tmp_path):
    assert list(DATASETS) == ["idenprof", "fashion-mnist", "cifar10"]
    assert resolve_config(None, {"dataset": "cifar10"}).data_dir == "data/cifar10"
    assert resolve_config(None, {"dataset": "cifar10", "seed": 2}).default_run_name() == "cifar10-resnet50-224px-seed2"
    with pytest.raises(ConfigError, match="'mnist' is unknown; choose one of idenprof, fashion-mnist, cifar10"):
        resolve_config(None, {"dataset": "mnist"})
    with pytest.raises(ConfigError, match="--loader generator reads image files"):
        resolve_config(None, {"dataset": "fashion-mnist", "loader": "generator"})
    with pytest.raises(ConfigError, match="--data-sha256 checks a one-archive dataset"):
        resolve_config(None, {"dataset": "fashion-mnist", "data_sha256": "0" * 64})


def test_a_local_file_for_a_dataset_of_several_files_is_refused(tmp_path):
    (tmp_path / "one.gz").write_bytes(b"x")
    with pytest.raises(DatasetError, match="is a file, but this dataset has several"):
        load_dataset("fashion-mnist", tmp_path / "fm", str(tmp_path / "one.gz"), progress=False)
