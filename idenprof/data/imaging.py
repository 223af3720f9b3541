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


class ImageError(IdenprofError):
    """A file that cannot be read as an image; the message names the file and the problem."""


def is_image_filename(path: str | Path) -> bool:
    return str(path).lower().endswith(IMAGE_EXTENSIONS)


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


def load_image_rgb(source: str | Path | bytes, size: int | None = None) -> np.ndarray:
    """Decode an image file (or its bytes) to uint8 RGB, shape [H, W, 3].

    EXIF orientation is applied; animated images give their first frame. With `size`, the image
    is resized to [size, size, 3] (bilinear, whole image, aspect ratio not kept) as training does.
    Raises ImageError for missing, non-image, truncated or oversized files.
    """
    name = "<bytes>" if isinstance(source, bytes) else str(source)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            fp = io.BytesIO(source) if isinstance(source, bytes) else source
            with Image.open(fp) as image:
                width, height = image.size
                if width * height > MAX_IMAGE_PIXELS:
                    raise ImageError(
                        f"{name}: image is {width}x{height} pixels, too large to be a photo "
                        "(possible decompression bomb); resize it first"
                    )
                image.seek(0)
                if size is not None and image.format == "JPEG":
                    # Let libjpeg decode at a reduced scale when we will shrink anyway.
                    image.draft("RGB", (size, size))
                image = ImageOps.exif_transpose(image)
                image = to_rgb(image)
                if size is not None and image.size != (size, size):
                    image = image.resize((size, size), Image.BILINEAR)
                return np.asarray(image, dtype=np.uint8)
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError(f"{name}: no such file") from None
    except PermissionError:
        raise ImageError(f"{name}: permission denied; make the file readable") from None
    except IsADirectoryError:
        raise ImageError(f"{name}: is a folder, not an image") from None
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image file (or an unsupported format)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(
            f"{name}: image too large to be a photo (possible decompression bomb); resize it first"
        ) from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"{name}: cannot decode image ({e}); the file may be truncated") from None
