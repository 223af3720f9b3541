"""Photos of anything but the ten professions: where they come from and how they are made.

Two pools that never share a source, so the benchmark measures photos the model never saw:

- TRAINING_SOURCES teach the model what "none of these" looks like (outlier exposure): Debian's
  Tux Paint stamps (animals, food, plants, vehicles, objects, pasted on wallpaper crops) and the
  GNOME and KDE Plasma wallpapers (landscapes), plus procedural images (`procedural_images`).
- BENCHMARK_SOURCES are the far-OOD photos of bench/ood.py: scikit-image's and scikit-learn's
  sample photos, matplotlib's, the MATE and UKUI wallpapers, plus flat colours, gradients and noise
  (`synthetic_images`).

Each source is a package anyone can install offline from Debian or PyPI (docs/OOD.md lists the
command and licence of each); a source that is not installed is skipped and named.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from idenprof.data.imaging import IMAGE_EXTENSIONS, PIL_FORMATS, ImageError, load_image_rgb, resize_square


@dataclass(frozen=True)
class Source:
    """A folder of outlier images from one package: `files` picks them (a glob, or names)."""

    name: str
    package: str  # how to install it: "apt:NAME" or "pip:NAME"
    licence: str
    folder: str  # an absolute path, or "pip-module:relative/path" inside an installed module
    patterns: tuple[str, ...] = ("**/*",)
    exclude: tuple[str, ...] = ()  # path parts to leave out

    def folder_path(self) -> Path | None:
        if self.folder.startswith("pip-module:"):
            module, _, relative = self.folder.removeprefix("pip-module:").partition("/")
            spec = importlib.util.find_spec(module)
            if spec is None or not spec.submodule_search_locations:
                return None
            return Path(next(iter(spec.submodule_search_locations))) / relative
        return Path(self.folder)

    def files(self) -> list[Path]:
        """The source's image files, sorted; [] when the package is not installed."""
        folder = self.folder_path()
        if folder is None or not folder.is_dir():
            return []
        found = set()
        for pattern in self.patterns:
            for path in folder.glob(pattern):
                if (path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS
                        and not set(path.relative_to(folder).parts) & set(self.exclude)):
                    found.add(path)
        return sorted(found)


# Tux Paint's stamp folders that show people, clothing, medicine or soldiers (a chef's hat, a
# doctor's coat) would teach the model that parts of a profession are "none": left out.
STAMP_FOLDERS_LEFT_OUT = ("people", "clothes", "medical", "military", "sports")

TRAINING_SOURCES = (
    Source("tuxpaint-stamps", "apt:tuxpaint-stamps-default", "GPL-2+ and public domain (per stamp)",
           "/usr/share/tuxpaint/stamps", ("**/*.png",), STAMP_FOLDERS_LEFT_OUT),
    Source("gnome-backgrounds", "apt:gnome-backgrounds", "CC-BY-SA-3.0 / GPL",
           "/usr/share/backgrounds/gnome", ("*.jpg", "*.png", "*.webp")),
    Source("plasma-wallpapers", "apt:plasma-workspace-wallpapers", "LGPL-3 / CC-BY-SA (per wallpaper)",
           "/usr/share/wallpapers", ("*/contents/images/*",)),
)

# The far-OOD benchmark: photos with no profession in them (people are left out: scikit-image's
# astronaut and cameraman, matplotlib's Grace Hopper in uniform).
SKIMAGE_PHOTOS = (
    "brick.png", "chelsea.png", "coffee.png", "coins.png", "color.png", "grass.png", "gravel.png",
    "horse.png", "hubble_deep_field.jpg", "ihc.png", "logo.png", "microaneurysms.png", "moon.png",
    "motorcycle_left.png", "page.png", "retina.jpg", "rocket.jpg", "text.png", "chessboard_RGB.png",
    "clock_motion.png", "phantom.png", "cell.png",
)
BENCHMARK_SOURCES = (
    Source("scikit-image", "pip:scikit-image", "BSD-3-Clause / public domain / CC0 (skimage/data/README.txt)",
           "pip-module:skimage/data", SKIMAGE_PHOTOS),
    Source("scikit-learn", "pip:scikit-learn", "CC-BY 2.0 (sklearn/datasets/images/README.txt)",
           "pip-module:sklearn/datasets/images", ("*.jpg",)),
    Source("matplotlib", "pip:matplotlib", "matplotlib licence / CC-BY (mpl-data/sample_data/README.txt)",
           "pip-module:matplotlib/mpl-data/sample_data", ("Minduka_Present_Blue_Pack.png", "logo2.png")),
    Source("mate-backgrounds", "apt:mate-backgrounds", "GPL-2+ / CC-BY-SA (per image)",
           "/usr/share/backgrounds/mate", ("nature/*", "abstract/Elephants.jpg", "desktop/GreenTraditional.jpg")),
    Source("ukui-wallpapers", "apt:ukui-wallpapers", "GPL-2+ / CC-BY-SA (per image)",
           "/usr/share/backgrounds", ("*.jpg", "*.png")),
)


def the_cat_photo() -> Path | None:
    """scikit-image's photo of Chelsea the cat (a dev requirement): the animal every surface's
    test must flag; None when scikit-image is not installed."""
    folder = BENCHMARK_SOURCES[0].folder_path()
    path = folder / "chelsea.png" if folder else None
    return path if path and path.is_file() else None


def source_files(sources, log=None, consequence: str = "") -> tuple[list[tuple[str, Path]], list[str]]:
    """([(source name, file)], [names of sources not installed]); with `log`, each missing source
    is named there with its `consequence`."""
    files, missing = [], []
    for source in sources:
        found = source.files()
        if not found:
            missing.append(f"{source.name} ({source.package})")
            if log:
                log(f"{missing[-1]} is not installed; {consequence}")
        files += [(source.name, path) for path in found]
    return files, missing


