"""`braintumorcnn compare` (issue 34): a prior scan against the current one.  The bidimensional
measure on drawn shapes of known axes; known growth, a known edit and a whole-voxel move on the
phantom's labels (exact); the phantom and a real case segmented against themselves moved by whole
voxels (unchanged within 2 %)."""
from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from conftest import maintainer_tool

from BrainTumorCNNLib import labels
from BrainTumorCNNLib.frontends import cli
from BrainTumorCNNLib.reading import io
from BrainTumorCNNLib.reading.geometry import Geometry
from BrainTumorCNNLib.scoring import bidimensional
from BrainTumorCNNLib.synthetic import phantom

SHIFT = (2, -3, 4)  # voxels (Z, Y, X) the moved case is moved by


# --------------------------------------------------------------------------- the bidimensional measure
def _ellipse(shape, centre, axes_mm, angle_deg, spacing):
    """A filled ellipse of full axes `axes_mm` (major, minor) drawn so its pixels' edges reach them: a
    pixel is in when its centre lies within the ellipse shrunk by half a pixel."""
    rows, columns = np.indices(shape, dtype=float)
    y, x = (rows - centre[0]) * spacing[0], (columns - centre[1]) * spacing[1]
    angle = math.radians(angle_deg)
    u = x * math.cos(angle) + y * math.sin(angle)
    v = -x * math.sin(angle) + y * math.cos(angle)
    half = min(spacing) / 2
    return (u / (axes_mm[0] / 2 - half)) ** 2 + (v / (axes_mm[1] / 2 - half)) ** 2 <= 1


@pytest.mark.parametrize("spacing", [(1.0, 1.0), (0.5, 1.0)])
def test_a_rectangle_measures_its_diagonal_and_the_longest_segment_across_it(spacing):
    mask = np.zeros((80, 60), bool)
    mask[10:10 + int(10 / spacing[0]), 5:35] = True  # 10 mm x 30 mm
    longest, perpendicular = bidimensional.diameters(mask, spacing)
    diagonal = math.hypot(30.0, 10.0)
    assert longest == pytest.approx(diagonal, abs=1e-6)
    assert perpendicular == pytest.approx(10.0 * diagonal / 30.0, abs=1e-5)  # H * D / W


@pytest.mark.parametrize("angle", [0.0, 30.0, 90.0, 135.0])
@pytest.mark.parametrize("spacing", [(1.0, 1.0), (0.5, 0.5)])
def test_an_ellipse_measures_its_axes_within_a_pixel(angle, spacing):
    mask = _ellipse((200, 200), (100, 100), (40.0, 22.0), angle, spacing)
    (lesion,) = bidimensional.measure_section(mask, spacing)
    tolerance = math.hypot(*spacing)
    assert abs(lesion.longest_mm - 40.0) <= tolerance
    assert abs(lesion.perpendicular_mm - 22.0) <= tolerance
    assert lesion.measurable


