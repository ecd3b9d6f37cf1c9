"""The Segmenter: built once (weights hashed and loaded once, the model prepared once) for every case;
the same input gives the same labels in fresh preparations; every output records how it was made
(`<case>.json`, the `.seg.nrrd` header read back by SimpleITK and by Slicer's storage node, the
segmentation node's attributes on slicer-core's real MRML classes)."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import SimpleITK as sitk

from BrainTumorCNNLib import __version__
from BrainTumorCNNLib.frontends import cli
from BrainTumorCNNLib.network import fastconv, registry, weights
from BrainTumorCNNLib.preparing.preprocessing import PreprocessingConfig
from BrainTumorCNNLib.running import pipeline, segmenter
from BrainTumorCNNLib.running.cases import read_case
from BrainTumorCNNLib.synthetic import phantom
from BrainTumorCNNLib.writing import provenance
from BrainTumorCNNLib.writing.outputs import output_paths

QUICK = dict(device="cpu", preprocessing=PreprocessingConfig(n4=False), brain_extraction="off")


def test_segmenting_many_cases_hashes_loads_and_prepares_the_model_once(untrained_models, synthetic_cases,
                                                                         monkeypatch):
    """`segment` over several cases (the public call the front ends used case by case) hashes the weights,
    loads them and prepares the fast copy once; the model is never copied again (issue 35 point 8)."""
    weights_file = untrained_models / "TwoPathCNN.safetensors"
    hashed, loaded, prepared = [], [], []
    real_sha, real_load, real_prepare = weights.sha256, weights.load, fastconv.prepare
    monkeypatch.setattr(weights, "sha256", lambda path: hashed.append(path) or real_sha(path))
    monkeypatch.setattr(weights, "load", lambda *a, **k: loaded.append(a) or real_load(*a, **k))
    monkeypatch.setattr(fastconv, "prepare", lambda *a, **k: prepared.append(a[1]) or real_prepare(*a, **k))
    options = pipeline.SegmentationOptions(**QUICK)
    results = [pipeline.segment(case.images, case.geometry, options)
               for case in (read_case(path) for path in synthetic_cases)]
    assert [str(p) for p in hashed].count(str(weights_file)) == 1
    assert len(loaded) == 1 and len(prepared) == 1
    assert all(r.provenance["model"]["weights_sha256"] == weights.sha256(weights_file) for r in results)


def test_a_segmenter_refuses_weights_whose_checksum_differs(untrained_models):
    path = untrained_models / "TwoPathCNN.safetensors"
    path.write_bytes(path.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(weights.WeightsError, match="checksum"):
        segmenter.Segmenter(pipeline.SegmentationOptions(**QUICK))


def test_the_same_case_gives_identical_labels_in_fresh_preparations():
    """A small phantom segmented by two fresh Segmenters (each loading and preparing the model anew), with a
    case of another size between them for the second: identical labels, and probabilities bit for bit
    (issue 35 point 13: a timed FFT-or-direct choice and a transform size that depended on the other worker
    thread's crops changed 0-48 voxels from run to run)."""
    if "TwoPathCNN" not in registry.shipped():
        pytest.skip("no shipped TwoPathCNN weights")
    case = phantom.make_phantom(0, "small")
    other = phantom.make_phantom(1, "small")
    options = pipeline.SegmentationOptions(model="TwoPathCNN", **QUICK)  # default precision: auto
    first = segmenter.Segmenter(options).segment(case.images, case.geometry)
    second_segmenter = segmenter.Segmenter(options)
    smaller = other.images[:, 4:-4, 12:, :-12]
    second_segmenter.segment(smaller, replace(other.geometry, size=smaller.shape[1:][::-1]))
    second = second_segmenter.segment(case.images, case.geometry)
    assert first.labels.any()
    np.testing.assert_array_equal(second.labels, first.labels)
    assert np.array_equal(second.probabilities, first.probabilities)


def test_every_output_of_segment_records_how_it_was_made(untrained_models, synthetic_cases, tmp_path):
    """`segment` writes `<case>.json` beside the label map and the same record into the `.seg.nrrd` header,
    read back here by SimpleITK (ITK's NRRD reader) and by Slicer's segmentation storage node."""
    slicer = pytest.importorskip("slicer", reason="slicer-core is not installed")
    from BrainTumorCNNLib.writing import mrml

    output = tmp_path / "out"
    assert cli.main(["segment", str(synthetic_cases[0]), "--output", str(output), "--device", "cpu",
                     "--no-n4", "--flips", "--precision", "float32"]) == 0
    paths = output_paths(output, "Synth_000")
    record = json.loads(paths["provenance"].read_text())
    weights_file = untrained_models / "TwoPathCNN.safetensors"
    assert record["model"] == {"name": "TwoPathCNN", "weights_file": weights_file.name,
                               "weights_sha256": weights.sha256(weights_file)}
    assert record["software"]["version"] == __version__
    ran = record["options"]
    assert ran["precision"] == "float32" and ran["flips"] is True and ran["device"] == "cpu"
    assert ran["screening"] == {"on": True, "step": 3} and ran["brain_extraction"]["mode"] == "auto"
    assert ran["cleanup"]["min_volume_ml"] == 0.1 and ran["preprocessing"]["n4"] is False
    inputs = {item["sequence"]: item for item in record["inputs"]}
    assert sorted(inputs) == ["FLAIR", "T1", "T1c", "T2"]
    t2 = synthetic_cases[0] / "Synth_000_t2.nii.gz"
    assert inputs["T2"]["path"] == str(t2.resolve()) and inputs["T2"]["sha256"] == weights.sha256(t2)
    assert record["created"].endswith("+00:00")

    header = sitk.ReadImage(str(paths["segmentation"]))
    fields = {key: header.GetMetaData(key) for key in header.GetMetaDataKeys()}
    assert json.loads(fields["BrainTumorCNN.model.weights_sha256"]) == weights.sha256(weights_file)
    assert provenance.record_of(fields) == record
    assert provenance.record_of(provenance.read_nrrd_fields(paths["segmentation"])) == record
    node = mrml.read_segmentation_file(paths["segmentation"], slicer.vtkMRMLScene())  # Slicer still reads it
    assert node.GetSegmentation().GetNumberOfSegments() == 3


def test_the_slicer_node_carries_the_record_as_attributes(untrained_models, synthetic_cases):
    """The module's path: four volume nodes segmented (mrml.segment_nodes) give a segmentation node whose
    attributes hold the record; refilling a chosen node replaces its earlier record."""
    slicer = pytest.importorskip("slicer", reason="slicer-core is not installed")
    from BrainTumorCNNLib.writing import mrml

    scene = slicer.vtkMRMLScene()
    case = read_case(synthetic_cases[0])
    volumes = [mrml.add_volume_node(scene, image, case.geometry, f"Synth {m}")
               for m, image in zip(("T1", "T1c", "T2", "FLAIR"), case.images)]
    node, result = mrml.segment_nodes(volumes, pipeline.SegmentationOptions(**QUICK))
    record = mrml.provenance_of(node)
    assert record == json.loads(json.dumps(result.provenance))
    assert node.GetAttribute("BrainTumorCNN.model.name") == '"TwoPathCNN"'
    assert record["options"]["precision"] in ("float32", "bfloat16")
    assert {item["sequence"]: item["name"] for item in record["inputs"]}["T2"] == "volume node 'Synth T2'"

    chosen = mrml.add_segmentation_node(scene, result.labels, case.geometry, 4, "chosen",
                                        provenance={"model": {"name": "older"}, "stale": 1})
    newer = dict(result.provenance, created="2000-01-01T00:00:00+00:00")
    mrml.store_result(scene, pipeline.Segmentation(result.labels, result.probabilities, 4, "TwoPathCNN", {},
                                                   provenance=newer), case.geometry, "x", output_node=chosen)
    assert mrml.provenance_of(chosen) == json.loads(json.dumps(newer))


def test_provenance_fields_round_trip_through_a_nrrd_header(tmp_path):
    record = {"model": {"name": "A", "weights_sha256": "ab" * 32}, "options": {"cleanup": None, "flips": False},
              "inputs": [{"sequence": "T1", "path": "C:\\scans\\t1\nx.nii"}], "empty": {}}
    path = tmp_path / "x.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(np.arange(24, dtype=np.uint8).reshape(2, 3, 4)), str(path), True)
    provenance.add_nrrd_fields(path, provenance.fields(record))
    assert provenance.record_of(provenance.read_nrrd_fields(path)) == record
    image = sitk.ReadImage(str(path))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), np.arange(24, dtype=np.uint8).reshape(2, 3, 4))
    assert provenance.record_of({k: image.GetMetaData(k) for k in image.GetMetaDataKeys()}) == record
