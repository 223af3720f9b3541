"""Serve a trained IdenProf model: a page to try it in a browser and a JSON API.

    python serve.py                            # the latest finished run, else the shipped model
    python serve.py --model runs/cpu-long-128px-seed0 --port 8080
    curl -F image=@photo.jpg 'http://127.0.0.1:8000/api/predict?top=3'

The address is taken first (a busy port fails at once), then the model is loaded and run once
before any request is answered, so the first one is served at full speed. Prints the URL when
ready; Ctrl-C stops. Exit code 2 for model or address errors.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from pathlib import Path

# Before anything can import TensorFlow: keep its C++ start-up log off the user's terminal.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from idenprof.cli import add_threshold_flags  # noqa: E402
from idenprof.errors import IdenprofError  # noqa: E402
from idenprof.predict.classifier import checked_coverage, load  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--model",
        help="a .keras/.h5/.tflite file, SavedModel folder or run folder (default: best model "
        "of the most recent finished run under runs/, else the shipped model)",
    )
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"), help="default: runs")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="default 8000; 0 picks a free one")
    parser.add_argument("--max-upload-mb", type=float, default=10.0,
                        help="refuse uploads larger than this many megabytes (default 10)")
    add_threshold_flags(parser)
    parser.add_argument("--log-level", default="info",
                        choices=["critical", "error", "warning", "info", "debug"],
                        help="uvicorn's log level (info logs each request)")
    return parser.parse_args(argv)


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound to host:port and listening (port 0: the OS picks a free one)."""
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    return socket.create_server((host, port), family=family, backlog=128)


def main(argv: list[str] | None = None) -> int:
    """`serve.py` / `idenprof-serve`: load, listen, serve until Ctrl-C; the exit code."""
    args = parse_args(argv)
    if not 0 <= args.port <= 65535:
        print(f"error: --port must be 0..65535, got {args.port}", file=sys.stderr)
        return 2
    if not args.max_upload_mb > 0:
        print(f"error: --max-upload-mb must be positive, got {args.max_upload_mb}", file=sys.stderr)
        return 2
    try:
        sock = listening_socket(args.host, args.port)
    except OSError as e:
        print(f"error: cannot listen on {args.host}:{args.port} ({e.strerror or e}); "
              "pick another --port or --host", file=sys.stderr)
        return 2
    try:
        classifier = load(args.model, runs_dir=args.runs_dir, min_confidence=args.min_confidence,
                          none_threshold=args.none_threshold,
                          coverage=None if args.coverage is None else checked_coverage(args.coverage, "--coverage"))
        classifier.warm_up(heatmaps=classifier.heatmap_model_path is not None)
    except IdenprofError as e:
        sock.close()
        print(f"error: {e}", file=sys.stderr)
        return 2

    import uvicorn

    from idenprof.serve.server import create_app

    app = create_app(classifier, max_upload_bytes=int(args.max_upload_mb * 1024 * 1024))
    host, port = sock.getsockname()[:2]
    shown_host = f"[{host}]" if ":" in host else host
    heatmaps = "with" if classifier.heatmap_model_path is not None else "without"
    print(f"serving {classifier.model_path} ({heatmaps} heat maps) on "
          f"http://{shown_host}:{port}/  (Ctrl-C to stop)", flush=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level=args.log_level))
    server.run(sockets=[sock])
    return 0
