"""serving_bytes decodes encoded images in the graph as infer.py does with PIL (issue 15, items 8
and 9): the same pixels for the same file, and the same size limit."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from test_export import IMAGE_SIZE

from idenprof.data.graph_imaging import decode_resized
from idenprof.data.imaging import MAX_IMAGE_PIXELS, load_image_rgb

SIZE = 32


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def gradient(width=120, height=80) -> np.ndarray:
    """An RGB test card whose every corner differs, so a wrong rotation or flip shows."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 // width, y * 255 // height, (x + y) % 256], axis=-1).astype(np.uint8)


def with_orientation(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(Image.fromarray(gradient()), "JPEG", quality=95, exif=exif.tobytes())


def png16(array: np.ndarray, color_type: int) -> bytes:
    """A 16-bit PNG (Pillow cannot write 16-bit colour) of uint16 `array` [H, W] or [H, W, C]."""
    height, width = array.shape[:2]
    rows = array.astype(">u2").reshape(height, -1)
    raw = b"".join(b"\0" + row.tobytes() for row in rows)

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 16, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def cases() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    card = Image.fromarray(gradient())
    rgba = np.dstack([gradient(), rng.integers(0, 256, (80, 120), dtype=np.uint8)])
    palette = card.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    palette.info["transparency"] = 3
    found = {f"exif-{o}": with_orientation(o) for o in range(1, 9)}
    found.update({
        "large-jpeg": encode(Image.fromarray(gradient(1000, 700)), "JPEG", quality=90),
        "gray-jpeg": encode(card.convert("L"), "JPEG"),
        "cmyk-jpeg": encode(card.convert("CMYK"), "JPEG", quality=95),
        "gray16-png": png16(rng.integers(0, 4000, (80, 120), dtype=np.uint16), color_type=0),
        "rgb16-png": png16(rng.integers(0, 65536, (80, 120, 3), dtype=np.uint16), color_type=2),
        "rgba-png": encode(Image.fromarray(rgba, "RGBA"), "PNG"),
        "la-png": encode(Image.fromarray(rgba, "RGBA").convert("LA"), "PNG"),
        "palette-png": encode(palette, "PNG", transparency=3),
        "gray-png": encode(card.convert("L"), "PNG"),
    })
    return found


CASES = cases()
decode = tf.function(lambda encoded: decode_resized(encoded, SIZE))


@pytest.mark.parametrize("name", list(CASES))
def test_serving_bytes_gives_the_pixels_infer_py_gives(name):
    expected = load_image_rgb(CASES[name], size=SIZE).astype(np.float32)
    got = decode(tf.constant(CASES[name])).numpy()
    difference = np.abs(got - expected)
    # PIL resamples in fixed point, TensorFlow in float: a rounding step apart at most.
    assert difference.max() <= 2 and difference.mean() < 0.3, (difference.max(), difference.mean())


def test_a_png_declaring_too_many_pixels_is_refused_before_decoding():
    header = struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0)
    bomb = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + header + b"\0" * 4
    assert 20000 * 20000 > MAX_IMAGE_PIXELS
    with pytest.raises(tf.errors.InvalidArgumentError, match="possible decompression bomb"):
        decode(tf.constant(bomb))


def webp_lossless_header(width: int, height: int) -> bytes:
    """The first 34 bytes of a lossless WebP declaring width x height (no pixel data)."""
    bits = (width - 1) | (height - 1) << 14
    body = b"VP8L" + struct.pack("<I", 5) + b"\x2f" + struct.pack("<I", bits) + b"\0" * 9
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WEBP" + body


@pytest.mark.parametrize("kind", ["lossless-header", "lossy", "lossless", "extended"])
def test_webp_sides_are_read_from_the_header_and_a_huge_one_is_refused(kind):
    from idenprof.data.graph_imaging import header_size

    if kind == "lossless-header":
        data, expected = webp_lossless_header(13500, 13500), (13500, 13500)
        assert len(data) == 34
        with pytest.raises(tf.errors.InvalidArgumentError, match="possible decompression bomb"):
            decode(tf.constant(data))
    else:
        image = Image.fromarray(gradient(123, 77))
        options = {"lossy": {"quality": 80}, "lossless": {"lossless": True},
                   "extended": {"quality": 80, "exif": Image.Exif().tobytes() + b"x"}}[kind]
        data, expected = encode(image, "WEBP", **options), (77, 123)
    encoded = tf.constant(data)
    head = tf.cast(tf.io.decode_raw(tf.strings.substr(encoded, 0, 4096) + b"\0" * 4096, tf.uint8), tf.int64)
    is_jpeg, is_png = tf.constant(False), tf.constant(False)
    assert tuple(int(v) for v in header_size(encoded, head, is_jpeg, is_png)) == expected


def test_the_exported_signature_decodes_like_infer_py(export_dir):
    loaded = tf.saved_model.load(str(export_dir / "saved_model"))
    encoded = [CASES["exif-6"], CASES["gray16-png"]]
    from_bytes = loaded.signatures["serving_bytes"](images=tf.constant(encoded))["probabilities"].numpy()
    pixels = np.stack([load_image_rgb(e, size=IMAGE_SIZE) for e in encoded]).astype(np.float32)
    from_pixels = loaded.signatures["serving_default"](pixels=tf.constant(pixels))["probabilities"].numpy()
    np.testing.assert_allclose(from_bytes, from_pixels, atol=2e-2)


PEAK_PROBE = """
import io, resource, sys
import tensorflow as tf
from PIL import Image
from idenprof.data.graph_imaging import decode_resized
decode = tf.function(lambda e: decode_resized(e, 128))
small = io.BytesIO(); Image.new(sys.argv[1], (64, 64)).save(small, "PNG"); decode(tf.constant(small.getvalue()))
big = io.BytesIO(); Image.new(sys.argv[1], (8000, 8000), 90).save(big, "PNG")
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
decode(tf.constant(big.getvalue())).numpy()
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)
"""


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_an_8000_pixel_png_decodes_within_a_gigabyte(mode):
    """A few hundred KB of legal PNG (64 megapixels, under the bomb limit) must not cost gigabytes."""
    import os
    import subprocess
    import sys

    from archive_subsets import REPO_ROOT

    done = subprocess.run([sys.executable, "-c", PEAK_PROBE, mode], capture_output=True, text=True, timeout=300,
                          cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout.split()[-1]) < 1e9
