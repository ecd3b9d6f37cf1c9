#!/usr/bin/env python3
"""Measure the intensity and tumor-shape statistics the synthetic phantom is drawn from.

Reads real BraTS 2021 cases (default: every case under ../shared/data/brats2021)
and writes numbers only -- never image data -- to
BrainTumorCNN/BrainTumorCNNLib/data/phantom_intensities.json.

Rerun:  python Testing/Tools/measure_phantom_statistics.py [CASE_DIR ...] [--output FILE]

Per case:
1. brain = voxels non-zero in all four modalities (BraTS is skull-stripped);
   healthy = brain eroded by 2 voxels (skull-stripping edge) minus the tumor
   (seg labels) dilated by 3 voxels.
2. The MNI152 template T1 (template.py, shipped by nilearn) is registered
   affinely to the case's T1 (Mattes mutual information, healthy voxels only);
   its grey / white matter / CSF maps become spatial priors.
3. Healthy voxels are split into CSF / grey / white matter by a Gaussian
   mixture on log(T1, T2, FLAIR) with those priors, fitted by EM (the scheme of
   SPM / FSL FAST in its simplest form).  A voxel is pure tissue when its
   posterior is >= 0.9 and the template agrees (prior >= 0.5).  A case whose
   pure tissues are not ordered as in healthy brain (T1: WM > GM > CSF; T2:
   CSF > GM > WM) would be left out of the intensity statistics.
4. Reference = median of the pure white matter, per modality; every intensity
   is divided by it, so the numbers are scanner independent.
5. Per class (csf, grey_matter, white_matter from step 3; ncr_net, edema,
   enhancing = seg labels 1, 2, 4, all of their voxels) and modality: mean,
   std, quantiles of the ratio, the fine-scale std (departure from the class's
   own 2 mm Gaussian local mean), and the Spearman correlation between
   modalities.
6. Noise (std of the residual from the 3x3x3 mean inside white matter) and
   bias field (std of the log of the white-matter intensity smoothed with a
   15 mm Gaussian), relative to the reference.
7. Tumor: volumes per label and region, enhancing fraction of the core,
   enhancing-rim thickness (2 x mean depth of enhancing voxels in the core),
   how far the edema reaches beyond the core, solidity (volume / convex hull)
   of core and whole tumor, and the core's centroid in MNI152 space.
8. The BraTS -> MNI152 affine of step 2; the mean over cases places the
   template on the BraTS grid in the phantom.

Summaries over cases: the mean of the per-case values (quantiles averaged
level by level), the between-case std and range of the per-case medians, and
the per-case medians themselves (the phantom borrows one case's contrasts).

About 1 minute per case on 2 CPU cores.  The registration is multi-threaded,
so a rerun reproduces the numbers to within a few per cent, not bit for bit.
"""
from __future__ import annotations

import argparse
import datetime
import warnings
import json
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage, spatial, stats

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "BrainTumorCNN"))

from BrainTumorCNNLib.synthetic.template import load_template  # noqa: E402
from BrainTumorCNNLib.running.cases import read_case  # noqa: E402

MODALITIES = ("T1", "T1c", "T2", "FLAIR")
QUANTILE_LEVELS = (0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5,
                   0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.975, 0.99)
TISSUE_LABELS = {"ncr_net": 1, "edema": 2, "enhancing": 4}
CLASSES = ("csf", "grey_matter", "white_matter", "ncr_net", "edema", "enhancing")
DEFAULT_OUTPUT = ROOT / "BrainTumorCNN" / "BrainTumorCNNLib" / "data" / "phantom_intensities.json"
DEFAULT_CASES = ROOT.parent / "shared" / "data" / "brats2021"


