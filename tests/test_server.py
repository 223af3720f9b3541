"""The web server: the JSON API through FastAPI's TestClient (in process), and the things only a
real server shows (streaming upload limit, slow clients, concurrency, the CLI) through serve.py
on 127.0.0.1. All with the tests' tiny model exported to LiteRT, model.keras beside it."""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from archive_subsets import REPO_ROOT
from fastapi.testclient import TestClient
from PIL import Image
from serve_helpers import export_tiny_model, running_server
from test_export import CLASS_NAMES, one_test_image_per_class
from test_inference import png_header_only

from idenprof.predict.classifier import load
from idenprof.serve.server import create_app

MB = 1024 * 1024


@pytest.fixture(scope="module")
def tflite(tmp_path_factory) -> Path:
    return export_tiny_model(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def classifier(tflite):
    return load(tflite)


@pytest.fixture(scope="module")
def client(classifier):
    with TestClient(create_app(classifier)) as client:
        yield client


@pytest.fixture(scope="module")
def photos(small_dataset) -> list[Path]:
    return one_test_image_per_class(small_dataset)


@pytest.fixture(scope="module")
def server(tflite):
    with running_server("--model", str(tflite)) as (url, process):
        yield url


def post_image(client, data: bytes, query: str = "", filename: str = "photo.jpg"):
    return client.post(f"/api/predict{query}", files={"image": (filename, data, "image/jpeg")})


def multipart(data: bytes, boundary: str = "b0undary") -> tuple[bytes, str]:
    """(body, content type) of a form with one `image` file field."""
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; "
            f"filename=\"photo.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n").encode()
    body += data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def http_post(url: str, body: bytes, content_type: str, timeout_s: float = 60):
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


# ----- answers -----

def test_healthz_says_ok_with_the_model_and_its_classes(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "model": "model.tflite", "classes": CLASS_NAMES,
                               "min_confidence": 0.0, "none_threshold": None, "coverage": None,
                               "heatmaps": True}


def test_predict_answers_what_infer_py_json_prints_for_the_image(client, tflite, photos):
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "infer.py"), str(photos[3]), "--model", str(tflite),
         "--json"], capture_output=True, text=True, timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert done.returncode == 0, done.stderr
    [printed] = json.loads(done.stdout)
    response = post_image(client, photos[3].read_bytes())
    assert response.status_code == 200
    assert response.json() == {k: v for k, v in printed.items() if k != "path"}
    assert len(response.json()["predictions"]) == 5


def test_top_sets_how_many_classes_and_stops_at_the_class_count(client, photos):
    assert len(post_image(client, photos[0].read_bytes(), "?top=2").json()["predictions"]) == 2
    everything = post_image(client, photos[0].read_bytes(), "?top=50").json()["predictions"]
    assert sorted(p["class"] for p in everything) == sorted(CLASS_NAMES)


def decoded_heatmap(answer: dict) -> Image.Image:
    prefix = "data:image/png;base64,"
    assert answer["heatmap"].startswith(prefix)
    return Image.open(io.BytesIO(base64.b64decode(answer["heatmap"][len(prefix):])))


def test_heatmap_is_a_png_of_the_photo_for_the_top_class_or_the_one_asked(client, photos):
    photo = photos[1]
    answer = post_image(client, photo.read_bytes(), "?heatmap=true").json()
    top_class = answer["predictions"][0]["class"]
    assert answer["heatmap_class"] == top_class
    heatmap = decoded_heatmap(answer)
    assert heatmap.format == "PNG" and heatmap.size == Image.open(photo).size
    other = next(name for name in CLASS_NAMES if name != top_class)
    answer_other = post_image(client, photo.read_bytes(), f"?heatmap=true&class={other}").json()
    assert answer_other["heatmap_class"] == other
    assert answer_other["predictions"] == answer["predictions"]
    assert decoded_heatmap(answer_other).size == heatmap.size  # its content: test_gradcam.py
    assert "heatmap" not in post_image(client, photo.read_bytes()).json()


