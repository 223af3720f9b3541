"""train.py on Fashion-MNIST and CIFAR-10 (official formats, served on 127.0.0.1) and with a DenseNet,
end to end: a run, its exports, and infer.py naming the dataset's classes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from archive_subsets import REPO_ROOT
from array_datasets import CIFAR_NAMES, cifar10_archive, fashion_mnist_files, pin_checksums
from http_server import serve_files
from PIL import Image
from train_helpers import TINY, run_train

from idenprof.config import resolve_config
from idenprof.data.formats import read_idx
from idenprof.train.training import build_network

FASHION_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                 "Ankle boot"]


def infer_json(model: Path, *images: Path) -> list[dict]:
    done = subprocess.run([sys.executable, str(REPO_ROOT / "infer.py"), *map(str, images), "--model", str(model),
                           "--json", "--top", "10"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def train_in_process(args, capsys) -> tuple[int, str, str]:
    import train

    code = train.main([*map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_fashion_mnist_trains_from_a_mirror_and_infer_names_its_classes(tmp_path, monkeypatch, capsys):
    files = fashion_mnist_files(6, 2)
    pin_checksums(monkeypatch, "fashion-mnist", files)
    run_dir = tmp_path / "run"
    with serve_files({f"/fm/{name}": data for name, data in files.items()}) as url:
        code, out, err = train_in_process(["--dataset", "fashion-mnist", "--data-dir", tmp_path / "data",
                                           "--data-url", url + "/fm/", *TINY, "--epochs", "1", "--run-dir", run_dir],
                                          capsys)
    assert code == 0, err[-3000:]
    assert "classes (10): T-shirt/top, Trouser" in out
    assert json.loads((run_dir / "class_index.json").read_text()) == {str(i): n for i, n in enumerate(FASHION_NAMES)}
    assert json.loads((run_dir / "metrics.json").read_text())["images"] == 20
    assert json.loads((run_dir / "config.json").read_text())["config"]["dataset"] == "fashion-mnist"
    # A test image as a user would hand it to infer.py: a grayscale PNG at the native 28 px.
    photo = tmp_path / "item.png"
    Image.fromarray(read_idx(tmp_path / "data" / "t10k-images-idx3-ubyte.gz", 3)[0], mode="L").save(photo)
    [result] = infer_json(run_dir, photo)
    assert sorted(p["class"] for p in result["predictions"]) == sorted(FASHION_NAMES)
    # infer.py sees the pixels training did: the exported model on the training pipeline's image agrees.
    import keras

    from idenprof.data.catalog import load_dataset

    layout = load_dataset("fashion-mnist", tmp_path / "data", progress=False)
    pixels = layout.decode(layout.samples["test"][:1], 32, progress=False).images.astype("float32")
    expected = keras.models.load_model(run_dir / "export" / "model.keras", compile=False).predict(pixels, verbose=0)[0]
    got = {p["class"]: p["probability"] for p in result["predictions"]}
    assert np.allclose([got[n] for n in FASHION_NAMES], expected, atol=1e-4)


@pytest.mark.slow
def test_cifar10_trains_from_its_archive_url_with_batches_meta_class_names(tmp_path, monkeypatch, capsys):
    archive = cifar10_archive(2, 2)
    pin_checksums(monkeypatch, "cifar10", {"cifar-10-python.tar.gz": archive})
    run_dir = tmp_path / "run"
    with serve_files({"/cifar-10-python.tar.gz": archive}) as url:
        code, out, err = train_in_process(["--dataset", "cifar10", "--data-dir", tmp_path / "data", "--data-url",
                                           url + "/cifar-10-python.tar.gz", *TINY, "--epochs", "1",
                                           "--run-dir", run_dir], capsys)
    assert code == 0, err[-3000:]
    assert (tmp_path / "data" / "cifar-10-python.tar.gz").read_bytes() == archive
    assert list(json.loads((run_dir / "class_index.json").read_text()).values()) == CIFAR_NAMES
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["images"] == 20 and set(metrics["per_class_accuracy"]) == set(CIFAR_NAMES)
    photo = tmp_path / "thing.png"
    Image.fromarray(np.full((32, 32, 3), 120, np.uint8)).save(photo)
    [result] = infer_json(run_dir / "export" / "model.tflite", photo)
    assert sorted(p["class"] for p in result["predictions"]) == sorted(CIFAR_NAMES)


def test_a_checksum_mismatch_or_a_bad_archive_ends_in_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    archive = cifar10_archive(1, 1)
    with serve_files({"/cifar-10-python.tar.gz": archive}) as url:
        code, _, err = train_in_process(["--dataset", "cifar10", "--data-dir", tmp_path / "data", "--data-url",
                                         url + "/cifar-10-python.tar.gz", *TINY, "--run-dir", tmp_path / "run"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "expected c58f30108f718f92721af3b95e74349a" in err and "Traceback" not in err
    broken = archive[: len(archive) // 2]
    pin_checksums(monkeypatch, "cifar10", {"cifar-10-python.tar.gz": broken})
    (tmp_path / "cut.tar.gz").write_bytes(broken)
    code, _, err = train_in_process(["--dataset", "cifar10", "--data-dir", tmp_path / "data", "--data-url",
                                     tmp_path / "cut.tar.gz", *TINY, "--run-dir", tmp_path / "run"], capsys)
    assert code == 2 and err.strip().splitlines() == [err.strip()] and "not a readable tar.gz archive" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_densenet_trains_exports_and_predicts_through_train_py(small_dataset, tmp_path):
    run_dir = tmp_path / "dense"
    args = list(TINY)
    args[args.index("--model") + 1] = "densenet121"
    result = run_train(["--data-dir", small_dataset, *args, "--epochs", "1", "--run-dir", run_dir])
    assert result.returncode == 0, result.stderr[-3000:]
    import keras

    model = keras.models.load_model(run_dir / "export" / "model.keras", compile=False)
    assert model.input_shape == (None, 32, 32, 3) and "conv5_block16_concat" in [layer.name for layer in model.layers]
    photo = next((small_dataset / "test" / "chef").glob("*.jpg"))
    [result] = infer_json(run_dir, photo)
    assert len(result["predictions"]) == 10 and result["predictions"][0]["class"] in json.loads(
        (run_dir / "class_index.json").read_text()).values()


def test_the_cpu_preset_resolves_and_builds_for_a_densenet():
    """zero_init_residual (on in the cpu preset) is a ResNet option: a DenseNet is built without it."""
    config = resolve_config("cpu", {"model": "densenet121", "epochs": 1, "max_per_class": 2, "time_budget_min": 1.0})
    assert config.zero_init_residual and config.stem == "small_pool" and config.width == 0.5
    model = build_network(config, num_classes=10)
    assert model.input_shape == (None, 96, 96, 3) and model.output_shape == (None, 10)
    assert model.get_layer("conv1_conv").filters == 32  # the stem at half width


@pytest.mark.parametrize("dataset", ["fashion-mnist", "cifar10"])
def test_missing_files_are_named_with_what_to_download(dataset, tmp_path, capsys):
    code, _, err = train_in_process(["--dataset", dataset, "--download-only", "--data-dir", tmp_path / "d",
                                     "--data-url", tmp_path / "no-such-folder", "--quiet"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "not found; download" in err and str(tmp_path / "d") in err
