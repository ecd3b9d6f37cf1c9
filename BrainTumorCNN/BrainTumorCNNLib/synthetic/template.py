"""The healthy brain anatomy the phantom is built from: the MNI152 2009a
template (T1, grey and white matter maps, brain mask) that nilearn ships inside
its package, loaded offline and returned as SimpleITK images in LPS.

Reference: Fonov et al., NeuroImage 2011 (ICBM 2009a nonlinear symmetric).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import SimpleITK as sitk

#: Grid of BraTS 2017-2021 volumes (SRI24 space) in ITK / LPS terms.
BRATS_SIZE = (240, 240, 155)  # voxels (x, y, z)
BRATS_SPACING = (1.0, 1.0, 1.0)  # mm
BRATS_ORIGIN = (0.0, -239.0, 0.0)  # mm, LPS
BRATS_DIRECTION = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


@dataclass(frozen=True)
class Template:
    """MNI152 maps on the template's own 1 mm grid, float32 SimpleITK images (LPS)."""

    t1: sitk.Image  # intensities scaled to [0, 1]
    grey_matter: sitk.Image  # probability [0, 1]
    white_matter: sitk.Image  # probability [0, 1]
    brain_mask: sitk.Image  # {0, 1}; the CSF fraction is brain - grey - white


def _to_sitk(nifti) -> sitk.Image:
    """A nibabel image (RAS affine) as a float32 SimpleITK image (LPS)."""
    data = np.asarray(nifti.get_fdata(dtype=np.float32))
    affine = np.asarray(nifti.affine, dtype=float)
    ras_to_lps = np.diag([-1.0, -1.0, 1.0])
    linear = ras_to_lps @ affine[:3, :3]
    spacing = np.linalg.norm(linear, axis=0)
    image = sitk.GetImageFromArray(np.ascontiguousarray(data.transpose(2, 1, 0)))
    image.SetSpacing(tuple(float(s) for s in spacing))
    image.SetDirection(tuple(float(d) for d in (linear / spacing).ravel()))
    image.SetOrigin(tuple(float(o) for o in ras_to_lps @ affine[:3, 3]))
    return image


@lru_cache(maxsize=1)
def load_template() -> Template:
    """The MNI152 2009a template at 1 mm, from files inside the nilearn package
    (no download).  Raises ImportError naming the fix when nilearn is absent."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from nilearn import datasets
    except ImportError as exc:  # pragma: no cover - nilearn is a dependency
        raise ImportError("the phantom needs nilearn's MNI152 template: pip install nilearn") from exc
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Template(
            t1=_to_sitk(datasets.load_mni152_template(resolution=1)),
            grey_matter=_to_sitk(datasets.load_mni152_gm_template(resolution=1)),
            white_matter=_to_sitk(datasets.load_mni152_wm_template(resolution=1)),
            brain_mask=_to_sitk(datasets.load_mni152_brain_mask(resolution=1)),
        )