def test_the_page_and_its_files_are_served_and_name_no_other_host(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for path in ("/static/app.js", "/static/style.css"):
        assert client.get(path).status_code == 200
        assert path in page.text
    for text in (page.text, client.get("/static/app.js").text, client.get("/static/style.css").text):
        assert "http:" not in text and "https:" not in text and "//" + "cdn" not in text


def test_every_response_carries_nosniff_and_the_policy_and_no_path_serves_the_page_bare(client, photos):
    responses = [client.get("/"), client.get("/static/index.html"), client.get("/static/app.js"),
                 client.get("/healthz"), client.get("/api/nothing"), post_image(client, photos[0].read_bytes())]
    for response in responses:
        assert response.headers["x-content-type-options"] == "nosniff", response.url
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"], response.url


@pytest.mark.parametrize("pil_format", ["TIFF", "EPS", "PPM"])
def test_a_format_we_do_not_promise_is_415(client, pil_format):
    data = io.BytesIO()
    Image.new("RGB", (16, 16), (10, 20, 30)).save(data, format=pil_format)
    response = post_image(client, data.getvalue())
    assert response.status_code == 415 and "JPEG, PNG, WebP, BMP or GIF" in response.json()["error"]


def test_no_redirect_is_built_from_a_host_the_client_chose(client):
    response = client.get("/static", headers={"Host": "evil.example"}, follow_redirects=False)
    assert response.status_code == 404 and "evil.example" not in response.headers.get("location", "")


def multipart_parts(boundary: str, parts: list[tuple[str, bytes]]) -> bytes:
    body = b""
    for name, data in parts:
        body += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"x.jpg\"\r\n"
                 "Content-Type: image/jpeg\r\n\r\n").encode() + data + b"\r\n"
    return body + f"--{boundary}--\r\n".encode()


