"""Shared test fixtures: the real BraTS cases beside the repository, when present."""
from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import pytest

SHARED_DATA = Path(os.environ.get("BRAINTUMORCNN_SHARED_DATA",
                                  Path(__file__).resolve().parents[2].parent / "shared" / "data"))


def maintainer_tool(name: str):
    """A maintainer tool of Testing/Tools (a script, not a package), imported as its command line runs it."""
    tools = str(Path(__file__).resolve().parents[1] / "Tools")
    sys.path.insert(0, tools)
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(tools)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """`../shared/data` (real expert-labelled cases); skips the test where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real BraTS cases not available ({SHARED_DATA} is absent)")
    return SHARED_DATA


def write_synthetic_case(folder: Path, name: str = "Synth_001", shape=(6, 48, 48), seed: int = 0) -> Path:
    """A small BraTS 2021-layout case: ellipsoid brain, a tumor with enhancing rim,
    NCR/NET core and edema, modality-specific intensities, noise.  Returns the case folder."""
    import numpy as np
    import SimpleITK as sitk

    rng = np.random.default_rng(seed)
    z, y, x = np.indices(shape, dtype=np.float32)
    cz, cy, cx = [(s - 1) / 2 for s in shape]
    brain = ((z - cz) / (shape[0] / 2 + 1)) ** 2 + ((y - cy) / (shape[1] * 0.42)) ** 2 + ((x - cx) / (shape[2] * 0.38)) ** 2 < 1
    ty, tx = cy + rng.uniform(-4, 4), cx + rng.uniform(-4, 4)
    r = np.sqrt((y - ty) ** 2 + (x - tx) ** 2 + ((z - cz) * 2) ** 2)
    seg = np.zeros(shape, np.uint8)
    seg[(r < 11) & brain] = 2
    seg[(r < 6) & brain] = 4
    seg[(r < 3.5) & brain] = 1
    # mean intensity per label (0 healthy, 1 NCR/NET, 2 edema, 4 enhancing) per modality T1, T1c, T2, FLAIR
    means = {"t1": (500, 300, 400, 450), "t1ce": (500, 350, 450, 1100), "t2": (600, 1300, 1100, 900),
             "flair": (400, 700, 900, 750)}
    case = folder / name
    case.mkdir(parents=True, exist_ok=True)
    for modality, (healthy, ncr, edema, enh) in means.items():
        lut = np.zeros(5, np.float32)
        lut[[0, 1, 2, 4]] = healthy, ncr, edema, enh
        image = (lut[seg] * (1 + 0.05 * rng.standard_normal(shape))) * brain
        out = sitk.GetImageFromArray(image.astype(np.int16))
        out.SetOrigin((-0.0, -239.0, 0.0))
        sitk.WriteImage(out, str(case / f"{name}_{modality}.nii.gz"))
    seg_image = sitk.GetImageFromArray(seg)
    seg_image.SetOrigin((-0.0, -239.0, 0.0))
    sitk.WriteImage(seg_image, str(case / f"{name}_seg.nii.gz"))
    return case


def write_broken_case(folder: Path, name: str = "Broken_001") -> Path:
    """A case folder whose four images are not readable (a gzip header and nothing behind it)."""
    case = folder / name
    case.mkdir()
    for modality in ("t1", "t1ce", "t2", "flair"):
        (case / f"{name}_{modality}.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    return case


def renamed_copy(case: Path, name: str) -> Path:
    """The same scan under another case name, as releases re-publish it (BraTS 2023's
    BraTS-GLI-00000-000 is BraTS2021_00000)."""
    import shutil

    copy = case.parent / name
    copy.mkdir()
    for f in case.iterdir():
        shutil.copy(f, copy / f.name.replace(case.name, name))
    return copy


@pytest.fixture
def synthetic_cases(tmp_path) -> list:
    """Three small synthetic cases in BraTS 2021 layout."""
    return [write_synthetic_case(tmp_path / "cases", f"Synth_{i:03d}", seed=i) for i in range(3)]


@pytest.fixture
def untrained_models(tmp_path, monkeypatch) -> Path:
    """A models folder holding an untrained 4-class TwoPathCNN and a 5-class
    LocalPathCNN with their cards, made the registry's folder (TwoPathCNN the default): for tests of the
    plumbing, not of the quality of shipped weights."""
    import torch

    from BrainTumorCNNLib.network import registry, weights

    folder = tmp_path / "models"
    folder.mkdir()
    torch.manual_seed(0)
    for name, classes, scheme, dice in (("TwoPathCNN", 4, "brats2021", 0.5), ("LocalPathCNN", 5, "brats2013", 0.2)):
        model = registry.get(name).build(num_classes=classes)
        weights.save(model, name, folder / f"{name}.safetensors",
                     {"label_scheme": scheme,
                      "validation": {"dice": {"complete": dice, "core": dice, "enhancing": dice}}})
    monkeypatch.setattr(registry, "MODELS_DIR", folder)
    return folder
