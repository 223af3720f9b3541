"""Reading photos into RGB pixel arrays, the same way for training caches and for inference.

Everything that turns a file into model input goes through `load_image_rgb`, so training and
`infer.py` see identical pixels for the same file (one source of truth for decode and resize).
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from idenprof.errors import IdenprofError

# Pillow's own default bomb limit (~89 megapixels) is a warning; we make twice it an error.
MAX_IMAGE_PIXELS = 2 * 89_478_485
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif")
# The formats we promise, and the only decoders Pillow may try: a TIFF, EPS (which would run
# Ghostscript), PPM or ICO is "not an image" here, whatever its name.
PIL_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF")
FORMATS_TEXT = "JPEG, PNG, WebP, BMP or GIF"


class ImageError(IdenprofError):
    """A file that cannot be read as an image; the message names the file and the problem."""


class NotAnImageError(ImageError):
    """The data is not in any image format we can decode (e.g. a text file)."""


class ImageTooLargeError(ImageError):
    """The image declares more than MAX_IMAGE_PIXELS pixels: refused before decoding."""


def is_image_filename(path: str | Path) -> bool:
    return str(path).lower().endswith(IMAGE_EXTENSIONS)


def is_listed_image(path: Path) -> bool:
    """Whether a folder listing for prediction takes `path`: an image file, or a link named like
    one that leads nowhere (kept, so that reading it names the problem instead of skipping it)."""
    return is_image_filename(path) and (path.is_file() or (path.is_symlink() and not path.exists()))


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode (L, LA, P, RGBA, CMYK, I;16, I, F) to 8-bit RGB; alpha composited on white."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit and float: scale the full range to 0..255 rather than clipping.
        arr = np.asarray(image, dtype=np.float64)
        hi = arr.max() if arr.size else 0.0
        scale = 255.0 / hi if hi > 255 else 1.0
        image = Image.fromarray(np.clip(arr * scale, 0, 255).astype(np.uint8), mode="L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def rgb_pixels(
    image: Image.Image | np.ndarray, size: int | None = None, name: str = "<image>"
) -> np.ndarray:
    """An opened PIL image, or a pixel array, to uint8 RGB [H, W, 3] ([size, size, 3] with `size`).

    The one place pixels are made for a model, whatever the input was: EXIF orientation applied,
    any mode converted to RGB (`to_rgb`), resized bilinear to the whole `size` x `size` square
    (aspect ratio not kept) as training does. Arrays are [H, W, 3] or [H, W] (gray), uint8 or
    float 0..255. Raises ImageTooLargeError over MAX_IMAGE_PIXELS (checked before any pixel is
    decoded) and ImageError for an array of another shape or range.
    """
    if isinstance(image, np.ndarray):
        image = array_to_image(image, name)
    refuse_huge(image, name)
    image.seek(0)
    image = ImageOps.exif_transpose(image)
    image = to_rgb(image)
    if size is not None:
        image = resize_square(image, size)
    return np.asarray(image, dtype=np.uint8)


def refuse_huge(image: Image.Image, name: str) -> None:
    """Raise ImageTooLargeError when `image` declares more than MAX_IMAGE_PIXELS (from its header:
    nothing is decoded)."""
    width, height = image.size
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageTooLargeError(
            f"{name}: image is {width}x{height} pixels, too large to be a photo "
            "(possible decompression bomb); resize it first"
        )


def array_to_image(pixels: np.ndarray, name: str = "<array>") -> Image.Image:
    """uint8 or float (0..255) pixels [H, W, 3] or [H, W] as a PIL image (floats rounded)."""
    if pixels.ndim not in (2, 3) or (pixels.ndim == 3 and pixels.shape[2] != 3) or not pixels.size:
        raise ImageError(f"{name}: expected pixels [H, W, 3] or [H, W], got shape {pixels.shape}")
    if pixels.dtype != np.uint8:
        if not np.issubdtype(pixels.dtype, np.number) or np.issubdtype(pixels.dtype, np.complexfloating):
            raise ImageError(f"{name}: expected numeric pixels 0..255, got dtype {pixels.dtype}")
        finite = np.isfinite(pixels).all()
        if not finite or pixels.min() < 0 or pixels.max() > 255:
            raise ImageError(f"{name}: pixel values must be 0..255 (not 0..1), finite")
        if np.issubdtype(pixels.dtype, np.floating) and 0 < pixels.max() <= 1.0:
            # A photo in 0..255 whose brightest pixel is 1 is all but black: these are 0..1 pixels.
            raise ImageError(f"{name}: float pixels all within 0..1 look scaled to 0..1; pass 0..255 "
                             "(multiply by 255)")
        pixels = np.rint(pixels).astype(np.uint8)
    return Image.fromarray(pixels)


def resize_square(image: Image.Image, size: int) -> Image.Image:
    """`image` resized to size x size pixels (bilinear, whole image, aspect ratio not kept): the one
    resize of training and inference, for files and for datasets stored as arrays alike."""
    return image if image.size == (size, size) else image.resize((size, size), Image.BILINEAR)


def load_image_rgb(source: str | Path | bytes, size: int | None = None) -> np.ndarray:
    """Decode an image file (or its bytes) to uint8 RGB, shape [H, W, 3].

    EXIF orientation is applied; animated images give their first frame. With `size`, the image
    is resized to [size, size, 3] (bilinear, whole image, aspect ratio not kept) as training does
    (`rgb_pixels`). Raises NotAnImageError for data that is no image, ImageTooLargeError for a
    possible decompression bomb (refused before decoding), ImageError for missing or truncated
    files.
    """
    name = "<bytes>" if isinstance(source, bytes) else str(source)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            fp = io.BytesIO(source) if isinstance(source, bytes) else source
            with Image.open(fp, formats=PIL_FORMATS) as image:
                refuse_huge(image, name)  # before draft() shrinks the declared size
                if size is not None and image.format == "JPEG":
                    # Let libjpeg decode at a reduced scale when we will shrink anyway.
                    image.draft("RGB", (size, size))
                return rgb_pixels(image, size, name)
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError(f"{name}: no such file") from None
    except PermissionError:
        raise ImageError(f"{name}: permission denied; make the file readable") from None
    except IsADirectoryError:
        raise ImageError(f"{name}: is a folder, not an image") from None
    except UnidentifiedImageError:
        raise NotAnImageError(f"{name}: not an image file in a format we read ({FORMATS_TEXT})") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageTooLargeError(
            f"{name}: image too large to be a photo (possible decompression bomb); resize it first"
        ) from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"{name}: cannot decode image ({e}); the file may be truncated") from None