def register_template(t1: np.ndarray, mask: np.ndarray, geometry) -> sitk.Transform:
    """Affine transform mapping case points (LPS, mm) to MNI152 points, fitted by
    Mattes mutual information between the template T1 and the case T1 (tumor masked out)."""
    template = load_template()
    fixed = geometry.apply(sitk.GetImageFromArray(t1.astype(np.float32)))
    fixed_mask = geometry.apply(sitk.GetImageFromArray(mask.astype(np.uint8)))
    moving = template.t1
    initial = sitk.CenteredTransformInitializer(fixed, moving, sitk.AffineTransform(3),
                                                sitk.CenteredTransformInitializerFilter.MOMENTS)
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(32)
    reg.SetMetricFixedMask(fixed_mask)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(0.05, seed=1)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(1.0, 1e-4, 300, relaxationFactor=0.6)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel([4, 2, 1])
    reg.SetSmoothingSigmasPerLevel([2.0, 1.0, 0.0])
    reg.SetInitialTransform(initial, inPlace=False)
    transform = reg.Execute(fixed, moving)
    affine = sitk.AffineTransform(3)
    composite = sitk.CompositeTransform(transform)
    composite.FlattenTransform()
    inner = composite.GetNthTransform(0)
    affine.SetMatrix(sitk.AffineTransform(inner).GetMatrix())
    affine.SetTranslation(sitk.AffineTransform(inner).GetTranslation())
    affine.SetCenter(sitk.AffineTransform(inner).GetCenter())
    return affine


def affine_matrix(transform: sitk.AffineTransform) -> np.ndarray:
    """4x4 homogeneous matrix of an ITK affine transform (center folded in)."""
    a = np.array(transform.GetMatrix()).reshape(3, 3)
    c = np.array(transform.GetCenter())
    t = np.array(transform.GetTranslation())
    out = np.eye(4)
    out[:3, :3] = a
    out[:3, 3] = t + c - a @ c
    return out


def warp_template_map(image: sitk.Image, transform: sitk.Transform, geometry) -> np.ndarray:
    reference = geometry.apply(sitk.GetImageFromArray(np.zeros(geometry.shape, np.float32)))
    return sitk.GetArrayFromImage(sitk.Resample(image, reference, transform, sitk.sitkLinear, 0.0))


