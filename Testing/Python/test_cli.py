"""`braintumorcnn` on real files: nothing given vanishes without a word, and every expected error
ends as one line on stderr with a non-zero exit status (no traceback)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import write_synthetic_case

from BrainTumorCNNLib.frontends import cli

REPO = Path(__file__).resolve().parents[2]


def _run(argv, capsys):
    status = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    assert "Traceback" not in err
    return lines[0]


def test_case_folder_without_flair_fails_naming_folder_missing_and_found(untrained_models, tmp_path, capsys):
    case = write_synthetic_case(tmp_path / "cases", "Lonely_001")
    (case / "Lonely_001_flair.nii.gz").unlink()
    output = tmp_path / "out"

    status, out, err = _run(["segment", case, "--output", output, "--device", "cpu"], capsys)

    assert status != 0
    assert str(case) in err and "missing FLAIR" in err
    for found in ("Lonely_001_t1.nii.gz", "Lonely_001_t1ce.nii.gz", "Lonely_001_t2.nii.gz", "Lonely_001_seg.nii.gz"):
        assert found in err
    assert "0 segmented, 0 already done, 1 failed: Lonely_001" in out
    assert not list(output.glob("Lonely_001*"))


def test_a_case_lacking_a_sequence_among_others_is_a_named_failure(untrained_models, tmp_path, capsys):
    whole = write_synthetic_case(tmp_path / "cases", "Whole_001")
    partial = write_synthetic_case(tmp_path / "cases", "Partial_002", seed=1)
    (partial / "Partial_002_t2.nii.gz").unlink()
    output = tmp_path / "out"

    status, out, err = _run(["segment", tmp_path / "cases", "--output", output, "--device", "cpu",
                             "--no-n4"], capsys)

    assert status == 1, "a case that was given but not segmented must show in the exit status"
    assert str(partial) in err and "missing T2" in err
    assert "1 segmented, 0 already done, 1 failed: Partial_002" in out
    assert (output / f"{whole.name}_labels.nii.gz").is_file()


@pytest.mark.parametrize("content", ["nothing", "unrelated files"])
def test_a_folder_without_any_case_is_an_error(untrained_models, tmp_path, capsys, content):
    folder = tmp_path / "inbox"
    folder.mkdir()
    if content == "unrelated files":
        (folder / "notes.txt").write_text("not an image")
        (folder / "sub").mkdir()
        (folder / "sub" / "scan.nii.gz").write_bytes(b"a file whose name names no sequence")

    status, out, err = _run(["segment", folder, "--output", tmp_path / "out", "--device", "cpu"], capsys)

    assert status == 2
    line = _one_line(err)
    assert str(folder) in line and "no case" in line
    assert "segmented" not in out


def _bad_command_lines(tmp: Path):
    """(command line, a text its error line must hold) for each command's expected errors."""
    a_file = tmp / "a_file.txt"
    a_file.write_text("a file where a folder is expected")
    missing = tmp / "no" / "such" / "folder"
    return {
        "segment a missing folder": (["segment", missing, "--output", tmp / "out"], str(missing)),
        "segment a missing file": (["segment", tmp / "no_such_case.nii.gz", "--output", tmp / "out"],
                                   "no_such_case.nii.gz"),
        "evaluate a missing truth folder": (["evaluate", tmp, missing], str(missing)),
        "phantom into a file": (["phantom", a_file, "--size", "small"], str(a_file)),
        "demo into a file": (["demo", "--output", a_file, "--size", "small", "--device", "cpu"], str(a_file)),
        "bench an unknown model": (["bench", "--models", "NoSuchCNN"], "NoSuchCNN"),
        "bench a missing case": (["bench", "--models", "TwoPathCNN", "--case", missing], str(missing)),
        "train on a missing folder": (["train", missing, "--run-dir", tmp / "run"], str(missing)),
    }


