"""Small edges of inference and the class index (issue 15, items 10 and 11)."""

from __future__ import annotations

import errno
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

import idenprof.data.imaging as imaging
from idenprof.class_index import read_class_index, write_class_index
from idenprof.data.imaging import ImageError, load_image_rgb
from idenprof.errors import ModelFileError
from idenprof.predict.inputs import expand_inputs
from idenprof.predict.model_finding import resolve_model_path


def test_the_class_index_gets_the_permissions_the_umask_gives(tmp_path):
    previous = os.umask(0o027)
    try:
        path = write_class_index(["chef", "doctor"], tmp_path / "class_index.json")
    finally:
        os.umask(previous)
    assert path.stat().st_mode & 0o777 == 0o666 & ~0o027


def test_a_class_index_naming_a_class_twice_is_refused(tmp_path):
    path = tmp_path / "class_index.json"
    path.write_text(json.dumps({"0": "chef", "1": "pilot", "2": "chef"}))
    with pytest.raises(ModelFileError, match="names chef more than once"):
        read_class_index(path)


def test_an_export_folder_is_a_model(tmp_path, export_dir):
    export = shutil.copytree(export_dir, tmp_path / "run" / "export")
    assert resolve_model_path(str(export)) == export / "model.tflite"


def test_a_recursive_glob_through_a_symlink_loop_gives_each_file_once(tmp_path, photos):
    shutil.copy(photos[0], tmp_path / "a.jpg")
    (tmp_path / "loop").symlink_to(tmp_path, target_is_directory=True)
    paths, errors = expand_inputs([str(tmp_path / "**" / "*.jpg")])
    assert paths == [str(tmp_path / "a.jpg")] and errors == []


def test_an_unreadable_file_says_permission_denied(tmp_path, photos, monkeypatch):
    target = tmp_path / "secret.jpg"
    shutil.copy(photos[0], target)

    def denied(fp, *args, **kwargs):  # as open() fails for a non-root user on a chmod 000 file
        raise PermissionError(errno.EACCES, "Permission denied", str(fp))

    monkeypatch.setattr(imaging.Image, "open", denied)
    with pytest.raises(ImageError) as err:
        load_image_rgb(target)
    assert str(err.value) == f"{target}: permission denied; make the file readable"
    monkeypatch.undo()
    assert load_image_rgb(target).shape[2] == 3
    assert isinstance(Image.open(target), Image.Image)


@pytest.mark.parametrize("pil_format, suffix", [
    ("TIFF", ".tif"), ("PPM", ".ppm"), ("TGA", ".tga"), ("ICO", ".ico"), ("PCX", ".pcx"), ("SGI", ".sgi"),
    ("IM", ".im"), ("EPS", ".eps"),
])
def test_only_the_promised_formats_are_decoded_whatever_the_file_is_called(tmp_path, pil_format, suffix):
    """JPEG, PNG, WebP, BMP and GIF only: Pillow would read these too, and for EPS run Ghostscript."""
    from idenprof.data.imaging import NotAnImageError

    image = Image.new("RGB", (16, 16), (200, 30, 30))
    for name in (f"photo{suffix}", "photo.jpg"):  # its own name, and disguised as a JPEG
        path = tmp_path / name
        image.save(path, format=pil_format)
        with pytest.raises(NotAnImageError, match="JPEG, PNG, WebP, BMP or GIF") as err:
            load_image_rgb(path)
        assert "Ghostscript" not in str(err.value)
        with pytest.raises(NotAnImageError):
            load_image_rgb(path.read_bytes())


@pytest.mark.parametrize("pil_format", ["JPEG", "PNG", "WEBP", "BMP", "GIF"])
def test_the_promised_formats_are_decoded(tmp_path, pil_format):
    path = tmp_path / f"photo.{pil_format.lower()}"
    Image.new("RGB", (16, 12), (200, 30, 30)).save(path, format=pil_format)
    assert load_image_rgb(path).shape == (12, 16, 3)


def test_a_dangling_image_link_in_a_folder_is_named_by_infer_and_evaluate(tmp_path, small_dataset, export_dir):
    import subprocess
    import sys

    from archive_subsets import REPO_ROOT

    photos = tmp_path / "photos" / "chef"
    photos.mkdir(parents=True)
    shutil.copy(sorted((small_dataset / "test" / "chef").glob("*.jpg"))[0], photos / "real.jpg")
    (photos / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    model = str(export_dir / "model.tflite")
    runs = (("infer.py", [str(photos)]), ("evaluate.py", [str(photos.parent), "--out", str(tmp_path / "e")]))
    for script, args in runs:
        result = subprocess.run([sys.executable, str(REPO_ROOT / script), "--model", model, *args],
                                capture_output=True, text=True, timeout=300, cwd=tmp_path)
        assert result.returncode == 1, (script, result.stderr[-2000:])
        assert "gone.jpg" in result.stderr and "Traceback" not in result.stderr, script


def test_float_pixels_scaled_to_0_1_are_refused_with_what_to_do():
    from idenprof.data.imaging import rgb_pixels

    scaled = np.random.default_rng(0).random((8, 8, 3)).astype(np.float32)  # 0..1
    with pytest.raises(ImageError, match=r"look scaled to 0..1; pass 0..255 \(multiply by 255\)"):
        rgb_pixels(scaled)
    assert rgb_pixels(scaled * 255).shape == (8, 8, 3)
    assert rgb_pixels(np.zeros((8, 8, 3), np.float32)).max() == 0  # black is black