def _log_gauss(features: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> np.ndarray:
    diff = features - mean
    inv = np.linalg.inv(cov)
    return -0.5 * (np.einsum("ni,ij,nj->n", diff, inv, diff) + np.log(np.linalg.det(cov)) + 3 * np.log(2 * np.pi))


def split_healthy_tissue(images: np.ndarray, healthy: np.ndarray, priors: dict, iterations: int = 20):
    """CSF / grey / white matter of healthy voxels by a Gaussian mixture with
    spatial priors (the registered template maps), fitted by EM on log(T1, T2,
    FLAIR) -- the scheme of SPM / FSL FAST in its simplest form.

    priors: {class: float (Z, Y, X) probability}.  Returns ({class: bool mask of
    voxels with posterior >= 0.9 and prior >= 0.5}, info)."""
    names = ("csf", "grey_matter", "white_matter")
    chans = (0, 2, 3)  # T1, T2, FLAIR
    features = np.stack([np.log(images[c][healthy] / np.median(images[c][healthy])) for c in chans], axis=1)
    prior = np.stack([ndimage.gaussian_filter(priors[n].astype(np.float32), 1.5)[healthy] for n in names], axis=1)
    prior = np.clip(prior, 0, None) + 0.02
    prior /= prior.sum(axis=1, keepdims=True)
    resp = prior.copy()
    for _ in range(iterations):
        weights = resp / resp.sum(axis=0, keepdims=True)
        means = weights.T @ features  # (3, 3)
        covs = [np.cov(features.T, aweights=weights[:, k]) + 1e-6 * np.eye(3) for k in range(3)]
        log_like = np.stack([_log_gauss(features, means[k], covs[k]) for k in range(3)], axis=1)
        log_post = np.log(prior) + log_like
        log_post -= log_post.max(axis=1, keepdims=True)
        resp = np.exp(log_post)
        resp /= resp.sum(axis=1, keepdims=True)
    out = {}
    for k, name in enumerate(names):
        m = np.zeros(healthy.shape, bool)
        m[healthy] = resp[:, k] >= 0.9
        out[name] = m & (priors[name] >= 0.5)  # intensity and template agree: pure tissue
    med = {n: [float(np.median(images[c][out[n]])) if out[n].any() else float("nan") for c in (0, 2)]
           for n in names}  # T1, T2 medians of the pure tissue
    info = {"fractions": {n: round(float(resp[:, k].mean()), 4) for k, n in enumerate(names)},
            "pure_voxels": {n: int(out[n].sum()) for n in names},
            "ordering_ok": bool(med["white_matter"][0] > med["grey_matter"][0] > med["csf"][0]
                                and med["white_matter"][1] < med["grey_matter"][1] < med["csf"][1])}
    return out, info


def fine_scale_std(image: np.ndarray, mask: np.ndarray) -> float:
    """Std of the departure from the local (Gaussian, 2 mm) mean of the class
    itself, over the class's voxels at least 2 voxels from its border: the
    small-scale part of the within-class variation (noise included)."""
    box = ndimage.find_objects(mask.astype(np.uint8))[0]
    box = tuple(slice(max(s.start - 6, 0), s.stop + 6) for s in box)
    m, v = mask[box].astype(np.float32), image[box].astype(np.float32)
    local = ndimage.gaussian_filter(v * m, 2.0) / np.maximum(ndimage.gaussian_filter(m, 2.0), 1e-6)
    inner = ndimage.binary_erosion(mask[box], iterations=2)
    return float((v - local)[inner].std()) if inner.sum() >= 50 else float("nan")


def class_statistics(ratios: np.ndarray, mask: np.ndarray) -> dict:
    """ratios (4, Z, Y, X); statistics of the voxels in mask, per modality."""
    values = ratios[:, mask]  # (4, N)
    out = {"voxels": int(mask.sum())}
    for i, m in enumerate(MODALITIES):
        v = values[i]
        out[m] = {"mean": float(v.mean()), "std": float(v.std()), "fine_std": fine_scale_std(ratios[i], mask),
                  "quantiles": [float(q) for q in np.quantile(v, QUANTILE_LEVELS)]}
    sub = values[:, np.random.default_rng(0).choice(values.shape[1], size=min(50_000, values.shape[1]),
                                                     replace=False)]
    rho = stats.spearmanr(sub.T).statistic
    out["spearman"] = np.asarray(rho, dtype=float).round(4).tolist()
    return out


def noise_and_bias(image: np.ndarray, wm: np.ndarray, reference: float) -> dict:
    image = image.astype(np.float32)
    local_mean = ndimage.uniform_filter(image, 3)
    inner = ndimage.binary_erosion(wm, iterations=1)
    residual = (image - local_mean)[inner] * np.sqrt(27.0 / 26.0)
    weight = wm.astype(np.float32)
    smooth = ndimage.gaussian_filter(image * weight, 15.0) / np.maximum(ndimage.gaussian_filter(weight, 15.0), 1e-6)
    log_bias = np.log(np.maximum(smooth[wm], 1e-6) / reference)
    return {"noise_std": float(residual.std() / reference), "bias_log_std": float(log_bias.std())}


def tumor_geometry(truth: np.ndarray, to_mni: np.ndarray, geometry) -> dict:
    voxel_ml = geometry.voxel_volume_ml
    tc = np.isin(truth, (1, 3, 4))
    wt = truth > 0
    et = truth == 4
    out = {"volume_ml": {name: float((truth == v).sum() * voxel_ml) for name, v in TISSUE_LABELS.items()}}
    out["volume_ml"].update(whole_tumor=float(wt.sum() * voxel_ml), tumor_core=float(tc.sum() * voxel_ml))
    out["enhancing_fraction_of_core"] = float(et.sum() / max(tc.sum(), 1))
    depth = ndimage.distance_transform_edt(tc, sampling=geometry.spacing[::-1])
    out["enhancing_rim_thickness_mm"] = float(2.0 * depth[et].mean()) if et.any() else 0.0
    outside_core = ndimage.distance_transform_edt(~tc, sampling=geometry.spacing[::-1])
    ed = truth == 2
    out["edema_distance_from_core_mm"] = {str(q): float(np.quantile(outside_core[ed], q)) for q in (0.5, 0.9, 0.99)}
    labelled, n = ndimage.label(wt)
    sizes = np.bincount(labelled.ravel())[1:]
    out["whole_tumor_components"] = int(n)
    out["largest_component_fraction"] = float(sizes.max() / sizes.sum())
    for name, region in (("tumor_core", tc), ("whole_tumor", wt)):
        boundary = region & ~ndimage.binary_erosion(region)
        points = np.argwhere(boundary)
        out[f"{name}_solidity"] = float(region.sum() / spatial.ConvexHull(points).volume)
    zyx = np.argwhere(tc).mean(axis=0)
    index = zyx[::-1]
    d = np.array(geometry.direction).reshape(3, 3)
    point = np.array(geometry.origin) + d @ (index * np.array(geometry.spacing))
    out["core_centroid_mni_lps_mm"] = [float(x) for x in (to_mni @ np.append(point, 1.0))[:3]]
    return out


def measure_case(folder: Path) -> dict:
    t0 = time.time()
    case = read_case(folder)
    images, truth, geometry = case.images, case.truth, case.geometry
    brain = np.all(images > 0, axis=0)
    tumor = truth > 0
    healthy = (ndimage.binary_erosion(brain, iterations=2)
               & ~ndimage.binary_dilation(tumor, iterations=3))
    transform = register_template(images[0], healthy, geometry)
    case_to_mni = affine_matrix(transform)
    template = load_template()
    warped = {n: warp_template_map(getattr(template, n), transform, geometry)
              for n in ("grey_matter", "white_matter", "brain_mask")}
    priors = {"grey_matter": warped["grey_matter"], "white_matter": warped["white_matter"],
              "csf": np.clip(warped["brain_mask"] - warped["grey_matter"] - warped["white_matter"], 0, 1)}
    tissues, mixture = split_healthy_tissue(images, healthy, priors)
    reference = {m: float(np.median(images[i][tissues["white_matter"]])) for i, m in enumerate(MODALITIES)}
    ratios = images / np.array([reference[m] for m in MODALITIES], np.float32)[:, None, None, None]
    classes = dict(tissues)
    for name, value in TISSUE_LABELS.items():
        classes[name] = (truth == value) & brain
    result = {"case": case.name, "white_matter_reference": reference, "mixture": mixture,
              "brain_volume_ml": float(np.any(images > 0, axis=0).sum() * geometry.voxel_volume_ml),
              "classes": ({n: class_statistics(ratios, m) for n, m in classes.items() if m.sum() >= 50}
                          if mixture["ordering_ok"] else {})}  # tissue split failed: no intensities
    result["noise_bias"] = {m: noise_and_bias(images[i], tissues["white_matter"], reference[m])
                            for i, m in enumerate(MODALITIES)}
    template_wm = warped["white_matter"]
    wm = tissues["white_matter"]
    result["template_check"] = {  # how much of the template's deep white matter the intensities agree with
        "fraction_of_template_wm_over_0.9_in_mixture_wm": float(wm[(template_wm > 0.9) & healthy].mean()),
    }
    result["case_to_mni"] = case_to_mni.tolist()
    result["tumor"] = tumor_geometry(truth, case_to_mni, geometry)
    print(f"{case.name}: {time.time() - t0:.0f} s, WM ref {reference}, mixture {mixture}, "
          f"check {result['template_check']}", flush=True)
    return result


def summarise(per_case: list) -> dict:
    summary = {}
    for cls in CLASSES:
        entries = [c["classes"][cls] for c in per_case if cls in c["classes"]]
        item = {"cases": len(entries), "voxels_per_case": [e["voxels"] for e in entries]}
        for m in MODALITIES:
            q = np.array([e[m]["quantiles"] for e in entries])
            medians = q[:, QUANTILE_LEVELS.index(0.5)]
            item[m] = {"mean": float(np.mean([e[m]["mean"] for e in entries])),
                       "std": float(np.mean([e[m]["std"] for e in entries])),
                       "fine_std": float(np.nanmean([e[m]["fine_std"] for e in entries])),
                       "quantiles": [round(float(x), 4) for x in q.mean(axis=0)],
                       "median_between_case_std": float(medians.std(ddof=1)),
                       "median_between_case_log_std": float(np.log(medians).std(ddof=1)),
                       "median_range": [float(medians.min()), float(medians.max())]}
        item["spearman"] = np.mean([e["spearman"] for e in entries], axis=0).round(3).tolist()
        summary[cls] = item
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", nargs="*", type=Path, help=f"case folders (default: every case in {DEFAULT_CASES})")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    cases = args.cases or sorted(p for p in DEFAULT_CASES.iterdir() if p.is_dir())
    if not cases:
        parser.error(f"no cases given and none found in {DEFAULT_CASES}")
    per_case = [measure_case(c) for c in cases]
    warnings.filterwarnings("ignore", "Degrees of freedom", RuntimeWarning)  # spreads of a single case
    warnings.filterwarnings("ignore", "invalid value", RuntimeWarning)

    tumors = [c["tumor"] for c in per_case]
    volumes = {k: [t["volume_ml"][k] for t in tumors] for k in tumors[0]["volume_ml"]}
    to_mni = np.mean([c["case_to_mni"] for c in per_case], axis=0)
    noise = {m: {k: float(np.mean([c["noise_bias"][m][k] for c in per_case])) for k in ("noise_std", "bias_log_std")}
             for m in MODALITIES}
    result = {
        "description": ("Intensity and tumor statistics of real BraTS 2021 cases, measured by "
                        "Testing/Tools/measure_phantom_statistics.py for the synthetic phantom (phantom.py). "
                        "Intensities are ratios to the median healthy white matter of the same case and "
                        "modality; quantiles at quantile_levels, averaged over cases level by level."),
        "measured": datetime.date.today().isoformat(),
        "cases": [c["case"] for c in per_case],
        "source": "RSNA-ASNR-MICCAI BraTS 2021 (CC BY 4.0); Baid et al. 2021, Menze et al. 2015, Bakas et al. 2017",
        "modalities": list(MODALITIES),
        "quantile_levels": list(QUANTILE_LEVELS),
        "classes": summarise(per_case),
        "white_matter_reference": {m: [c["white_matter_reference"][m] for c in per_case] for m in MODALITIES},
        "noise_and_bias": noise,
        "brain_volume_ml": [c["brain_volume_ml"] for c in per_case],
        "tumor": {
            "volume_ml": volumes,
            "log_volume_ml_mean": {k: float(np.mean(np.log(np.maximum(v, 1e-3)))) for k, v in volumes.items()},
            "log_volume_ml_std": {k: float(np.std(np.log(np.maximum(v, 1e-3)), ddof=1)) for k, v in volumes.items()},
            "enhancing_fraction_of_core": [t["enhancing_fraction_of_core"] for t in tumors],
            "enhancing_rim_thickness_mm": [t["enhancing_rim_thickness_mm"] for t in tumors],
            "edema_distance_from_core_mm": [t["edema_distance_from_core_mm"] for t in tumors],
            "whole_tumor_components": [t["whole_tumor_components"] for t in tumors],
            "largest_component_fraction": [t["largest_component_fraction"] for t in tumors],
            "tumor_core_solidity": [t["tumor_core_solidity"] for t in tumors],
            "whole_tumor_solidity": [t["whole_tumor_solidity"] for t in tumors],
            "core_centroid_mni_lps_mm": [t["core_centroid_mni_lps_mm"] for t in tumors],
        },
        "brats_to_mni_affine": {
            "description": "4x4 matrix mapping BraTS (SRI24) LPS points in mm to MNI152 2009a LPS points: "
                           "mean of per-case affine registrations of the template T1 to the case T1",
            "mean": to_mni.round(5).tolist(),
            "per_case": [np.round(c["case_to_mni"], 4).tolist() for c in per_case],
        },
        "checks": {c["case"]: {"mixture": c["mixture"], "template": c["template_check"]} for c in per_case},
        "per_case_medians": {c["case"]: {cls: {m: round(st[m]["quantiles"][QUANTILE_LEVELS.index(0.5)], 4)
                                               for m in MODALITIES}
                                         for cls, st in c["classes"].items()} for c in per_case},
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
