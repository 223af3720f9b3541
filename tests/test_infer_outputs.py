"""infer.py outputs people can use: folders of folders, prediction files, photos by URL."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from http_server import Fault, serve_files
from test_infer_cli import infer, prediction_lines

from idenprof.data.imaging import ImageError
from idenprof.predict.remote import fetch_image


@pytest.fixture(scope="module")
def tflite(export_dir) -> str:
    return str(export_dir / "model.tflite")


def test_recursive_takes_the_images_of_subfolders(small_dataset, tflite):
    flat = infer(str(small_dataset / "test"), "--model", tflite)
    assert flat.returncode == 1 and "folder has no image files" in flat.stderr  # class folders only
    deep = infer(str(small_dataset / "test"), "--recursive", "--model", tflite, "--top", "1")
    assert deep.returncode == 0, deep.stderr[-2000:]
    headers = [line for line in deep.stdout.splitlines() if line.startswith("==> ")]
    assert len(headers) == 40 and headers == sorted(headers)  # 4 photos x 10 classes, sorted paths


@pytest.mark.parametrize("suffix", [".csv", ".json", ".jsonl"])
def test_output_file_has_one_row_per_image_in_order_with_errors(photos, tmp_path, tflite, suffix):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    inputs = [str(photos[0]), str(broken), str(photos[1]), str(tmp_path / "missing.jpg")]
    out = tmp_path / f"predictions{suffix}"
    done = infer(*inputs, "--model", tflite, "--top", "3", "--output", str(out))
    assert done.returncode == 1  # some images failed; the rest were predicted
    text = out.read_text()
    if suffix == ".csv":
        rows = list(csv.DictReader(text.splitlines()))
        assert list(rows[0]) == ["path", "class_1", "probability_1", "class_2", "probability_2",
                                 "class_3", "probability_3", "unsure", "none_score", "none_of_these",
                                 "prediction_set", "error"]
        paths, errors = [r["path"] for r in rows], [r["error"] for r in rows]
        first_classes = [(rows[0]["class_1"], float(rows[0]["probability_1"]))]
    else:
        rows = json.loads(text) if suffix == ".json" else [json.loads(line) for line in text.splitlines()]
        paths, errors = [r["path"] for r in rows], [r["error"] or "" for r in rows]
        first_classes = [(p["class"], p["probability"]) for p in rows[0]["predictions"][:1]]
        assert len(rows[0]["predictions"]) == 3 and rows[1]["predictions"] == []
    assert paths == inputs
    assert errors[0] == errors[2] == "" and "not an image" in errors[1] and "no such file" in errors[3]
    printed = prediction_lines(done.stdout.split("==> " + str(photos[1]))[0])[0]
    assert first_classes[0][0] == printed[0] and first_classes[0][1] * 100 == pytest.approx(printed[1], abs=0.01)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left


def test_an_output_file_of_another_kind_is_refused_before_any_work(photos, tmp_path, tflite):
    done = infer(str(photos[0]), "--model", tflite, "--output", str(tmp_path / "predictions.xlsx"))
    assert done.returncode == 2 and done.stderr.strip() == (
        f"error: --output {tmp_path / 'predictions.xlsx'}: name a .csv, .json or .jsonl file")
    assert done.stdout == "" and not (tmp_path / "predictions.xlsx").exists()


def test_photos_by_url_are_predicted_like_the_same_files(photos, tmp_path, tflite):
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    files = {"/police.jpg": photos[8], "/notes.txt": notes}
    with serve_files(files, faults={"/gone.jpg": Fault(status=404)}) as base_url:
        done = infer(f"{base_url}/police.jpg", f"{base_url}/notes.txt", f"{base_url}/gone.jpg",
                     "--model", tflite, "--output", str(tmp_path / "out.json"))
    local = infer(str(photos[8]), "--model", tflite)
    assert done.returncode == 1
    by_url = done.stdout.split("==> ")[1]
    assert prediction_lines(by_url) == prediction_lines(local.stdout)
    assert f"error: {base_url}/notes.txt: not an image (Content-Type text/plain)" in done.stderr
    assert f"error: {base_url}/gone.jpg: the server answered HTTP 404" in done.stderr
    rows = json.loads((tmp_path / "out.json").read_text())
    assert [r["path"] for r in rows] == [f"{base_url}/police.jpg", f"{base_url}/notes.txt", f"{base_url}/gone.jpg"]


def test_a_url_over_the_size_limit_or_unreachable_is_refused(photos):
    with serve_files({"/big.jpg": photos[0]}) as base_url:
        size = Path(photos[0]).stat().st_size
        assert fetch_image(f"{base_url}/big.jpg", max_bytes=size) == Path(photos[0]).read_bytes()
        with pytest.raises(ImageError, match="over the 0 MB limit"):
            fetch_image(f"{base_url}/big.jpg", max_bytes=size - 1)
    with pytest.raises(ImageError, match="cannot fetch it"):
        fetch_image("http://127.0.0.1:9/photo.jpg", timeout_s=2)


def test_a_server_trickling_bytes_is_cut_off_at_the_total_deadline():
    import http.server
    import threading
    import time

    class Trickle(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", "1000")
            self.end_headers()
            try:
                for _ in range(1000):  # one byte every 0.2 s: each read is quick, the whole is not
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.2)
            except OSError:
                pass

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Trickle)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        started = time.monotonic()
        with pytest.raises(ImageError, match="not fetched within 2 s"):
            fetch_image(f"http://127.0.0.1:{server.server_address[1]}/slow.jpg", timeout_s=2)
        assert time.monotonic() - started < 4
    finally:
        server.shutdown()
        server.server_close()


def test_a_large_folder_streams_in_batches(small_dataset, tmp_path, tflite):
    """Every image of a folder is predicted, batch by batch, into one output row each."""
    folder = tmp_path / "many"
    folder.mkdir()
    source = sorted((small_dataset / "train" / "chef").glob("*.jpg"))[0]
    for i in range(70):
        shutil.copy(source, folder / f"{i:03d}.jpg")
    done = infer(str(folder), "--model", tflite, "--batch-size", "16", "--output", str(tmp_path / "out.jsonl"))
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(rows) == 70 and len({json.dumps(r["predictions"]) for r in rows}) == 1  # same photo, same answer
