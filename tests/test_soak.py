"""Soak (slow: run with `python -m pytest -m slow tests/test_soak.py`): serve.py with the shipped
model under 16 clients posting the worst legal images for 30 s. Every request gets an answer (200,
or 503 with JSON when busy), never a 5xx of another kind, and the server's peak resident memory
(VmHWM) stays within 1.5 GB."""

from __future__ import annotations

import io
import json
import struct
import time
import urllib.error
import urllib.request
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image
from serve_helpers import SHIPPED_MODEL, running_server

CLIENTS = 16
SECONDS = 30
PEAK_LIMIT_BYTES = 1.5e9


def big_flat_png(side: int) -> bytes:
    """An RGB PNG side x side of one colour: a few hundred KB that decode to side^2 x 3 bytes."""
    row = b"\0" + b"\x80\x40\x20" * side
    raw = zlib.compress(row * side, 9)

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


def rgba16_png(side: int) -> bytes:
    rows = np.full((side, side * 4), 40000, ">u2")
    raw = zlib.compress(b"".join(b"\0" + row.tobytes() for row in rows), 6)

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 16, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


def many_frame_gif(frames: int = 120, side: int = 1500) -> bytes:
    """An animated GIF of `frames` flat frames: small on disk, each frame side^2 pixels decoded."""
    images = [Image.new("L", (side, side), 2 * i) for i in range(frames)]
    out = io.BytesIO()
    images[0].save(out, "GIF", save_all=True, append_images=images[1:])
    return out.getvalue()


def post(url: str, data: bytes) -> int:
    boundary = "soakboundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"x\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(url + "api/predict", data=body,
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            json.loads(response.read())
            return response.status
    except urllib.error.HTTPError as e:
        json.loads(e.read())  # every refusal is JSON too
        return e.code


def peak_rss_bytes(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


@pytest.mark.slow
def test_16_clients_posting_the_worst_legal_images_for_30_s_stay_within_memory_and_get_answers():
    images = [big_flat_png(8000), rgba16_png(4000), many_frame_gif()]
    assert all(len(image) < 10 * 2**20 for image in images)  # within the default upload limit
    with running_server("--model", str(SHIPPED_MODEL)) as (url, process):
        baseline = peak_rss_bytes(process.pid)
        deadline = time.monotonic() + SECONDS

        def client(number: int) -> list[int]:
            statuses, turn = [], number
            while time.monotonic() < deadline:
                statuses.append(post(url, images[turn % len(images)]))
                turn += 1
            return statuses

        with ThreadPoolExecutor(CLIENTS) as pool:
            statuses = [s for result in pool.map(client, range(CLIENTS)) for s in result]
        peak = peak_rss_bytes(process.pid)
    print(f"soak: {len(statuses)} requests, {statuses.count(200)} answered, {statuses.count(503)} busy; "
          f"peak RSS {peak / 1e9:.2f} GB (after start-up {baseline / 1e9:.2f} GB)")
    assert set(statuses) <= {200, 503}, sorted(set(statuses))
    assert statuses.count(200) >= len(images)
    assert peak <= PEAK_LIMIT_BYTES, f"peak RSS {peak / 1e9:.2f} GB"