def load_rgba(path: Path, size: int) -> np.ndarray:
    """uint8 RGBA [size, size, 4] of an image file, resized whole (alpha 255 where it has none)."""
    with Image.open(path, formats=PIL_FORMATS) as image:
        image.draft("RGB", (size * 2, size * 2))
        rgba = image.convert("RGBA")
    return np.asarray(resize_square(rgba, size), dtype=np.uint8)


def paste_on(foreground_rgba: np.ndarray, background_rgb: np.ndarray) -> np.ndarray:
    """uint8 RGB: the foreground's opaque parts over the background (both [S, S, ...])."""
    alpha = foreground_rgba[..., 3:4].astype(np.float32) / 255.0
    mixed = foreground_rgba[..., :3] * alpha + background_rgb.astype(np.float32) * (1.0 - alpha)
    return np.clip(mixed + 0.5, 0, 255).astype(np.uint8)


def training_outliers(size: int, procedural: int, seed: int = 0, log=print) -> tuple[np.ndarray, dict[str, int]]:
    """(uint8 RGB [N, size, size, 3], {source name: files used}): every training-source image
    (stamps pasted on a random wallpaper crop or a flat colour) and `procedural` procedural images."""
    rng = np.random.default_rng(seed)
    files, _ = source_files(TRAINING_SOURCES, log, "outlier exposure trains without it")
    counts: dict[str, int] = {}
    for name, _ in files:
        counts[name] = counts.get(name, 0) + 1
    backgrounds, stamps = [], []
    for name, path in files:
        try:
            rgba = load_rgba(path, size)
        except (OSError, ValueError, Image.DecompressionBombError):
            continue
        (stamps if name == "tuxpaint-stamps" else backgrounds).append(rgba)
    images = [b[..., :3] for b in backgrounds]
    for stamp in stamps:
        if backgrounds and rng.random() < 0.7:
            background = backgrounds[rng.integers(len(backgrounds))][..., :3]
        else:
            background = np.broadcast_to(rng.integers(0, 256, 3, dtype=np.uint8), (size, size, 3))
        images.append(paste_on(stamp, background))
    images += list(procedural_images(procedural, size, rng))
    return (np.stack(images) if images else np.zeros((0, size, size, 3), np.uint8)), counts


def procedural_images(count: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 RGB [count, size, size, 3] of procedural textures (Baradad et al. 2021): dead leaves
    (random overlapping discs) and spectral noise with a random 1/f^a falloff, in random colours."""
    images = np.empty((count, size, size, 3), np.uint8)
    for i in range(count):
        images[i] = dead_leaves(size, rng) if i % 2 == 0 else spectral_noise(size, rng)
    return images


def dead_leaves(size: int, rng: np.random.Generator, discs: int = 120) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    image = np.broadcast_to(rng.integers(0, 256, 3), (size, size, 3)).astype(np.uint8).copy()
    for _ in range(discs):
        cy, cx = rng.integers(0, size, 2)
        radius = size * rng.uniform(0.02, 0.25)
        image[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = rng.integers(0, 256, 3)
    return image


def spectral_noise(size: int, rng: np.random.Generator) -> np.ndarray:
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.fftfreq(size)[None, :]
    falloff = 1.0 / np.maximum(np.hypot(fy, fx), 1.0 / size) ** rng.uniform(1.0, 2.5)
    channels = []
    for _ in range(3):
        spectrum = falloff * np.exp(2j * np.pi * rng.random((size, size)))
        channel = np.real(np.fft.ifft2(spectrum))
        channel = (channel - channel.min()) / max(np.ptp(channel), 1e-12)
        channels.append(channel)
    return (np.stack(channels, axis=-1) * 255).astype(np.uint8)


def synthetic_images(size: int, seed: int = 1) -> list[tuple[str, np.ndarray]]:
    """The benchmark's synthetic inputs: flat colours, gradients and noise, [(name, uint8 RGB)]."""
    rng = np.random.default_rng(seed)
    out = []
    for name, colour in (("black", 0), ("white", 255), ("grey", 128)):
        out.append((f"flat-{name}", np.full((size, size, 3), colour, np.uint8)))
    for i in range(3):
        out.append((f"flat-colour-{i}", np.broadcast_to(rng.integers(0, 256, 3), (size, size, 3)).astype(np.uint8)))
    ramp = np.linspace(0, 255, size, dtype=np.float32)
    for i in range(3):
        a, b = rng.integers(0, 256, (2, 3))
        gradient = a[None, None] + (b - a)[None, None] * (ramp[:, None, None] / 255.0)
        out.append((f"gradient-{i}", np.broadcast_to(gradient, (size, size, 3)).astype(np.uint8)))
    for i in range(3):
        out.append((f"uniform-noise-{i}", rng.integers(0, 256, (size, size, 3), dtype=np.uint8)))
    return out


def benchmark_photos(size: int, log=print) -> tuple[list[str], np.ndarray]:
    """(names, uint8 RGB [N, size, size, 3]) of the far-OOD benchmark's photos, decoded as
    infer.py decodes them; sources not installed are named in the log."""
    files, _ = source_files(BENCHMARK_SOURCES, log, "the far-OOD benchmark leaves its photos out")
    names, images = [], []
    for source, path in files:
        try:
            images.append(load_image_rgb(path, size=size))
        except ImageError as e:
            log(f"far-OOD benchmark: skipped {path}: {e}")
            continue
        names.append(f"{source}/{path.name}")
    stacked = np.stack(images) if images else np.zeros((0, size, size, 3), np.uint8)
    return names, stacked
