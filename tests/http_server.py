"""A real HTTP file server on 127.0.0.1 for download tests, with fault injection.

    with serve_files({"/idenprof-jpg.zip": archive_path}) as base_url:
        download_file(base_url + "/idenprof-jpg.zip", dest)
        assert base_url.log == [("GET", "/idenprof-jpg.zip", None)]

`base_url` is a str ("http://127.0.0.1:<port>") that also carries `.log`, the list of requests
the server received as (method, path, Range header or None), in arrival order.

Faults are per path (`faults={"/x.zip": Fault(...)}`): answer with an error status, close the
connection after some body bytes, stall before the body, or ignore Range headers; each for the
first `times` requests to that path (None: every request). The server runs in a daemon thread
and is shut down when the `with` block ends.
"""

from __future__ import annotations

import mimetypes
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

RANGE_RE = re.compile(r"bytes=(\d+)-(\d*)$")


@dataclass
class Fault:
    """What to do wrong for a path. Unset fields behave normally."""

    status: int | None = None  # answer with this status (no file) instead of the file
    cut_after_bytes: int | None = None  # send this many body bytes, then close the connection
    stall_s: float | None = None  # wait this long (seconds) after the headers, before the body
    ignore_range: bool = False  # answer Range requests with 200 and the whole file
    times: int | None = None  # apply to the first `times` requests of the path; None = always


class ServedURL(str):
    """The server's base URL; `.log` lists the requests received as (method, path, range)."""

    log: list[tuple[str, str, str | None]]


def _make_handler(
    files: dict[str, bytes], faults: dict[str, Fault], log: list, hits: dict[str, int]
) -> type[BaseHTTPRequestHandler]:
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format, *args):  # keep test output quiet
            pass

        def do_HEAD(self):
            self._serve(send_body=False)

        def do_GET(self):
            self._serve(send_body=True)

        def _serve(self, send_body: bool) -> None:
            path = self.path.split("?", 1)[0]
            range_header = self.headers.get("Range")
            with lock:
                log.append((self.command, path, range_header))
                hits[path] = hits.get(path, 0) + 1
                fault = faults.get(path)
                if fault is not None and fault.times is not None and hits[path] > fault.times:
                    fault = None
            fault = fault or Fault()
            if path not in files or fault.status is not None:
                self._send_status(404 if fault.status is None else fault.status)
                return
            data = files[path]
            start, status = 0, 200
            match = RANGE_RE.match(range_header or "")
            if match and not fault.ignore_range:
                start = int(match.group(1))
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                status = 206
            body = data[start:]
            self.send_response(status)
            self.send_header("Content-Type", mimetypes.guess_type(path)[0] or "application/octet-stream")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Accept-Ranges", "bytes")
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.end_headers()
            if not send_body:
                return
            if fault.stall_s:
                time.sleep(fault.stall_s)
            if fault.cut_after_bytes is not None:
                self.wfile.write(body[: fault.cut_after_bytes])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(body)

        def _send_status(self, status: int) -> None:
            body = f"{status}\n".encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

    return Handler


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def handle_error(self, request, client_address):
        # Clients hang up on purpose in these tests (timeouts, cut connections): not an error.
        pass


@contextmanager
def serve_files(
    files: dict[str, Path | bytes], faults: dict[str, Fault] | None = None
) -> Iterator[ServedURL]:
    """Serve `files` (URL path -> file path or bytes) on a free 127.0.0.1 port until exit."""
    contents = {p: v if isinstance(v, bytes) else Path(v).read_bytes() for p, v in files.items()}
    log: list[tuple[str, str, str | None]] = []
    handler = _make_handler(contents, dict(faults or {}), log, {})
    server = _QuietServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    base_url = ServedURL(f"http://127.0.0.1:{server.server_address[1]}")
    base_url.log = log
    try:
        yield base_url
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
