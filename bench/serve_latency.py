"""Benchmark: the web server's latency, heat-map latency, throughput with concurrent clients, RSS.

    python bench/serve_latency.py --model idenprof/pretrained/model.int8.tflite [--requests 100]

Starts `serve.py --model MODEL` on 127.0.0.1 (a free port), then POSTs real IdenProf test photos
(taken from the archive) to /api/predict over HTTP:
  - one client, one request at a time: p50/p95 latency (ms);
  - one client with heatmap=true: p50 latency (ms);
  - --clients concurrent clients: predictions/s and errors;
  - many photos per request: --batch photos in one POST to /api/predict/batch against the same
    photos in --batch single requests, taking turns (--batch-rounds), photos/s and the ratio;
  - the server's resident memory (RSS) afterwards, and its peak.
Targets: p50 <= 100 ms, p95 <= 250 ms, heat map p50 <= 300 ms, >= 15 predictions/s with 8
clients, RSS <= 1.5 GB. Never run in CI. The last line is `p50_ms: X`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from archive_photos import archive_test_photos  # noqa: E402

from idenprof.train.runtime import cpu_model_name  # noqa: E402

BOUNDARY = "benchb0undary"
TARGETS = {"p50_ms": 100, "p95_ms": 250, "heatmap_p50_ms": 300}


def photo_bytes(archive: Path, per_class: int) -> list[bytes]:
    """The bytes of the first `per_class` test photos of each class in the archive."""
    return [data for _, data in archive_test_photos(archive, per_class)]


def start_server(model: str) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, str(REPO / "serve.py"), "--model", model, "--port", "0",
         "--log-level", "warning"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env, cwd=REPO,
    )
    for line in process.stdout:
        match = re.search(r"on (http://\S+/)", line)
        if match:
            return process, match.group(1)
    raise RuntimeError(f"serve.py exited ({process.wait()}) before serving")


def post(url: str, *photos: bytes) -> float:
    """Seconds for one POST of `photos` (each in a field `image`); raises on any answer but 200."""
    body = b"".join(f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"image\"; "
                    f"filename=\"photo.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n".encode() + photo + b"\r\n"
                    for photo in photos)
    body += f"--{BOUNDARY}--\r\n".encode()
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=60) as response:
        json.loads(response.read())
    return time.perf_counter() - start


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def rss_mb(pid: int) -> tuple[float, float]:
    """(current, peak) resident memory of a process in MB, from /proc."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def verdict(ok: bool) -> str:
    return "meets target" if ok else "MISSES target"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="model file or folder for serve.py")
    parser.add_argument("--requests", type=int, default=100, help="sequential predictions")
    parser.add_argument("--heatmap-requests", type=int, default=30)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--concurrent-requests", type=int, default=200)
    parser.add_argument("--batch", type=int, default=32, help="photos per batch request")
    parser.add_argument("--batch-rounds", type=int, default=5)
    parser.add_argument(
        "--archive", type=Path, default=REPO.parent / "shared" / "datasets" / "idenprof-jpg.zip"
    )
    args = parser.parse_args()

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"machine: {cpu_model_name()}, {cores} cores; model: {args.model}", flush=True)
    photos = photo_bytes(args.archive, per_class=5)
    started = time.perf_counter()
    process, url = start_server(args.model)
    print(f"server ready in {time.perf_counter() - started:.1f} s at {url}", flush=True)
    try:
        predict_url = url + "api/predict"
        post(predict_url, photos[0])  # warm the connection path
        latencies = [post(predict_url, photos[i % len(photos)]) * 1000
                     for i in range(args.requests)]
        p50, p95 = statistics.median(latencies), percentile(latencies, 0.95)
        print(f"one client: p50 {p50:.1f} ms ({verdict(p50 <= TARGETS['p50_ms'])} "
              f"{TARGETS['p50_ms']}), p95 {p95:.1f} ms ({verdict(p95 <= TARGETS['p95_ms'])} "
              f"{TARGETS['p95_ms']}) over {len(latencies)} requests", flush=True)

        heat_url = predict_url + "?heatmap=true"
        heat = [post(heat_url, photos[i % len(photos)]) * 1000
                for i in range(args.heatmap_requests)]
        heat_p50 = statistics.median(heat)
        print(f"with heat map: p50 {heat_p50:.1f} ms "
              f"({verdict(heat_p50 <= TARGETS['heatmap_p50_ms'])} {TARGETS['heatmap_p50_ms']}) "
              f"over {len(heat)} requests", flush=True)

        def one(i: int) -> bool:
            try:
                post(predict_url, photos[i % len(photos)])
                return True
            except (OSError, urllib.error.HTTPError):
                return False

        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=args.clients) as pool:
            outcomes = list(pool.map(one, range(args.concurrent_requests)))
        elapsed = time.perf_counter() - start
        rate = sum(outcomes) / elapsed
        print(f"{args.clients} clients: {rate:.1f} predictions/s ({verdict(rate >= 15)} 15), "
              f"{outcomes.count(False)} errors in {len(outcomes)} requests", flush=True)
        batch = [photos[i % len(photos)] for i in range(args.batch)]
        singles_s, batches_s = [], []
        for _ in range(args.batch_rounds):  # taking turns: the machine's load hits both alike
            singles_s.append(sum(post(predict_url, photo) for photo in batch))
            batches_s.append(post(predict_url + "/batch", *batch))
        single_rate, batch_rate = args.batch / statistics.median(singles_s), args.batch / statistics.median(batches_s)
        print(f"{args.batch} photos: {single_rate:.1f} photos/s in single requests, {batch_rate:.1f} in one batch "
              f"request: {batch_rate / single_rate:.2f}x ({verdict(batch_rate >= 2 * single_rate)} 2x; medians of "
              f"{args.batch_rounds} turns)", flush=True)
        rss, peak = rss_mb(process.pid)
        print(f"server RSS: {rss:.0f} MB, peak {peak:.0f} MB ({verdict(peak <= 1536)} 1536 MB)",
              flush=True)
    finally:
        process.terminate()
        process.wait(timeout=30)
    print(f"p50_ms: {p50:.1f}")


if __name__ == "__main__":
    main()
