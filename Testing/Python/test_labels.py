"""The label table: file schemes round-trip to internal labels and refuse unknown
values, evaluation regions per scheme, network classes, Slicer terminology."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from BrainTumorCNNLib import labels

SCHEME_NAMES = sorted(labels.SCHEMES)


def _file_values(scheme):
    return sorted({0, *scheme.to_internal})


@pytest.mark.parametrize("name", SCHEME_NAMES)
def test_every_scheme_round_trips(name):
    scheme = labels.scheme(name)
    values = np.array(_file_values(scheme), dtype=np.uint8)
    internal = scheme.convert(values)
    assert internal.dtype == np.uint8
    np.testing.assert_array_equal(scheme.from_internal(internal), values)
    np.testing.assert_array_equal(scheme.convert(scheme.from_internal(internal)), internal)
    assert len(set(internal.tolist())) == len(values), "two file values collapse into one internal label"


@settings(max_examples=20, deadline=None)
@given(name=st.sampled_from(SCHEME_NAMES), seed=st.integers(0, 2 ** 32 - 1),
       dtype=st.sampled_from([np.uint8, np.int16, np.int32, np.float32, np.float64]))
def test_round_trip_of_random_label_maps_in_any_dtype(name, seed, dtype):
    scheme = labels.scheme(name)
    file_map = np.random.default_rng(seed).choice(_file_values(scheme), size=(3, 4, 5)).astype(dtype)
    internal = scheme.convert(file_map)
    np.testing.assert_array_equal(scheme.from_internal(internal), file_map.astype(np.uint8))


@pytest.mark.parametrize("name, file_map, internal", [
    ("brats2013", [0, 1, 2, 3, 4], [0, 1, 2, 3, 4]),
    ("brats2021", [0, 1, 2, 4], [0, 1, 2, 4]),
    ("brats2023", [0, 1, 2, 3], [0, 1, 2, 4]),  # 3 = enhancing tumor in BraTS 2023
    ("msd", [0, 1, 2, 3], [0, 2, 3, 4]),  # 1 edema, 2 non-enhancing, 3 enhancing
    ("brats2012", [0, 1, 2], [0, 2, 3]),  # 1 edema, 2 tumor core
])
def test_file_values_map_to_the_papers_labels(name, file_map, internal):
    assert labels.scheme(name).convert(np.array(file_map)).tolist() == internal


@pytest.mark.parametrize("name, bad", [("brats2021", [3]), ("brats2023", [4]), ("msd", [4, 7]),
                                       ("brats2012", [3, 4]), ("brats2013", [5, 255])])
def test_unknown_values_raise_naming_them_and_the_scheme(name, bad):
    scheme = labels.scheme(name)
    file_map = np.array(_file_values(scheme) + bad, dtype=np.int32)
    with pytest.raises(ValueError) as error:
        scheme.convert(file_map, source="case_seg.nii.gz")
    message = str(error.value)
    assert str(bad) in message and name in message and "case_seg.nii.gz" in message


@pytest.mark.parametrize("bad", [[0.0, 1.5], [0.0, np.nan], [np.inf, 2.0]])
def test_fractional_or_non_finite_label_values_are_refused(bad):
    with pytest.raises(ValueError, match="whole numbers"):
        labels.scheme("brats2021").convert(np.array(bad, dtype=np.float32))


def test_negative_values_are_unknown():
    with pytest.raises(ValueError, match=r"\[-1\]"):
        labels.scheme("brats2021").convert(np.array([0, -1, 2], dtype=np.int16))


def test_unknown_scheme_lists_the_known_ones():
    with pytest.raises(ValueError) as error:
        labels.scheme("brats2099")
    assert all(name in str(error.value) for name in SCHEME_NAMES)


@pytest.mark.parametrize("name, regions", [
    ("brats2013", {"complete": [1, 2, 3, 4], "core": [1, 3, 4], "enhancing": [4]}),
    ("brats2021", {"complete": [1, 2, 4], "core": [1, 4], "enhancing": [4]}),
    ("brats2023", {"complete": [1, 2, 3], "core": [1, 3], "enhancing": [3]}),
    ("msd", {"complete": [1, 2, 3], "core": [2, 3], "enhancing": [3]}),
    ("brats2012", {"complete": [1, 2], "core": [2]}),
])
def test_regions_of_each_scheme_in_its_file_values(name, regions):
    """Which file values each evaluation region covers, through the internal labels."""
    scheme = labels.scheme(name)
    assert set(scheme.regions) == set(regions)
    values = np.array([v for v in _file_values(scheme) if v], dtype=np.uint8)
    internal = scheme.convert(values)
    for region, expected in regions.items():
        assert values[labels.region_mask(internal, region)].tolist() == expected, region


def test_class_values_and_labels_to_classes_for_4_and_5_classes():
    assert labels.class_values(5).tolist() == [0, 1, 2, 3, 4]
    assert labels.class_values(4).tolist() == [0, 1, 2, 4]
    internal = np.array([0, 1, 2, 3, 4], dtype=np.uint8)
    assert labels.labels_to_classes(internal, 5).tolist() == [0, 1, 2, 3, 4]
    assert labels.labels_to_classes(internal, 4).tolist() == [0, 1, 2, 1, 3]  # necrosis + non-enhancing = NCR/NET
    for n in (4, 5):
        classes = labels.labels_to_classes(internal, n)
        back = labels.class_values(n)[classes]
        for region in labels.REGIONS:  # regions survive the class merge
            np.testing.assert_array_equal(labels.region_mask(back, region), labels.region_mask(internal, region))
        assert [t.value for t in labels.class_tissues(n)] == labels.class_values(n)[1:].tolist()
    assert labels.output_scheme(4).name == "brats2021" and labels.output_scheme(5).name == "brats2013"


@pytest.mark.parametrize("n", [2, 3, 6])
def test_unsupported_number_of_classes(n):
    with pytest.raises(ValueError, match="num_classes"):
        labels.class_values(n)
    with pytest.raises(ValueError, match="num_classes"):
        labels.labels_to_classes(np.zeros(3, np.uint8), n)


def test_tissues_have_colours_and_dicom_codes():
    for tissue in labels.TISSUES.values():
        assert all(0.0 <= c <= 1.0 for c in tissue.color)
        for code in (tissue.category, tissue.type):
            value, scheme, meaning = code
            assert value.isdigit() and scheme == "SCT" and meaning


def test_terminology_entry_format():
    entry = labels.terminology_entry(labels.TISSUES["edema"])
    assert entry == ("Segmentation category and type - 3D Slicer General Anatomy list"
                     "~SCT^49755003^Morphologically Altered Structure~SCT^79654002^Edema"
                     "~^^~Anatomic codes - DICOM master list~^^~^^")


@pytest.mark.parametrize("key", sorted(labels.TISSUES))
def test_terminology_entry_parses_in_slicer(key):
    """Slicer's own terminology logic reads back every tissue's category and type."""
    slicer = pytest.importorskip("slicer")
    tissue = labels.TISSUES[key]
    entry = slicer.vtkSlicerTerminologyEntry()
    assert slicer.vtkSlicerTerminologiesModuleLogic().DeserializeTerminologyEntry(
        labels.terminology_entry(tissue), entry)
    category, type_ = entry.GetCategoryObject(), entry.GetTypeObject()
    assert (category.GetCodeValue(), category.GetCodingSchemeDesignator(), category.GetCodeMeaning()) == \
        tissue.category
    assert (type_.GetCodeValue(), type_.GetCodingSchemeDesignator(), type_.GetCodeMeaning()) == tissue.type
