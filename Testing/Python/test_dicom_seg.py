"""DICOM SEG output (dicom_seg.py): a DICOM study written from a real case is
segmented by `braintumorcnn segment`, and the DICOM SEG it writes, read back
with highdicom, holds the label map's labels on the T1c series' grid, the
segments of labels.py, and references the T1c series."""
from __future__ import annotations

import sys

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

hd = pytest.importorskip("highdicom")

from BrainTumorCNNLib import labels as label_table  # noqa: E402
from BrainTumorCNNLib.frontends import cli  # noqa: E402
from BrainTumorCNNLib.writing import dicom_seg  # noqa: E402
from BrainTumorCNNLib.writing.outputs import dicom_seg_path  # noqa: E402
from BrainTumorCNNLib.network import registry  # noqa: E402
from BrainTumorCNNLib.reading import dicom, io  # noqa: E402
from scanner_like import UID_ROOT, case_file, write_series  # noqa: E402
from test_dicom import PROTOCOL  # noqa: E402

STUDY_UID = f"{UID_ROOT}.3"
SLICES = 6  # axial slices through the tumor: seconds of network time on a CPU


@pytest.fixture(scope="module")
def segmented(shared_data, tmp_path_factory):
    """The real case's four sequences cut to SLICES slices through the tumor,
    written as a DICOM study on one grid, and `segment STUDY` run on it (no
    registration or N4, which this test is not about)."""
    truth = sitk.ReadImage(str(case_file(shared_data, "truth")))
    area = sitk.GetArrayViewFromImage(truth).astype(bool).sum(axis=(1, 2))
    first = int(np.argmax(area)) - SLICES // 2
    study = tmp_path_factory.mktemp("seg") / "study"
    for sequence, (description, number, _, _) in PROTOCOL.items():
        image = sitk.ReadImage(str(case_file(shared_data, sequence)))[:, :, first:first + SLICES]
        write_series(image, study / f"S{number:02d}", description, number, STUDY_UID)
    output = study.parent / "out"
    assert cli.main(["segment", str(study), "--no-register", "--no-n4", "--output", str(output)]) == 0
    t1c = dicom.series_at(study / f"S{PROTOCOL['T1c'][1]:02d}")
    return study, output, t1c


def _num_classes() -> int:
    return registry.get(registry.default_model()).card()["num_classes"]


def test_the_dicom_seg_holds_the_label_maps_labels_on_the_t1c_grid(segmented):
    study, output, t1c = segmented
    num_classes = _num_classes()
    file_labels, geometry = io.read_image(output / "study_labels.nii.gz")
    expected = label_table.output_scheme(num_classes).convert(file_labels)
    assert set(np.unique(expected)) > {0}, "the test needs some tumor in the label map"

    seg = hd.seg.segread(str(dicom_seg_path(output, "study")))
    uids = [pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in t1c.files]
    by_instance = seg.get_pixels_by_source_instance(uids, combine_segments=True)  # segment numbers
    assert np.array_equal(label_table.class_values(num_classes)[by_instance], expected)

    # The SEG's own grid, from its plane positions (highdicom orders the slices its own way): each of
    # its voxels falls on a voxel of the label map, holding the same label.
    volume = seg.get_volume(combine_segments=True)
    direction = np.array(geometry.direction).reshape(3, 3)
    ours = np.eye(4)  # (slice, row, column) index -> LPS position of the label map's grid
    ours[:3, :3] = np.column_stack([direction[:, 2] * geometry.spacing[2], direction[:, 1] * geometry.spacing[1],
                                    direction[:, 0] * geometry.spacing[0]])
    ours[:3, 3] = geometry.origin
    to_ours = np.linalg.inv(ours) @ volume.affine
    assert np.allclose(to_ours, np.round(to_ours), atol=1e-3), to_ours
    index = np.indices(volume.array.shape).reshape(3, -1)
    mapped = np.round(to_ours[:3, :3] @ index + to_ours[:3, 3:]).astype(int)
    assert (mapped >= 0).all() and (mapped < np.array(expected.shape)[:, None]).all()
    assert np.array_equal(label_table.class_values(num_classes)[volume.array.ravel()], expected[tuple(mapped)])


