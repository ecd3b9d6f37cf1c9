"""What pyproject.toml promises.

- What `pip install .` installs, checked on a real wheel: built from a copy of the source tree,
  installed with `pip install --target`, and run from a folder outside the source tree so nothing
  can fall back on the checkout.  Slow for this suite (about a minute: a wheel build and a small
  phantom segmented on the CPU), so those tests share one module-scoped install.
- The declared minimum torch and Python: only torch API that the lower bound has (an audit table
  that every new torch name must enter), and syntax that Python 3.9 parses.
"""
from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # Slicer 5.6-5.8 ship Python 3.9
    import tomli as tomllib

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
    modules = {p.relative_to(LIB).as_posix() for p in LIB.rglob("*.py") if "__pycache__" not in p.parts}
    assert modules - {p.relative_to(lib).as_posix() for p in lib.rglob("*.py")} == set(), "modules missing from the wheel"
    assert (lib / "data" / "phantom_intensities.json").is_file()
    assert shipped_model_files(), "no shipped models in Resources/Models to check"
    installed_models = {p.name for p in (lib / "models").glob("*")}
    assert shipped_model_files() - installed_models == set(), "shipped models missing from the wheel"
    for name in shipped_model_files():
        assert (lib / "models" / name).read_bytes() == (SOURCE_MODELS / name).read_bytes()


