"""`braintumorcnn segment --uncertainty` (issue 34 item 2): the entropy map beside the label map, the
confidence figure printed, in metrics.csv and in the case's JSON record."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import SimpleITK as sitk

from BrainTumorCNNLib.frontends import cli
from BrainTumorCNNLib.reading import io
from BrainTumorCNNLib.running import cases, pipeline, uncertainty
from BrainTumorCNNLib.synthetic import phantom


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_segment_uncertainty_writes_the_map_on_the_input_grid_and_the_figure(untrained_models, tmp_path, capsys):
    case = phantom.make_phantom(0, "small")
    folder = phantom.write_phantom(case, tmp_path / "cases")["truth"].parent
    output = tmp_path / "out"
    run = ["--output", str(output), "--device", "cpu", "--no-n4", "--no-screening"]
    assert cli.main(["segment", str(folder), "--uncertainty", *run]) == 0
    printed = capsys.readouterr().out

    written = sitk.ReadImage(str(output / f"{case.name}_uncertainty.nii.gz"))
    source = sitk.ReadImage(str(cases.read_case(folder).files["T1c"]))
    assert written.GetPixelID() == sitk.sitkFloat32
    for look in ("GetOrigin", "GetSpacing", "GetDirection", "GetSize"):
        assert getattr(written, look)() == getattr(source, look)(), look
    entropy = sitk.GetArrayFromImage(written)
    assert 0.0 <= entropy.min() and entropy.max() <= 1.0 and entropy.max() > 0.1  # an untrained model doubts
    # the entropy of the very probabilities the labels came from
    read = cases.read_case(folder)
    options = pipeline.SegmentationOptions(device="cpu", screen=False,
                                           preprocessing=pipeline.PreprocessingConfig(n4=False))
    expected = pipeline.segment(read.images, read.geometry, options)
    np.testing.assert_allclose(entropy, uncertainty.entropy_map(expected.probabilities), atol=1e-6)
    np.testing.assert_array_equal(io.read_image(output / f"{case.name}_labels.nii.gz")[0], expected.labels)

    row = _rows(output / "metrics.csv")[0]
    record = json.loads((output / f"{case.name}.json").read_text())["confidence"]["expected_dice"]
    assert set(record) == {"complete", "core", "enhancing"}
    for region, value in expected.confidence.items():
        assert float(row[f"expected_dice_{region}"]) == pytest.approx(value) == pytest.approx(record[region])
        assert 0.0 <= value <= 1.0
    assert "dice_complete" in row  # the phantom's truth scored beside the figure
    assert f"whole tumor {expected.confidence['complete']:.2f}" in printed.split("confidence")[1].splitlines()[0]
    assert "volumes (mL): whole tumor" in printed
    assert (uncertainty.UNSURE in printed) == (expected.confidence["complete"] < uncertainty.UNSURE_BELOW_COMPLETE)

    # a rerun keeps the figure in the table (read back from the JSON record)
    (output / "metrics.csv").unlink()
    assert cli.main(["segment", str(folder), "--uncertainty", *run]) == 0
    assert "0 segmented, 1 already done" in capsys.readouterr().out
    assert float(_rows(output / "metrics.csv")[0]["expected_dice_complete"]) == pytest.approx(record["complete"])


def test_segment_without_the_flag_writes_no_map_but_the_figure_without_truth(untrained_models, synthetic_cases,
                                                                                tmp_path, capsys):
    files = cases.read_case(synthetic_cases[0]).files
    output = tmp_path / "out"
    argv = ["segment", "--output", str(output), "--device", "cpu", "--no-n4", "--name", "plain"] + \
        [x for m in io.MODALITIES for x in (f"--{m.lower()}", str(files[m]))]
    assert cli.main(argv) == 0
    assert "confidence (the Dice the model expects of its labels): whole tumor" in capsys.readouterr().out
    assert not (output / "plain_uncertainty.nii.gz").exists()
    row = _rows(output / "metrics.csv")[0]
    assert row["case"] == "plain" and "dice_complete" not in row  # no truth: the figure alone
    assert all(0.0 <= float(row[f"expected_dice_{r}"]) <= 1.0 for r in ("complete", "core", "enhancing"))


def test_uncertainty_with_a_scheduler_is_refused_in_words(untrained_models, synthetic_cases, tmp_path, capsys):
    assert cli.main(["segment", str(synthetic_cases[0]), "--output", str(tmp_path / "o"), "--uncertainty",
                     "--scheduler", "local:1"]) == 2
    assert "--uncertainty is not available with --scheduler" in capsys.readouterr().err
