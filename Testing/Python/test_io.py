"""Reading cases in every layout (files written here with SimpleITK, on a rotated,
shifted, anisotropic grid), modality order, label schemes, geometry, resampling
onto the T1c grid, label maps written back on the input grid, and the real cases."""
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from BrainTumorCNNLib.preparing.preparation import Step
from BrainTumorCNNLib.reading import io
from BrainTumorCNNLib.running.cases import read_case

SHAPE = (8, 10, 12)  # (Z, Y, X): 12 x 10 x 8 voxels
SIZE = SHAPE[::-1]
SPACING = (0.9, 1.1, 1.25)
ORIGIN = (-101.5, 87.25, -12.0)
_c, _s = np.cos(np.pi / 6), np.sin(np.pi / 6)
DIRECTION = tuple((np.array([[_c, -_s, 0], [_s, _c, 0], [0, 0, 1]]) @ np.diag([1, -1, 1])).ravel())  # 30 deg, flip
#: A distinct value per modality, so the order of the stacked volumes is visible.
BASE = {"T1": 100.0, "T1c": 200.0, "T2": 300.0, "FLAIR": 400.0}


def brain() -> np.ndarray:
    """An off-centre, asymmetric 'brain': any flip or transposition of the array shows."""
    mask = np.zeros(SHAPE, bool)
    mask[1:7, 2:9, 1:10] = True
    mask[1:3, 2:4, 1:4] = False
    return mask


def modality_array(modality: str, dtype=np.int16) -> np.ndarray:
    return np.where(brain(), BASE[modality], 0).astype(dtype)


def truth_array(file_values) -> np.ndarray:
    """Slabs along x inside the brain, one per non-zero file value; background 0."""
    values = [v for v in file_values if v]
    labels = np.zeros(SHAPE, np.uint8)
    for k, v in enumerate(values):
        labels[..., 1 + 9 * k // len(values): 1 + 9 * (k + 1) // len(values)] = v
    return np.where(brain(), labels, 0).astype(np.uint8)


def write(array: np.ndarray, path: Path, spacing=SPACING, origin=ORIGIN, direction=DIRECTION) -> Path:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(direction)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))
    return path


def write_brats2021(folder: Path, name: str = "BraTS2021_00001", truth_values=(0, 1, 2, 4)) -> Path:
    case = folder / name
    for tag, modality in (("t1", "T1"), ("t1ce", "T1c"), ("t2", "T2"), ("flair", "FLAIR")):
        write(modality_array(modality), case / f"{name}_{tag}.nii.gz")
    write(truth_array(truth_values), case / f"{name}_seg.nii.gz")
    return case


# --- Layouts ---------------------------------------------------------------------------

def _brats2012(tmp: Path):
    case = tmp / "BRATS_HG0001"
    for tag, modality in (("T1", "T1"), ("T1C", "T1c"), ("T2", "T2"), ("FLAIR", "FLAIR")):
        write(modality_array(modality), case / f"BRATS_HG0001_{tag}.mha")
    write(truth_array([0, 1, 2]), case / "BRATS_HG0001_truth.mha")
    return case, "brats2012", [0, 1, 2], [0, 2, 3]


def _brats2013_vsd(tmp: Path):
    case = tmp / "HG" / "0301"
    for number, (tag, modality) in enumerate((("T1", "T1"), ("T1c", "T1c"), ("T2", "T2"), ("Flair", "FLAIR"))):
        stem = f"VSD.Brain.XX.O.MR_{tag}.{54512 + number}"
        write(modality_array(modality), case / stem / f"{stem}.mha")
    stem = "VSD.Brain_3more.XX.O.OT.54517"
    write(truth_array([0, 1, 2, 3, 4]), case / stem / f"{stem}.mha")
    return case, "brats2013", [0, 1, 2, 3, 4], [0, 1, 2, 3, 4]


def _brats2021(tmp: Path):
    return write_brats2021(tmp), "brats2021", [0, 1, 2, 4], [0, 1, 2, 4]


def _brats2023(tmp: Path):
    name = "BraTS-GLI-00001-000"
    case = tmp / name
    for tag, modality in (("t1n", "T1"), ("t1c", "T1c"), ("t2w", "T2"), ("t2f", "FLAIR")):
        write(modality_array(modality), case / f"{name}-{tag}.nii.gz")
    write(truth_array([0, 1, 2, 3]).astype(np.float32), case / f"{name}-seg.nii.gz")  # float32, as released
    return case, "brats2023", [0, 1, 2, 3], [0, 1, 2, 4]


