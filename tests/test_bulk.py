"""bulk.py as users run it (a subprocess) on real IdenProf photos: the rows are infer.py --output's,
bad inputs are error rows, the shards hold every input once, URLs are fetched from a real server on
127.0.0.1, the job runs unchanged through a Beam job service as on a cluster, and bad flags are one
line. One job over 300 photos and a list of bad files and URLs answers most tests."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
from archive_subsets import REPO_ROOT, extract_subset, make_subset_archive
from http_server import Fault, serve_files

from idenprof.predict.bulk import read_rows
from idenprof.predict.classifier import load
from idenprof.predict.inputs import expand_inputs
from idenprof.predict.model_finding import PRETRAINED_MODEL
from idenprof.predict.outputs import prediction_rows

ROWS_PER_SHARD = 64


def bulk(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([sys.executable, str(REPO_ROOT / "bulk.py"), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600, env=env)


@dataclass
class Job:
    done: subprocess.CompletedProcess
    output: Path
    photos: list[str]  # the folder's photos, as infer.py --recursive lists them
    corrupt: str
    missing: str
    urls: dict[str, str]  # name -> URL
    server_log: list


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory) -> Path:
    """300 real IdenProf photos: <root>/train/<class>/ (20 each) and <root>/test/<class>/ (10 each)."""
    tmp = tmp_path_factory.mktemp("bulk-photos")
    return extract_subset(make_subset_archive(tmp / "subset.zip", 20, 10, keep_thumbs_db=False), tmp)


@pytest.fixture(scope="module")
def job(photo_folder, tmp_path_factory) -> Job:
    """bulk.py over the folder and a list naming a truncated JPEG, a missing file and three URLs
    (a photo, a text file, a 404), in shards of at least ROWS_PER_SHARD rows."""
    tmp = tmp_path_factory.mktemp("bulk-job")
    photos, _ = expand_inputs([str(photo_folder)], recursive=True)
    corrupt = tmp / "corrupt.jpg"
    corrupt.write_bytes(Path(photos[0]).read_bytes()[:1500])
    notes = tmp / "notes.txt"
    notes.write_text("hello")
    with serve_files({"/police.jpg": Path(photos[-40]), "/notes.txt": notes},
                     faults={"/gone.jpg": Fault(status=404)}) as base_url:
        urls = {name: f"{base_url}/{name}" for name in ("police.jpg", "notes.txt", "gone.jpg")}
        listing = tmp / "inputs.txt"
        listing.write_text("\n".join(["# bad files and URLs", str(corrupt), str(tmp / "missing.jpg"), "",
                                      *urls.values()]) + "\n")
        done = bulk(str(photo_folder), str(listing), "--output", str(tmp / "rows"), "--model", str(PRETRAINED_MODEL),
                    "--rows-per-shard", str(ROWS_PER_SHARD), cwd=tmp)
    return Job(done, tmp / "rows", photos, str(corrupt), str(tmp / "missing.jpg"), urls, list(base_url.log))


def rows_by_path(job: Job) -> dict[str, dict]:
    assert job.done.returncode == 0, job.done.stderr[-3000:]
    return {row["path"]: row for row in read_rows(job.output)}


def assert_same_row(row: dict, expected: dict) -> None:
    """The same row up to the model's float rounding: classes, flags and set exact, probabilities
    within 1e-5."""
    assert [p["class"] for p in row["predictions"]] == [p["class"] for p in expected["predictions"]]
    assert [p["probability"] for p in row["predictions"]] == pytest.approx(
        [p["probability"] for p in expected["predictions"]], abs=1e-5)
    assert row["none_score"] == pytest.approx(expected["none_score"], abs=1e-5)
    for key in ("unsure", "none_of_these", "prediction_set", "error"):
        assert row[key] == expected[key], key


def test_rows_are_those_of_infer_output_for_the_same_photos(job):
    rows = rows_by_path(job)
    classifier = load(PRETRAINED_MODEL)
    # What infer.py FOLDER --recursive --output rows.jsonl does (idenprof.cli.infer.main).
    results, errors = classifier.predict_files(job.photos, top=len(classifier.class_names))
    expected = prediction_rows(job.photos, results, errors, classifier, 5)
    assert len(expected) == 300 and not errors
    for want in expected:
        assert_same_row(rows[want["path"]], want)
    assert len({row["predictions"][0]["class"] for row in expected}) == 10  # a real model on real photos


def test_a_corrupt_and_a_missing_file_are_error_rows_and_the_job_completes(job):
    rows = rows_by_path(job)
    assert "cannot decode image" in rows[job.corrupt]["error"] and "truncated" in rows[job.corrupt]["error"]
    assert rows[job.missing]["error"] == f"{job.missing}: no such file"
    for path in (job.corrupt, job.missing):
        assert rows[path]["predictions"] == [] and rows[path]["prediction_set"] is None
    assert job.done.stdout.strip() == f"305 rows (4 errors) in {len(list(job.output.iterdir()))} shards in {job.output}"


def test_shards_hold_every_input_exactly_once(job):
    assert job.done.returncode == 0, job.done.stderr[-3000:]
    shards = sorted(p.name for p in job.output.iterdir())
    count = math.ceil(305 / ROWS_PER_SHARD)
    assert shards == [f"rows-{i:05d}-of-{count:05d}.jsonl" for i in range(count)]
    counts = Counter(row["path"] for row in read_rows(job.output))
    inputs = [*job.photos, job.corrupt, job.missing, *job.urls.values()]
    assert counts == Counter(inputs) and set(counts.values()) == {1}
    assert all((job.output / shard).stat().st_size > 0 for shard in shards)


def test_a_list_of_urls_is_fetched_and_predicted_like_the_same_file(job):
    rows = rows_by_path(job)
    photo = job.photos[-40]
    assert_same_row(rows[job.urls["police.jpg"]], rows[photo])
    assert rows[job.urls["notes.txt"]]["error"] == f"{job.urls['notes.txt']}: not an image (Content-Type text/plain)"
    assert rows[job.urls["gone.jpg"]]["error"] == f"{job.urls['gone.jpg']}: the server answered HTTP 404"
    assert sorted(path for method, path, _ in job.server_log if method == "GET") == [
        "/gone.jpg", "/notes.txt", "/police.jpg"]


def test_parquet_shards_hold_the_same_rows(job, tmp_path):
    chosen = job.photos[:5] + [job.missing]
    listing = tmp_path / "five.txt"
    listing.write_text("\n".join(chosen) + "\n")
    done = bulk(str(listing), "--output", str(tmp_path / "rows"), "--format", "parquet",
                "--model", str(PRETRAINED_MODEL), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert [p.suffix for p in (tmp_path / "rows").iterdir()] == [".parquet"]
    parquet = {row["path"]: row for row in read_rows(tmp_path / "rows")}
    jsonl = rows_by_path(job)
    assert sorted(parquet) == sorted(chosen)
    for path in chosen:
        assert parquet[path] == jsonl[path]


@pytest.mark.parametrize("case", ["no such folder", "output is under a file", "output not empty", "not a model",
                                  "shards of no rows", "no such runner"])
def test_bad_input_is_a_one_line_error_and_exit_2(photo_folder, tmp_path, case):
    folder, output, extra = str(photo_folder / "test" / "chef"), tmp_path / "rows", []
    (tmp_path / "a-file").write_text("x")
    if case == "no such folder":
        folder, expected = str(tmp_path / "nowhere"), f"error: {tmp_path / 'nowhere'}: no such file or folder"
    elif case == "output is under a file":
        output = tmp_path / "a-file" / "rows"
        expected = f"error: --output {output}: cannot write there ([Errno 20] Not a directory: '{output}')"
    elif case == "output not empty":
        output = tmp_path
        expected = f"error: --output {output}: folder is not empty; name a new or empty folder"
    elif case == "not a model":
        extra = ["--model", str(tmp_path / "a-file")]
        expected = f"error: {tmp_path / 'a-file'}: not a model file; expected .keras, .h5, .tflite, .onnx, " \
                   "a SavedModel folder or a run folder"
    elif case == "shards of no rows":
        extra, expected = ["--rows-per-shard", "0"], "error: --rows-per-shard must be at least 1, got 0"
    else:
        extra = ["--runner", "NoSuchRunner"]
        expected = "error: bad pipeline options --runner=NoSuchRunner (Unexpected pipeline runner: NoSuchRunner."
    done = bulk(folder, "--output", str(output), "--model", str(PRETRAINED_MODEL), *extra, cwd=tmp_path)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.strip().startswith(expected) and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not output.exists() or case == "output not empty"  # refused before anything was made


def test_the_same_command_runs_through_a_beam_job_service_as_on_a_cluster(job, tmp_path):
    """The PortableRunner submits the pipeline to a job service over gRPC, as to Flink's or Spark's
    job server; LOOPBACK runs the SDK worker in the submitting process."""
    port_file, log = tmp_path / "port", tmp_path / "job-service.log"
    with open(log, "w") as log_file:
        service = subprocess.Popen([sys.executable, "-m", "apache_beam.runners.portability.local_job_service_main",
                                    "--port", "0", "--port_file", str(port_file)],
                                   stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not (port_file.is_file() and port_file.read_text().strip()) and time.monotonic() < deadline:
            time.sleep(0.1)
        chosen = job.photos[::50] + [job.missing]
        listing = tmp_path / "some.txt"
        listing.write_text("\n".join(chosen) + "\n")
        done = bulk(str(listing), "--output", str(tmp_path / "rows"), "--model", str(PRETRAINED_MODEL),
                    "--runner", "PortableRunner", f"--job_endpoint=localhost:{port_file.read_text().strip()}",
                    "--environment_type=LOOPBACK", cwd=tmp_path)
    finally:
        os.killpg(service.pid, signal.SIGTERM)
        service.wait(timeout=30)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Completed job" in log.read_text() and "state DONE" in log.read_text()  # the service ran it
    rows = {row["path"]: row for row in read_rows(tmp_path / "rows")}
    assert sorted(rows) == sorted(chosen)
    local = rows_by_path(job)
    for path in chosen:
        assert rows[path] == local[path]
