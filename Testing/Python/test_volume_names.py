"""Input auto-selection from volume names (the Slicer module's selectors)."""
from __future__ import annotations

import pytest

from BrainTumorCNNLib.reading.volume_names import assign, guess_modality


@pytest.mark.parametrize("name, modality", [
    # BraTS 2017-2021 (file stems as Slicer names the loaded nodes)
    ("BraTS2021_00000_t1", "T1"), ("BraTS2021_00000_t1ce", "T1c"),
    ("BraTS2021_00000_t2", "T2"), ("BraTS2021_00000_flair", "FLAIR"),
    ("Brats18_2013_2_1_t1ce", "T1c"),
    # BraTS 2023
    ("BraTS-GLI-00000-000-t1n", "T1"), ("BraTS-GLI-00000-000-t1c", "T1c"),
    ("BraTS-GLI-00000-000-t2w", "T2"), ("BraTS-GLI-00000-000-t2f", "FLAIR"),
    # MSD Task01 channel names
    ("BRATS_001 FLAIR", "FLAIR"), ("BRATS_001 T1w", "T1"), ("BRATS_001 t1gd", "T1c"), ("BRATS_001 T2w", "T2"),
    # BRATS 2012/2013
    ("VSD.Brain.XX.O.MR_T1.54513", "T1"), ("VSD.Brain.XX.O.MR_T1c.54514", "T1c"),
    ("VSD.Brain.XX.O.MR_T2.54515", "T2"), ("VSD.Brain.XX.O.MR_Flair.54512", "FLAIR"),
    # scanner-style series names
    ("T1 post gad", "T1c"), ("T1+C", "T1c"), ("Ax T1 POST", "T1c"), ("T1_Gd", "T1c"), ("t1post", "T1c"),
    ("t1_mprage_pre", "T1"), ("T1 pre contrast", "T1"), ("T2 FLAIR", "FLAIR"), ("t2-flair ax", "FLAIR"),
    ("ax t2 tse", "T2"), ("T2W_TSE", "T2"), ("T2 post", "T2"),
])
def test_guess_modality_of_known_naming_schemes(name, modality):
    assert guess_modality(name) == modality


@pytest.mark.parametrize("name", [
    "BraTS2021_00000_seg",  # ground truth
    "VSD.Brain_3more.XX.O.OT.54517",  # BRATS 2013 ground truth
    "BraTS2021_00000_t1ce tumor Edema probability",  # this module's outputs
    "BraTS2021_00000_t1ce tumor labels",
    "t1 t2",  # two sequences: ambiguous
    "T1 T1c",
    "DWI", "ADC", "MRHead", "brain", "",
    "t10", "t12_scan",  # numbers that merely start with t1
])
def test_names_that_say_no_single_sequence_give_none(name):
    assert guess_modality(name) is None


def test_assign_one_brats_case():
    names = ["BraTS2021_00000_flair", "BraTS2021_00000_seg", "BraTS2021_00000_t1",
             "BraTS2021_00000_t1ce", "BraTS2021_00000_t2"]
    assert assign(names) == {"T1": "BraTS2021_00000_t1", "T1c": "BraTS2021_00000_t1ce",
                             "T2": "BraTS2021_00000_t2", "FLAIR": "BraTS2021_00000_flair"}


def test_assign_leaves_missing_sequences_out():
    assert assign(["MRHead", "T1 post gad", "T2 FLAIR"]) == {"T1c": "T1 post gad", "FLAIR": "T2 FLAIR"}
    assert assign([]) == {}
    assert assign(["MRHead", "CTChest"]) == {}


def test_assign_two_cases_picks_the_complete_then_the_latest_case():
    case = lambda i, seqs=("t1n", "t1c", "t2w", "t2f"): [f"BraTS-GLI-0000{i}-000-{s}" for s in seqs]  # noqa: E731
    older, newer = case(1), case(2)
    assert assign(older + newer) == dict(zip(("T1", "T1c", "T2", "FLAIR"), newer))
    assert assign(newer + older) == dict(zip(("T1", "T1c", "T2", "FLAIR"), older))
    partial = case(3, ("t1c", "t2f"))
    assert assign(older + partial) == dict(zip(("T1", "T1c", "T2", "FLAIR"), older))


def test_assign_two_candidates_in_one_case_leaves_that_sequence_empty():
    names = ["case7_t1", "case7_t1ce", "case7_t2", "case7_t2w", "case7_flair"]
    assert assign(names) == {"T1": "case7_t1", "T1c": "case7_t1ce", "FLAIR": "case7_flair"}


def test_assign_one_candidate_each_across_differently_named_volumes():
    names = ["MR_T1c.54514", "VSD.Brain.XX.O.MR_T1.54513", "t2 tse", "Flair ax"]
    assert assign(names) == {"T1": "VSD.Brain.XX.O.MR_T1.54513", "T1c": "MR_T1c.54514",
                             "T2": "t2 tse", "FLAIR": "Flair ax"}


@pytest.mark.parametrize("word", ["t1", "t1n", "t1w", "t1c", "t1ce", "t1gd", "t1gad", "t1post", "t2", "t2w",
                                  "flair", "t2f", "t2flair"])
def test_file_names_and_volume_names_use_one_classifier_of_sequence_words(word):
    """A sequence word means the same modality in a file name (io, reading case folders) and in a
    Slicer volume's name (volume_names): one classifier."""
    from BrainTumorCNNLib.reading import io
    assert io.modality_of(f"Case_001_{word}.nii.gz") == guess_modality(f"Case_001_{word}") is not None
