"""What a segmentation's own probabilities say about how far to trust it.

Two readings of the class probabilities a network gives (an ensemble's mean, or one network's):

- per voxel, the entropy of the probabilities divided by its largest value (log of the class count):
  0 where the network is sure of one class, 1 where every class is equally likely;
- per case and region, the Dice the network expects of its own labels: if the probabilities were
  calibrated, a voxel belongs to the region with probability p (the summed probabilities of the region's
  classes), and the expected overlap with the labels is about 2 sum(p * label) / (sum(p) + sum(label)).
  Tumor the network half-believes in but does not label (faint edema, the middle of a cavity) raises
  sum(p) and lowers the figure: the under-calling the cross-validation measured.

Both are made from the probabilities before cleanup, inside the brain; the expected Dice counts only
voxels within NEAR_MM of the labelled tumor, as the cleanup's distance rule removes what lies farther (over
a whole brain, a diffuse 0.05 of tumor probability on healthy tissue outweighs a small tumor).
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np
from scipy import ndimage

from .. import labels as label_table

NEAR_MM = 10.0  # the expected Dice looks this far around the labelled tumor (the cleanup's distance rule)

#: A case whose complete region's expected Dice falls below this is flagged as one the model is unsure of
#: (UNSURE).  Over the cross-validation's 20 patients (each by the fold model that never saw it;
#: docs/accuracy.md) the four cases below 0.80 scored 0.21-0.72 true complete Dice, every case above it
#: but one (0.65) scored 0.83 or more; read off those same cases (EnsembleCNN's folds), so a figure to
#: check on new ones.  Checked on the shipped CascadeEnsembleCNN's folds with the edema growth its card
#: carries: the four cases below it scored 0.44-0.77, every case above it but one (0.77) 0.83 or more.
UNSURE_BELOW_COMPLETE = 0.80
#: The warning every front end shows for such a case (unsure).
UNSURE = ("the model is unsure of this result; cases like it scored poorly in cross-validation: "
          "check it closely")


def entropy_map(probabilities: np.ndarray) -> np.ndarray:
    """float32 (Z, Y, X) in [0, 1]: each voxel's entropy over the classes of (C, Z, Y, X) probabilities,
    divided by log(C).  Class by class, so no second copy of the probabilities is made."""
    entropy = np.zeros(probabilities.shape[1:], np.float32)
    for c in range(probabilities.shape[0]):
        p = np.clip(probabilities[c], 1e-7, 1.0).astype(np.float32, copy=False)
        entropy -= p * np.log(p)
    entropy /= np.log(probabilities.shape[0])
    return np.clip(entropy, 0.0, 1.0, out=entropy)


def near_tumor(labels: np.ndarray, brain: np.ndarray, spacing: Sequence[float], near_mm: float = NEAR_MM
               ) -> np.ndarray:
    """bool (Z, Y, X): brain voxels within `near_mm` of the labelled tumor (spacing x y z in mm); the whole
    brain when nothing is labelled."""
    tumor = labels > 0
    if not tumor.any():
        return brain.copy()
    # only the tumor's bounding box grown by near_mm can be that near: the distance transform runs there
    step = tuple(spacing)[::-1]  # (z, y, x) mm
    where = np.nonzero(tumor)
    box = tuple(slice(max(0, int(i.min()) - reach), int(i.max()) + 1 + reach)
                for i, reach in zip(where, (int(np.ceil(near_mm / s)) + 1 for s in step)))
    near = np.zeros_like(brain)
    near[box] = ndimage.distance_transform_edt(~tumor[box], sampling=step) <= near_mm
    return brain & near


def expected_dice(probabilities: np.ndarray, labels: np.ndarray, where: np.ndarray,
                  regions=tuple(label_table.REGIONS)) -> Dict[str, float]:
    """{region: the Dice the probabilities expect of the labels} over the voxels `where` (`near_tumor`).

    probabilities: float (C, Z, Y, X) of a C-class model (classes as labels.class_values(C));
    labels: (Z, Y, X) internal label values; where: bool (Z, Y, X).  A region the labels leave empty and
    the probabilities give less than one voxel's worth scores 1 (nothing there, and nothing expected)."""
    values = label_table.class_values(probabilities.shape[0])
    out = {}
    for region in regions:
        members = np.flatnonzero(np.isin(values, label_table.REGIONS[region]))
        p = sum(probabilities[c][where].astype(np.float64) for c in members)  # no copy of whole classes
        called = label_table.region_mask(labels, region)[where]
        total = p.sum() + called.sum()
        out[region] = 1.0 if total < 1.0 else float(2.0 * p[called].sum() / total)
    return out


def confidence(probabilities: np.ndarray, labels: np.ndarray, brain: np.ndarray, spacing: Sequence[float]
               ) -> Dict[str, float]:
    """A case's confidence figure, as every front end reports it: {region: expected Dice} of its labels
    near the labelled tumor (near_tumor, expected_dice), rounded to 4 decimals."""
    where = near_tumor(labels, brain, spacing)
    return {region: round(value, 4) for region, value in expected_dice(probabilities, labels, where).items()}


def unsure(figure: Optional[Dict[str, float]]) -> bool:
    """Whether a confidence figure falls where cross-validation saw poor results (UNSURE_BELOW_COMPLETE)."""
    return bool(figure) and figure.get("complete", 1.0) < UNSURE_BELOW_COMPLETE