def _msd(tmp: Path):
    root = tmp / "Task01_BrainTumour"
    channels = np.stack([modality_array(m, np.float32) for m in io.MSD_CHANNELS])  # FLAIR, T1w, T1gd, T2w
    image = sitk.GetImageFromArray(channels, isVector=False)  # 4-D: x, y, z, channel
    image.SetSpacing(SPACING + (1.0,))
    image.SetOrigin(ORIGIN + (0.0,))
    direction = np.eye(4)
    direction[:3, :3] = np.reshape(DIRECTION, (3, 3))
    image.SetDirection(tuple(direction.ravel()))
    (root / "imagesTr").mkdir(parents=True)
    sitk.WriteImage(image, str(root / "imagesTr" / "BRATS_001.nii.gz"))
    write(truth_array([0, 1, 2, 3]), root / "labelsTr" / "BRATS_001.nii.gz")
    return root / "imagesTr" / "BRATS_001.nii.gz", "msd", [0, 1, 2, 3], [0, 2, 3, 4]


def _explicit(tmp: Path):
    files = {m: write(modality_array(m), tmp / "scans" / f"patient7_{i}.nrrd")
             for i, m in enumerate(io.MODALITIES)}  # names that say nothing about the modality
    return files, "brats2021", [0, 1, 2, 4], [0, 1, 2, 4]


LAYOUTS = {"brats2012": _brats2012, "brats2013_vsd": _brats2013_vsd, "brats2021": _brats2021,
           "brats2023": _brats2023, "msd": _msd, "explicit": _explicit}


def _read(layout, tmp_path):
    source, scheme, file_values, internal_values = LAYOUTS[layout](tmp_path)
    if layout == "explicit":
        truth = write(truth_array(file_values), tmp_path / "scans" / "patient7_reference.nrrd")
        case = read_case(source, truth=truth, label_scheme=scheme)
    else:
        case = read_case(source)
    return case, scheme, file_values, internal_values


def assert_geometry(geometry, size=SIZE, spacing=SPACING, origin=ORIGIN, direction=DIRECTION):
    assert geometry.size == size
    np.testing.assert_allclose(geometry.spacing, spacing, rtol=1e-6)
    np.testing.assert_allclose(geometry.origin, origin, atol=1e-4)
    np.testing.assert_allclose(geometry.direction, direction, atol=1e-6)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_every_layout_reads_in_modality_order_with_internal_labels(layout, tmp_path):
    case, scheme, file_values, internal_values = _read(layout, tmp_path)
    assert case.images.dtype == np.float32 and case.images.shape == (4,) + SHAPE
    for i, modality in enumerate(io.MODALITIES):  # T1, T1c, T2, FLAIR, voxel for voxel
        np.testing.assert_array_equal(case.images[i], modality_array(modality, np.float32), err_msg=modality)
    assert_geometry(case.geometry)
    assert case.scheme.name == scheme
    lut = dict(zip(file_values, internal_values))
    expected = np.vectorize(lut.get)(truth_array(file_values)).astype(np.uint8)
    assert case.truth.dtype == np.uint8
    np.testing.assert_array_equal(case.truth, expected)
    assert set(np.unique(case.truth)) == set(internal_values)
    assert set(case.files) == {*io.MODALITIES, "truth"} and all(Path(p).is_file() for p in case.files.values())
    assert case.warnings == []


def test_case_names_and_find_cases(tmp_path):
    for make in (_brats2012, _brats2021, _brats2023):
        make(tmp_path / "cases")
    found = io.find_cases(tmp_path / "cases")
    assert [p.name for p in found] == ["BRATS_HG0001", "BraTS-GLI-00001-000", "BraTS2021_00001"]
    assert io.find_cases(found[0]) == [found[0]]  # a case folder is one case
    assert read_case(found[2]).name == "BraTS2021_00001"
    msd_image = _msd(tmp_path)[0]
    assert io.find_cases(msd_image.parent.parent) == [msd_image]
    assert read_case(msd_image).name == "BRATS_001"
    files = _explicit(tmp_path)[0]
    assert read_case(files).name == "patient7" and read_case(files, name="P7").name == "P7"
    assert read_case(files).truth is None


@pytest.mark.parametrize("name, modality", [
    ("BraTS2021_00002_t1ce.nii.gz", "T1c"), ("BraTS2021_00002_t1.nii.gz", "T1"),
    ("BraTS-GLI-00000-000-t2f.nii.gz", "FLAIR"), ("BraTS-GLI-00000-000-t1n.nii.gz", "T1"),
    ("BRATS_HG0015_T1C.mha", "T1c"), ("BRATS_HG0015_truth.mha", "truth"),
    ("VSD.Brain.XX.O.MR_Flair.54515.mha", "FLAIR"), ("VSD.Brain_3more.XX.O.OT.54517.mha", "truth"),
    ("case_seg.nii.gz", "truth"), ("patient7_0.nrrd", None), ("t1_localizer_notes.nii.gz", None),
    ("Brats18_TCIA01_231_1_t1.nii.gz", "T1"), ("Brats18_TCIA01_231_1_t1ce.nii.gz", "T1c"),
    ("Brats18_TCIA02_151_1_seg.nii.gz", "truth"), ("BraTS20_Training_001_t1.nii.gz", "T1"),
    ("BraTS20_Training_001_flair.nii.gz", "FLAIR"), ("BraTS20_Training_001_t2.nii.gz", "T2"),
])
def test_modality_from_file_name(name, modality):
    assert io.modality_of(name) == modality


