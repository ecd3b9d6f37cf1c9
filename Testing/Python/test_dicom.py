"""DICOM study input (dicom.py): series written with SimpleITK from a real case
read back voxel for voxel; studies that cannot be read as four sequences give
errors naming the series, and the batch writes nothing for them."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from BrainTumorCNNLib import cli, dicom, io
from BrainTumorCNNLib.geometry import Geometry
from scanner_like import UID_ROOT, as_scanned, case_file, grid, write_series

STUDY_UID = f"{UID_ROOT}.1"
#: sequence -> (SeriesDescription as scanners write it, series number, grid spacing, grid tilt)
PROTOCOL = {"T1": ("t1_mprage_sag_p2_iso", 2, None, None), "T1c": ("T1 MPRAGE post gad", 7, None, None),
            "T2": ("ax t2 tse", 3, (1.0, 1.0, 3.0), (20, 0, 10)), "FLAIR": ("t2_flair_tra", 4, (0.9, 0.9, 5.0), (0, 0, 0))}


@pytest.fixture(scope="module")
def study(shared_data, tmp_path_factory):
    """A study of the real case: T1 and T1c on the case's grid, T2 on an oblique
    slab, FLAIR in thick axial slices, plus a 3-plane localizer; and the images written."""
    folder = tmp_path_factory.mktemp("dicom") / "study"
    written = {}
    for sequence, (description, number, spacing, tilt) in PROTOCOL.items():
        image = sitk.ReadImage(str(case_file(shared_data, sequence)))
        if spacing:
            image = as_scanned(sitk.Cast(image, sitk.sitkFloat32), sitk.Euler3DTransform(), grid(image, spacing, tilt))
        written[sequence] = image
        write_series(image, folder / f"S{number:02d}", description, number, STUDY_UID)
    write_series(written["T1c"][:, :, 60:63], folder / "S01", "AAHead_Scout", 1, STUDY_UID,
                 image_type="ORIGINAL\\PRIMARY\\M\\ND\\LOCALIZER")
    return folder, written


def test_a_study_is_read_back_voxel_for_voxel_on_each_series_grid(study):
    folder, written = study
    volumes, files = dicom.read_study(folder, io.MAX_VOXELS)
    for sequence, image in written.items():
        array, geometry = volumes[sequence]
        assert files[sequence].parent.name == f"S{PROTOCOL[sequence][1]:02d}"
        assert np.array_equal(array, sitk.GetArrayFromImage(image)), sequence
        assert geometry.differences(Geometry.from_image(image)) == [], sequence


def test_series_chosen_by_hand_are_read_as_given(study):
    """--t1/--t1c/--t2/--flair pointing at series folders (or one file of a series)."""
    folder, written = study
    chosen = {m: folder / f"S{PROTOCOL[m][1]:02d}" for m in io.MODALITIES}
    chosen["FLAIR"] = chosen["FLAIR"] / "IM0003.dcm"
    case = io.read_case(chosen, register=False, resample=True)
    assert case.geometry.differences(Geometry.from_image(written["T1c"])) == []
    assert np.array_equal(case.images[1], sitk.GetArrayFromImage(written["T1c"]).astype(np.float32))


def _tiny_study(folder: Path, series: dict) -> Path:
    """A small study (noise volumes) with the given {description: (number, slices, image type)}."""
    rng = np.random.default_rng(0)
    for description, (number, slices, image_type) in series.items():
        image = sitk.GetImageFromArray(rng.integers(0, 800, (slices, 12, 12)).astype(np.int16))
        image.SetSpacing((2.0, 2.0, 4.0))
        write_series(image, folder / f"S{number:02d}", description, number, STUDY_UID,
                     image_type=image_type)
    return folder


PRIMARY = "ORIGINAL\\PRIMARY\\M\\ND"
GOOD = {"t1_se_tra": (2, 5, PRIMARY), "t1_se_tra_post_gd": (3, 5, PRIMARY), "t2_tse_tra": (4, 5, PRIMARY),
        "t2_flair_tra": (5, 5, PRIMARY)}


@pytest.mark.parametrize("change, message", [
    ({"t2_flair_tra": None}, r"no series for FLAIR\. Series found: series 2 't1_se_tra'"),
    ({"t2_tse_cor": (6, 5, PRIMARY)},
     r"2 series for T2: series 4 't2_tse_tra' \(.*S04, 5 files\); series 6 't2_tse_cor' \(.*S06, 5 files\)"),
    ({"t2_flair_tra": (5, 1, PRIMARY)},
     r"no series for FLAIR \(series 5 't2_flair_tra' \(.*S05, 1 files\) is a single 2-D slice, not a volume\)"),
    ({"t2_flair_tra": (5, 3, PRIMARY + "\\LOCALIZER")},
     r"no series for FLAIR \(series 5 't2_flair_tra' \(.*S05, 3 files\) is a localizer\)"),
], ids=["missing", "two-candidates", "single-slice", "localizer"])
def test_a_study_that_is_not_four_sequences_is_an_error_naming_the_series_and_nothing_is_written(
        tmp_path, change, message):
    series = {**GOOD, **change}
    study = _tiny_study(tmp_path / "study", {d: s for d, s in series.items() if s})
    with pytest.raises(dicom.DicomError, match=message) as error:
        io.read_case(study)
    assert "--t1/--t1c/--t2/--flair" in str(error.value)

    output = tmp_path / "out"
    assert cli.main(["segment", str(study), "--output", str(output)]) == 1
    assert list(output.iterdir()) == []


def test_a_localizer_chosen_by_hand_is_an_error_naming_it(tmp_path):
    study = _tiny_study(tmp_path / "study", {**GOOD, "localizer": (1, 3, PRIMARY + "\\LOCALIZER")})
    chosen = {m: study / f"S{n:02d}" for m, n in zip(io.MODALITIES, (2, 3, 4, 1))}
    with pytest.raises(dicom.DicomError, match=r"FLAIR: series 1 'localizer' \(.*S01, 3 files\) is a localizer"):
        io.read_case(chosen)


def test_a_folder_of_two_series_given_for_one_sequence_is_an_error(tmp_path):
    study = _tiny_study(tmp_path / "study", GOOD)
    mixed = study / "S05"
    for path in (study / "S04").iterdir():
        path.rename(mixed / f"T2_{path.name}")
    with pytest.raises(dicom.DicomError, match=r"S05: expected one DICOM series, found 2"):
        dicom.series_at(mixed)