def test_the_dicom_seg_has_the_segments_of_the_label_table(segmented):
    _, output, _ = segmented
    seg = hd.seg.segread(str(dicom_seg_path(output, "study")))
    tissues = label_table.class_tissues(_num_classes())
    assert seg.get_segment_numbers() == list(range(1, len(tissues) + 1))
    for number, tissue in enumerate(tissues, start=1):
        segment = seg.get_segment_description(number)
        assert segment.segment_label == tissue.name
        category, kind = segment.segmented_property_category, segment.segmented_property_type
        assert (category.value, category.scheme_designator, category.meaning) == tissue.category
        assert (kind.value, kind.scheme_designator, kind.meaning) == tissue.type
        assert segment.algorithm_type == hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC
        rgb = hd.color.CIELabColor.from_dicom_value(segment.RecommendedDisplayCIELabValue).to_rgb()
        assert np.allclose(np.divide(rgb, 255), tissue.color, atol=0.01), tissue.name


def test_the_dicom_seg_references_the_t1c_series_of_the_study(segmented):
    _, output, t1c = segmented
    seg = pydicom.dcmread(dicom_seg_path(output, "study"))
    source = pydicom.dcmread(t1c.files[0], stop_before_pixels=True)
    assert seg.Modality == "SEG"
    assert seg.StudyInstanceUID == STUDY_UID
    assert (seg.PatientID, seg.FrameOfReferenceUID) == (source.PatientID, source.FrameOfReferenceUID)
    assert seg.SeriesInstanceUID not in {source.SeriesInstanceUID, STUDY_UID}
    [referenced] = seg.ReferencedSeriesSequence
    assert referenced.SeriesInstanceUID == t1c.uid == f"{STUDY_UID}.{PROTOCOL['T1c'][1]}"
    assert {i.ReferencedSOPInstanceUID for i in referenced.ReferencedInstanceSequence} == {
        pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in t1c.files}


def test_a_label_map_off_the_series_grid_is_refused(segmented):
    _, _, t1c = segmented
    with pytest.raises(ValueError, match=r"not on the grid of the DICOM series .*\(6 slices of 240 x 240\)"):
        dicom_seg.make_dicom_seg(np.zeros((5, 240, 240), np.uint8), 4, "TwoPathCNN", t1c)


def test_without_highdicom_the_error_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "highdicom", None)  # what Python does for a package that is absent
    with pytest.raises(ImportError, match=r"pip install 'braintumorcnn\[dicom\]'"):
        dicom_seg.require()


def _synthetic_study(case, study):
    """A synthetic case's four sequences written as a DICOM study on one grid (test_dicom's descriptions)."""
    for sequence, suffix in (("T1", "t1"), ("T1c", "t1ce"), ("T2", "t2"), ("FLAIR", "flair")):
        description, number, _, _ = PROTOCOL[sequence]
        image = sitk.ReadImage(str(case / f"{case.name}_{suffix}.nii.gz"))
        write_series(image, study / f"S{number:02d}", description, number, STUDY_UID)
    return study


def test_a_t1c_series_without_a_frame_of_reference_gets_every_output_but_the_dicom_seg(
        untrained_models, synthetic_cases, tmp_path, capsys):
    study = _synthetic_study(synthetic_cases[0], tmp_path / "study")
    for path in (study / f"S{PROTOCOL['T1c'][1]:02d}").iterdir():
        header = pydicom.dcmread(path)
        del header.FrameOfReferenceUID
        header.save_as(path)
    output = tmp_path / "out"
    command = ["segment", str(study), "--no-register", "--no-n4", "--device", "cpu", "--output", str(output)]

    assert cli.main(command) == 0, "a case delivered without its DICOM SEG is not a failed case"
    captured = capsys.readouterr()
    assert sorted(p.name for p in output.iterdir()) == [
        "metrics.csv", "study.json", "study.seg.nrrd", "study_labels.nii.gz", "study_preview.png"]
    [reason] = [line for line in captured.err.splitlines() if "no DICOM SEG" in line]
    assert "T1c series 7 'T1 MPRAGE post gad'" in reason and "no FrameOfReferenceUID (0020,0052)" in reason
    assert "1 segmented, 0 already done, 0 failed; without DICOM SEG (see above): study" in captured.out
    labels, geometry = io.read_image(output / "study_labels.nii.gz")
    assert geometry.differences(io.read_image(synthetic_cases[0] / "Synth_000_t1ce.nii.gz")[1]) == []
    assert set(np.unique(labels)) <= {0, 1, 2, 4}

    assert cli.main(command) == 0  # a rerun finds the case finished
    assert "0 segmented, 1 already done, 0 failed" in capsys.readouterr().out
