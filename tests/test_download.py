"""Download, resume, verification and safe extraction, over a real loopback HTTP server."""

from __future__ import annotations

import hashlib
import socket
import zipfile
from pathlib import Path

import pytest
from http_server import Fault, serve_files

from idenprof.data.download import (
    ARCHIVE_FILENAME,
    DEFAULT_DATA_URL,
    download_file,
    ensure_dataset,
    extract_archive,
    resolve_data_url,
)
from idenprof.errors import DatasetError, DownloadError

PATH = "/" + ARCHIVE_FILENAME
FAST = {"retries": 2, "backoff_s": 0.01, "timeout_s": (2.0, 2.0), "progress": False}


@pytest.fixture(scope="module")
def archive_bytes(small_archive) -> bytes:
    return small_archive.read_bytes()


def release_files(archive: Path) -> set[str]:
    """The archive's files relative to its idenprof/ top folder."""
    with zipfile.ZipFile(archive) as z:
        return {n.removeprefix("idenprof/") for n in z.namelist() if not n.endswith("/")}


def files_under(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def write_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


# --- download_file -------------------------------------------------------------------------


def test_download_writes_identical_file_and_no_part(tmp_path, archive_bytes):
    dest = tmp_path / "a.zip"
    with serve_files({PATH: archive_bytes}) as url:
        assert download_file(url + PATH, dest, **FAST) == dest
    assert dest.read_bytes() == archive_bytes
    assert not dest.with_name("a.zip.part").exists()


def test_cut_connection_is_resumed_with_range_request(tmp_path, archive_bytes):
    cut = len(archive_bytes) // 3
    dest = tmp_path / "a.zip"
    with serve_files({PATH: archive_bytes}, {PATH: Fault(cut_after_bytes=cut, times=1)}) as url:
        download_file(url + PATH, dest, **FAST)
    assert dest.read_bytes() == archive_bytes
    (first, resumed) = url.log
    assert first == ("GET", PATH, None)
    # The client keeps what it received whole (up to a read chunk may be lost at the cut).
    assert resumed[:2] == ("GET", PATH)
    assert 0 < int(resumed[2].removeprefix("bytes=").removesuffix("-")) <= cut


def test_failed_download_keeps_part_and_next_call_resumes_it(tmp_path, archive_bytes):
    cut = 100_000
    dest = tmp_path / "a.zip"
    part = tmp_path / "a.zip.part"
    with serve_files({PATH: archive_bytes}, {PATH: Fault(cut_after_bytes=cut)}) as url:
        with pytest.raises(DownloadError) as err:
            download_file(url + PATH, dest, **{**FAST, "retries": 0})
    assert url + PATH in str(err.value) and "--data-url" in str(err.value)
    assert not dest.exists()
    kept = part.read_bytes()
    assert 0 < len(kept) <= cut and kept == archive_bytes[: len(kept)]
    with serve_files({PATH: archive_bytes}) as url:
        download_file(url + PATH, dest, **FAST)
    assert url.log == [("GET", PATH, f"bytes={len(kept)}-")]
    assert dest.read_bytes() == archive_bytes
    assert not part.exists()


def test_server_ignoring_range_restarts_from_zero(tmp_path, archive_bytes):
    dest = tmp_path / "a.zip"
    (tmp_path / "a.zip.part").write_bytes(b"stale bytes that must not be kept")
    with serve_files({PATH: archive_bytes}, {PATH: Fault(ignore_range=True)}) as url:
        download_file(url + PATH, dest, **FAST)
    assert url.log[0][2] is not None  # it did ask to resume
    assert dest.read_bytes() == archive_bytes


def test_416_discards_part_and_restarts(tmp_path, archive_bytes):
    dest = tmp_path / "a.zip"
    (tmp_path / "a.zip.part").write_bytes(b"x" * (len(archive_bytes) + 10))
    with serve_files({PATH: archive_bytes}) as url:
        download_file(url + PATH, dest, **FAST)
    assert url.log == [("GET", PATH, f"bytes={len(archive_bytes) + 10}-"), ("GET", PATH, None)]
    assert dest.read_bytes() == archive_bytes


def test_404_fails_at_once_naming_url_and_status(tmp_path):
    dest = tmp_path / "a.zip"
    with serve_files({}) as url:
        with pytest.raises(DownloadError) as err:
            download_file(url + PATH, dest, **FAST)
    message = str(err.value)
    assert url + PATH in message and "404" in message and "--data-dir" in message
    assert len(url.log) == 1  # not retried
    assert list(tmp_path.iterdir()) == []


def test_500_is_retried_then_fails(tmp_path, archive_bytes):
    dest = tmp_path / "a.zip"
    with serve_files({PATH: archive_bytes}, {PATH: Fault(status=500)}) as url:
        with pytest.raises(DownloadError) as err:
            download_file(url + PATH, dest, **FAST)
    assert url + PATH in str(err.value) and "500" in str(err.value)
    assert len(url.log) == 1 + FAST["retries"]
    assert list(tmp_path.iterdir()) == []


def test_500_then_success_after_retries(tmp_path, archive_bytes):
    dest = tmp_path / "a.zip"
    with serve_files({PATH: archive_bytes}, {PATH: Fault(status=503, times=2)}) as url:
        download_file(url + PATH, dest, **FAST)
    assert len(url.log) == 3
    assert dest.read_bytes() == archive_bytes


def test_stalled_server_hits_read_timeout_and_is_retried(tmp_path, archive_bytes):
    dest = tmp_path / "a.zip"
    with serve_files({PATH: archive_bytes}, {PATH: Fault(stall_s=1.5, times=1)}) as url:
        download_file(url + PATH, dest, **{**FAST, "timeout_s": (2.0, 0.3)})
    assert len(url.log) == 2
    assert dest.read_bytes() == archive_bytes


def test_refused_connection_names_url_and_network_error(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}{PATH}"
    with pytest.raises(DownloadError) as err:
        download_file(url, tmp_path / "a.zip", **FAST)
    assert url in str(err.value) and "ConnectionError" in str(err.value)
    assert "\n" not in str(err.value)


def test_checksum_match_is_accepted(tmp_path, archive_bytes):
    dest = tmp_path / "a.zip"
    with serve_files({PATH: archive_bytes}) as url:
        download_file(url + PATH, dest, sha256=hashlib.sha256(archive_bytes).hexdigest(), **FAST)
    assert dest.read_bytes() == archive_bytes


def test_checksum_mismatch_leaves_no_file(tmp_path, archive_bytes):
    expected = "0" * 64
    with serve_files({PATH: archive_bytes}) as url:
        with pytest.raises(DownloadError) as err:
            download_file(url + PATH, tmp_path / "a.zip", sha256=expected, **FAST)
    assert expected in str(err.value)
    assert hashlib.sha256(archive_bytes).hexdigest() in str(err.value)
    assert list(tmp_path.iterdir()) == []


# --- extract_archive -----------------------------------------------------------------------


def test_extract_release_layout(tmp_path, small_archive):
    data_dir = tmp_path / "data" / "idenprof"
    assert extract_archive(small_archive, data_dir) == data_dir
    assert files_under(data_dir) == release_files(small_archive)
    assert list((tmp_path / "data").iterdir()) == [data_dir]  # no temporary folder left


def test_extract_archive_without_top_folder(tmp_path):
    archive = write_zip(tmp_path / "flat.zip", {"train/a/1.jpg": b"1", "test/a/2.jpg": b"2"})
    data_dir = extract_archive(archive, tmp_path / "out")
    assert files_under(data_dir) == {"train/a/1.jpg", "test/a/2.jpg"}


def test_archive_without_splits_is_refused(tmp_path):
    archive = write_zip(tmp_path / "other.zip", {"photos/a/1.jpg": b"1"})
    with pytest.raises(DatasetError, match="train/ and test/"):
        extract_archive(archive, tmp_path / "out" / "idenprof")
    assert list((tmp_path / "out").iterdir()) == []


def test_truncated_archive_is_refused(tmp_path, archive_bytes):
    archive = tmp_path / "cut.zip"
    archive.write_bytes(archive_bytes[: len(archive_bytes) // 2])
    with pytest.raises(DatasetError, match="not a readable zip"):
        extract_archive(archive, tmp_path / "out" / "idenprof")
    assert not (tmp_path / "out" / "idenprof").exists()


def test_member_with_bad_crc_leaves_no_half_dataset(tmp_path, archive_bytes, small_archive):
    with zipfile.ZipFile(small_archive) as z:
        info = next(i for i in z.infolist() if i.filename.endswith(".jpg"))
    data = bytearray(archive_bytes)
    # Stored (uncompressed) member: its bytes follow the 30-byte local header, name and extra.
    header = data[info.header_offset : info.header_offset + 30]
    body = (
        info.header_offset
        + 30
        + int.from_bytes(header[26:28], "little")
        + int.from_bytes(header[28:30], "little")
    )
    data[body + 100] ^= 0xFF
    archive = tmp_path / "bad.zip"
    archive.write_bytes(bytes(data))
    out = tmp_path / "out"
    with pytest.raises(DatasetError, match="CRC"):
        extract_archive(archive, out / "idenprof")
    assert not out.exists() or list(out.iterdir()) == []


@pytest.mark.parametrize(
    "evil", ["../evil.txt", "idenprof/train/../../../evil.txt", "/tmp/evil.txt"]
)
def test_member_outside_target_is_refused(tmp_path, evil):
    archive = write_zip(
        tmp_path / "slip.zip",
        {"idenprof/train/a/1.jpg": b"1", "idenprof/test/a/2.jpg": b"2", evil: b"owned"},
    )
    work = tmp_path / "deep" / "er"
    with pytest.raises(DatasetError, match="outside"):
        extract_archive(archive, work / "idenprof")
    assert not (work / "idenprof").exists()
    assert not any(p.name == "evil.txt" for p in tmp_path.rglob("*"))


def test_non_empty_target_folder_is_left_alone(tmp_path, small_archive):
    data_dir = tmp_path / "idenprof"
    data_dir.mkdir()
    (data_dir / "notes.txt").write_text("mine")
    with pytest.raises(DatasetError, match="remove it or choose another --data-dir"):
        extract_archive(small_archive, data_dir)
    assert files_under(data_dir) == {"notes.txt"}


# --- ensure_dataset ------------------------------------------------------------------------


def test_ensure_dataset_downloads_extracts_then_reuses(tmp_path, small_archive, archive_bytes):
    data_dir = tmp_path / "data" / "idenprof"
    with serve_files({PATH: archive_bytes}) as url:
        assert ensure_dataset(data_dir, url + PATH, progress=False) == data_dir
        assert len(url.log) == 1
        assert files_under(data_dir) == release_files(small_archive)
        assert (tmp_path / "data" / ARCHIVE_FILENAME).read_bytes() == archive_bytes
        url.log.clear()
        assert ensure_dataset(data_dir, url + PATH, progress=False) == data_dir
        assert url.log == []


def test_ensure_dataset_reuses_complete_archive_without_request(tmp_path, small_archive):
    data_dir = tmp_path / "idenprof"
    (tmp_path / ARCHIVE_FILENAME).write_bytes(small_archive.read_bytes())
    with serve_files({}) as url:
        ensure_dataset(data_dir, url + PATH, progress=False)
    assert url.log == []
    assert files_under(data_dir) == release_files(small_archive)


def test_ensure_dataset_resumes_leftover_part(tmp_path, small_archive, archive_bytes):
    data_dir = tmp_path / "idenprof"
    (tmp_path / (ARCHIVE_FILENAME + ".part")).write_bytes(archive_bytes[:5000])
    with serve_files({PATH: archive_bytes}) as url:
        ensure_dataset(data_dir, url + PATH, progress=False)
    assert url.log == [("GET", PATH, "bytes=5000-")]
    assert files_under(data_dir) == release_files(small_archive)


def test_ensure_dataset_checks_sha256_of_download(tmp_path, archive_bytes):
    data_dir = tmp_path / "idenprof"
    with serve_files({PATH: archive_bytes}) as url:
        with pytest.raises(DownloadError, match="expected"):
            ensure_dataset(data_dir, url + PATH, sha256="f" * 64, progress=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("as_file_url", [False, True])
def test_ensure_dataset_extracts_local_archive(tmp_path, small_archive, as_file_url):
    data_url = small_archive.as_uri() if as_file_url else str(small_archive)
    data_dir = ensure_dataset(tmp_path / "idenprof", data_url, progress=False)
    assert data_dir == tmp_path / "idenprof"
    assert files_under(data_dir) == release_files(small_archive)


def test_ensure_dataset_uses_extracted_folder_in_place(tmp_path, small_dataset):
    assert ensure_dataset(tmp_path / "idenprof", str(small_dataset)) == small_dataset
    assert list(tmp_path.iterdir()) == []


def test_ensure_dataset_rejects_local_path_that_is_neither(tmp_path):
    with pytest.raises(DatasetError, match="neither a zip archive nor a folder"):
        ensure_dataset(tmp_path / "idenprof", str(tmp_path / "missing.zip"))


def test_data_url_flag_then_env_then_default(monkeypatch):
    monkeypatch.delenv("IDENPROF_URL", raising=False)
    assert resolve_data_url(None) == DEFAULT_DATA_URL
    monkeypatch.setenv("IDENPROF_URL", "http://127.0.0.1:9/mirror.zip")
    assert resolve_data_url(None) == "http://127.0.0.1:9/mirror.zip"
    assert resolve_data_url("/data/idenprof-jpg.zip") == "/data/idenprof-jpg.zip"


def test_env_url_is_what_ensure_dataset_fetches(tmp_path, monkeypatch, archive_bytes):
    with serve_files({"/mirror.zip": archive_bytes}) as url:
        monkeypatch.setenv("IDENPROF_URL", url + "/mirror.zip")
        ensure_dataset(tmp_path / "idenprof", resolve_data_url(None), progress=False)
    assert url.log == [("GET", "/mirror.zip", None)]
    assert (tmp_path / "idenprof" / "train").is_dir()


# --- extraction limits (issue 15, item 5) ----------------------------------------------------------


def test_a_zip_bomb_is_refused_before_writing_anything(tmp_path):
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("idenprof/test/a/1.jpg", b"1")
        z.writestr("idenprof/train/a/huge.jpg", bytes(64 << 20))  # 64 MiB of zeros: about 64 KB deflated
    assert bomb.stat().st_size < 1 << 20
    with pytest.raises(DatasetError, match=r"huge.jpg' would inflate .* refusing to extract it") as err:
        extract_archive(bomb, tmp_path / "out" / "idenprof")
    assert "\n" not in str(err.value)
    assert list((tmp_path / "out").iterdir()) == []


def test_many_small_members_adding_up_to_a_bomb_are_refused_before_writing_anything(tmp_path):
    bomb = tmp_path / "many.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("idenprof/test/a/1.jpg", b"1")
        for i in range(100):  # each member 1 MiB, under the per-member check; 100 MiB in all
            z.writestr(f"idenprof/train/a/{i}.jpg", bytes(1 << 20))
    assert bomb.stat().st_size < 1 << 20
    with pytest.raises(DatasetError, match=r"in 101 members \(over 50:1 in all") as err:
        extract_archive(bomb, tmp_path / "out" / "idenprof")
    assert "\n" not in str(err.value)
    assert list((tmp_path / "out").iterdir()) == []


def test_an_archive_declaring_more_than_a_dataset_needs_is_refused(tmp_path, small_archive, monkeypatch):
    import idenprof.data.download as download

    monkeypatch.setattr(download, "MAX_EXTRACTED_BYTES", small_archive.stat().st_size // 2)
    with pytest.raises(DatasetError, match="would extract to .* GiB, more than"):
        extract_archive(small_archive, tmp_path / "out" / "idenprof")
    assert list((tmp_path / "out").iterdir()) == []


def test_a_disk_full_during_extraction_is_one_line_and_leaves_nothing(tmp_path, small_archive, monkeypatch):
    import errno

    def full_disk(self, path, *args, **kwargs):
        (Path(path) / "half.jpg").write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(zipfile.ZipFile, "extractall", full_disk)
    with pytest.raises(DatasetError, match=r"^disk full while extracting .* free some space") as err:
        extract_archive(small_archive, tmp_path / "out" / "idenprof")
    assert "\n" not in str(err.value)
    assert list((tmp_path / "out").iterdir()) == []


def test_not_enough_free_space_is_refused_before_extracting(tmp_path, small_archive, monkeypatch):
    import shutil

    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(DatasetError, match="not enough disk space to extract"):
        extract_archive(small_archive, tmp_path / "out" / "idenprof")
    assert list((tmp_path / "out").iterdir()) == []


def test_the_folder_of_a_killed_extraction_is_removed_at_the_next_start(tmp_path, small_archive):
    import os
    import subprocess
    import sys

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    abandoned = tmp_path / f".idenprof-extracting-{gone.pid}-x1y2"
    (abandoned / "idenprof" / "train").mkdir(parents=True)
    running = tmp_path / f".idenprof-extracting-{os.getpid()}-a3b4"  # a live extraction is left alone
    running.mkdir()
    ensure_dataset(tmp_path / "idenprof", str(small_archive), progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["idenprof", running.name])
