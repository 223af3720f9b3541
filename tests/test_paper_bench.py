"""bench/paper.py: its tables and plot from recorded rows (quick), and its whole code path with tiny
settings (slow: one epoch of seven eighth-width networks on a few IdenProf images per class), where
the CSVs, the Fig. 4 plot and the markdown tables come out with the expected rows. Its figures come
from the full run (docs/PAPER.md)."""

from __future__ import annotations

import csv
import importlib.util
import subprocess
import sys

import pytest
from archive_subsets import REPO_ROOT
from train_helpers import train_env

NETWORKS = ["plain-18", "plain-34", "ResNet-18 A", "ResNet-34 A", "ResNet-34 B", "ResNet-34 C", "ResNet-50 B"]


def run_paper(*args):
    return subprocess.run([sys.executable, str(REPO_ROOT / "bench" / "paper.py"), *map(str, args)], env=train_env(),
                          capture_output=True, text=True, timeout=900, cwd=REPO_ROOT)


def load_paper_module():
    spec = importlib.util.spec_from_file_location("paper", REPO_ROOT / "bench" / "paper.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["paper"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_tables_and_curves_from_recorded_rows(tmp_path):
    paper = load_paper_module()
    assert list(paper.NETWORKS) == NETWORKS
    results = {n: {"train_error": 0.1, "val_error": 0.2, "test_error": 0.25, "params": 1_000_000,
                   "mult_adds": 5_000_000, "minutes": 3.0} for n in NETWORKS if n != "ResNet-50 B"}
    table = paper.markdown(results, "tiny")
    assert "| plain-34 | 28.54 | 10.00 | 20.00 | 25.00 |" in table
    assert "| ResNet-34 C | 24.19 | 25.00 | 1.000M | 5.0M | 3.0 |" in table
    assert "| ResNet-50 B | bottleneck | 22.85 | 25.6M params, 3.8G mult-adds | not run | not run |" in table
    epochs = [{"network": n, "epoch": e, "train_error": 0.5 / e, "val_error": 0.6 / e} for n in NETWORKS[:4]
              for e in (1, 2, 3)]
    paper.plot_degradation(epochs, tmp_path / "fig.png")
    assert (tmp_path / "fig.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def study(small_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("paper")
    args = ["--data-dir", small_dataset, "--image-size", 32, "--stem", "small", "--width", 0.125, "--epochs", 1,
            "--batch-size", 16, "--precision", "float32", "--out", out, "--quiet"]
    result = run_paper(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    return out, args, result


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_every_network_of_the_three_experiments_is_trained_once(study):
    out, _, _ = study
    results = {r["network"]: r for r in rows(out / "results.csv")}
    assert list(results) == NETWORKS
    assert [(r["network"], r["epoch"]) for r in rows(out / "epochs.csv")] == [(n, "1") for n in NETWORKS]
    for r in results.values():
        assert 0 <= float(r["test_error"]) <= 1 and 0 <= float(r["train_error"]) <= 1 and float(r["minutes"]) > 0
    params = {n: int(r["params"]) for n, r in results.items()}
    # Option A shortcuts are parameter-free, B adds projections where the shape changes, C everywhere.
    assert params["plain-18"] == params["ResNet-18 A"] and params["plain-34"] == params["ResNet-34 A"]
    assert params["ResNet-34 A"] < params["ResNet-34 B"] < params["ResNet-34 C"]
    assert int(results["ResNet-34 A"]["mult_adds"]) > int(results["ResNet-18 A"]["mult_adds"]) > 0


@pytest.mark.slow
def test_the_plot_and_the_markdown_tables_are_written(study):
    out, _, result = study
    assert (out / "degradation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (out / "paper.md").read_text()
    for name, paper in [("plain-18", "27.94"), ("plain-34", "28.54"), ("ResNet-18 A", "27.88"),
                        ("ResNet-34 A", "25.03"), ("ResNet-34 B", "24.52"), ("ResNet-34 C", "24.19")]:
        assert f"| {name} | {paper} | " in table
    assert "| ResNet-50 B | bottleneck | 22.85 |" in table and "not run" not in table
    assert f"wrote {out / 'results.csv'}" in result.stdout


@pytest.mark.slow
def test_running_again_keeps_finished_networks_and_refuses_other_settings(study):
    out, args, _ = study
    again = run_paper(*args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("finished earlier, kept") == len(NETWORKS)
    assert len(rows(out / "results.csv")) == len(NETWORKS)
    other = run_paper(*[a if a != 0.125 else 0.25 for a in args])
    assert other.returncode == 2 and "holds a study with other settings" in other.stderr
    assert len(other.stderr.strip().splitlines()) == 1
