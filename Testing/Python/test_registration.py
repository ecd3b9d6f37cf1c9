"""Rigid registration onto the T1c (registration.py) on a real case whose
sequences were moved by known motions and sampled on clinical grids.

The registrations draw a fixed number of T1c voxels, so they take seconds at
any resolution; the checks that need no accuracy use the T1c at 2 mm."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from BrainTumorCNNLib.preparing import registration
from BrainTumorCNNLib.reading import io
from BrainTumorCNNLib.running.cases import read_case
from scanner_like import as_scanned, case_file, centre, grid, head_motion, mean_disagreement_mm, rotation_between_deg

#: sequence -> (rotation about x, y, z in degrees, shift in mm, its grid's spacing, its grid's tilt)
SCANS = {
    "T1": ((3, -2, 4), (4, -3, 2), (2.0, 2.0, 2.0), (0, 0, 0)),  # 3-D T1 (shrunk): small motion
    "T2": ((-8, 12, -15), (-18, 10, -6), (1.0, 1.0, 3.0), (20, 0, 10)),  # oblique slab
    "FLAIR": ((10, -5, 12), (15, -12, 8), (0.9, 0.9, 5.0), (0, 0, 0)),  # thick axial slices
}


@pytest.fixture(scope="module")
def t1c(shared_data) -> sitk.Image:
    """The case's T1c at 2 mm (smoothed before sampling)."""
    full = sitk.ReadImage(str(case_file(shared_data, "T1c")), sitk.sitkFloat32)
    return sitk.Resample(sitk.SmoothingRecursiveGaussian(full, 1.0), grid(full, (2.0, 2.0, 2.0)),
                         sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkInt16)


def test_sequences_on_clinical_grids_are_registered_back_within_1_mm_and_1_degree(shared_data, tmp_path):
    files = {"T1c": case_file(shared_data, "T1c")}
    t1c = sitk.ReadImage(str(files["T1c"]))
    motions = {}
    for sequence, (rotation, shift, spacing, tilt) in SCANS.items():
        image = sitk.ReadImage(str(case_file(shared_data, sequence)), sitk.sitkFloat32)
        motions[sequence] = head_motion(rotation, shift, centre(image))
        files[sequence] = tmp_path / f"study_{sequence.lower()}.nii.gz"
        sitk.WriteImage(as_scanned(image, motions[sequence], grid(image, spacing, tilt)), str(files[sequence]))
    with pytest.raises(io.GeometryError):
        read_case(files)

    case = read_case(files, register=True)

    assert case.geometry == io.read_image(files["T1c"])[1]
    assert [w for r in case.registrations.values() for w in r.warnings] == []
    brain = sitk.GetArrayFromImage(t1c) > 0
    for sequence, motion in motions.items():
        found = case.registrations[sequence]
        expected = motion.GetInverse().Downcast()
        mean_mm, worst_mm = mean_disagreement_mm(found.transform, expected, t1c, brain)
        print(f"{sequence}: {mean_mm:.2f} mm mean, {worst_mm:.2f} mm largest, "
              f"{rotation_between_deg(found.transform, expected):.2f}°")
        assert mean_mm < 1.0, (sequence, mean_mm, worst_mm)
        assert rotation_between_deg(found.transform, expected) < 1.0, sequence
        assert found.mutual_information > registration.RegistrationConfig().min_mutual_information
        assert found.mutual_information > found.initial_mutual_information
    # registered back, the (5 mm) FLAIR looks like the case's own FLAIR, far more than resampled unregistered
    original = io.read_image(case_file(shared_data, "FLAIR"))[0][brain]
    unregistered = read_case(files, resample=True).images[3][brain]
    registered = np.corrcoef(case.images[3][brain], original)[0, 1]
    assert registered > 0.8
    assert registered > np.corrcoef(unregistered, original)[0, 1] + 0.3


def test_noise_registers_with_a_warning_naming_the_sequence(t1c):
    rng = np.random.default_rng(0)
    noise = sitk.GetImageFromArray(rng.uniform(0, 1000, (30, 96, 96)).astype(np.float32))
    noise.SetSpacing((2.5, 2.5, 6.0))
    noise.SetOrigin(np.subtract(centre(t1c), (120, 120, 90)).tolist())

    result = registration.register(sitk.Shrink(t1c, [2, 2, 2]), noise, "FLAIR")  # 4 mm: the optimiser wanders long

    assert len(result.warnings) == 1
    assert result.warnings[0].startswith("FLAIR: registration onto T1c looks wrong: mutual information")


@pytest.mark.parametrize("value", [0.0, 412.0])
def test_a_constant_image_is_an_error_naming_the_sequence(t1c, value):
    constant = sitk.Image(t1c.GetSize(), sitk.sitkFloat32) + value
    constant.CopyInformation(t1c)
    with pytest.raises(registration.RegistrationError, match=f"T2: the image is constant \\(every voxel {value:g}\\)"):
        registration.register(t1c, constant, "T2")


def test_an_implausible_motion_is_found_and_named(t1c):
    """A head 60 mm away from where the T1c saw it: registered, but the shift is flagged."""
    shift = (0.0, 20.0, 56.0)
    on = grid(t1c, t1c.GetSpacing())
    on.SetOrigin(np.subtract(on.GetOrigin(), shift).tolist())
    moved = as_scanned(t1c, head_motion((0, 0, 0), shift, centre(t1c)), on)

    result = registration.register(t1c, moved, "T1")

    assert result.shift_mm == pytest.approx(np.linalg.norm(shift), abs=1.0)
    assert len(result.warnings) == 1
    assert "T1: registration onto T1c looks wrong: shift 59 mm (more than 50 mm)" in result.warnings[0]


def test_the_affine_stage_keeps_a_rigid_motion_rigid(shared_data, t1c):
    """RegistrationConfig(affine=True) on a rigid motion: the affine found is close to it, scaling under 3 %."""
    rotation, shift, spacing, tilt = SCANS["FLAIR"]
    image = sitk.ReadImage(str(case_file(shared_data, "FLAIR")), sitk.sitkFloat32)
    motion = head_motion(rotation, shift, centre(image))

    result = registration.register(t1c, as_scanned(image, motion, grid(image, spacing, tilt)), "FLAIR",
                                   registration.RegistrationConfig(affine=True))

    assert result.transform.GetName() == "AffineTransform"
    assert result.scale_change < 0.03
    assert result.warnings == []
    mean_mm, _ = mean_disagreement_mm(result.transform, motion.GetInverse().Downcast(), t1c,
                                      sitk.GetArrayFromImage(t1c) > 0)
    assert mean_mm < 1.5  # on the 2 mm T1c
