"""Checks for input that reads without error but would give a wrong segmentation.

- What SimpleITK's NIfTI reader hides: a truncated `.nii`/`.nii.gz` reads
  without complaint (missing voxels invented), and NaN/Inf voxels read as 0;
  both are checked against the file itself (MetaImage and NRRD readers
  refuse truncated files and keep NaN).
- Two slots holding the same image.
- A file in the wrong slot, from contrasts every T1/T1c/T2/FLAIR set shows
  inside the brain.  Measured on the 11 real BraTS 2012/2021/2023 cases
  (none fires on them) and on the same cases with files swapped:
  * T1 and T1c show the same T1-weighted anatomy: rank correlation 0.47-0.79,
    0.09-0.67 above T1's with T2 or FLAIR; -0.16-0.09 with FLAIR in the T1
    slot, -0.61-0.17 with T2 in either slot, and below T1's correlation with
    the FLAIR slot when FLAIR and T1c are swapped;
  * gadolinium brightens vessels and enhancing tumor: T1c's bright tail
    (99th / 50th percentile) is 1.20-2.23x T1's; 0.45-0.83x when swapped;
  * fluid (CSF) is bright in T2 and suppressed in FLAIR: T2's fluid contrast
    (5th x 99th / 50th^2 percentile) is 1.7-14x FLAIR's; 0.07-0.58x when swapped.
  Every swap of two files is caught on all 11 cases; of the 23 wrong orders
  only (FLAIR, T2, T1c, T1) and (FLAIR, T2, T1, T1c) pass, on some cases.
  On the 7 cases added later (BraTS 2018, 2020, 2021_00019-00031) none fires
  as released once T1's correlation with T2/FLAIR may exceed its correlation
  with T1c by 0.05 (BraTS2021_00031: 0.46 vs 0.43), and three swaps pass:
  T2/FLAIR of Brats18_TCIA02_151_1 and BraTS20_Training_001, T1c/FLAIR of
  BraTS2021_00031.
  These give warnings, not errors: unusual scans can break a rule.
"""
from __future__ import annotations

import gzip
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

SAMPLED_VOXELS = 50_000  # brain voxels the contrast statistics use (evenly strided)
MIN_T1_T1C_CORRELATION = 0.3
#: T1's correlation with T2 or FLAIR may exceed its correlation with T1c by this much (BraTS2021_00031: 0.46
#: with FLAIR vs 0.43 with T1c) before the slots are doubted.
T1C_CORRELATION_TOLERANCE = 0.05
MIN_ENHANCEMENT_RATIO = 1.0  # T1c bright tail / T1 bright tail
MIN_FLUID_RATIO = 0.8  # T2 fluid contrast / FLAIR fluid contrast


# --- What SimpleITK's NIfTI reader hides ----------------------------------------

@dataclass(frozen=True)
class NiftiHeader:
    order: str  # byte order, "<" or ">"
    shape: Tuple[int, ...]  # numpy order (..., Z, Y, X)
    datatype: int  # NIfTI datatype code
    bitpix: int
    offset: int  # bytes before the voxels

    @property
    def data_end(self) -> int:
        return self.offset + int(np.prod(self.shape, dtype=np.int64)) * self.bitpix // 8


_NIFTI_FLOATS = {16: "f4", 64: "f8"}  # datatype code -> numpy type


def nifti_header(path: Path) -> Optional[NiftiHeader]:
    """The header of a `.nii` / `.nii.gz` file (NIfTI-1 or -2, either byte order); None otherwise."""
    if not path.name.lower().endswith((".nii", ".nii.gz")):
        return None
    try:
        with _open(path) as f:
            raw = f.read(540)
    except (OSError, EOFError, zlib.error):
        return None  # no header: the image reader reports such a file
    for order in "<>":
        size = struct.unpack(order + "i", raw[:4])[0] if len(raw) >= 4 else 0
        if size == 348 and len(raw) >= 348:
            dims = struct.unpack(order + "8h", raw[40:56])
            datatype, bitpix = struct.unpack(order + "2h", raw[70:74])
            offset = int(struct.unpack(order + "f", raw[108:112])[0])
        elif size == 540 and len(raw) >= 540:
            datatype, bitpix = struct.unpack(order + "2h", raw[12:16])
            dims = struct.unpack(order + "8q", raw[16:80])
            offset = struct.unpack(order + "q", raw[168:176])[0]
        else:
            continue
        shape = tuple(max(int(d), 1) for d in dims[1:min(max(dims[0], 1), 7) + 1])[::-1]
        return NiftiHeader(order, shape, int(datatype), int(bitpix), max(offset, 348))
    return None