def test_a_rim_measures_as_its_filled_outline_and_lesions_are_summed_on_the_largest_axial_section():
    shape = (5, 120, 120)
    mask = np.zeros(shape, bool)
    outline = _ellipse(shape[1:], (40, 40), (40.0, 30.0), 0.0, (1.0, 1.0))
    mask[3] = outline & ~_ellipse(shape[1:], (40, 40), (24.0, 16.0), 0.0, (1.0, 1.0))  # a rim
    mask[3, 90:96, 80:100] = True  # a second lesion, 6 x 20 mm
    mask[1, 5:115, 60:66] = True  # a larger product on a section of fewer voxels: not the one measured
    geometry = Geometry((120, 120, 5), (1.0, 1.0, 2.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    measured = bidimensional.measure(mask, geometry)
    assert (measured.axis, measured.section) == (0, 3)
    filled = bidimensional.measure_section(outline, (1.0, 1.0))[0]
    rim, second = measured.lesions
    assert (rim.longest_mm, rim.perpendicular_mm) == pytest.approx((filled.longest_mm, filled.perpendicular_mm))
    diagonal = math.hypot(20.0, 6.0)
    assert (second.longest_mm, second.perpendicular_mm) == pytest.approx((diagonal, 6.0 * diagonal / 20.0))
    assert measured.sum_of_products_mm2 == pytest.approx(rim.product_mm2 + second.product_mm2)
    assert measured.measurable == 1  # the second lesion's perpendicular is under 10 mm
    assert "axial slice 4" in measured.describe()  # 1-based


def test_axial_sections_follow_the_image_direction():
    """A sagittal acquisition: index x runs along the patient's y, y along z (head-foot), z along x."""
    direction = (0, 0, 1, 1, 0, 0, 0, 1, 0)  # row-major; column i is index axis i
    geometry = Geometry((30, 40, 20), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), direction)
    mask = np.zeros(geometry.shape, bool)  # (Z, Y, X)
    mask[5:15, 22, 3:13] = True  # a 10 x 10 mm square across array axis 1 (index y: head-foot)
    measured = bidimensional.measure(mask, geometry)
    assert (measured.axis, measured.section) == (1, 22)
    assert measured.lesions[0].longest_mm == pytest.approx(math.hypot(10, 10))


# --------------------------------------------------------------------------- compare on labels
@pytest.fixture(scope="module")
def phantom_case(tmp_path_factory) -> Path:
    made = phantom.make_phantom(0, "small")
    return phantom.write_phantom(made, tmp_path_factory.mktemp("phantom"))["truth"].parent


def _truth(case: Path):
    return io.read_image(next(case.glob("*_seg.nii.gz")))


def _write(labels: np.ndarray, geometry: Geometry, path: Path) -> Path:
    return io.write_labels(labels, geometry, path)


def _compare(capsys, prior, current, output, *options) -> dict:
    code = cli.main(["compare", str(prior), str(current), "--output", str(output), *map(str, options)])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    report = output / f"{Path(prior).name}_to_{Path(current).name}_comparison.json"
    return {"json": json.loads(report.read_text()), "out": printed.out}


def test_known_growth_is_reported_exactly(phantom_case, tmp_path, capsys):
    truth, geometry = _truth(phantom_case)
    tumor = truth > 0
    prior = truth.copy()
    prior[tumor & ~ndimage.binary_erosion(tumor, iterations=2)] = 0  # the whole tumor grows by a 2-voxel shell
    core = labels.region_mask(truth, "core")
    prior[core & ~ndimage.binary_erosion(core)] = 2  # the core by a 1-voxel shell, into what was edema
    upper = np.zeros_like(tumor)
    upper[truth.shape[0] // 2 + 3:] = True
    prior[(prior == 4) & upper] = 1  # enhancement spreads over the upper core
    voxel = geometry.voxel_volume_ml
    expected = {region: (labels.region_mask(prior, region).sum() * voxel,
                         labels.region_mask(truth, region).sum() * voxel) for region in labels.REGIONS}
    assert all(now > then * 1.05 for then, now in expected.values())  # a growth worth measuring in every region
    report = _compare(capsys, phantom_case, phantom_case, tmp_path / "out",
                      "--prior-labels", _write(prior, geometry, tmp_path / "prior.nii.gz"),
                      "--current-labels", _write(truth, geometry, tmp_path / "current.nii.gz"))
    for region, (then, now) in expected.items():
        row = report["json"]["regions"][region]
        assert row["then_ml"] == pytest.approx(then, abs=1e-3)
        assert row["now_ml"] == pytest.approx(now, abs=1e-3)
        assert row["change_ml"] == pytest.approx(now - then, abs=2e-3)
        assert row["change_percent"] == pytest.approx(100 * (now - then) / then, rel=0.05, abs=0.01)
        grown = labels.region_mask(truth, region) & ~labels.region_mask(prior, region)
        assert row["new_ml"] == pytest.approx(grown.sum() * voxel, abs=1e-3)
        assert row["resolved_ml"] == 0
    table = tmp_path / "out" / f"{phantom_case.name}_to_{phantom_case.name}_comparison.csv"
    rows = list(csv.DictReader(table.open()))
    assert [r["measure"] for r in rows] == ["complete volume", "core volume", "enhancing volume",
                                            "enhancing bidimensional"]
    assert float(rows[0]["now"]) == pytest.approx(expected["complete"][1], abs=1e-3)
    assert "whole tumor" in report["out"] and "Segmentation alone moves these figures" in report["out"]
    from PIL import Image

    with Image.open(tmp_path / "out" / f"{phantom_case.name}_to_{phantom_case.name}_comparison.png") as picture:
        assert picture.text["Title"] == f"{phantom_case.name} (prior) -> {phantom_case.name} (current)"
        assert picture.width > 600 and picture.height > 600  # three planes by three columns


def test_a_known_edit_shows_exactly_in_the_difference_map_and_the_volumes(phantom_case, tmp_path, capsys):
    current, geometry = _truth(phantom_case)
    prior = current.copy()
    z, y, x = [int(c) for c in ndimage.center_of_mass(current == 4)]
    removed = (slice(z - 3, z + 3), slice(y - 3, y + 3), slice(x - 3, x + 3))
    prior[removed] = 0  # tumor now that the prior did not have: new
    added = (slice(2, 7), slice(2, 7), slice(2, 7))
    assert not current[added].any()
    prior[added] = 2  # tumor in the prior, none now: resolved
    report = _compare(capsys, phantom_case, phantom_case, tmp_path / "out",
                      "--prior-labels", _write(prior, geometry, tmp_path / "prior.nii.gz"),
                      "--current-labels", _write(current, geometry, tmp_path / "current.nii.gz"))
    expected = np.zeros(current.shape, np.uint8)
    expected[(current > 0) & (prior > 0)] = 1  # unchanged
    expected[removed][current[removed] > 0] = 2  # new
    expected[added] = 3  # resolved
    difference, grid = io.read_image(tmp_path / "out" / f"{phantom_case.name}_to_{phantom_case.name}_difference.nii.gz")
    assert not grid.differences(geometry)
    np.testing.assert_array_equal(difference, expected)
    whole = report["json"]["regions"]["complete"]
    voxel = geometry.voxel_volume_ml
    assert whole["new_ml"] == pytest.approx((current[removed] > 0).sum() * voxel, abs=1e-6)
    assert whole["resolved_ml"] == pytest.approx(125 * voxel, abs=1e-6)
    assert whole["change_ml"] == pytest.approx(((current > 0).sum() - (prior > 0).sum()) * voxel, abs=1e-6)
    enhancing = report["json"]["regions"]["enhancing"]
    assert enhancing["new_ml"] == pytest.approx((current[removed] == 4).sum() * voxel, abs=1e-6)


def test_a_whole_voxel_move_is_found_and_nothing_changes(phantom_case, tmp_path, capsys):
    moved = maintainer_tool("move_case").move_case(phantom_case, tmp_path, "Moved", voxels=SHIFT)
    truth, geometry = _truth(phantom_case)
    moved_truth, moved_geometry = _truth(moved)
    # the same scan: the grid grew by the move, so no voxel of the head was pushed off it
    assert moved_geometry.shape == tuple(n + abs(v) for n, v in zip(geometry.shape, SHIFT))
    assert all(np.count_nonzero(moved_truth == v) == np.count_nonzero(truth == v) > 0 for v in (1, 2, 4))
    t1c, moved_t1c = (io.read_image(next(case.glob("*_t1ce.nii.gz")))[0] for case in (phantom_case, moved))
    assert np.count_nonzero(moved_t1c) == np.count_nonzero(t1c) > 0
    report = _compare(capsys, phantom_case, moved, tmp_path / "out",
                      "--prior-labels", _write(truth, geometry, tmp_path / "prior.nii.gz"),
                      "--current-labels", moved / "Moved_seg.nii.gz")["json"]
    for region, row in report["regions"].items():
        assert row["new_ml"] == 0 and row["resolved_ml"] == 0, region
        assert row["change_ml"] == 0
    # the registration found the move: current point p shows what the prior showed at p - D (shift * spacing)
    direction = np.asarray(geometry.direction).reshape(3, 3)
    motion = direction @ (np.array(SHIFT[::-1]) * np.array(geometry.spacing))
    translation = np.array(report["registration"]["transform"]["parameters"][3:])
    assert np.abs(translation + motion).max() < 0.25 * min(geometry.spacing)
    then, now = report["bidimensional"]["then"], report["bidimensional"]["now"]
    assert now["axial_slice"] == then["axial_slice"] + SHIFT[0]
    assert now["sum_of_products_mm2"] == pytest.approx(then["sum_of_products_mm2"])


def test_a_grown_phantom_is_the_same_patient_with_its_tumor_grown_in_place(phantom_case):
    truth, geometry = _truth(phantom_case)
    later = phantom.make_phantom(0, "small", growth=1.3)
    assert not later.geometry.differences(geometry)
    before, after = labels.region_mask(truth, "core"), labels.region_mask(later.truth, "core")
    assert after.sum() == pytest.approx(1.3 * before.sum(), rel=0.01)
    assert (before & ~after).sum() < 0.01 * before.sum()  # grown where it was
    assert labels.region_mask(later.truth, "complete").sum() > 1.25 * labels.region_mask(truth, "complete").sum()


# --------------------------------------------------------------------------- the command's rules
def test_the_command_says_what_is_wrong_before_any_work(phantom_case, tmp_path, capsys):
    assert cli.main(["compare", str(phantom_case), str(phantom_case), "--output", str(tmp_path / "o")]) == 2
    assert "both scans are named" in capsys.readouterr().err
    small = Geometry((6, 5, 4), (1, 1, 1), (0, 0, 0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    wrong = _write(np.zeros(small.shape, np.uint8), small, tmp_path / "wrong.nii.gz")
    truth = next(phantom_case.glob("*_seg.nii.gz"))
    assert cli.main(["compare", str(phantom_case), str(phantom_case), "--output", str(tmp_path / "o"),
                     "--prior-labels", str(wrong), "--current-labels", str(truth)]) == 2
    assert "not on the T1c grid" in capsys.readouterr().err
    two = tmp_path / "two"
    two.mkdir()
    for name in ("A", "B"):
        (two / name).symlink_to(phantom_case, target_is_directory=True)
    assert cli.main(["compare", str(two), str(phantom_case), "--output", str(tmp_path / "o"),
                     "--current-labels", str(truth)]) == 2
    assert "2 cases found; give one case folder or one DICOM study" in capsys.readouterr().err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


# --------------------------------------------------------------------------- segmented, end to end
def _unchanged_within(report: dict, percent: float) -> None:
    for region, row in report["regions"].items():
        assert row["then_ml"] > 0, region
        assert abs(row["change_percent"]) < percent, (region, row)


@pytest.fixture(scope="module")
def segmented(tmp_path_factory) -> Path:
    """One output folder for the segmented phantom tests: the prior, segmented once, is reused."""
    return tmp_path_factory.mktemp("segmented")


def test_the_phantom_segmented_against_itself_moved_by_whole_voxels_is_unchanged(phantom_case, segmented, tmp_path,
                                                                                   capsys):
    """The shipped default segments both scans; a rerun reuses their segmentations."""
    moved = maintainer_tool("move_case").move_case(phantom_case, tmp_path, "Moved", voxels=SHIFT)
    report = _compare(capsys, phantom_case, moved, segmented)
    _unchanged_within(report["json"], 2.0)
    assert "Moved: segmenting" in report["out"]
    labels_file = segmented / "Moved_labels.nii.gz"
    written = labels_file.stat().st_mtime_ns
    again = _compare(capsys, phantom_case, moved, segmented)
    assert "segmenting" not in again["out"] and again["out"].count("reusing") == 2
    assert labels_file.stat().st_mtime_ns == written
    assert again["json"]["regions"] == report["json"]["regions"]


@pytest.fixture(scope="module")
def grown(phantom_case, segmented, tmp_path_factory) -> dict:
    """The same patient later (the seed's phantom with its tumor volumes x 1.3, where it was), both
    scans segmented by the shipped default and compared: the report and both truths."""
    later = phantom.write_phantom(phantom.make_phantom(0, "small", "Phantom_00000_later", growth=1.3),
                                  tmp_path_factory.mktemp("later"))["truth"].parent
    assert cli.main(["compare", str(phantom_case), str(later), "--output", str(segmented)]) == 0
    report = json.loads((segmented / f"{phantom_case.name}_to_{later.name}_comparison.json").read_text())
    return {"report": report, "before": _truth(phantom_case)[0], "after": _truth(later)[0]}


_MISMEASURED = ("measured: the shipped default's {} grows {} % where the truth's grows {} % (each scan's "
                "segmentation is off by 5-12 % of the volume, by different amounts at the two sizes; "
                "docs/command-line.md)")


@pytest.mark.parametrize("region", [
    pytest.param("complete", marks=pytest.mark.xfail(strict=True, reason=_MISMEASURED.format(
        "whole tumor", "+18.0", "+28.3"))),
    "core",
    pytest.param("enhancing", marks=pytest.mark.xfail(strict=True, reason=_MISMEASURED.format(
        "enhancing tumor", "+50.8", "+30.1")))])
def test_a_phantom_grown_by_a_known_amount_is_reported_grown_by_it_within_5_percent(grown, region):
    known = labels.region_mask(grown["after"], region).sum() / labels.region_mask(grown["before"], region).sum()
    assert known > 1.25
    row = grown["report"]["regions"][region]
    assert row["beyond_variation"]
    assert row["now_ml"] / row["then_ml"] == pytest.approx(known, rel=0.05)


def test_a_real_case_segmented_against_itself_moved_by_whole_voxels_is_unchanged(shared_data, tmp_path, capsys):
    case = shared_data / "brats2021" / "BraTS2021_00000"
    if not case.is_dir():
        pytest.skip(f"{case} is absent")
    moved = maintainer_tool("move_case").move_case(case, tmp_path, "BraTS2021_00000_moved", voxels=SHIFT)
    report = _compare(capsys, case, moved, tmp_path / "out")["json"]
    _unchanged_within(report, 2.0)
    assert report["registration"]["shift_mm"] == pytest.approx(math.sqrt(sum(s * s for s in SHIFT)), abs=0.3)