def test_installed_registry_finds_the_shipped_models(installed, tmp_path):
    code = ("import BrainTumorCNNLib, json; from BrainTumorCNNLib.network import registry; "
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


# --------------------------------------------------------------------------- the declared torch minimum
#: Every torch name the engine uses, with the torch release by which it existed (from PyTorch's release
#: notes; "1.0" = 1.0 or earlier).  A name missing here fails the test below: look up when torch added
#: it before using it, or raise the lower bound in pyproject.toml.  Keyword arguments are not seen by the
#: scan; the one that matters, torch.load(weights_only=True), exists since 1.13.
TORCH_API_SINCE = {
    **dict.fromkeys([
        "torch", "torch.Size", "torch.Tensor", "torch.__version__", "torch.arange", "torch.bincount", "torch.bmm",
        "torch.cat", "torch.cuda.empty_cache", "torch.cuda.is_available", "torch.cuda.synchronize", "torch.device",
        "torch.distributed", "torch.distributed.barrier", "torch.distributed.broadcast",
        "torch.distributed.destroy_process_group",
        "torch.distributed.get_rank", "torch.distributed.get_world_size", "torch.distributed.init_process_group",
        "torch.distributed.is_available", "torch.distributed.is_initialized", "torch.empty", "torch.float32",
        "torch.from_numpy", "torch.get_num_threads", "torch.load", "torch.logsumexp", "torch.manual_seed",
        "torch.nn", "torch.nn.Conv2d", "torch.nn.Dropout", "torch.nn.Module", "torch.nn.ModuleList",
        "torch.nn.Parameter",
        "torch.nn.functional", "torch.nn.functional.log_softmax", "torch.nn.functional.max_pool2d",
        "torch.nn.functional.avg_pool2d",
        "torch.nn.functional.nll_loss", "torch.nn.init.uniform_", "torch.nn.init.zeros_",
        "torch.nn.parallel.DistributedDataParallel", "torch.no_grad", "torch.optim.SGD", "torch.randint",
        "torch.randn", "torch.save", "torch.set_num_threads", "torch.stack", "torch.tensor", "torch.where",
        "torch.zeros", "torch.zeros_like", "torch.Generator", "torch.cos", "torch.sin", "torch.exp",
        "torch.ones", "torch.linspace", "torch.einsum", "torch.full_like", "torch.rand", "torch.cuda.set_device",
        "torch.nn.functional.conv2d", "torch.nn.functional.pad", "torch.get_rng_state", "torch.set_rng_state",
        "torch.cuda.get_rng_state", "torch.cuda.set_rng_state", "torch.autograd.Function", "torch.mul",
        "torch.uint8", "torch.nn.Module.__init__", "torch.optim.Optimizer", "torch.softmax"], "1.0"),
    "torch.nn.functional.one_hot": "1.1",
    "torch.nn.functional.affine_grid": "1.3",  # align_corners=
    "torch.nn.functional.grid_sample": "1.3",  # align_corners=
    "torch.channels_last": "1.5",
    "torch.autocast": "1.10",  # device_type "cpu"
    "torch.bfloat16": "1.10",
    "torch.contiguous_format": "1.5",
    "torch.deg2rad": "1.6",
    "torch.distributed.broadcast_object_list": "1.8",
    "torch.meshgrid": "1.10",  # indexing=
    "torch.backends.cuda.matmul.allow_tf32": "1.7",
    "torch.backends.cudnn.allow_tf32": "1.7",
    "torch.fft.fft": "1.7",
    "torch.fft.rfft": "1.7",
    "torch.fft.rfft2": "1.7",
    "torch.fft.irfft2": "1.7",
    "torch.maximum": "1.7",
    "torch.inference_mode": "1.9",
    "torch.cuda.OutOfMemoryError": "1.13",
    "torch.cpu": "2.1",  # its private _is_*_supported checks are read with getattr (absent: float32)
}


def version_tuple(text: str) -> tuple:
    return tuple(int(part) for part in text.split("."))


def project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def declared_torch_minimum() -> tuple:
    dependencies = project()["dependencies"]
    (torch_requirement,) = [d for d in dependencies if d.startswith("torch")]
    return version_tuple(torch_requirement.split(">=")[1].split(",")[0])


def torch_names_used() -> dict:
    """Dotted torch name -> engine modules using it: `torch.x.y` chains and names reached through
    `from torch import nn` / `import torch.nn.functional as F` aliases."""
    used = {}
    for path in sorted(LIB.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        aliases = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.split(".")[0] == "torch":
                        aliases[a.asname or "torch"] = a.name if a.asname else "torch"
                        used.setdefault(a.name, set()).add(path.name)
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "torch":
                for a in node.names:
                    aliases[a.asname or a.name] = f"{node.module}.{a.name}"
                    used.setdefault(f"{node.module}.{a.name}", set()).add(path.name)
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and not isinstance(parents.get(node), ast.Attribute):
                parts, root = [], node
                while isinstance(root, ast.Attribute):
                    parts.append(root.attr)
                    root = root.value
                if isinstance(root, ast.Name) and root.id in aliases:
                    used.setdefault(".".join([aliases[root.id]] + parts[::-1]), set()).add(path.name)
    return used


def test_engine_uses_only_torch_api_of_the_declared_minimum():
    used = torch_names_used()
    assert "torch.nn.Conv2d" in used and "torch.fft.rfft2" in used, "the scan misses the engine's torch use"
    unaudited = {name: sorted(files) for name, files in used.items() if name not in TORCH_API_SINCE}
    assert unaudited == {}, "torch names not checked against pyproject's lower bound (see TORCH_API_SINCE)"
    minimum = declared_torch_minimum()
    newer = {name: TORCH_API_SINCE[name] for name in used if version_tuple(TORCH_API_SINCE[name]) > minimum}
    assert newer == {}, f"torch names newer than the declared torch>={'.'.join(map(str, minimum))}"


def test_runner_handles_out_of_memory_and_cancel_on_torch_without_toplevel_OutOfMemoryError(monkeypatch):
    """torch 2.2 and 2.3 have torch.cuda.OutOfMemoryError (1.13+) but no torch.OutOfMemoryError: there,
    every exception passing through the runner's out-of-memory check (a cancel too) must keep its meaning."""
    import itertools

    import numpy as np
    import torch
    from torch import nn

    from BrainTumorCNNLib.network import networks
    from BrainTumorCNNLib.running import inference

    class OutOfMemoryAbove(nn.Module):
        def __init__(self, model, max_rows):
            super().__init__()
            self.inner, self.max_rows = model, max_rows
            self.num_classes, self.receptive_field, self.in_channels = (
                model.num_classes, model.receptive_field, model.in_channels)

        def forward(self, x):
            if x.shape[0] > 1 or x.shape[2] > self.max_rows + self.receptive_field - 1:
                raise torch.cuda.OutOfMemoryError("simulated: out of memory")
            return self.inner(x)

    torch.manual_seed(0)
    model = networks.LocalPathCNN(num_classes=4).eval()
    rng = np.random.default_rng(0)
    volume = rng.normal(size=(4, 2, 24, 24)).astype(np.float32)
    mask = np.ones(volume.shape[1:], dtype=bool)
    expected = inference.segment_volume(model, volume, mask, device="cpu", fast=False)
    monkeypatch.delattr(torch, "OutOfMemoryError")  # the API of torch < 2.5

    limited = OutOfMemoryAbove(model, max_rows=inference.MIN_BAND_ROWS)
    got = inference.segment_volume(limited, volume, mask, device="cpu", fast=False, max_batch=2)
    np.testing.assert_allclose(got.probabilities, expected.probabilities, atol=1e-5, rtol=0)

    checks = itertools.chain([False], itertools.repeat(True))  # the cancel lands inside the runner's bands
    with pytest.raises(inference.Cancelled):
        inference.segment_volume(model, volume, mask, device="cpu", fast=False, cancel=lambda: next(checks))


def test_sources_parse_as_the_declared_minimum_python():
    """pyproject.toml promises Python 3.9 (the Python of Slicer 5.6-5.8): no newer syntax (`match`,
    parenthesised context managers, ...) in the engine, the Slicer module or the tests.  ast's
    feature_version is best effort: it catches syntax, not newer library calls."""
    minimum = version_tuple(project()["requires-python"].removeprefix(">="))
    assert minimum == (3, 9)
    sources = sorted((REPO / "BrainTumorCNN").rglob("*.py")) + sorted((REPO / "Testing").rglob("*.py"))
    assert len(sources) > 30
    for path in sources:
        ast.parse(path.read_text(encoding="utf-8"), filename=str(path), feature_version=minimum)
