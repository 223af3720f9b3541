"""Getting the IdenProf archive onto disk: resumable verified download, safe extraction.

`ensure_dataset` is the one entry point the scripts call: it returns a folder holding train/ and
test/, downloading and extracting only what is missing. A download is written to `<dest>.part`
and renamed only when complete (and verified), so a crash never leaves a file that looks
finished; an extraction happens in a temporary folder and is renamed into place at the end, so
it never leaves a half dataset that looks complete.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import tempfile
import time
import zipfile
import zlib
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import requests
from tqdm import tqdm

from idenprof.errors import DatasetError, DownloadError

DEFAULT_DATA_URL = (
    "https://github.com/OlafenwaMoses/IdenProf/releases/download/v1.0/idenprof-jpg.zip"
)
DATA_URL_ENV = "IDENPROF_URL"
ARCHIVE_FILENAME = "idenprof-jpg.zip"
CHUNK_BYTES = 1 << 16
BY_HAND = (
    "download it yourself and pass --data-url /path/to/idenprof-jpg.zip, "
    "or extract it and pass --data-dir"
)
CONTENT_RANGE_RE = re.compile(r"bytes (\d+)-\d+/(\d+)$")
# Photos barely compress: IdenProf's JPEGs are stored at 1:1. A member inflating more than this
# (beyond MIN_RATIO_CHECK_BYTES) or an archive declaring more than MAX_EXTRACTED_BYTES is a zip
# bomb, not an image dataset.
MAX_COMPRESSION_RATIO = 50
MIN_RATIO_CHECK_BYTES = 1 << 20
MIN_TOTAL_RATIO_CHECK_BYTES = 64 << 20  # the whole archive's ratio, past this many bytes
MAX_EXTRACTED_BYTES = 64 << 30


class _Retryable(Exception):
    """A failure worth another attempt: network error, timeout, 5xx, short body."""


def resolve_data_url(flag_value: str | None) -> str:
    """The archive location: the --data-url flag, else $IDENPROF_URL, else the release URL."""
    return flag_value or os.environ.get(DATA_URL_ENV) or DEFAULT_DATA_URL


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes; `algorithm` is a hashlib name ("sha256", "md5")."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    return file_digest(path, "sha256")


def checksum_mismatch(path: Path, *, sha256: str | None = None, md5: str | None = None) -> str | None:
    """None when `path` has every given digest, else what differs ("MD5 <actual>, expected <md5>").
    MD5 is accepted where it is what a dataset publishes (Fashion-MNIST, CIFAR-10)."""
    for label, algorithm, expected in (("MD5", "md5", md5), ("SHA-256", "sha256", sha256)):
        if expected is not None and (actual := file_digest(path, algorithm)) != expected.lower():
            return f"{label} {actual}, expected {expected}"
    return None


def _fetch_once(url: str, part: Path, timeout_s: tuple[float, float], progress: bool, by_hand: str) -> None:
    """One GET of `url` into `part`, continuing an existing `part` with a Range request.

    Returns when `part` holds the whole body; raises _Retryable for failures a retry may fix.
    """
    offset = part.stat().st_size if part.exists() else 0
    # identity: Content-Length and Range must count the file's bytes, not gzip's.
    headers = {"Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    response = requests.get(url, headers=headers, stream=True, timeout=timeout_s)
    if response.status_code == 416:
        # The .part is not a prefix the server can continue (e.g. the file changed): restart.
        response.close()
        part.unlink(missing_ok=True)
        offset = 0
        headers.pop("Range", None)
        response = requests.get(url, headers=headers, stream=True, timeout=timeout_s)
    with response:
        status = response.status_code
        if status >= 500:
            raise _Retryable(f"HTTP {status} {response.reason}")
        if status not in (200, 206):
            raise DownloadError(
                f"could not download {url}: HTTP {status} {response.reason}; {by_hand}"
            )
        total = None
        if status == 206:
            match = CONTENT_RANGE_RE.match(response.headers.get("Content-Range", ""))
            if match is None or int(match.group(1)) != offset:
                part.unlink(missing_ok=True)
                got = response.headers.get("Content-Range")
                raise _Retryable(f"server answered bytes={offset}- with range {got!r}")
            total = int(match.group(2))
        else:
            offset = 0  # a 200 is the whole file: the server ignored our Range, start over
            if "Content-Length" in response.headers:
                total = int(response.headers["Content-Length"])
        with (
            open(part, "ab" if offset else "wb") as f,
            tqdm(
                total=total,
                initial=offset,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=Path(urlparse(url).path).name or url,
                disable=None if progress else True,
            ) as bar,
        ):
            for chunk in response.iter_content(CHUNK_BYTES):
                f.write(chunk)
                bar.update(len(chunk))
    size = part.stat().st_size
    if total is not None and size != total:
        if size > total:
            part.unlink()
        raise _Retryable(f"got {size} of {total} bytes")


def download_file(
    url: str,
    dest: Path,
    *,
    sha256: str | None = None,
    md5: str | None = None,
    timeout_s: tuple[float, float] = (10.0, 60.0),
    retries: int = 5,
    backoff_s: float = 1.0,
    progress: bool = True,
    by_hand: str = BY_HAND,
) -> Path:
    """Download `url` to `dest` (via `dest.part`, resumable), optionally checking its checksums.

    Args:
        url: http(s) URL.
        dest: final file path; written only once the download is complete and verified.
        sha256: expected hex SHA-256 of the file, or None to skip the check.
        md5: expected hex MD5 of the file, or None to skip the check.
        timeout_s: (connect, read) timeouts in seconds; read is the longest silence allowed.
        retries: further attempts after the first on network errors, timeouts and HTTP 5xx,
            waiting backoff_s, 2*backoff_s, 4*backoff_s, ... seconds; each resumes the .part.
        progress: show a tqdm bar (size, speed) on a terminal.
        by_hand: what the user can do instead, ending every error message.

    Returns:
        dest.

    Raises:
        DownloadError naming the URL and the HTTP status or network error. A .part left by a
        network error is kept so the next call resumes it.
    """
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(backoff_s * 2 ** (attempt - 1))
        try:
            _fetch_once(url, part, timeout_s, progress, by_hand)
            break
        except _Retryable as e:
            problem = str(e)
        except requests.RequestException as e:
            problem = f"network error ({type(e).__name__}: {e})".replace("\n", " ")
    else:
        tries = f" after {retries + 1} attempts" if retries else ""
        raise DownloadError(f"could not download {url}{tries}: {problem}; {by_hand}")
    if mismatch := checksum_mismatch(part, sha256=sha256, md5=md5):
        part.unlink()
        raise DownloadError(
            f"{url} downloaded with {mismatch}; the file is corrupt "
            f"or a different version: try again, or {by_hand}"
        )
    os.replace(part, dest)
    return dest


def _has_splits(folder: Path) -> bool:
    return (folder / "train").is_dir() and (folder / "test").is_dir()


def _check_member_name(archive: Path, name: str) -> None:
    """Refuse a member that would be written outside the extraction folder (zip-slip)."""
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) or ".." in parts:
        raise DatasetError(
            f"{archive} has a member {name!r} that points outside the dataset folder; "
            f"refusing to extract it: {BY_HAND} from a trusted source"
        )


def _split_root(archive: Path, extracted: Path) -> Path:
    """The folder holding train/ and test/: the extraction root or its one top folder."""
    if _has_splits(extracted):
        return extracted
    candidates = [d for d in sorted(extracted.iterdir()) if d.is_dir() and _has_splits(d)]
    if len(candidates) != 1:
        raise DatasetError(
            f"{archive} does not hold train/ and test/ folders (at its root or in one top "
            "folder); it is not an IdenProf-style archive"
        )
    return candidates[0]


def extract_archive(archive: Path, data_dir: Path) -> Path:
    """Extract a zip holding train/ and test/ (optionally under one top folder) to `data_dir`.

    Every member's CRC is checked while extracting. `data_dir` appears only when extraction
    succeeded, by renaming a temporary folder next to it. Returns `data_dir`.

    Raises DatasetError for a corrupt or non-zip archive, a member outside the target folder,
    an archive without train/ and test/, or a `data_dir` that exists and is not empty.
    """
    archive, data_dir = Path(archive), Path(data_dir)
    if data_dir.exists() and (not data_dir.is_dir() or any(data_dir.iterdir())):
        raise DatasetError(
            f"{data_dir} exists and is not an extracted dataset (no train/ and test/); "
            "remove it or choose another --data-dir"
        )
    corrupt = (
        f"{archive} is not a readable zip archive ({{}}); delete it and download it again, "
        f"or {BY_HAND}"
    )
    try:
        zf = zipfile.ZipFile(archive)
    except FileNotFoundError:
        raise DatasetError(f"archive {archive} not found; {BY_HAND}") from None
    except (zipfile.BadZipFile, OSError) as e:
        raise DatasetError(corrupt.format(e)) from None
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_abandoned_extractions(data_dir)
    with zf:
        for name in zf.namelist():
            _check_member_name(archive, name)
        _check_sizes(archive, zf.infolist())
        needed, free = _declared_bytes(zf.infolist()), shutil.disk_usage(data_dir.parent).free
        if needed > free:
            raise DatasetError(
                f"not enough disk space to extract {archive} into {data_dir.parent}: {needed / 2**30:.1f} GiB "
                f"needed, {free / 2**30:.1f} GiB free; free some space and run the same command again"
            )
        extracted = Path(
            tempfile.mkdtemp(prefix=f"{_extracting_prefix(data_dir)}{os.getpid()}-", dir=data_dir.parent)
        )
        try:
            # Reading each member to its end makes zipfile compare its CRC-32 (BadZipFile if not);
            # it never writes more than a member's declared size.
            zf.extractall(extracted)
            os.replace(_split_root(archive, extracted), data_dir)
        except (zipfile.BadZipFile, zlib.error, EOFError) as e:
            raise DatasetError(corrupt.format(e)) from None
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise
            raise DatasetError(
                f"disk full while extracting {archive} into {data_dir.parent}; free some space "
                f"({_declared_bytes(zf.infolist()) / 2**30:.1f} GiB needed) and run the same command again"
            ) from None
        finally:
            shutil.rmtree(extracted, ignore_errors=True)
    return data_dir


def _extracting_prefix(data_dir: Path) -> str:
    return f".{data_dir.name}-extracting-"


def remove_abandoned_extractions(data_dir: Path) -> None:
    """Remove the temporary extraction folders beside `data_dir` whose process is gone (a killed
    extraction leaves one, named with its PID)."""
    prefix = _extracting_prefix(data_dir)
    for folder in data_dir.parent.glob(prefix + "*"):
        pid = folder.name[len(prefix):].split("-")[0]
        if not (pid.isdigit() and _process_alive(int(pid))):
            shutil.rmtree(folder, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _declared_bytes(members: list[zipfile.ZipInfo]) -> int:
    return sum(m.file_size for m in members)


def _check_sizes(archive: Path, members: list[zipfile.ZipInfo]) -> None:
    """Refuse an archive declaring more bytes, or a member inflating more, than an image dataset
    can (a zip bomb)."""
    total = _declared_bytes(members)
    if total > MAX_EXTRACTED_BYTES:
        raise DatasetError(
            f"{archive} would extract to {total / 2**30:.1f} GiB, more than the {MAX_EXTRACTED_BYTES / 2**30:.0f} GiB "
            f"an image dataset needs; refusing to extract it: {BY_HAND} from a trusted source"
        )
    for m in members:
        if m.file_size > MIN_RATIO_CHECK_BYTES and m.file_size > MAX_COMPRESSION_RATIO * max(1, m.compress_size):
            raise DatasetError(
                f"{archive} member {m.filename!r} would inflate {m.compress_size} bytes to {m.file_size} "
                f"(over {MAX_COMPRESSION_RATIO}:1, which photos never compress); refusing to extract it: "
                f"{BY_HAND} from a trusted source"
            )
    packed = sum(m.compress_size for m in members)
    if total > MIN_TOTAL_RATIO_CHECK_BYTES and total > MAX_COMPRESSION_RATIO * max(1, packed):
        # Many small members each under the per-member check can still add up to a bomb.
        raise DatasetError(
            f"{archive} would inflate {packed} bytes to {total} in {len(members)} members (over "
            f"{MAX_COMPRESSION_RATIO}:1 in all, which photos never compress); refusing to extract it: "
            f"{BY_HAND} from a trusted source"
        )


def _local_path(data_url: str) -> Path | None:
    """The file-system path `data_url` names, or None for an http(s) URL."""
    parsed = urlparse(data_url)
    if parsed.scheme in ("http", "https"):
        return None
    if parsed.scheme == "file":
        return Path(url2pathname(parsed.path))
    return Path(data_url).expanduser()


def ensure_dataset(
    data_dir: Path, data_url: str, *, sha256: str | None = None, progress: bool = True
) -> Path:
    """A folder holding train/ and test/, fetching only what is missing.

    Args:
        data_dir: where the extracted dataset lives (the folder that gets train/ and test/).
        data_url: http(s) URL of the zip; or a local (or file://) path to the zip, which is
            extracted; or a local folder already holding train/ and test/, used in place.
        sha256: expected SHA-256 of the zip (downloaded or local), or None to skip the check.
        progress: show a download progress bar on a terminal.

    Returns:
        `data_dir`, or the `data_url` folder when that already holds the dataset.

    A download goes to `data_dir.parent / "idenprof-jpg.zip"` and is reused by later calls.
    """
    data_dir = Path(data_dir)
    remove_abandoned_extractions(data_dir)
    if _has_splits(data_dir):
        return data_dir
    local = _local_path(data_url)
    if local is not None:
        if _has_splits(local):
            return local
        if not local.is_file():
            raise DatasetError(
                f"{local} is neither a zip archive nor a folder holding train/ and test/; "
                "pass --data-url with the archive's path or URL"
            )
        archive = local
    else:
        archive = data_dir.parent / ARCHIVE_FILENAME
        if not archive.is_file():
            download_file(data_url, archive, sha256=sha256, progress=progress)
            sha256 = None  # download_file has checked it
    if sha256 is not None and (actual := sha256_of(archive)) != sha256.lower():
        raise DownloadError(
            f"{archive} has SHA-256 {actual}, expected {sha256}; delete it and download again, "
            f"or {BY_HAND}"
        )
    return extract_archive(archive, data_dir)


def file_source(data_url: str, filename: str, *, several_files: bool) -> str:
    """Where to get the dataset file `filename` from `data_url` (a flag's value).

    A local folder gives the file inside it; a URL ending in "/", or any URL when the dataset has
    `several_files`, is a base URL (a mirror's folder) the name is appended to; otherwise
    `data_url` is the file itself (its URL, or a local or file:// path).

    Raises:
        DatasetError: a local file given for a dataset of several files.
    """
    local = _local_path(data_url)
    if local is not None:
        if local.is_dir():
            return str(local / filename)
        if several_files and local.exists():
            raise DatasetError(
                f"{local} is a file, but this dataset has several: pass --data-url with the folder or base URL "
                f"holding {filename} and the others"
            )
        return str(local / filename) if several_files else str(local)
    if several_files or data_url.endswith("/"):
        return data_url.rstrip("/") + "/" + filename
    return data_url


def fetch_file(
    source: str,
    dest: Path,
    *,
    sha256: str | None = None,
    md5: str | None = None,
    progress: bool = True,
    by_hand: str = BY_HAND,
) -> Path:
    """One dataset file, checked against its checksums: `dest` when it is already there, else
    `source` itself when that is a local (or file://) path, else `source` downloaded to `dest`
    (resumable, see `download_file`). A file on disk is checked at every call (a second or less
    for a 170 MB archive), so a corrupt or replaced file is never read.

    Returns:
        The path of the verified file.

    Raises:
        DownloadError: the download failed, or a file does not have the expected checksums.
        DatasetError: a local `source` that does not exist.
    """
    dest = Path(dest)
    path = dest if dest.is_file() else _local_path(source)
    if path is None:
        return download_file(source, dest, sha256=sha256, md5=md5, progress=progress, by_hand=by_hand)
    if not path.is_file():
        raise DatasetError(f"{path} not found; {by_hand}")
    if mismatch := checksum_mismatch(path, sha256=sha256, md5=md5):
        raise DownloadError(
            f"{path} has {mismatch}; it is corrupt or a different version: delete it and download it again, "
            f"or {by_hand}"
        )
    return path
