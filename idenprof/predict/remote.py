"""Photos given as http(s) URLs: fetched into memory with a total deadline, a size limit and a
content-type check, then decoded like any file (idenprof.data.imaging)."""

from __future__ import annotations

import time

from idenprof.data.imaging import ImageError
from idenprof.errors import one_line

URL_PREFIXES = ("http://", "https://")
FETCH_DEADLINE_S = 30.0  # the whole fetch: a server trickling bytes cannot hold infer.py longer
READ_TIMEOUT_S = 5.0  # connect, and each read: a silent server is cut off sooner
MAX_FETCH_BYTES = 20 * 1024 * 1024  # a photo, not a video or an archive


def is_url(text: str) -> bool:
    return str(text).lower().startswith(URL_PREFIXES)


def fetch_image(url: str, timeout_s: float = FETCH_DEADLINE_S, max_bytes: int = MAX_FETCH_BYTES) -> bytes:
    """The bytes of the image at `url`, fetched within `timeout_s` seconds in all (checked after
    each read; a read waits at most READ_TIMEOUT_S).

    Raises:
        ImageError: unreachable, too slow, an HTTP error status, a Content-Type that is not image/*,
            or more than `max_bytes` (declared or received); the message names the URL.
    """
    import requests

    deadline = time.monotonic() + timeout_s
    too_slow = ImageError(f"{url}: not fetched within {timeout_s:g} s; is the server slow?")
    try:
        with requests.get(url, stream=True, timeout=min(READ_TIMEOUT_S, timeout_s)) as response:
            if response.status_code != 200:
                raise ImageError(f"{url}: the server answered HTTP {response.status_code}")
            kind = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
            if not kind.startswith("image/"):
                raise ImageError(f"{url}: not an image (Content-Type {kind or 'missing'})")
            declared = response.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise ImageError(f"{url}: {int(declared)} bytes, over the {max_bytes // 2**20} MB limit for a photo")
            chunks, received = [], 0
            # read1 returns what one read of the socket gives, so the deadline is checked while a
            # server trickles bytes (iter_content would wait for a whole chunk).
            while chunk := response.raw.read1(1 << 16, decode_content=True):
                received += len(chunk)
                if received > max_bytes:
                    raise ImageError(f"{url}: over the {max_bytes // 2**20} MB limit for a photo")
                if time.monotonic() > deadline:
                    raise too_slow
                chunks.append(chunk)
            return b"".join(chunks)
    except requests.RequestException as e:
        if time.monotonic() > deadline:
            raise too_slow from None
        raise ImageError(f"{url}: cannot fetch it ({one_line(e)})") from None
