"""The benchmark scripts run end to end with tiny settings (their figures come from real runs,
recorded in docs/BENCHMARKS.md; here only that they work and report what they promise)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from archive_subsets import REPO_ROOT
from train_helpers import train_env


def run_bench(script: str, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO_ROOT / "bench" / script), *map(str, args)],
                          env=train_env(), capture_output=True, text=True, timeout=600, cwd=REPO_ROOT)


def last_value(stdout: str, name: str) -> float:
    last = stdout.strip().splitlines()[-1]
    match = re.fullmatch(rf"{name}: ([0-9.]+)", last)
    assert match, last
    return float(match.group(1))


def test_pipeline_bench_reports_rates_per_core_and_the_ratio(small_archive, tmp_path):
    result = run_bench("pipeline.py", "--data-dir", tmp_path / "data", "--archive", small_archive,
                       "--image-size", 32, "--batch-size", 8, "--steady-epochs", 1, "--generator-batches", 5)
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r"^tf\.data steady state +\d+ +[0-9.]+$", result.stdout, re.M), result.stdout
    assert re.search(r"needs [0-9.]+ cores", result.stdout)
    assert last_value(result.stdout, "ratio") > 0


def test_train_throughput_bench_compares_with_keras_applications(tmp_path):
    result = run_bench("train_throughput.py", "--image-size", 32, "--batch-size", 2, "--steps", 2,
                       "--rounds", 2, "--warmup-steps", 1, "--precision", "float32", "--xla", "off")
    assert result.returncode == 0, result.stderr[-3000:]
    rates = dict(re.findall(r"^(.+): ([0-9.]+) images/s \(median of 4 steps\)$", result.stdout, re.M))
    assert list(rates) == ["keras.applications.ResNet50 float32",
                           "ours ResNet-50 as train.py configures it (float32, xla off)"], result.stdout
    ratio = last_value(result.stdout, "ratio")
    expected = float(rates["ours ResNet-50 as train.py configures it (float32, xla off)"]) / float(
        rates["keras.applications.ResNet50 float32"])
    assert abs(ratio - expected) < 0.01 + 0.01 * expected


@pytest.mark.slow  # the same script and models as the test above, plus one contender
def test_train_throughput_bench_adds_keras_batch_norm_on_request(tmp_path):
    result = run_bench("train_throughput.py", "--image-size", 32, "--batch-size", 2, "--steps", 2,
                       "--rounds", 1, "--warmup-steps", 1, "--precision", "float32", "--xla", "off",
                       "--keras-batch-norm")
    assert result.returncode == 0, result.stderr[-3000:]
    rates = re.findall(r"^(.+): [0-9.]+ images/s \(median of 2 steps\)$", result.stdout, re.M)
    assert rates == ["keras.applications.ResNet50 float32",
                     "ours ResNet-50 as train.py configures it (float32, xla off)",
                     "ours with Keras' BatchNormalization (float32, xla off)"], result.stdout


@pytest.mark.slow  # the same script and model as the test above, without the contenders
def test_train_throughput_anchor_only_times_keras_applications_alone(tmp_path):
    result = run_bench("train_throughput.py", "--anchor-only", "--image-size", 32, "--batch-size", 2,
                       "--steps", 2, "--rounds", 1, "--warmup-steps", 1)
    assert result.returncode == 0, result.stderr[-3000:]
    rates = dict(re.findall(r"^(.+): ([0-9.]+) images/s \(median of 2 steps\)$", result.stdout, re.M))
    assert list(rates) == ["keras.applications.ResNet50 float32"], result.stdout
    last = result.stdout.strip().splitlines()[-1]
    assert last == f"anchor: {rates['keras.applications.ResNet50 float32']} images/s", result.stdout


def test_cpu_share_measures_a_busy_and_an_idle_command(tmp_path):
    """Two busy threads until the process has used 2 s of CPU, then 2.5 s of sleep: the share
    over the command lands below one core, and the sleep shows as seconds near zero. Spinning to a CPU
    time, not a wall time, keeps the figures right while other tests share the cores."""
    busy_then_idle = (
        "import threading, time\n"
        "def spin():\n"
        "    while time.process_time() < 2.0: pass\n"
        "threads = [threading.Thread(target=spin) for _ in range(2)]\n"
        "[t.start() for t in threads]; [t.join() for t in threads]\n"
        "print('spun', flush=True); time.sleep(2.5); print('slept')\n"
    )
    out = tmp_path / "share"
    result = run_bench("cpu_share.py", "--out", out, "--interval", 0.5, "--", sys.executable, "-c", busy_then_idle)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["exit_code"] == 0
    # Python threads share one GIL: the spin uses about one core, then nothing for 2.5 s.
    assert 20 < summary["cpu_percent"] < 90, summary
    assert summary["seconds_near_zero"] >= 1.5, summary
    assert summary["cpu_seconds"] == pytest.approx(2.0, abs=0.8)
    log = (out / "output.log").read_text().splitlines()
    assert [line.split()[-1] for line in log] == ["spun", "slept"]
    assert float(log[1].split()[0]) - float(log[0].split()[0]) >= 2.0  # unbuffered: true times
    assert (out / "timeline.csv").read_text().startswith("seconds,cpu_percent,iowait_percent")
    # One GIL never runs flat out on two cores: all the idle capacity is in "dips".
    assert summary["flat_out_seconds"] == 0 and summary["idle_core_seconds_in_dips"] == summary["idle_core_seconds"]


def test_cpu_share_summarize_splits_idle_capacity_between_flat_out_and_dips(tmp_path):
    """A start at one core, four 2 s samples flat out (median 190%), a stall at 20%, one more flat
    out, an end at one core, on two cores."""
    shares = [100, 190, 190, 190, 180, 20, 190, 100]
    (tmp_path / "timeline.csv").write_text("seconds,cpu_percent,iowait_percent,steal_percent,threads_in_d,last_line\n"
                                           + "".join(f"{2 * (i + 1)}.0,{s},0,0,0,\"\"\n" for i, s in enumerate(shares)))
    (tmp_path / "summary.json").write_text('{"cores": 2, "cpu_percent": 145.0}')
    result = run_bench("cpu_share.py", "--summarize", tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    assert summary["cpu_percent"] == 145.0  # the measurement's own figures are kept
    assert summary["flat_out_seconds"] == 10.0 and summary["dip_seconds"] == 6.0
    assert summary["flat_out_median_percent"] == 190.0
    assert summary["idle_core_seconds_flat_out"] == pytest.approx((10 + 10 + 10 + 20 + 10) / 100 * 2)
    assert summary["idle_core_seconds_in_dips"] == pytest.approx((100 + 180 + 100) / 100 * 2)
    # Every dip at 190%: (3 x 190 + 190 x 3 + 180 + 190) % x 2 s over 16 s.
    assert summary["percent_without_dips"] == pytest.approx(100 * (3 * 1.9 + 4 * 1.9 + 1.8) * 2 / 16, abs=0.06)
    missing = run_bench("cpu_share.py", "--summarize", tmp_path / "nothing")
    assert missing.returncode == 2 and "no timeline.csv there" in missing.stderr and "Traceback" not in missing.stderr


def test_accuracy_plot_draws_run_folders_and_recorded_runs(tmp_path):
    run = tmp_path / "cpu-96px-seed0"
    run.mkdir()
    (run / "metrics.json").write_text('{"top1": 0.785, "train_seconds": 1170.7}')
    recorded = tmp_path / "runs.csv"
    recorded.write_text("label,minutes,top1,date\n"
                        "cpu seed 0,19.5,0.8045,2026-11-25\ncpu seed 1,19.5,0.7865,2026-11-25\n")
    out = tmp_path / "plot.png"
    result = run_bench("accuracy_plot.py", recorded, run, "--out", out)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"wrote {out} (3 runs)" in result.stdout
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_accuracy_plot_rejects_a_csv_without_the_columns(tmp_path):
    bad = tmp_path / "runs.csv"
    bad.write_text("name,acc\ncpu,0.8\n")
    result = run_bench("accuracy_plot.py", bad, "--out", tmp_path / "plot.png")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "columns label, minutes, top1" in result.stderr
    assert not (tmp_path / "plot.png").exists()


def test_serve_latency_bench_reports_latency_heat_maps_throughput_and_memory(small_archive,
                                                                             tmp_path):
    from serve_helpers import export_tiny_model

    tflite = export_tiny_model(tmp_path / "model")
    result = run_bench("serve_latency.py", "--model", tflite, "--archive", small_archive,
                       "--requests", 4, "--heatmap-requests", 2, "--clients", 2,
                       "--concurrent-requests", 6, "--batch", 4, "--batch-rounds", 1)
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r"^machine: .+, \d+ cores", result.stdout, re.M), result.stdout
    assert re.search(r"^one client: p50 [0-9.]+ ms .* p95 [0-9.]+ ms .* over 4 requests$",
                     result.stdout, re.M), result.stdout
    assert re.search(r"^with heat map: p50 [0-9.]+ ms .* over 2 requests$", result.stdout, re.M)
    assert re.search(r"^2 clients: [0-9.]+ predictions/s .*, 0 errors in 6 requests$",
                     result.stdout, re.M), result.stdout
    assert re.search(r"^4 photos: [0-9.]+ photos/s in single requests, [0-9.]+ in one batch request: [0-9.]+x ",
                     result.stdout, re.M), result.stdout
    assert re.search(r"^server RSS: \d+ MB, peak \d+ MB", result.stdout, re.M)
    assert last_value(result.stdout, "p50_ms") > 0


def test_augment_bench_compares_ours_with_keras_layers_per_job():
    result = run_bench("augment.py", "--image-size", 32, "--batch-size", 8, "--batches", 2, "--rounds", 1)
    assert result.returncode == 0, result.stderr[-3000:]
    rates = dict(re.findall(r"^(.+): ([0-9.]+) images/s$", result.stdout, re.M))
    assert {"ours mixup", "keras MixUp", "ours cutmix", "keras CutMix"} <= set(rates)
    ratios = dict(re.findall(r"^ratio (\S+): ([0-9.]+)$", result.stdout, re.M))
    assert set(ratios) == {"shift+rotation", "mixup", "cutmix"}
    expected = float(rates["ours mixup"]) / float(rates["keras MixUp"])
    assert abs(float(ratios["mixup"]) - expected) < 0.01 + 0.01 * expected


def test_infer_latency_bench_times_the_formats_in_turns(small_archive):
    # Keras is left out to keep this test short: its turn is the same code with a .keras path.
    result = run_bench("infer_latency.py", "--model", "resnet18", "--width", 0.125, "--stem", "small",
                       "--image-size", 32, "--rounds", 2, "--photos-per-class", 1, "--batch-size", 4,
                       "--formats", "tflite,onnx", "--archive", small_archive)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    formats = ["tflite", "onnx"]
    cold = re.findall(r"^cold start (\w+) +median ([0-9.]+) s  runs ([0-9.]+) ([0-9.]+)$", out, re.M)
    assert [label for label, *_ in cold] == [*formats, "default"], out  # two turns each
    cold_median = {label: float(median) for label, median, *_ in cold}
    model_only = dict(re.findall(r"^throughput model-only (\w+) +median ([0-9.]+) images/s", out, re.M))
    files = dict(re.findall(r"^throughput files (\w+) +median ([0-9.]+) images/s", out, re.M))
    assert list(model_only) == formats and list(files) == formats, out
    assert len(re.findall(r"^python infer.py <folder of 10> --model model\S+: [0-9.]+ s wall", out, re.M)) == 2
    assert re.search(r"default \(no --model\): export/model\.(tflite|onnx)", out), out
    fastest_start = re.search(r"^fastest cold start: (\w+) ", out, re.M).group(1)
    assert cold_median[fastest_start] == min(cold_median[f] for f in formats)
    fastest_rate = re.search(r"^fastest throughput: (\w+) ", out, re.M).group(1)
    assert float(model_only[fastest_rate]) == max(float(model_only[f]) for f in formats)
    assert last_value(out, "cold_start_s") == cold_median["default"]


def test_bulk_bench_times_bulk_py_and_infer_py_in_turns_and_compares_their_rows(small_archive, tmp_path):
    result = run_bench("bulk.py", "--archive", small_archive, "--photos-per-class", 2, "--rounds", 2,
                       "--json", tmp_path / "bulk.json")
    assert result.returncode == 0, result.stderr[-3000:]
    turns = re.findall(r"^round (\d) (infer\.py|bulk\.py) +[0-9.]+ s", result.stdout, re.M)
    assert turns == [("1", "infer.py"), ("1", "bulk.py"), ("2", "bulk.py"), ("2", "infer.py")], result.stdout
    results = json.loads((tmp_path / "bulk.json").read_text())
    assert results["photos"] == results["rows"] == results["top1_identical"] == 20 and results["same_photos"]
    rates = results["images_per_s"]
    assert last_value(result.stdout, "ratio") == pytest.approx(rates["bulk.py"] / rates["infer.py"], abs=0.006)
