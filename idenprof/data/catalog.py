"""The datasets train.py knows, by name: where each comes from, its official files and their
checksums, its class names, and how it is loaded. `DATASETS` is the one list `--dataset`'s
choices, help and errors come from.

    layout = load_dataset("fashion-mnist", Path("data/fashion-mnist"))   # downloads when missing
    layout.class_names, layout.samples["train"][:2], layout.decode(samples, 32)

Every dataset is fetched by the same resumable, verified download (idenprof.data.download), from
its official URL, a mirror (`--data-url`: a base URL or the file's URL) or local files; the array
datasets are read from their official files in place, nothing extracted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from idenprof.data.download import (
    ARCHIVE_FILENAME,
    DEFAULT_DATA_URL,
    ensure_dataset,
    fetch_file,
    file_source,
    resolve_data_url,
)
from idenprof.errors import ConfigError


@dataclass(frozen=True)
class OfficialFile:
    """A file as its publisher distributes it, with the checksums they (or Keras) publish."""

    name: str
    md5: str | None = None
    sha256: str | None = None


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset: `url` is the default source (the archive's URL, or the base URL of `files`)."""

    name: str
    description: str
    url: str
    files: tuple[OfficialFile, ...]
    load: Callable  # (spec, data_dir, data_url or None, sha256 or None, progress) -> DatasetLayout
    class_names: tuple[str, ...] | None = None  # when the files do not name the classes
    image_files: bool = False  # samples are image files (the original ImageDataGenerator can read them)

    def by_hand(self, data_dir: Path) -> str:
        """What a user can do when the download fails, for error messages."""
        names = ", ".join(f.name for f in self.files)
        return f"download {names} from {self.url} yourself into {data_dir} (or pass --data-url with their folder)"

    def fetch(self, data_dir: Path, data_url: str | None, sha256: str | None, progress: bool) -> dict[str, Path]:
        """{file name: verified path} of every official file, downloading what is missing into `data_dir`.
        `sha256` (one-file datasets only) replaces the pinned checksums."""
        several = len(self.files) > 1
        paths = {}
        for official in self.files:
            source = file_source(data_url or self.url, official.name, several_files=several)
            checksums = {"sha256": sha256} if sha256 else {"md5": official.md5, "sha256": official.sha256}
            paths[official.name] = fetch_file(source, data_dir / official.name, progress=progress,
                                              by_hand=self.by_hand(data_dir), **checksums)
        return paths


def _load_idenprof(spec: DatasetSpec, data_dir: Path, data_url, sha256, progress):
    from idenprof.data.dataset import scan_dataset

    root = ensure_dataset(data_dir, resolve_data_url(data_url), sha256=sha256, progress=progress)
    return scan_dataset(root)


def _load_fashion_mnist(spec: DatasetSpec, data_dir: Path, data_url, sha256, progress):
    from idenprof.data.arrays import array_layout
    from idenprof.data.formats import read_idx

    paths = spec.fetch(data_dir, data_url, sha256, progress)
    splits = {
        split: (read_idx(paths[f"{prefix}-images-idx3-ubyte.gz"], 3), read_idx(paths[f"{prefix}-labels-idx1-ubyte.gz"], 1))
        for split, prefix in (("train", "train"), ("test", "t10k"))
    }
    return array_layout(data_dir, list(spec.class_names), splits)


def _load_cifar10(spec: DatasetSpec, data_dir: Path, data_url, sha256, progress):
    from idenprof.data.arrays import array_layout
    from idenprof.data.formats import read_cifar_archive

    [path] = spec.fetch(data_dir, data_url, sha256, progress).values()
    splits, class_names = read_cifar_archive(path)
    return array_layout(data_dir, class_names, splits)


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            # The default source can also come from $IDENPROF_URL (download.resolve_data_url).
            "idenprof", "11,000 photos of 10 professions (JPEG class folders)",
            DEFAULT_DATA_URL, (OfficialFile(ARCHIVE_FILENAME),), _load_idenprof, image_files=True,
        ),
        # The checksums are the MD5s Fashion-MNIST's README publishes (also torchvision's).
        DatasetSpec(
            "fashion-mnist", "70,000 grayscale 28 px clothing images (four gzip IDX files)",
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            (
                OfficialFile("train-images-idx3-ubyte.gz", md5="8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
                OfficialFile("train-labels-idx1-ubyte.gz", md5="25c81989df183df01b3e8a0aad5dffbe"),
                OfficialFile("t10k-images-idx3-ubyte.gz", md5="bef4ecab320f06d8554ea6380940ec79"),
                OfficialFile("t10k-labels-idx1-ubyte.gz", md5="bb300cfdad3c16e7a12a480ee83cd310"),
            ),
            _load_fashion_mnist,
            class_names=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        ),
        # MD5 from the CIFAR page (also torchvision's tgz_md5); SHA-256 from keras.datasets.cifar10.
        DatasetSpec(
            "cifar10", "60,000 color 32 px images of 10 objects (the python pickle tarball)",
            "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
            (OfficialFile("cifar-10-python.tar.gz", md5="c58f30108f718f92721af3b95e74349a",
                          sha256="6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"),),
            _load_cifar10,
        ),
    )
}
DEFAULT_DATASET = "idenprof"


def default_data_dir(name: str) -> str:
    """Where a dataset lives unless --data-dir says otherwise: data/<name>."""
    return f"data/{name}"


def dataset_spec(name: str) -> DatasetSpec:
    """The registered dataset `name`; ConfigError listing the choices when there is none."""
    if name not in DATASETS:
        raise ConfigError(f"--dataset {name!r} is unknown; choose one of {', '.join(DATASETS)}")
    return DATASETS[name]


def load_dataset(name: str, data_dir: Path, data_url: str | None = None, *, sha256: str | None = None,
                 progress: bool = True):
    """The dataset `name` as a DatasetLayout (class names, samples per split, duplicates, `decode`),
    fetching and verifying its files into `data_dir` when they are missing.

    Args:
        name: a key of DATASETS.
        data_dir: the dataset's folder (IdenProf: extracted class folders; others: the official files).
        data_url: a mirror's base URL, the file's URL, or a local file or folder; None: the official source.
        sha256: the expected SHA-256 of a one-file dataset's archive, replacing the pinned checksums.
        progress: download and resize progress bars.

    Raises:
        ConfigError (unknown name), DownloadError, DatasetError: one line naming the problem.
    """
    spec = dataset_spec(name)
    return spec.load(spec, Path(data_dir), data_url, sha256, progress)
