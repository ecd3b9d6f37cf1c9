"""`braintumorcnn segment` (and BrainTumorCNNBatch.py): many cases, bad ones skipped, reruns resume."""
from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import write_broken_case, write_synthetic_case

from BrainTumorCNNLib import labels
from BrainTumorCNNLib.frontends import cli
from BrainTumorCNNLib.writing import mrml
from BrainTumorCNNLib.frontends.progress import ProgressLine
from BrainTumorCNNLib.writing.outputs import finished, output_paths
from BrainTumorCNNLib.reading import io
from BrainTumorCNNLib.running import inference, pipeline
from BrainTumorCNNLib.running.cases import read_case
from BrainTumorCNNLib.network import registry, weights

REPO = Path(__file__).resolve().parents[2]


def _outputs(output: Path, name: str):
    return [output / f"{name}.seg.nrrd", output / f"{name}_labels.nii.gz", output / f"{name}_preview.png"]


def test_folder_of_cases_with_a_bad_one(untrained_models, synthetic_cases, tmp_path, capsys):
    cases = synthetic_cases[0].parent
    write_broken_case(cases)
    output = tmp_path / "out"

    status = cli.main(["segment", str(cases), "--output", str(output), "--device", "cpu"])
    captured = capsys.readouterr()
    assert status == 1, "a failed case must show in the exit status"
    assert "Broken_001" in captured.err and "3 segmented, 0 already done, 1 failed" in captured.out
    for case in synthetic_cases:
        for path in _outputs(output, case.name):
            assert path.stat().st_size > 0, path
        written = sitk.ReadImage(str(output / f"{case.name}_labels.nii.gz"))
        source = sitk.ReadImage(str(read_case(case).files["T1c"]))
        assert written.GetOrigin() == source.GetOrigin() and written.GetSpacing() == source.GetSpacing()
        assert written.GetDirection() == source.GetDirection() and written.GetSize() == source.GetSize()
        assert set(np.unique(sitk.GetArrayFromImage(written))) <= {0, 1, 2, 4}  # BraTS 2017-2021 values
    assert not list(output.glob("Broken_001*")) and not list(output.glob(".*part*"))

    with open(output / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["case"] for r in rows] == [c.name for c in synthetic_cases] + ["mean"]
    assert all(0.0 <= float(r["dice_complete"]) <= 1.0 for r in rows)

    # a rerun skips the finished cases (their files untouched) and still reports their metrics
    stamps = {p: p.stat().st_mtime_ns for c in synthetic_cases for p in _outputs(output, c.name)}
    (output / "metrics.csv").unlink()
    assert cli.main(["segment", str(cases), "--output", str(output), "--device", "cpu"]) == 1
    assert "0 segmented, 3 already done, 1 failed" in capsys.readouterr().out
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())
    with open(output / "metrics.csv") as f:
        assert len(list(csv.DictReader(f))) == 4  # three cases and the mean


def test_explicit_files_and_a_five_class_model(untrained_models, synthetic_cases, tmp_path, capsys):
    files = read_case(synthetic_cases[0]).files
    output = tmp_path / "out"
    argv = ["segment", "--output", str(output), "--model", "LocalPathCNN", "--device", "cpu", "--no-cleanup",
            "--name", "patient7"] + [x for m in io.MODALITIES for x in (f"--{m.lower()}", str(files[m]))]
    assert cli.main(argv) == 0
    label_map, geometry = io.read_image(output / "patient7_labels.nii.gz")
    assert set(np.unique(label_map)) <= {0, 1, 2, 3, 4}
    node = mrml.read_segmentation_file(output / "patient7.seg.nrrd", __import__("slicer").vtkMRMLScene())
    names = [node.GetSegmentation().GetNthSegment(i).GetName()
             for i in range(node.GetSegmentation().GetNumberOfSegments())]
    assert names == [t.name for t in labels.class_tissues(5)]
    assert "dice_complete" not in next(csv.DictReader(open(output / "metrics.csv")))  # no truth: no scores


