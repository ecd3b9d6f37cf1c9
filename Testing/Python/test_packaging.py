"""What `pip install .` installs, checked on a real wheel: built from a copy of
the source tree, installed with `pip install --target`, and run from a folder
outside the source tree so nothing can fall back on the checkout.

Slow for this suite (about a minute: a wheel build and a small phantom
segmented on the CPU), so everything shares one module-scoped install.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LIB = REPO / "BrainTumorCNN" / "BrainTumorCNNLib"
SOURCE_MODELS = REPO / "Resources" / "Models"
#: Not part of the source distribution (build outputs, caches, environments).
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache",
                                    ".hypothesis", "runs", ".cache", ".whl", "braintumorcnn-demo")


def shipped_model_files() -> set:
    return {p.name for p in SOURCE_MODELS.glob("*") if p.suffix in (".safetensors", ".json")}


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A wheel of a copy of this tree, installed into an empty folder; returns that folder."""
    root = tmp_path_factory.mktemp("packaging")
    source, wheels, target = root / "source", root / "wheels", root / "site"
    shutil.copytree(REPO, source, ignore=NOT_SOURCE)
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation",
                           "-q", "-w", str(wheels)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    (wheel,) = wheels.glob("braintumorcnn-*.whl")
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
                           str(wheel)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    shutil.rmtree(source)  # the installed package must not need its source
    return target


def run_installed(target: Path, args: list, cwd: Path) -> subprocess.CompletedProcess:
    """Run a command with only the installed package on the path (the shared
    environment's other packages stay visible through sys.executable)."""
    env = {k: v for k, v in os.environ.items() if k not in ("BRAINTUMORCNN_MODELS", "PYTHONPATH")}
    env["PYTHONPATH"] = str(target)
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_wheel_holds_every_module_its_data_and_the_shipped_models(installed):
    lib = installed / "BrainTumorCNNLib"
    modules = {p.name for p in LIB.glob("*.py")}
    assert modules - {p.name for p in lib.glob("*.py")} == set(), "modules missing from the wheel"
    assert (lib / "data" / "phantom_intensities.json").is_file()
    assert shipped_model_files(), "no shipped models in Resources/Models to check"
    installed_models = {p.name for p in (lib / "models").glob("*")}
    assert shipped_model_files() - installed_models == set(), "shipped models missing from the wheel"
    for name in shipped_model_files():
        assert (lib / "models" / name).read_bytes() == (SOURCE_MODELS / name).read_bytes()


def test_installed_registry_finds_the_shipped_models(installed, tmp_path):
    code = ("import BrainTumorCNNLib, json; from BrainTumorCNNLib import registry; "
            "print(json.dumps([BrainTumorCNNLib.__file__, str(registry.MODELS_DIR), sorted(registry.shipped()), "
            "registry.default_model()]))")
    done = run_installed(installed, [sys.executable, "-c", code], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    module_file, models_dir, shipped, default = json.loads(done.stdout)
    assert Path(module_file).is_relative_to(installed), "imported the source tree, not the installed package"
    assert Path(models_dir) == installed / "BrainTumorCNNLib" / "models"
    assert set(shipped) == {name.rsplit(".", 1)[0] for name in shipped_model_files()}
    assert default in shipped


def test_installed_command_segments_the_phantom_with_a_shipped_model(installed, tmp_path):
    """`braintumorcnn phantom` then `segment`, as a user of the wheel would, outside the checkout."""
    command = installed / "bin" / "braintumorcnn"
    done = run_installed(installed, [sys.executable, str(command), "phantom", "cases", "--size", "small",
                                     "--name", "Phantom"],
                         cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    case = tmp_path / "cases" / "Phantom"
    done = run_installed(installed, [sys.executable, str(command), "segment", str(case), "--output", "out",
                                     "--model", "LocalPathCNN", "--device", "cpu", "--no-n4"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr + done.stdout
    outputs = {p.name for p in (tmp_path / "out").iterdir()}
    assert any(name.endswith("_labels.nii.gz") for name in outputs), outputs
    assert any(name.endswith(".seg.nrrd") for name in outputs), outputs
    assert "metrics.csv" in outputs, "the phantom's truth was not found or not scored"
