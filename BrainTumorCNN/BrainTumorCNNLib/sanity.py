"""Checks for input that reads without error but would give a wrong segmentation.

- NIfTI files cut short: SimpleITK reads a truncated `.nii`/`.nii.gz` without
  complaint and fills the missing voxels, so completeness is checked against
  the header (MetaImage and NRRD readers already refuse such files).
- Two slots holding the same image.
- A file in the wrong slot, from contrasts every T1/T1c/T2/FLAIR set shows
  inside the brain.  Measured on the 11 real BraTS 2012/2021/2023 cases
  (none fires on them) and on the same cases with files swapped:
  * T1 and T1c show the same T1-weighted anatomy: rank correlation 0.47-0.79;
    -0.16-0.09 with FLAIR in the T1 slot, -0.61-0.17 with T2 in either slot
    (FLAIR in the T1c slot, 0.01-0.43, is caught only sometimes);
  * gadolinium brightens vessels and enhancing tumor: T1c's bright tail
    (99th / 50th percentile) is 1.20-2.23x T1's; 0.45-0.83x when swapped;
  * fluid (CSF) is bright in T2 and suppressed in FLAIR: T2's fluid contrast
    (5th x 99th / 50th^2 percentile) is 1.7-14x FLAIR's; 0.07-0.58x when swapped.
  A fully reversed order (FLAIR, T2, T1c, T1) passes all three.  These give
  warnings, not errors: unusual scans can break a rule.
"""
from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

SAMPLED_VOXELS = 200_000  # brain voxels the contrast statistics use (evenly strided)
MIN_T1_T1C_CORRELATION = 0.3
MIN_ENHANCEMENT_RATIO = 1.0  # T1c bright tail / T1 bright tail
MIN_FLUID_RATIO = 0.8  # T2 fluid contrast / FLAIR fluid contrast


# --- Truncated NIfTI files ---------------------------------------------------

def nifti_shortfall(path: Path) -> Optional[Tuple[int, int]]:
    """(bytes present, bytes the header promises) when a NIfTI-1/2 file is cut
    short, None when it is complete or not NIfTI.  Reads the header and, for
    `.nii.gz`, the gzip trailer; decompresses only when the trailer disagrees."""
    name = path.name.lower()
    if not name.endswith((".nii", ".nii.gz")):
        return None
    compressed = name.endswith(".gz")
    opener = gzip.open if compressed else open
    try:
        with opener(path, "rb") as f:
            expected = _nifti_data_end(f.read(540))
    except (OSError, EOFError, zlib.error):
        return None  # no header to compare with: the image reader reports such a file
    if expected is None:
        return None
    if not compressed:
        present = path.stat().st_size
    else:
        with open(path, "rb") as f:
            f.seek(-4, 2)
            if struct.unpack("<I", f.read(4))[0] == expected % 2 ** 32:  # gzip ISIZE: length mod 2^32
                return None
        present = _decompressed_length(path)
    return (present, expected) if present < expected else None


def _nifti_data_end(header: bytes) -> Optional[int]:
    """vox_offset + data bytes from a NIfTI-1 or NIfTI-2 header (either byte order)."""
    for order in "<>":
        if len(header) >= 348 and struct.unpack(order + "i", header[:4])[0] == 348:
            dims = struct.unpack(order + "8h", header[40:56])
            bitpix = struct.unpack(order + "h", header[72:74])[0]
            offset = int(struct.unpack(order + "f", header[108:112])[0])
            break
        if len(header) >= 540 and struct.unpack(order + "i", header[:4])[0] == 540:
            bitpix = struct.unpack(order + "h", header[14:16])[0]
            dims = struct.unpack(order + "8q", header[16:80])
            offset = struct.unpack(order + "q", header[168:176])[0]
            break
    else:
        return None
    voxels = int(np.prod([max(int(d), 1) for d in dims[1:dims[0] + 1]], dtype=np.int64))
    return max(offset, 348) + voxels * bitpix // 8


def _decompressed_length(path: Path) -> int:
    total = 0
    try:
        with gzip.open(path, "rb") as f:
            while chunk := f.read(1 << 22):
                total += len(chunk)
    except (OSError, EOFError, zlib.error):
        pass  # cut short inside the stream: what came out so far is what is there
    return total


# --- Slots -------------------------------------------------------------------

def identical_pairs(images: np.ndarray) -> List[Tuple[int, int]]:
    """Index pairs of (4, Z, Y, X) channels with identical voxels (one image given twice)."""
    return [(i, j) for i in range(len(images)) for j in range(i + 1, len(images))
            if np.array_equal(images[i], images[j])]


def modality_warnings(images: np.ndarray, mask: np.ndarray, names: Sequence[str]) -> List[str]:
    """Warnings when the contrasts of (4, Z, Y, X) raw images (T1, T1c, T2, FLAIR)
    contradict their slots; `mask` (Z, Y, X) marks the brain, `names` describe the slots."""
    index = np.flatnonzero(mask.ravel())
    if index.size < 100:
        return []
    index = index[:: max(1, index.size // SAMPLED_VOXELS)]
    t1, t1c, t2, flair = (np.asarray(channel).ravel()[index].astype(np.float64) for channel in images)
    warnings = []
    correlation = _rank_correlation(t1, t1c)
    if correlation is not None and correlation < MIN_T1_T1C_CORRELATION:
        warnings.append(
            f"{names[0]} and {names[1]} do not look like the same brain before and after contrast (rank correlation "
            f"{correlation:.2f} inside the brain, expected above {MIN_T1_T1C_CORRELATION}): a FLAIR or T2 image is "
            "probably in the T1 or T1c slot; check which file is which")
    tails = [_ratio(v, 99, 50) for v in (t1, t1c)]
    if None not in tails and tails[1] < MIN_ENHANCEMENT_RATIO * tails[0]:
        warnings.append(
            f"{names[0]} has brighter highlights than {names[1]} (99th/50th percentile {tails[0]:.2f} vs "
            f"{tails[1]:.2f}), but contrast enhancement should brighten T1c: T1 and T1c are probably swapped")
    fluid = [_fluid_contrast(v) for v in (t2, flair)]
    if None not in fluid and fluid[0] < MIN_FLUID_RATIO * fluid[1]:
        warnings.append(
            f"fluid looks brighter in {names[3]} than in {names[2]} (fluid contrast {fluid[1]:.2f} vs {fluid[0]:.2f}), "
            "but FLAIR suppresses fluid and T2 shows it bright: T2 and FLAIR are probably swapped")
    return warnings


def _rank_correlation(a: np.ndarray, b: np.ndarray) -> Optional[float]:
    """Spearman correlation (tied values share their mean rank); None for a constant input."""
    ranks = []
    for values in (a, b):
        _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
        ends = np.cumsum(counts)
        ranks.append((ends - (counts - 1) / 2.0)[inverse.ravel()])
    if ranks[0].std() == 0 or ranks[1].std() == 0:
        return None
    return float(np.corrcoef(ranks[0], ranks[1])[0, 1])


def _ratio(values: np.ndarray, upper: float, lower: float) -> Optional[float]:
    high, low = np.percentile(values, [upper, lower])
    return float(high / low) if low > 0 else None  # percentile ratios need positive (raw MR) intensities


def _fluid_contrast(values: np.ndarray) -> Optional[float]:
    """5th x 99th percentile / median^2: high when fluid is bright and nothing is suppressed (T2)."""
    p5, p50, p99 = np.percentile(values, [5, 50, 99])
    return float(p5 * p99 / p50 ** 2) if p5 > 0 else None