@pytest.mark.parametrize("which", ["segment a missing folder", "segment a missing file",
                                   "evaluate a missing truth folder", "phantom into a file", "demo into a file",
                                   "bench an unknown model", "bench a missing case", "train on a missing folder"])
def test_expected_errors_end_as_one_line_and_a_nonzero_exit(untrained_models, tmp_path, capsys, which):
    argv, named = _bad_command_lines(tmp_path)[which]
    status, _, err = _run(argv, capsys)
    assert status != 0
    line = _one_line(err)
    assert named in line and "error: " in line, line


def test_console_command_prints_one_line_for_a_missing_folder(tmp_path):
    """The installed command's behaviour, in a fresh process: one line, no traceback, exit status 2."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "BrainTumorCNN")}
    done = subprocess.run([sys.executable, "-m", "BrainTumorCNNLib.frontends.cli", "segment", "/no/such/folder",
                           "--output", str(tmp_path / "out")], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 2
    assert _one_line(done.stderr) == "braintumorcnn segment: error: /no/such/folder: no such folder or image file"
    assert not (tmp_path / "out").exists(), "nothing is made for a command that cannot run"


def test_unexpected_errors_keep_their_traceback(monkeypatch, tmp_path, capsys):
    """A bug is not an input error: it is raised, not hidden behind one line."""
    from BrainTumorCNNLib.synthetic import phantom

    def broken(*args, **kwargs):
        raise TypeError("a bug")

    monkeypatch.setattr(phantom, "make_phantom", broken)
    with pytest.raises(TypeError, match="a bug"):
        cli.main(["phantom", str(tmp_path)])


def test_cache_subcommand_writes_one_file_per_case_that_training_reads(tmp_path, synthetic_cases, capsys):
    from BrainTumorCNNLib.learning import sampling
    from BrainTumorCNNLib.preparing.preprocessing import PreprocessingConfig

    cache = tmp_path / "cache"
    assert cli.main(["cache", str(synthetic_cases[0].parent), "--output", str(cache), "--no-n4"]) == 0
    assert "3 cases" in capsys.readouterr().out
    files = sampling.case_sources(cache)
    assert len(files) == 3
    written = {f: f.stat().st_mtime_ns for f in files}
    case = sampling.load_case(synthetic_cases[0], PreprocessingConfig(n4=False), cache)
    assert case.name == "Synth_000" and case.truth is not None
    assert {f: f.stat().st_mtime_ns for f in files} == written  # read from the cache, not made again


def test_cache_converts_to_8_bits_within_half_a_level_and_refuses_its_own_folder(tmp_path, synthetic_cases, capsys):
    from BrainTumorCNNLib.learning import sampling

    full, small = tmp_path / "full", tmp_path / "small"
    assert cli.main(["cache", str(synthetic_cases[0].parent), "--output", str(full), "--no-n4"]) == 0
    assert cli.main(["cache", str(full), "--output", str(small), "--bits", "8"]) == 0
    assert "3 cases" in capsys.readouterr().out
    for source in sampling.case_sources(full):
        target = small / source.name
        assert target.stat().st_size < source.stat().st_size
        a, b = sampling.load_case(source, None), sampling.load_case(target, None)
        assert b.images.dtype == np.float16 and b.images.shape == a.images.shape
        assert np.array_equal(a.brain, b.brain) and np.array_equal(a.truth, b.truth) and a.box == b.box
        assert np.array_equal(a.images[:, ~a.brain], b.images[:, ~b.brain])  # background untouched
        inside_a, inside_b = a.images[:, a.brain].astype(np.float32), b.images[:, b.brain].astype(np.float32)
        half_level = (inside_a.max(axis=1) - inside_a.min(axis=1)) / 255 / 2
        error = np.abs(inside_a - inside_b).max(axis=1)
        assert np.all(error <= half_level + 0.01), (error, half_level)  # + float16 rounding of the result
        assert np.all(error > 0)  # quantised, not a copy
    with pytest.raises(SystemExit, match="another --output"):
        cli.main(["cache", str(small), "--output", str(small), "--bits", "8"])