def nifti_shortfall(path: Path) -> Optional[Tuple[int, int]]:
    """(bytes present, bytes the header promises) when a NIfTI file is cut short,
    else None.  SimpleITK reads such a file without error and invents the
    missing voxels.  Uses the gzip trailer; decompresses only when it disagrees."""
    header = nifti_header(path)
    if header is None:
        return None
    expected = header.data_end
    if not path.name.lower().endswith(".gz"):
        present = path.stat().st_size
    else:
        with open(path, "rb") as f:
            f.seek(-4, 2)
            if struct.unpack("<I", f.read(4))[0] == expected % 2 ** 32:  # gzip ISIZE: length mod 2^32
                return None
        present = _decompressed_length(path)
    return (present, expected) if present < expected else None


def nifti_non_finite(path: Path) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """(flat indices, values) of the NaN/Inf voxels of a float NIfTI file, in
    numpy (..., Z, Y, X) order, or None: SimpleITK's NIfTI reader (niftilib)
    silently turns them into 0.  Reads the voxels again, so float files only."""
    header = nifti_header(path)
    if header is None or header.datatype not in _NIFTI_FLOATS:
        return None
    with _open(path) as f:
        f.seek(header.offset)
        dtype = np.dtype(header.order + _NIFTI_FLOATS[header.datatype])
        raw = f.read(header.data_end - header.offset)
        data = np.frombuffer(raw[: len(raw) // dtype.itemsize * dtype.itemsize], dtype)
    index = np.flatnonzero(~np.isfinite(data))
    return (index, data[index]) if index.size else None


def _open(path: Path):
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")


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


def check_slots(images: np.ndarray, names: Sequence[str], error: type = ValueError) -> List[str]:
    """Raise `error` when one image fills two slots of the (4, Z, Y, X) raw
    images (T1, T1c, T2, FLAIR); otherwise the warnings of modality_warnings.
    `names` describe the slots ("T1 (file or volume name)")."""
    same = [f"{names[i]} and {names[j]}" for i, j in identical_pairs(images)]
    if same:
        raise error(f"{'; '.join(same)} hold identical voxels: one image was given for two modalities; "
                    "each slot needs its own")
    return modality_warnings(images, np.any(images != 0, axis=0), names)


def modality_warnings(images: np.ndarray, mask: np.ndarray, names: Sequence[str]) -> List[str]:
    """Warnings when the contrasts of (4, Z, Y, X) raw images (T1, T1c, T2, FLAIR)
    contradict their slots; `mask` (Z, Y, X) marks the brain, `names` describe the slots."""
    index = np.flatnonzero(mask.ravel())
    if index.size < 100:
        return []
    index = index[:: max(1, index.size // SAMPLED_VOXELS)]
    t1, t1c, t2, flair = (np.asarray(channel).ravel()[index].astype(np.float64) for channel in images)
    warnings = []
    similarity = [_rank_correlation(t1, other) for other in (t1c, t2, flair)]
    if None not in similarity and (similarity[0] < MIN_T1_T1C_CORRELATION
                                   or similarity[0] < max(similarity[1:]) - T1C_CORRELATION_TOLERANCE):
        warnings.append(
            f"{names[0]} and {names[1]} do not look like the same brain before and after contrast: rank correlation "
            f"{similarity[0]:.2f} inside the brain (expected above {MIN_T1_T1C_CORRELATION} and not below T1's "
            f"{max(similarity[1:]):.2f} with T2 or FLAIR); a FLAIR or T2 image is probably in the T1 or T1c slot, "
            "check which file is which")
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