@pytest.mark.parametrize("case", ["boundary-257", "two-images"])
def test_a_long_boundary_or_two_images_are_400_with_a_json_error(client, photos, case):
    photo = photos[0].read_bytes()
    boundary = "b" * 257 if case == "boundary-257" else "plainboundary"
    parts = [("image", photo)] * (2 if case == "two-images" else 1)
    response = client.post("/api/predict", content=multipart_parts(boundary, parts),
                           headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert response.status_code == 400, response.text
    assert ("70" if case == "boundary-257" else "one photo per request") in response.json()["error"]
    good = client.post("/api/predict", content=multipart_parts("plainboundary", [("image", photo)]),
                       headers={"Content-Type": "multipart/form-data; boundary=plainboundary"})
    assert good.status_code == 200


# ----- errors: status, one JSON line, and the server keeps answering -----

def test_every_bad_request_gets_its_status_and_a_json_error_then_good_ones_still_work(
        client, photos, tmp_path):
    photo = photos[0].read_bytes()
    bomb = png_header_only(tmp_path / "bomb.png", 40_000, 40_000).read_bytes()
    cases = {
        "truncated image": (400, lambda: post_image(client, photo[:3000])),
        "decompression bomb": (413, lambda: post_image(client, bomb, filename="bomb.png")),
        "not an image": (415, lambda: post_image(client, b"hello, I am text\n", filename="a.jpg")),
        "empty upload": (415, lambda: post_image(client, b"")),
        "not multipart": (415, lambda: client.post("/api/predict", content=photo,
                                                    headers={"Content-Type": "image/jpeg"})),
        "no image field": (422, lambda: client.post("/api/predict", files={"photo": ("a", photo)})),
        "top 0": (422, lambda: post_image(client, photo, "?top=0")),
        "top not a number": (422, lambda: post_image(client, photo, "?top=many")),
        "unknown class": (422, lambda: post_image(client, photo, "?heatmap=true&class=astronaut")),
        "unknown path": (404, lambda: client.get("/api/nothing")),
    }
    expected = post_image(client, photo).json()
    for problem, (status, send) in cases.items():
        response = send()
        assert response.status_code == status, (problem, response.text)
        body = response.json()
        assert list(body) == ["error"] and body["error"] and "\n" not in body["error"], problem
        assert post_image(client, photo).json() == expected, f"after {problem}"
    assert "astronaut" in cases["unknown class"][1]().json()["error"]
    assert "decompression bomb" in cases["decompression bomb"][1]().json()["error"]


def test_a_client_that_goes_away_mid_upload_leaves_no_traceback_in_the_log(tflite, photos):
    body, content_type = multipart(photos[0].read_bytes())
    with running_server("--model", str(tflite), "--log-level", "info") as (url, process):
        port = int(url.rstrip("/").rsplit(":", 1)[1])
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(f"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
                             f"Content-Length: {len(body)}\r\n\r\n".encode() + body[:2000])
            time.sleep(0.3)
        assert http_post(url + "api/predict", body, content_type)[0] == 200
    log = process.stderr.read() + process.stdout.read()
    assert "Traceback" not in log, log[-3000:]


def test_a_20_mb_upload_is_refused_with_413_from_its_content_length(client, photos):
    response = post_image(client, os.urandom(20 * MB))
    assert response.status_code == 413
    assert response.json() == {"error": "upload larger than the 10 MB limit"}
    assert post_image(client, photos[0].read_bytes()).status_code == 200


def test_the_upload_limit_is_a_setting(classifier, photos):
    with TestClient(create_app(classifier, max_upload_bytes=1000)) as small:
        assert post_image(small, photos[0].read_bytes()).status_code == 413
        assert post_image(small, b"x" * 500).status_code == 415


def test_uploads_are_never_written_to_disk(client, photos, monkeypatch):
    def no_disk(*args, **kwargs):
        raise AssertionError("an upload went to a temporary file")

    for name in ("SpooledTemporaryFile", "TemporaryFile", "NamedTemporaryFile", "mkstemp"):
        monkeypatch.setattr(tempfile, name, no_disk)
    # 9 MB: far beyond any in-memory spool size (Starlette's is 1 MB).
    big_png = io.BytesIO()
    Image.open(photos[0]).save(big_png, format="PNG")
    padded = big_png.getvalue() + b"\0" * (9 * MB)
    assert post_image(client, padded, filename="big.png").status_code == 200


# ----- a real server -----

def test_a_body_without_content_length_is_cut_off_once_it_passes_the_limit(server):
    host, port = server.split("/")[2].split(":")
    head = (f"POST /api/predict HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n"
            f"Content-Type: multipart/form-data; boundary=b0undary\r\n\r\n").encode()
    part = b"--b0undary\r\nContent-Disposition: form-data; name=\"image\"\r\n\r\n"
    chunk = b"\0" * MB
    sent = 0
    with socket.create_connection((host, int(port)), timeout=30) as connection:
        connection.sendall(head + b"%x\r\n%s\r\n" % (len(part), part))
        try:
            for _ in range(40):
                connection.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
        except OSError:  # the server answered and closed the connection: it stopped reading
            pass
        answer = connection.recv(65536).decode("latin-1")
    assert answer.startswith("HTTP/1.1 413"), answer[:200]
    assert '{"error":"upload larger than the 10 MB limit"}' in answer
    assert sent < 30 * MB


def test_a_slow_upload_does_not_hold_up_other_requests(server, photos):
    host, port = server.split("/")[2].split(":")
    body, content_type = multipart(photos[2].read_bytes())
    head = (f"POST /api/predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    with socket.create_connection((host, int(port)), timeout=30) as slow:
        slow.sendall(head + body[:100])  # ... and the rest later
        started = time.monotonic()
        status, answer = http_post(server + "api/predict", *multipart(photos[0].read_bytes()))
        assert status == 200 and len(answer["predictions"]) == 5
        assert time.monotonic() - started < 10
        slow.sendall(body[100:])
        assert slow.recv(65536).startswith(b"HTTP/1.1 200")


def test_concurrent_requests_all_get_their_own_right_answer(server, photos):
    expected = {}
    for photo in photos[:4]:
        status, expected[photo] = http_post(server + "api/predict", *multipart(photo.read_bytes()))
        assert status == 200
    jobs = [photos[i % 4] for i in range(24)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(
            lambda photo: http_post(server + "api/predict", *multipart(photo.read_bytes())), jobs))
    for photo, (status, answer) in zip(jobs, answers, strict=True):
        assert status == 200
        assert answer == expected[photo]


def test_serve_with_a_missing_model_or_a_busy_port_is_a_one_line_error(server, tmp_path):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}

    def serve(*args):
        return subprocess.run([sys.executable, str(REPO_ROOT / "serve.py"), *args], env=env,
                              capture_output=True, text=True, timeout=120)

    missing = serve("--model", str(tmp_path / "nope.keras"), "--port", "0")
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1
    assert "nope.keras: no such model file or folder" in missing.stderr
    busy_port = server.split(":")[-1].strip("/")
    busy = serve("--port", busy_port)
    assert busy.returncode == 2 and busy.stderr.count("\n") == 1
    assert f"cannot listen on 127.0.0.1:{busy_port}" in busy.stderr


def test_requests_from_threads_share_one_model_safely(classifier, photos):
    # The LiteRT interpreter is not thread-safe: the Classifier serialises model calls.
    expected = [classifier.predict(photo) for photo in photos]
    failures = []

    def predict_all():
        try:
            for photo, wanted in zip(photos, expected, strict=True):
                assert classifier.predict(photo) == wanted
        except Exception as e:  # collected: an assert in a thread would not fail the test
            failures.append(e)

    threads = [threading.Thread(target=predict_all) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


def test_a_densenet_of_another_dataset_is_served_with_its_own_classes_and_heat_maps(tmp_path):
    """The server takes whatever model and class names it is given: a DenseNet trained on
    Fashion-MNIST answers a grayscale 28 px PNG with clothing classes and a heat map."""
    import keras
    from test_catalog import FASHION_NAMES

    from idenprof.ship.export import export_model
    from models import DenseNet

    keras.utils.set_random_seed(3)
    network = DenseNet([1, 1, 1, 1], input_shape=(32, 32, 3), classes=len(FASHION_NAMES), stem="small", width=0.25)
    export_model(network, tmp_path, FASHION_NAMES, formats=("keras",))
    photo = io.BytesIO()
    Image.fromarray(np.arange(28 * 28, dtype=np.uint8).reshape(28, 28), mode="L").save(photo, format="PNG")
    with TestClient(create_app(load(tmp_path / "model.keras"))) as dense_client:
        assert dense_client.get("/healthz").json()["classes"] == FASHION_NAMES
        answer = post_image(dense_client, photo.getvalue(), "?heatmap=true&top=10", filename="item.png").json()
    assert sorted(p["class"] for p in answer["predictions"]) == sorted(FASHION_NAMES)
    assert answer["heatmap_class"] == answer["predictions"][0]["class"]
    assert decoded_heatmap(answer).size == (28, 28)


def test_admission_lets_one_decode_run_queues_the_next_and_refuses_past_the_queue():
    import asyncio

    from idenprof.serve.server import Admission, ApiError

    async def scenario():
        admission = Admission(slots=1, max_waiting=1)
        order, release = [], asyncio.Event()

        async def request(name):
            try:
                async with admission.slot():
                    order.append(f"{name} in")
                    await release.wait()
                    order.append(f"{name} out")
            except ApiError as e:
                order.append(f"{name} {e.status}")

        first = asyncio.create_task(request("a"))
        await asyncio.sleep(0.01)
        second = asyncio.create_task(request("b"))  # waits for a's slot
        await asyncio.sleep(0.01)
        await request("c")  # the queue is full: refused at once
        release.set()
        await asyncio.gather(first, second)
        return order

    assert asyncio.run(scenario()) == ["a in", "c 503", "a out", "b in", "b out"]


# ----- many photos per request -----

def post_batch(client, parts: list[bytes], query: str = ""):
    return client.post(f"/api/predict/batch{query}",
                       files=[("image", (f"p{i}.jpg", data, "image/jpeg")) for i, data in enumerate(parts)])


def test_a_batch_answers_each_photo_as_a_single_request_would_in_order(client, photos, tmp_path):
    chosen = [p.read_bytes() for p in photos[:5]]
    bomb = png_header_only(tmp_path / "bomb.png", 40_000, 40_000).read_bytes()
    parts = chosen[:2] + [b"hello, I am text\n", chosen[2], chosen[3][:3000], bomb, chosen[4]]
    response = post_batch(client, parts, "?top=3")
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert len(results) == len(parts)
    singles = [post_image(client, data, "?top=3").json() for data in chosen]
    for got, expected in zip([results[i] for i in (0, 1, 3, 6)], singles[:3] + singles[4:], strict=True):
        assert [p["class"] for p in got["predictions"]] == [p["class"] for p in expected["predictions"]]
        np.testing.assert_allclose([p["probability"] for p in got["predictions"]],
                                   [p["probability"] for p in expected["predictions"]], atol=1e-5)
    assert results[2]["status"] == 415 and "not an image" in results[2]["error"]
    assert results[4]["status"] == 400 and results[5]["status"] == 413
    assert post_batch(client, [chosen[0]]).json()["results"][0]["predictions"][0] == singles[0]["predictions"][0]


def test_a_batch_has_a_limit_on_count_and_total_size_then_the_server_still_answers(classifier, photos):
    photo = photos[0].read_bytes()
    with TestClient(create_app(classifier, max_batch_images=3, max_batch_bytes=3 * len(photo) + 10)) as small:
        assert post_batch(small, [photo] * 3).status_code == 200
        over_count = post_batch(small, [photo] * 4)
        assert over_count.status_code == 413 and "more than 3 photos" in over_count.json()["error"]
        over_size = post_batch(small, [photo, photo, photo + photo])
        assert over_size.status_code == 413 and "for one request" in over_size.json()["error"]
        assert small.post("/api/predict/batch", files={"photo": ("a", photo)}).status_code == 422
        assert post_batch(small, [photo], "?coverage=2").status_code == 422
        assert post_batch(small, [photo]).status_code == 200
