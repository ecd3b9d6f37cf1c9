"""DICOM study input (dicom.py): series written with SimpleITK from a real case
read back voxel for voxel; studies that cannot be read as four sequences give
errors naming the series, and the batch writes nothing for them."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from BrainTumorCNNLib import labels as label_table
from BrainTumorCNNLib.frontends import cli
from BrainTumorCNNLib.reading import dicom, io
from BrainTumorCNNLib.reading.geometry import Geometry
from BrainTumorCNNLib.running.cases import read_case
from BrainTumorCNNLib.scoring import metrics
from scanner_like import UID_ROOT, as_scanned, case_file, centre, grid, head_motion, write_series

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
    volumes, files, series = dicom.read_study(folder, io.MAX_VOXELS)
    for sequence, image in written.items():
        array, geometry = volumes[sequence]
        assert files[sequence].name == f"S{PROTOCOL[sequence][1]:02d}"  # the series' own folder
        assert series[sequence].description == PROTOCOL[sequence][0]
        assert np.array_equal(array, sitk.GetArrayFromImage(image)), sequence
        assert geometry.differences(Geometry.from_image(image)) == [], sequence


def test_series_chosen_by_hand_are_read_as_given(study):
    """--t1/--t1c/--t2/--flair pointing at series folders (or one file of a series)."""
    folder, written = study
    chosen = {m: folder / f"S{PROTOCOL[m][1]:02d}" for m in io.MODALITIES}
    chosen["FLAIR"] = chosen["FLAIR"] / "IM0003.dcm"
    case = read_case(chosen, register=False, resample=True)
    assert case.geometry.differences(Geometry.from_image(written["T1c"])) == []
    assert np.array_equal(case.images[1], sitk.GetArrayFromImage(written["T1c"]).astype(np.float32))


def _tiny_study(folder: Path, series: dict, study_uid: str = STUDY_UID) -> Path:
    """A small study (noise volumes) with the given {description: (number, slices, image type)}."""
    rng = np.random.default_rng(0)
    for description, (number, slices, image_type) in series.items():
        image = sitk.GetImageFromArray(rng.integers(0, 800, (slices, 12, 12)).astype(np.int16))
        image.SetSpacing((2.0, 2.0, 4.0))
        write_series(image, folder / f"S{number:02d}", description, number, study_uid,
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
        read_case(study)
    assert "--t1/--t1c/--t2/--flair" in str(error.value)

    output = tmp_path / "out"
    assert cli.main(["segment", str(study), "--output", str(output)]) == 1
    assert list(output.iterdir()) == []


def test_no_register_leaves_series_on_other_grids_an_error(tmp_path, capsys):
    """`--no-register`: a study whose series are on different grids stops with the grid error."""
    study = _tiny_study(tmp_path / "study", GOOD)
    moved = _tiny_study(tmp_path / "other", {"t2_flair_tra": (5, 6, PRIMARY)})
    for path in (study / "S05").iterdir():
        path.unlink()
    for path in (moved / "S05").iterdir():
        path.rename(study / "S05" / path.name)
    output = tmp_path / "out"
    assert cli.main(["segment", str(study), "--no-register", "--output", str(output)]) == 1
    assert "not on the same voxel grid as T1c" in capsys.readouterr().err
    assert list(output.iterdir()) == []


def test_a_series_of_another_study_is_an_error_naming_the_studies(tmp_path):
    study = _tiny_study(tmp_path / "study", {d: s for d, s in GOOD.items() if d != "t2_flair_tra"})
    _tiny_study(study, {"t2_flair_tra": GOOD["t2_flair_tra"]}, study_uid=f"{UID_ROOT}.2")
    with pytest.raises(dicom.DicomError, match=r"different studies: .*FLAIR: series 5 't2_flair_tra' .* of study "
                                               rf"'{UID_ROOT}\.2'"):
        read_case(study)


def test_a_localizer_chosen_by_hand_is_an_error_naming_it(tmp_path):
    study = _tiny_study(tmp_path / "study", {**GOOD, "localizer": (1, 3, PRIMARY + "\\LOCALIZER")})
    chosen = {m: study / f"S{n:02d}" for m, n in zip(io.MODALITIES, (2, 3, 4, 1))}
    with pytest.raises(dicom.DicomError, match=r"FLAIR: series 1 'localizer' \(.*S01, 3 files\) is a localizer"):
        read_case(chosen)


def test_a_folder_of_two_series_given_for_one_sequence_is_an_error(tmp_path):
    study = _tiny_study(tmp_path / "study", GOOD)
    mixed = study / "S05"
    for path in (study / "S04").iterdir():
        path.rename(mixed / f"T2_{path.name}")
    with pytest.raises(dicom.DicomError, match=r"S05: expected one DICOM series, found 2"):
        dicom.series_at(mixed)


def test_a_misaligned_scanner_study_segments_as_well_as_its_brats_files(shared_data, tmp_path):
    """End to end with the shipped default model (one to two minutes per segmentation
    on a 2-core CPU): the real case as four DICOM series, T1, T2 and FLAIR moved and
    each on its own grid (T2 an oblique slab), `segment STUDY`; Dice against the
    expert truth within 0.03 of the same case segmented from its BraTS files.
    (Thick slices lose more: see docs/inputs.md.)"""
    motions = {"T1": ((2, -3, 3), (3, -4, 2), (1.0, 1.0, 1.2), (0, 0, 0)),
               "T2": ((-8, 12, -15), (-18, 10, -6), (0.9, 0.9, 1.5), (20, 0, 10)),
               "FLAIR": ((10, -5, 12), (15, -12, 8), (1.0, 1.0, 1.0), (0, 0, 0))}
    study = tmp_path / "study"
    for sequence, (description, number, _, _) in PROTOCOL.items():
        image = sitk.ReadImage(str(case_file(shared_data, sequence)))
        if sequence in motions:
            rotation, shift, spacing, tilt = motions[sequence]
            image = as_scanned(sitk.Cast(image, sitk.sitkFloat32), head_motion(rotation, shift, centre(image)),
                               grid(image, spacing, tilt))
        write_series(image, study / f"S{number:02d}", description, number, STUDY_UID)
    brats = case_file(shared_data, "T1c").parent
    truth = read_case(brats)

    dice = {}
    for name, source in (("study", study), ("brats", brats)):
        output = tmp_path / f"out_{name}"
        assert cli.main(["segment", str(source), "--output", str(output)]) == 0
        labels, geometry = io.read_image(output / f"{source.name}_labels.nii.gz")
        assert geometry.differences(truth.geometry) == []
        scores = metrics.evaluate_case(truth.scheme.convert(labels), truth.truth, geometry.spacing)
        dice[name] = {region: scores.regions[region].dice for region in label_table.REGIONS}
    print("Dice (complete, core, enhancing): DICOM study", dice["study"], "BraTS files", dice["brats"])
    for region in label_table.REGIONS:
        assert dice["study"][region] == pytest.approx(dice["brats"][region], abs=0.03), region
    # the DICOM SEG beside them holds the same labels, frame by frame of the T1c series
    hd = pytest.importorskip("highdicom")
    import pydicom
    from BrainTumorCNNLib.writing.outputs import dicom_seg_path
    seg = hd.seg.segread(str(dicom_seg_path(tmp_path / "out_study", "study")))
    t1c = dicom.series_at(study / f"S{PROTOCOL['T1c'][1]:02d}")
    uids = [pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in t1c.files]
    segments = seg.get_pixels_by_source_instance(uids, combine_segments=True)
    labels, _ = io.read_image(tmp_path / "out_study" / "study_labels.nii.gz")
    num_classes = len(seg.SegmentSequence) + 1
    assert np.array_equal(label_table.class_values(num_classes)[segments],
                          label_table.output_scheme(num_classes).convert(labels))
