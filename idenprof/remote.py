"""Photos given as http(s) URLs: fetched into memory with a timeout, a size limit and a content-type
check, then decoded like any file (idenprof.data.imaging)."""

from __future__ import annotations

from idenprof.data.imaging import ImageError
from idenprof.errors import one_line

URL_PREFIXES = ("http://", "https://")
FETCH_TIMEOUT_S = 15.0  # connect and per-read
MAX_FETCH_BYTES = 20 * 1024 * 1024  # a photo, not a video or an archive


def is_url(text: str) -> bool:
    return str(text).lower().startswith(URL_PREFIXES)


def fetch_image(url: str, timeout_s: float = FETCH_TIMEOUT_S, max_bytes: int = MAX_FETCH_BYTES) -> bytes:
    """The bytes of the image at `url`.

    Raises:
        ImageError: unreachable, an HTTP error status, a Content-Type that is not image/*, or more
            than `max_bytes` (declared or received); the message names the URL.
    """
    import requests

    try:
        with requests.get(url, stream=True, timeout=timeout_s) as response:
            if response.status_code != 200:
                raise ImageError(f"{url}: the server answered HTTP {response.status_code}")
            kind = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
            if not kind.startswith("image/"):
                raise ImageError(f"{url}: not an image (Content-Type {kind or 'missing'})")
            declared = response.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise ImageError(f"{url}: {int(declared)} bytes, over the {max_bytes // 2**20} MB limit for a photo")
            chunks, received = [], 0
            for chunk in response.iter_content(1 << 16):
                received += len(chunk)
                if received > max_bytes:
                    raise ImageError(f"{url}: over the {max_bytes // 2**20} MB limit for a photo")
                chunks.append(chunk)
            return b"".join(chunks)
    except requests.RequestException as e:
        raise ImageError(f"{url}: cannot fetch it ({one_line(e)})") from None
