"""A prior scan compared with the current one: has the tumor grown?

The prior's T1c is registered rigidly onto the current T1c (preparing/registration.py, the
registration that aligns the sequences of a scan from the scanner) and the prior's labels are
carried onto the current grid through it, nearest neighbour, so labels stay labels.  Each scan's
volumes are counted on its own grid (the prior's do not depend on the registration); what is new,
resolved and unchanged is counted on the current grid.  The enhancing tumor's bidimensional
measure (bidimensional.py) is taken on each scan's own axial sections, as a reader measures each
scan.

A change is not growth unless it exceeds what segmentation alone varies:
`SEGMENTATION_VARIATION` is what a 5 degree in-plane rotation of the same scan, resampled
linearly, did to the segmented figures of two real cases (docs/command-line.md); the report
prints it beside every comparison.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np
import SimpleITK as sitk

from .. import labels as label_table
from ..preparing import registration
from ..reading.geometry import Geometry, to_image
from . import bidimensional

#: Values of the difference map (written as a label map on the current grid), of the whole tumor.
DIFFERENCE_VALUES: Dict[str, int] = {"unchanged": 1, "new": 2, "resolved": 3}
DIFFERENCE_COLOURS: Dict[str, Tuple[float, float, float]] = {
    "unchanged": (0.95, 0.85, 0.20), "new": (0.90, 0.15, 0.15), "resolved": (0.20, 0.55, 0.95)}

#: One scan as the comparison takes it: (name, labels on its T1c's grid, that grid, the T1c's voxels).
Scan = Tuple[str, np.ndarray, Geometry, np.ndarray]

#: How much segmentation alone moves the figures (%, largest magnitude): two real cases no member of
#: the shipped ensembles saw (BRATS_HG0001, BRATS_HG0015), each rotated 5 degrees in-plane with its
#: four sequences resampled linearly, segmented before and after (no growth at all).  The default
#: CascadeEnsembleCNN: +3.4 / +1.3 / +0.61 % and +3.3 / +6.32 / +1.67 % of the volumes, +1.52 % and
#: +0.44 % of the bidimensional measure; EnsembleCNN: +2.1 / -0.8 / -0.6 % and +2.91 / +1.32 / +1.20 %,
#: -1.5 % and +5.85 %.  Per figure the larger over both models (a comparison may run either), rounded
#: up to 0.1 %.  Measured with Testing/Tools/move_case.py and `compare` (docs/command-line.md).
SEGMENTATION_VARIATION: Dict[str, float] = {"complete": 3.4, "core": 6.4, "enhancing": 1.7, "bidimensional": 5.9}
VARIATION_SOURCE = ("rotating the same scan 5° in-plane with linear resampling (two real cases, "
                    "docs/command-line.md)")
VARIATION_CAVEAT = "other cases have varied more (-13.9 % enhancing on a held-out case, issue 34)"


@dataclass(frozen=True)
class RegionChange:
    """One region then and now (mL), and its voxels new, resolved and unchanged on the current grid."""

    region: str
    prior_ml: float
    current_ml: float
    new_ml: float
    resolved_ml: float
    unchanged_ml: float

    @property
    def change_ml(self) -> float:
        return self.current_ml - self.prior_ml

    @property
    def change_percent(self) -> Optional[float]:
        """None when the region was absent in the prior."""
        return 100.0 * self.change_ml / self.prior_ml if self.prior_ml > 0 else None

    @property
    def beyond_variation(self) -> bool:
        """Whether the change exceeds what segmentation alone moved this region (SEGMENTATION_VARIATION);
        a region absent before and present now always does."""
        percent = self.change_percent
        return self.current_ml > 0 if percent is None else abs(percent) > SEGMENTATION_VARIATION[self.region]


@dataclass
class Comparison:
    """A prior and a current segmentation compared; `difference` (DIFFERENCE_VALUES) and
    `prior_on_current` (the prior's labels) are on the current grid."""

    prior: str
    current: str
    regions: List[RegionChange]
    prior_measure: bidimensional.Bidimensional
    current_measure: bidimensional.Bidimensional
    difference: np.ndarray
    prior_on_current: np.ndarray
    registration: Optional[registration.Registration] = None
    notes: List[str] = field(default_factory=list)

    @property
    def measure_change_percent(self) -> Optional[float]:
        before = self.prior_measure.sum_of_products_mm2
        return 100.0 * (self.current_measure.sum_of_products_mm2 - before) / before if before > 0 else None

    @property
    def measure_beyond_variation(self) -> bool:
        change = self.measure_change_percent
        return (self.current_measure.sum_of_products_mm2 > 0 if change is None
                else abs(change) > SEGMENTATION_VARIATION["bidimensional"])

    def rows(self) -> List[dict]:
        """The CSV's rows: one per region, and one for the bidimensional measure (mm²)."""
        out = [{"prior": self.prior, "current": self.current, "measure": f"{c.region} volume",
                "unit": "mL", "then": round(c.prior_ml, 3), "now": round(c.current_ml, 3),
                "change": round(c.change_ml, 3), "change_percent": _rounded(c.change_percent),
                "new_ml": round(c.new_ml, 3), "resolved_ml": round(c.resolved_ml, 3),
                "unchanged_ml": round(c.unchanged_ml, 3),
                "segmentation_variation_percent": SEGMENTATION_VARIATION[c.region],
                "beyond_variation": c.beyond_variation} for c in self.regions]
        then, now = self.prior_measure.sum_of_products_mm2, self.current_measure.sum_of_products_mm2
        out.append({"prior": self.prior, "current": self.current, "measure": "enhancing bidimensional",
                    "unit": "mm2", "then": round(then, 1), "now": round(now, 1), "change": round(now - then, 1),
                    "change_percent": _rounded(self.measure_change_percent), "new_ml": "", "resolved_ml": "",
                    "unchanged_ml": "", "segmentation_variation_percent": SEGMENTATION_VARIATION["bidimensional"],
                    "beyond_variation": self.measure_beyond_variation})
        return out

    def as_json(self) -> dict:
        def measure(m: bidimensional.Bidimensional) -> dict:
            return {"axial_slice": None if m.section is None else m.section + 1,  # 1-based, as the page counts
                    "array_axis": "zyx"[m.axis], "sum_of_products_mm2": round(m.sum_of_products_mm2, 2),
                    "measurable_lesions": m.measurable,
                    "lesions": [{"longest_mm": round(l.longest_mm, 2), "perpendicular_mm": round(l.perpendicular_mm, 2),
                                 "product_mm2": round(l.product_mm2, 2), "area_mm2": round(l.area_mm2, 2),
                                 "measurable": l.measurable} for l in m.lesions]}
        reg = self.registration
        return {
            "prior": self.prior, "current": self.current,
            "regions": {c.region: {"name": label_table.REGION_NAMES[c.region], "then_ml": round(c.prior_ml, 3),
                                   "now_ml": round(c.current_ml, 3), "change_ml": round(c.change_ml, 3),
                                   "change_percent": _rounded(c.change_percent), "new_ml": round(c.new_ml, 3),
                                   "resolved_ml": round(c.resolved_ml, 3), "unchanged_ml": round(c.unchanged_ml, 3),
                                   "beyond_variation": c.beyond_variation}
                        for c in self.regions},
            "bidimensional": {"then": measure(self.prior_measure), "now": measure(self.current_measure),
                              "change_percent": _rounded(self.measure_change_percent),
                              "beyond_variation": self.measure_beyond_variation},
            "registration": None if reg is None else {
                "rotation_deg": round(reg.rotation_deg, 3), "shift_mm": round(reg.shift_mm, 3),
                "mutual_information": round(reg.mutual_information, 3), "warnings": reg.warnings,
                "transform": {"parameters": list(reg.transform.GetParameters()),
                              "fixed_parameters": list(reg.transform.GetFixedParameters())}},
            "difference_map_values": DIFFERENCE_VALUES,
            "segmentation_variation_percent": {"figures": SEGMENTATION_VARIATION, "source": VARIATION_SOURCE,
                                               "caveat": VARIATION_CAVEAT},
            "notes": self.notes}


def _rounded(value: Optional[float]) -> Optional[float]:
    return None if value is None else round(value, 2)


def align_prior(prior_t1c: np.ndarray, prior_geometry: Geometry, current_t1c: np.ndarray,
                current_geometry: Geometry,
                config: registration.RegistrationConfig = registration.RegistrationConfig()
                ) -> registration.Registration:
    """The prior's T1c registered rigidly onto the current T1c (transform: current point -> prior
    point); its warnings say when it looks wrong."""
    return registration.register(to_image(current_t1c.astype(np.float32), current_geometry),
                                 to_image(prior_t1c.astype(np.float32), prior_geometry), "prior T1c", config)


def onto_current(volume: np.ndarray, source: Geometry, target: Geometry, transform: Optional[sitk.Transform],
                 labels: bool) -> np.ndarray:
    """`volume` (Z, Y, X on `source`) on the `target` grid through `transform` (None: the identity):
    nearest neighbour for labels, linear for images; 0 outside the source."""
    reference = to_image(np.zeros(target.shape, np.uint8), target)
    moved = sitk.Resample(to_image(volume, source), reference, transform or sitk.Transform(),
                          sitk.sitkNearestNeighbor if labels else sitk.sitkLinear, 0.0,
                          sitk.sitkUInt8 if labels else sitk.sitkFloat32)
    return sitk.GetArrayFromImage(moved)


def difference_map(prior: np.ndarray, current: np.ndarray, region: str = "complete") -> np.ndarray:
    """DIFFERENCE_VALUES of `region` between two label maps on one grid (uint8)."""
    then, now = label_table.region_mask(prior, region), label_table.region_mask(current, region)
    out = np.zeros(now.shape, np.uint8)
    out[then & now] = DIFFERENCE_VALUES["unchanged"]
    out[now & ~then] = DIFFERENCE_VALUES["new"]
    out[then & ~now] = DIFFERENCE_VALUES["resolved"]
    return out


def compare(prior_name: str, prior_labels: np.ndarray, prior_geometry: Geometry, current_name: str,
            current_labels: np.ndarray, current_geometry: Geometry,
            aligned: Optional[registration.Registration] = None) -> Comparison:
    """Compare two label maps (internal values), each on its own grid; `aligned` carries the prior
    onto the current grid (align_prior; None: the scans share a physical frame already)."""
    on_current = onto_current(prior_labels.astype(np.uint8), prior_geometry, current_geometry,
                              aligned.transform if aligned else None, labels=True)
    prior_voxel, current_voxel = prior_geometry.voxel_volume_ml, current_geometry.voxel_volume_ml
    regions = []
    for region in label_table.REGIONS:
        then, now = label_table.region_mask(on_current, region), label_table.region_mask(current_labels, region)
        regions.append(RegionChange(
            region, float(label_table.region_mask(prior_labels, region).sum()) * prior_voxel,
            float(now.sum()) * current_voxel, float((now & ~then).sum()) * current_voxel,
            float((then & ~now).sum()) * current_voxel, float((then & now).sum()) * current_voxel))
    notes = []
    lost = label_table.region_mask(prior_labels, "complete").sum() * prior_voxel - \
        label_table.region_mask(on_current, "complete").sum() * current_voxel
    if abs(lost) > 0.05 * max(regions[0].prior_ml, 1e-9) and regions[0].prior_ml > 0:
        notes.append(f"the prior's whole tumor measures {regions[0].prior_ml:.2f} mL on its grid but "
                     f"{regions[0].prior_ml - lost:.2f} mL carried onto the current grid (outside the current "
                     "field of view, or a coarser grid): new / resolved volumes count what was carried")
    return Comparison(prior_name, current_name, regions,
                      bidimensional.measure(label_table.region_mask(prior_labels, "enhancing"), prior_geometry),
                      bidimensional.measure(label_table.region_mask(current_labels, "enhancing"), current_geometry),
                      difference_map(on_current, current_labels), on_current, aligned, notes)


def compare_scans(prior_name: str, prior_labels: np.ndarray, prior_geometry: Geometry, prior_t1c: np.ndarray,
                  current_name: str, current_labels: np.ndarray, current_geometry: Geometry, current_t1c: np.ndarray,
                  register: bool = True) -> Tuple[Comparison, np.ndarray]:
    """What every front end does with two segmented scans (the command line, the page, the Slicer
    module): the prior's T1c registered onto the current T1c (unless `register` is False: one physical
    frame already), the labels compared; returns the comparison and the prior's T1c on the current grid."""
    aligned = align_prior(prior_t1c, prior_geometry, current_t1c, current_geometry) if register else None
    comparison = compare(prior_name, prior_labels, prior_geometry, current_name, current_labels, current_geometry,
                         aligned)
    prior_image = onto_current(np.asarray(prior_t1c, np.float32), prior_geometry, current_geometry,
                               aligned.transform if aligned else None, labels=False)
    return comparison, prior_image


def table(comparison: Comparison) -> List[Dict[str, str]]:
    """The comparison as a reader's table (the page's and the Slicer module's): per region its volume then
    and now, the change in mL and %, whether it exceeds segmentation's own variation; then the enhancing
    tumor's bidimensional measure."""
    def percent(value: Optional[float]) -> str:
        return "new" if value is None else f"{value:+.1f} %"

    rows = [{"measure": f"{label_table.REGION_NAMES[c.region]} (mL)", "then": f"{c.prior_ml:.2f}",
             "now": f"{c.current_ml:.2f}", "change": f"{c.change_ml:+.2f}", "percent": percent(c.change_percent),
             "beyond": "yes" if c.beyond_variation else "no"} for c in comparison.regions]
    then, now = comparison.prior_measure.sum_of_products_mm2, comparison.current_measure.sum_of_products_mm2
    rows.append({"measure": "enhancing bidimensional (mm²)", "then": f"{then:.0f}", "now": f"{now:.0f}",
                 "change": f"{now - then:+.0f}", "percent": percent(comparison.measure_change_percent),
                 "beyond": "yes" if comparison.measure_beyond_variation else "no"})
    return rows


def variation_text() -> str:
    """What change segmentation alone makes (SEGMENTATION_VARIATION), in words: the report's caveat."""
    variation = ", ".join(f"{label_table.REGION_NAMES[r]} {SEGMENTATION_VARIATION[r]:.1f} %"
                          for r in label_table.REGIONS)
    return (f"Segmentation alone moves these figures: {VARIATION_SOURCE} changed the segmented volumes by up "
            f"to {variation} and the bidimensional measure by up to {SEGMENTATION_VARIATION['bidimensional']:.1f} %; "
            f"{VARIATION_CAVEAT}. A smaller change is not evidence of growth or shrinkage.")


def caveats(comparison: Comparison) -> List[str]:
    """What a reader must know beside the table (the page's and the Slicer module's): how the prior was
    aligned (and any warning of the registration), what change segmentation alone makes, the notes."""
    reg = comparison.registration
    lines = ["Registration: none (the scans share one physical frame)." if reg is None
             else f"Registration onto the current T1c: {reg.summary()}."]
    lines += [f"Warning: {warning}" for warning in (reg.warnings if reg is not None else [])]
    return lines + [variation_text()] + [f"Note: {note}" for note in comparison.notes]


def format_report(comparison: Comparison) -> str:
    """The printed table, the bidimensional measure, and what change segmentation alone makes."""
    lines = [f"{'region':<17}{'then mL':>9}{'now mL':>9}{'change mL':>11}{'change %':>10}"
             f"{'new mL':>9}{'resolved mL':>13}{'unchanged mL':>14}  beyond variation"]
    lines.append("-" * len(lines[0]))
    for c in comparison.regions:
        percent = "new" if c.change_percent is None else f"{c.change_percent:+.1f}"
        lines.append(f"{label_table.REGION_NAMES[c.region]:<17}{c.prior_ml:>9.2f}{c.current_ml:>9.2f}"
                     f"{c.change_ml:>+11.2f}{percent:>10}{c.new_ml:>9.2f}{c.resolved_ml:>13.2f}{c.unchanged_ml:>14.2f}"
                     f"  {'yes' if c.beyond_variation else 'no'} (±{SEGMENTATION_VARIATION[c.region]:.1f} %)")
    change = comparison.measure_change_percent
    lines += ["", "enhancing tumor, bidimensional (longest diameter x longest perpendicular, summed; mm²):",
              f"  then: {comparison.prior_measure.describe()}",
              f"  now:  {comparison.current_measure.describe()}"
              + ("" if change is None else f"; change {change:+.1f} %, "
                 f"{'beyond' if comparison.measure_beyond_variation else 'within'} segmentation's own "
                 f"±{SEGMENTATION_VARIATION['bidimensional']:.1f} %")]
    lines += ["", variation_text()]
    lines += [f"Note: {note}" for note in comparison.notes]
    return "\n".join(lines)
