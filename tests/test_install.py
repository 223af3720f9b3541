"""The project installs as a package: a wheel builds, installs into a fresh virtual environment,
its console commands answer, and models/ works from the installed wheel."""

from __future__ import annotations

import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest
from archive_subsets import REPO_ROOT


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A fresh venv holding the project's wheel. It sees the site-packages of the interpreter
    running the tests for the heavy dependencies (TensorFlow), whether that is the machine's Python
    or a virtual environment, but not the repository: commands run from an empty folder."""
    tmp = tmp_path_factory.mktemp("install")
    # Build from a copy: setuptools writes build/ and *.egg-info into the source folder.
    source = tmp / "source"
    top_level_only = {".git", ".venv", "runs", "data", "build", "dist", "test-artifacts"}

    def ignore(folder, names):
        skipped = {n for n in names if n == "__pycache__" or n.endswith((".egg-info", "_cache"))}
        return skipped | (top_level_only & set(names) if folder == str(REPO_ROOT) else set())

    shutil.copytree(REPO_ROOT, source, ignore=ignore)
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp / "dist"), str(source)],
        capture_output=True, text=True, timeout=600,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    [wheel] = (tmp / "dist").glob("idenprof-*.whl")
    env_dir = tmp / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    # system_site_packages would show the machine's Python, not a virtual environment the tests
    # may run in; a .pth file appends this interpreter's own package folders after the venv's own,
    # so the wheel installed below still wins over anything of the same name.
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    (Path(purelib) / "running-interpreter.pth").write_text("\n".join(running_package_folders()) + "\n")
    install = subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--quiet", str(wheel)],
                             capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-3000:]
    workdir = tmp / "elsewhere"
    workdir.mkdir()
    return env_dir, workdir, wheel


def running_package_folders() -> list[str]:
    """The site-packages folders this interpreter imports from (a venv's, the user's, the system's)."""
    return [p for p in sys.path if Path(p).name in ("site-packages", "dist-packages") and Path(p).is_dir()]


def run_installed(installed, command: str, *args: str) -> str:
    """The standard output of `command` from the venv's bin/, run from the empty folder; it must succeed."""
    env_dir, workdir, _ = installed
    result = subprocess.run([str(env_dir / "bin" / command), *args], cwd=workdir,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.mark.parametrize("command, expected", [
    ("idenprof-train", "--preset"), ("idenprof-infer", "--top"), ("idenprof-evaluate", "--out"),
    ("idenprof-serve", "--port"), ("idenprof-bulk", "--rows-per-shard"),
])
def test_console_commands_answer_help(installed, command, expected):
    assert expected in run_installed(installed, command, "--help")


def test_models_from_the_installed_wheel_build_a_resnet50(installed):
    env_dir = installed[0]
    code = ("import models, idenprof; m = models.ResNet50(classes=10, input_shape=(64, 64, 3)); "
            "print(m.count_params(), models.__file__, idenprof.__file__)")
    params, models_file, idenprof_file = run_installed(installed, "python", "-c", code).split()
    assert int(params) > 23_000_000  # ResNet-50's body with a 10-class head
    assert str(env_dir) in models_file and str(env_dir) in idenprof_file  # not the repository's copies


def test_the_wheel_carries_both_packages_and_no_data_or_runs(installed):
    import zipfile

    _, _, wheel = installed
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.startswith("idenprof/data/") for n in names) and "models/resnet.py" in names
    assert not any(n.startswith(("runs/", "data/", "tests/")) for n in names)
    assert "idenprof/pretrained/model.int8.tflite" in names  # the shipped model travels with the package
    assert "idenprof/static/index.html" in names  # and the web page
    assert "idenprof/ship/model_card.md" in names  # and the model card's template


def test_the_installed_package_reads_its_model_card_template(installed):
    code = ("from idenprof.ship import card; text = card.TEMPLATE.read_text(); "
            "print(card.TEMPLATE); print(card.kept_blocks(text, {n: False for n, _ in card.BLOCK.findall(text)}))")
    path, card = run_installed(installed, "python", "-c", code).split("\n", 1)
    assert path.startswith(str(installed[0])) and "## Intended use" in card and "Interim model" not in card