def test_vsd_truth_without_label_3_is_still_brats2013(tmp_path):
    case_folder = _brats2013_vsd(tmp_path)[0]
    ot = next(case_folder.glob("*OT*/*.mha"))
    write(truth_array([0, 1, 2, 4]), ot)
    case = read_case(case_folder)
    assert case.scheme.name == "brats2013" and case.warnings == []


def test_label_3_without_4_in_brats2021_naming_warns_about_the_guess(tmp_path, caplog):
    case = read_case(write_brats2021(tmp_path, truth_values=(0, 1, 2, 3)))
    assert case.scheme.name == "brats2013"
    assert len(case.warnings) == 1 and "label_scheme='brats2023'" in case.warnings[0]
    assert "label_scheme='brats2023'" in caplog.text  # logged as well
    as_2023 = read_case(case.files["T1"].parent, label_scheme="brats2023")
    assert set(np.unique(as_2023.truth)) == {0, 1, 2, 4} and as_2023.warnings == []


# --- Label maps back on the input grid ---------------------------------------------------

@pytest.mark.parametrize("layout", ["brats2021", "brats2012", "msd"])
@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
def test_write_labels_lands_exactly_on_the_input_grid(layout, suffix, tmp_path):
    case, *_ = _read(layout, tmp_path)
    labels = np.random.default_rng(0).choice(np.array([0, 1, 2, 4], np.uint8), size=case.geometry.shape)
    out = io.write_labels(labels, case.geometry, tmp_path / "out" / f"labels{suffix}")
    written = sitk.ReadImage(str(out))
    reference = sitk.ReadImage(str(case.files["truth"]))  # a 3-D file on the input grid, read independently
    assert written.GetSize() == reference.GetSize()
    np.testing.assert_allclose(written.GetSpacing(), reference.GetSpacing(), rtol=1e-6)
    np.testing.assert_allclose(written.GetOrigin(), reference.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(written.GetDirection(), reference.GetDirection(), atol=1e-6)
    assert written.GetPixelID() == sitk.sitkUInt8
    np.testing.assert_array_equal(sitk.GetArrayFromImage(written), labels)
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # atomic: no temporary file left


# --- Grids that differ, resampled onto the T1c grid ----------------------------------------

def _ramp_case(tmp_path, t1_spacing=SPACING, t1_origin=ORIGIN, t1_array=None) -> dict:
    """Explicit files with a ramp along x (value = x index + base) inside the brain; T1 may use another grid."""
    x = np.broadcast_to(np.arange(SHAPE[2], dtype=np.float32), SHAPE)
    files = {m: write(np.where(brain(), BASE[m] + x, 0).astype(np.float32), tmp_path / f"p_{m}.nii.gz")
             for m in io.MODALITIES}
    if t1_array is not None:
        write(t1_array.astype(np.float32), files["T1"], spacing=t1_spacing, origin=t1_origin)
    return files


def test_resampling_a_shifted_volume_onto_the_t1c_grid(tmp_path):
    """T1 stored on a grid starting 2 voxels further along x: after resampling, voxel x holds
    what the T1 file holds at x - 2 (exact at whole-voxel shifts), and 0 where T1 has no data."""
    shift = 2
    x_axis = np.reshape(DIRECTION, (3, 3))[:, 0]
    origin = tuple(np.add(ORIGIN, shift * SPACING[0] * x_axis))
    t1_file = np.roll(np.where(brain(), BASE["T1"] + np.arange(SHAPE[2]), 0), -shift, axis=2)
    files = _ramp_case(tmp_path, t1_origin=origin, t1_array=t1_file)
    with pytest.raises(io.GeometryError):
        read_case(files)
    case = read_case(files, resample=True)
    assert case.preparation == [Step("T1", "resample")] and case.registrations == {}
    assert_geometry(case.geometry)
    np.testing.assert_allclose(case.images[0][..., shift:], t1_file[..., :-shift], atol=1e-3)
    np.testing.assert_array_equal(case.images[0][..., :shift], 0)
    for i, modality in enumerate(io.MODALITIES[1:], 1):  # volumes already on the grid are untouched
        expected = sitk.GetArrayFromImage(sitk.ReadImage(str(files[modality])))
        np.testing.assert_array_equal(case.images[i], expected)


def test_resampling_a_coarser_volume_is_linear(tmp_path):
    """T1 at half the resolution along x, holding a linear ramp in x (everywhere, as an unstripped
    scan): linear resampling reproduces the ramp on the T1c grid inside the T1c's brain wherever T1 has
    data on both sides; outside it, where the stripped T1c is 0, the T1 is cut to 0 (preparation.prepare)."""
    coarse = (SHAPE[0], SHAPE[1], SHAPE[2] // 2)
    ramp = np.broadcast_to(1000.0 + 2.0 * np.arange(coarse[2]), coarse)  # value = 1000 + fine x index
    spacing = (2 * SPACING[0],) + SPACING[1:]
    case = read_case(_ramp_case(tmp_path, t1_spacing=spacing, t1_array=ramp), resample=True)
    assert_geometry(case.geometry)
    inside = 2 * (coarse[2] - 1) + 1
    expected = np.broadcast_to(1000.0 + np.arange(inside), SHAPE[:2] + (inside,))
    stripped = brain()[..., :inside]
    assert stripped.any() and (~stripped).any()
    np.testing.assert_allclose(case.images[0][..., :inside][stripped], expected[stripped], atol=1e-3)
    assert np.all(case.images[0][~brain()] == 0)


def test_truth_on_another_grid_is_resampled_with_nearest_neighbour(tmp_path):
    files = _ramp_case(tmp_path)
    fine = np.repeat(truth_array([0, 1, 2, 4]), 2, axis=0)  # twice the slices, half the slice spacing
    truth = write(fine, tmp_path / "truth.nii.gz", spacing=SPACING[:2] + (SPACING[2] / 2,),
                  origin=tuple(np.subtract(ORIGIN, np.reshape(DIRECTION, (3, 3))[:, 2] * SPACING[2] / 4)))
    with pytest.raises(io.GeometryError, match="truth"):
        read_case(files, truth=truth)
    case = read_case(files, truth=truth, resample=True)
    np.testing.assert_array_equal(case.truth, truth_array([0, 1, 2, 4]))


# --- Real cases ------------------------------------------------------------------------------

RELEASES = {  # folder: (scheme, size x y z, internal labels the truth may hold, cases)
    "brats2021": ("brats2021", (240, 240, 155), {0, 1, 2, 4}, 13),
    "brats2020": ("brats2021", (240, 240, 155), {0, 1, 2, 4}, 1),  # BraTS20_Training_001_t1.nii.gz
    "brats2018": ("brats2021", (240, 240, 155), {0, 1, 2, 4}, 2),  # Brats18_<site>_<n>_1_t1.nii.gz
    "brats2019": ("brats2021", (240, 240, 155), {0, 1, 2, 4}, 2),  # BraTS19_CBICA_<id>_1_t1.nii.gz
    "brats2023": ("brats2023", (240, 240, 155), {0, 1, 2, 4}, 1),
    "brats2012": ("brats2012", (160, 216, 176), {0, 2, 3}, 2),
}


def test_every_real_case_is_found_with_its_files_and_header(shared_data):
    """All twenty-one cases: five files each, every header readable and on the release's grid."""
    cases = {release: io.find_cases(shared_data / release) for release in RELEASES}
    assert [len(cases[r]) for r in RELEASES] == [spec[3] for spec in RELEASES.values()]
    for release, folders in cases.items():
        for folder in folders:
            files = io._modality_files(folder)
            assert set(files) == {*io.MODALITIES, "truth"}, folder
            for path in files.values():
                reader = sitk.ImageFileReader()
                reader.SetFileName(str(path))
                reader.ReadImageInformation()
                assert reader.GetSize() == RELEASES[release][1], path
                np.testing.assert_allclose(reader.GetSpacing(), (1.0, 1.0, 1.0), atol=1e-3)


@pytest.mark.parametrize("release", sorted(RELEASES))
def test_one_real_case_per_release_reads_fully(shared_data, release):
    scheme, size, internal, _ = RELEASES[release]
    folder = io.find_cases(shared_data / release)[0]
    case = read_case(folder)
    assert case.images.shape == (4,) + size[::-1] and case.images.dtype == np.float32
    assert np.isfinite(case.images).all() and (case.images.reshape(4, -1).max(axis=1) > 0).all()
    assert case.geometry.size == size and case.scheme.name == scheme
    present = set(np.unique(case.truth).tolist())
    assert present <= internal and len(present) >= 3, present  # background and at least two tumor labels
    assert case.warnings == []
