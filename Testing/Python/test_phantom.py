"""The synthetic phantom: BraTS 2021 layout, label nesting, reproducibility, and
intensities that follow the statistics measured on real cases."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from scipy import ndimage

from BrainTumorCNNLib.frontends import cli
from BrainTumorCNNLib.synthetic import phantom
from BrainTumorCNNLib.synthetic.template import BRATS_DIRECTION, BRATS_ORIGIN, BRATS_SIZE, BRATS_SPACING
from BrainTumorCNNLib.running.cases import read_case

SEED = 3


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A small phantom, in memory and written to disk."""
    case = phantom.make_phantom(SEED, "small")
    out = tmp_path_factory.mktemp("phantom")
    files = phantom.write_phantom(case, out)
    return case, files


def _digest(files):
    return {k: hashlib.sha256(p.read_bytes()).hexdigest() for k, p in files.items()}


def test_files_in_brats2021_layout_and_readable(small):
    case, files = small
    folder = files["truth"].parent
    assert folder.name == case.name == "Phantom_00003"
    expected = {f"{case.name}_{s}.nii.gz" for s in ("t1", "t1ce", "t2", "flair", "seg")}
    assert {p.name for p in folder.iterdir()} == expected  # no temporary files left behind
    read = read_case(folder)
    assert read.scheme.name == "brats2021"
    assert read.images.shape == (4,) + case.geometry.shape == (4, 64, 128, 128)
    np.testing.assert_array_equal(read.images, case.images)
    np.testing.assert_array_equal(read.truth, case.truth)
    assert read.geometry.spacing == BRATS_SPACING and read.geometry.direction == BRATS_DIRECTION


def test_small_grid_is_a_crop_of_the_brats_grid(small):
    case, _ = small
    offset = np.subtract(case.geometry.origin, BRATS_ORIGIN)
    np.testing.assert_allclose(offset, np.round(offset))
    assert np.all(offset >= 0) and np.all(offset + case.geometry.size <= BRATS_SIZE)
    full = phantom._grid("full", np.zeros(3))
    assert (full.size, full.spacing, full.origin, full.direction) == (BRATS_SIZE, BRATS_SPACING, BRATS_ORIGIN,
                                                                      BRATS_DIRECTION)


def test_labels_and_every_class_present(small):
    case, _ = small
    assert set(np.unique(case.truth)) == {0, 1, 2, 4}
    brain = case.brain_mask
    assert not (case.truth > 0)[~brain].any(), "tumor outside the brain"
    assert (case.images[:, ~brain] == 0).all() and (case.images[:, brain] > 0).all()
    volumes = case.parameters["volumes_ml"]
    assert volumes["ncr_net"] > 0.5 and volumes["enhancing"] > 0.5 and volumes["edema"] > 2


def test_rim_core_edema_nesting(small):
    case, _ = small
    truth, brain = case.truth, case.brain_mask
    ncr, enhancing, edema = truth == 1, truth == 4, truth == 2
    core = ncr | enhancing
    # the enhancing rim surrounds the necrotic / non-enhancing centre
    assert not (ndimage.binary_dilation(ncr) & ~core).any()
    # edema surrounds the core (except where the core meets the brain's edge)
    assert not (ndimage.binary_dilation(core) & brain & ~core & ~edema).any()
    # one tumor: every tumor voxel connected to the core
    labelled, _ = ndimage.label(truth > 0)
    assert set(np.unique(labelled[truth > 0])) == set(np.unique(labelled[core]))


def test_same_seed_same_files_other_seed_other_tumor(tmp_path, small):
    case, files = small
    again = phantom.write_phantom(phantom.make_phantom(SEED, "small"), tmp_path)
    assert _digest(again) == _digest(files)
    other = phantom.make_phantom(SEED + 1, "small")
    assert other.parameters["centre_lps_mm"] != case.parameters["centre_lps_mm"]
    assert other.parameters["volumes_ml"] != case.parameters["volumes_ml"]


def test_cli_writes_named_case(tmp_path, capsys):
    assert cli.main(["phantom", str(tmp_path), "--seed", "11", "--size", "small", "--name", "Demo"]) == 0
    assert sorted(p.name for p in (tmp_path / "Demo").iterdir()) == sorted(
        f"Demo_{s}.nii.gz" for s in ("flair", "seg", "t1", "t1ce", "t2"))
    assert "Demo" in capsys.readouterr().out


def test_statistics_file_is_numbers_from_real_cases():
    stats = json.loads(phantom.STATISTICS_PATH.read_text())
    assert len(stats["cases"]) >= 9 and all(c.startswith("BraTS2021_") for c in stats["cases"])
    assert set(stats["classes"]) == set(phantom.HEALTHY_CLASSES) | set(phantom.TUMOR_LABELS)
    assert phantom.STATISTICS_PATH.stat().st_size < 200_000  # numbers, never image data


@pytest.mark.parametrize("seed", [SEED, 21])
def test_intensities_relative_to_white_matter_match_measured(seed, small):
    case = small[0] if seed == SEED else phantom.make_phantom(seed, "small")
    stats = phantom.load_statistics()
    levels = stats["quantile_levels"]
    truth, tissue = case.truth, case.tissue
    far = ~ndimage.binary_dilation(truth > 0, iterations=5)
    # CSF is left out: in a small crop it is one ventricle, whose level rests on one or two
    # blobs of the coarse texture (real CSF varies as much, between regions)
    masks = {"white_matter": (tissue[2] > 0.95) & far,
             "grey_matter": (tissue[1] > 0.95) & (tissue[0] < 0.02) & far,
             **{cls: truth == value for cls, value in phantom.TUMOR_LABELS.items()}}
    reference = np.median(case.images[:, masks["white_matter"]], axis=1)
    checked = 0
    for cls, mask in masks.items():
        if mask.sum() < 200:
            continue
        ratios = case.images[:, mask] / reference[:, None]
        for m, modality in enumerate(phantom.MODALITIES):
            measured = stats["classes"][cls][modality]
            q = np.quantile(ratios[m], [0.1, 0.5, 0.9])
            expected = np.interp([0.1, 0.5, 0.9], levels, measured["quantiles"])
            # a phantom takes the contrasts of the mean case moved towards one real case:
            # its median lies within the real cases' range (+-15 % for blur and noise)
            low, high = measured["median_range"]
            assert 0.85 * min(low, expected[1]) <= q[1] <= 1.15 * max(high, expected[1]), (cls, modality, q, low, high)
            spread, expected_spread = q[2] - q[0], expected[2] - expected[0]
            assert 0.4 * expected_spread <= spread <= 2.5 * expected_spread, (cls, modality, q, expected)
            checked += 1
    assert checked >= 20