def test_bad_command_lines_say_what_is_wrong(untrained_models, synthetic_cases, tmp_path, capsys):
    case = str(synthetic_cases[0])
    for argv, message in (
            (["--t1", "a.nii", "--t1c", "b.nii"], "missing --t2, --flair"),
            ([], "nothing to segment: give case folders or --t1/--t1c/--t2/--flair files"),
            ([case, "--t1", "a.nii"], "give either case folders or --t1/--t1c/--t2/--flair, not both"),
            ([case, case], "several cases are named Synth_000; their outputs would collide")):
        assert cli.main(["segment", "--output", str(tmp_path / "out"), *argv]) == 2
        assert capsys.readouterr().err == f"braintumorcnn segment: error: {message}\n"
    assert not (tmp_path / "out").exists()


def test_batch_script_runs_as_plain_python(untrained_models, synthetic_cases, tmp_path):
    """The file Slicer runs with --python-script works from plain Python too."""
    output = tmp_path / "out"
    env = {"BRAINTUMORCNN_MODELS": str(untrained_models), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, str(REPO / "BrainTumorCNN" / "BrainTumorCNNBatch.py"), "--",
                           str(synthetic_cases[1]), "--output", str(output), "--device", "cpu"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    assert all(p.is_file() for p in _outputs(output, synthetic_cases[1].name))


def _preview_text(path: Path) -> dict:
    from PIL import Image
    with Image.open(path) as image:
        return dict(image.text)


def test_preview_shows_the_truth_and_the_dice_when_truth_is_given(untrained_models, synthetic_cases, tmp_path,
                                                                   capsys):
    files = read_case(synthetic_cases[0]).files
    explicit = [x for m in io.MODALITIES for x in (f"--{m.lower()}", str(files[m]))]
    runs = {"given": [*explicit, "--name", "given", "--truth", str(files["truth"])],
            "plain": [*explicit, "--name", "plain"],
            synthetic_cases[1].name: [str(synthetic_cases[1])]}  # truth found in the case folder
    for name, argv in runs.items():
        output = tmp_path / name
        assert cli.main(["segment", *argv, "--output", str(output), "--device", "cpu", "--no-n4"]) == 0
        text = _preview_text(output / f"{name}_preview.png")
        if name == "plain":
            assert "truth" not in text["Description"] and "Dice" not in text["Title"]
            continue
        with open(output / "metrics.csv") as f:
            dice = float(next(csv.DictReader(f))["dice_complete"])
        assert "truth" in text["Description"] and f"Dice complete {dice:.2f}" in text["Title"], text


def test_progress_is_line_based_when_output_is_not_a_terminal(untrained_models, synthetic_cases, tmp_path, capsys):
    """capsys's streams are not terminals: no carriage returns, a bounded number of progress lines."""
    case = write_synthetic_case(tmp_path / "tall", "Tall_001", shape=(30, 32, 32))  # 30 slices, 30 updates
    assert cli.main(["segment", str(case), "--output", str(tmp_path / "out"), "--device", "cpu", "--no-n4"]) == 0
    captured = capsys.readouterr()
    assert "\r" not in captured.out + captured.err
    steps = [line for line in captured.out.splitlines() if "%]" in line]
    assert 3 <= len(steps) <= 12, captured.out


@pytest.mark.parametrize("blocked", ["preview", "labels"])
def test_a_case_that_fails_while_its_outputs_are_written_leaves_none_of_them(
        untrained_models, synthetic_cases, tmp_path, capsys, blocked):
    """A folder where an output file must go: the case fails when its files are moved into place, and the
    files moved before it are taken back, so nothing of the case is left to look finished or half done."""
    output = tmp_path / "out"
    paths = output_paths(output, synthetic_cases[0].name)
    paths[blocked].mkdir(parents=True)
    command = ["segment", str(synthetic_cases[0]), "--output", str(output), "--device", "cpu"]

    assert cli.main(command) == 1
    assert "FAILED: [Errno 21] Is a directory" in capsys.readouterr().err
    assert list(output.iterdir()) == [paths[blocked]], "no output and no temporary file of the failed case"

    paths[blocked].rmdir()
    assert cli.main(command) == 0 and finished(paths)


def test_progress_lines_per_ten_percent_on_a_stream_and_one_updated_line_on_a_terminal():
    import io as stdio
    import os
    import select

    stream = stdio.StringIO()
    progress = ProgressLine(stream)  # a pipeline.Progress callback
    assert pipeline.Progress is inference.Progress  # one callback type
    for i in range(1001):
        progress(i / 1000, f"slice {i}/1000")
    progress.finish("segmented")
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue() and len(lines) == 12  # 0 %, 10 %, ..., 100 % and the closing line
    assert lines[-1] == "  segmented" and lines[5].startswith("  [ 50%] slice 500/1000")

    leader, follower = os.openpty()  # a real terminal
    with open(follower, "w") as terminal:
        progress = ProgressLine(terminal)
        for i in range(21):
            progress(i / 20, f"{i}")
        progress.finish("segmented")
    written = ""
    while not written.endswith("\n") and select.select([leader], [], [], 5)[0]:
        written += os.read(leader, 1 << 16).decode()
    os.close(leader)
    assert written.count("\r") >= 21 and written.count("\n") == 1


def test_flips_option_segments_with_test_time_flips(untrained_models, synthetic_cases, tmp_path):
    """`segment --flips` writes what the pipeline gives with flips, which differs from one pass here."""
    output = tmp_path / "out"
    assert cli.main(["segment", str(synthetic_cases[0]), "--output", str(output), "--device", "cpu", "--flips",
                     "--no-n4", "--no-cleanup"]) == 0
    written, _ = io.read_image(output / "Synth_000_labels.nii.gz")
    case = read_case(synthetic_cases[0])
    options = pipeline.SegmentationOptions(device="cpu", cleanup=None, flips=True,
                                           preprocessing=pipeline.PreprocessingConfig(n4=False))
    flipped = pipeline.segment(case.images, case.geometry, options).probabilities
    once = pipeline.segment(case.images, case.geometry,
                            pipeline.SegmentationOptions(device="cpu", cleanup=None, preprocessing=options.preprocessing))
    np.testing.assert_array_equal(written, labels.class_values(4)[np.argmax(flipped, axis=0)])
    assert not np.allclose(flipped, once.probabilities, atol=1e-4)


def test_precision_option_reaches_the_pipeline(untrained_models, synthetic_cases, tmp_path):
    """`segment --precision bfloat16` writes what the pipeline gives in bfloat16."""
    output = tmp_path / "out"
    assert cli.main(["segment", str(synthetic_cases[0]), "--output", str(output), "--device", "cpu",
                     "--precision", "bfloat16", "--no-n4", "--no-cleanup"]) == 0
    written, _ = io.read_image(output / "Synth_000_labels.nii.gz")
    case = read_case(synthetic_cases[0])
    options = pipeline.SegmentationOptions(device="cpu", cleanup=None, precision="bfloat16",
                                           preprocessing=pipeline.PreprocessingConfig(n4=False))
    lower = pipeline.segment(case.images, case.geometry, options)
    exact = pipeline.segment(case.images, case.geometry,
                             pipeline.SegmentationOptions(device="cpu", cleanup=None, precision="float32",
                                                          preprocessing=options.preprocessing))
    np.testing.assert_array_equal(written, lower.labels)
    assert not np.allclose(lower.probabilities, exact.probabilities, atol=1e-6)


def test_segment_runs_in_the_precision_auto_resolves_to_unless_told(untrained_models, synthetic_cases, tmp_path,
                                                                   monkeypatch):
    """Without --precision, `segment` runs bfloat16 on a CPU with native bfloat16 and float32 elsewhere."""
    from BrainTumorCNNLib.running import inference

    ran = []
    real = inference.Runner.segment
    monkeypatch.setattr(inference.Runner, "segment", lambda *a, **k: ran.append(real(*a, **k)) or ran[-1])
    for native, arithmetic in ((True, "bfloat16"), (False, "float32")):
        monkeypatch.setattr(inference, "native_bfloat16", lambda: native)
        output = tmp_path / arithmetic
        assert cli.main(["segment", str(synthetic_cases[0]), "--output", str(output), "--device", "cpu",
                         "--no-n4", "--no-cleanup"]) == 0
        assert ran[-1].precision == arithmetic
        assert (output / "Synth_000_labels.nii.gz").is_file()


def test_the_preparation_of_each_case_is_reported(untrained_models, synthetic_cases, tmp_path, capsys):
    """A T1 stored on a grid 2 mm off the T1c's, segmented with --resample: the step is named."""
    files = dict(read_case(synthetic_cases[0]).files)
    t1 = sitk.ReadImage(str(files["T1"]))
    t1.SetOrigin(tuple(np.add(t1.GetOrigin(), (2.0, 0.0, 0.0))))
    files["T1"] = tmp_path / "moved_t1.nii.gz"
    sitk.WriteImage(t1, str(files["T1"]))
    argv = ["segment", "--output", str(tmp_path / "out"), "--device", "cpu", "--resample"]
    assert cli.main(argv + [x for m in io.MODALITIES for x in (f"--{m.lower()}", str(files[m]))]) == 0
    assert "  resample T1 onto the T1c grid (as it lies: no registration)\n" in capsys.readouterr().out


def test_cleanup_flags_reach_the_pipeline():
    import argparse
    from BrainTumorCNNLib.frontends import batch
    from BrainTumorCNNLib.running.postprocessing import CleanupConfig
    parser = argparse.ArgumentParser()
    batch.configure_parser(parser)
    options = batch.segmentation_options(parser.parse_args(["case", "--output", "out"]))
    assert options.cleanup == CleanupConfig() and options.model_cleanup  # the model's rule on top
    options = batch.segmentation_options(parser.parse_args(["case", "--output", "out", "--keep-distant"]))
    assert options.cleanup == CleanupConfig() and not options.model_cleanup and options.edema_growth
    options = batch.segmentation_options(parser.parse_args(["case", "--output", "out", "--no-edema-growth"]))
    assert options.model_cleanup and not options.edema_growth
    assert batch.segmentation_options(parser.parse_args(["case", "--output", "out", "--no-cleanup"])).cleanup is None


def test_through_plane_option_segments_the_averaged_volume(untrained_models, synthetic_cases, tmp_path):
    """`segment --through-plane` writes what the network gives on FLAIR and T2 averaged along the slices
    before preprocessing."""
    from BrainTumorCNNLib.preparing.preprocessing import preprocess, through_plane_average

    output = tmp_path / "out"
    assert cli.main(["segment", str(synthetic_cases[0]), "--output", str(output), "--device", "cpu",
                     "--through-plane", "--no-n4", "--no-cleanup", "--no-screening", "--precision", "float32"]) == 0
    written, _ = io.read_image(output / "Synth_000_labels.nii.gz")
    case = read_case(synthetic_cases[0])
    options = pipeline.SegmentationOptions(device="cpu", cleanup=None, precision="float32", screen=False,
                                           preprocessing=pipeline.PreprocessingConfig(n4=False))
    averaged = through_plane_average(case.images, case.images.any(axis=0), case.geometry.spacing[2])
    assert not np.array_equal(averaged, case.images)
    pre = preprocess(averaged, options.preprocessing, spacing=case.geometry.spacing)
    model, card = weights.load(registry.default_model())
    expected = pipeline.segment_preprocessed(model, registry.default_model(), card, pre.images, pre.brain_mask,
                                             case.geometry.spacing, options)
    np.testing.assert_array_equal(written, expected.labels)


def test_metrics_keep_the_rows_of_results_already_in_the_output_folder(untrained_models, synthetic_cases, tmp_path,
                                                                       capsys):
    """Issue 34 point 5: metrics.csv describes the folder: segmenting more cases into it keeps the rows of the
    results already there (a row whose result was deleted goes), and a case segmented again gets one row."""
    output = tmp_path / "out"
    run = ["--output", str(output), "--device", "cpu", "--no-n4"]
    assert cli.main(["segment", str(synthetic_cases[0]), *run]) == 0
    assert cli.main(["segment", str(synthetic_cases[1]), *run]) == 0

    def cases_in_table():
        with open(output / "metrics.csv") as f:
            return [r["case"] for r in csv.DictReader(f)]

    assert cases_in_table() == [synthetic_cases[0].name, synthetic_cases[1].name, "mean"]
    for path in output_paths(output, synthetic_cases[0].name).values():  # a result the reader deleted
        path.unlink()
    assert cli.main(["segment", str(synthetic_cases[2]), str(synthetic_cases[1]), *run, "--overwrite"]) == 0
    assert cases_in_table() == [synthetic_cases[1].name, synthetic_cases[2].name, "mean"]
