"""The web app's logic without a browser (frontends/web/logic/): what a session may read, how uploads
are stored, which file is which sequence, the plan, the downloads and the end of a session."""
from __future__ import annotations

import importlib.util
import io as bytes_io
import os
import stat
import zipfile
from pathlib import Path

import numpy as np
import pytest

from BrainTumorCNNLib.synthetic import phantom
from BrainTumorCNNLib.frontends.web.logic import cases, downloads, job
from BrainTumorCNNLib.frontends.web.logic.security import (AccessError, ReadableRoots, check_listening,
                                                           safe_file_name)
from BrainTumorCNNLib.preparing.preparation import PreparationOptions
from BrainTumorCNNLib.reading import io

CLI_DEFAULT = PreparationOptions(register=False, resample=False)  # what `segment` does with image files


@pytest.fixture(scope="module")
def phantom_case(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("phantom")
    return phantom.write_phantom(phantom.make_phantom(0, "small"), folder)["T1c"].parent


def test_paths_outside_the_data_folders_are_refused(tmp_path, phantom_case):
    data = tmp_path / "data"
    data.mkdir()
    (data / "inside.nii.gz").write_bytes(b"x")
    (data / "link").symlink_to(phantom_case)
    roots = ReadableRoots.of([data])
    assert roots.check(Path("inside.nii.gz")) == (data / "inside.nii.gz").resolve()
    for attempt in ("../../etc/passwd", "/etc/passwd", str(data / "link"), str(data / ".." / "elsewhere")):
        with pytest.raises(AccessError, match="outside the folders this server may read"):
            roots.check(Path(attempt))
    with pytest.raises(AccessError, match="no such file"):
        roots.check(data / "absent")
    assert cases.list_cases(roots) == []  # the linked case is not offered either
    assert cases.list_cases(roots.with_folder(phantom_case.parent)) == [phantom_case.resolve()]


def test_another_host_needs_an_access_key():
    check_listening("127.0.0.1", None)
    check_listening("0.0.0.0", "key")
    with pytest.raises(ValueError, match="--access-key"):
        check_listening("0.0.0.0", None)


def test_uploaded_names_lose_folders_and_odd_characters():
    assert safe_file_name("../../etc/passwd") == "passwd"
    assert safe_file_name("C:\\cases\\x_t1ce.nii.gz") == "x_t1ce.nii.gz"
    assert safe_file_name("..hidden name;rm -rf.nii") == "hidden_name_rm_-rf.nii"
    with pytest.raises(AccessError):
        safe_file_name("../..")


def test_uploads_are_private_size_limited_and_unzipped_flat(tmp_path, phantom_case):
    files = [(p.name, p.read_bytes()) for p in sorted(phantom_case.glob("*.nii.gz"))]
    with pytest.raises(AccessError, match="limit"):
        cases.store_upload(files, tmp_path / "too-big", limit=1000)
    assert not (tmp_path / "too-big").exists()
    folder = cases.store_upload(files, tmp_path / "upload")
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    found = cases.case_files(folder, ReadableRoots.of([tmp_path]))
    assert {m: p.name for m, p in found.assignment.items()} == {
        "T1": "Phantom_00000_t1.nii.gz", "T1c": "Phantom_00000_t1ce.nii.gz", "T2": "Phantom_00000_t2.nii.gz",
        "FLAIR": "Phantom_00000_flair.nii.gz"}

    archive = bytes_io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("../../series/evil.dcm", b"DICM")
    zipped_folder = cases.store_upload([("study.zip", archive.getvalue())], tmp_path / "zipped")
    assert [p.name for p in zipped_folder.iterdir()] == ["00000_evil.dcm"]
    with pytest.raises(AccessError, match="zip"):
        cases.store_upload([("broken.zip", b"PK\x03\x04 truncated")], tmp_path / "broken")


def test_plan_and_reading_give_the_command_lines_words(tmp_path, phantom_case):
    roots = ReadableRoots.of([phantom_case.parent, tmp_path])
    found = cases.case_files(phantom_case, roots)
    assert cases.plan(found, CLI_DEFAULT) == "none: the four volumes are on the T1c grid"
    case = cases.read(found, roots, CLI_DEFAULT)
    assert case.name == phantom_case.name and case.images.shape[0] == 4

    flair = found.assignment["FLAIR"]
    with pytest.raises(AccessError, match="not one of the files of case"):
        cases.assign(found, "FLAIR", Path("/etc/passwd"))
    cases.assign(found, "FLAIR", None)
    assert cases.plan(found, CLI_DEFAULT) == "Choose a file for FLAIR."
    with pytest.raises(io.CaseError, match="missing FLAIR"):
        cases.read(found, roots, CLI_DEFAULT)

    # a 2-D image in a slot: the reader's words, as on the command line
    import SimpleITK as sitk
    flat = tmp_path / "flat"
    flat.mkdir()
    sitk.WriteImage(sitk.ReadImage(str(flair))[:, :, 10], str(flat / "x_flair.nii.gz"))
    found.candidates.append(flat / "x_flair.nii.gz")
    cases.assign(found, "FLAIR", flat / "x_flair.nii.gz")
    assert "expected a 3-D single-channel volume" in cases.plan(found, CLI_DEFAULT)
    with pytest.raises(io.CaseError, match="x_flair.nii.gz: expected a 3-D single-channel volume, got a 2-D image"):
        cases.read(found, roots, CLI_DEFAULT)

    # another grid: refused without resampling, planned with it
    moved = tmp_path / "moved"
    moved.mkdir()
    for path in phantom_case.glob("*.nii.gz"):
        image = sitk.ReadImage(str(path))
        if "_flair" in path.name:
            image = image[::2, ::2, :]
        sitk.WriteImage(image, str(moved / path.name))
    found = cases.case_files(moved, roots)
    assert cases.plan(found, CLI_DEFAULT).startswith("Cannot segment:")
    assert cases.plan(found, PreparationOptions(register=False, resample=True)) == \
        "resample FLAIR onto the T1c grid (as it lies: no registration)"


def test_models_are_offered_best_first_with_their_cross_validated_dice():
    from BrainTumorCNNLib.network import registry
    choices = job.model_choices()
    assert choices[0]["value"] == registry.default_model()
    assert {c["value"] for c in choices} == set(registry.shipped())
    assert "cross-validated Dice whole tumor" in choices[0]["title"]  # issue 34 point 8: as readers name them
    # one ranking and one label for every front end (the Slicer module's list is made from the same two)
    assert [c["title"] for c in choices] == [registry.card_label(spec) for spec in registry.ranked()]
    kinds = [("folds" in (spec.card() or {}).get("validation", {})) for spec in registry.ranked()]
    assert kinds == sorted(kinds, reverse=True)  # every cross-validated card before every other
    ensemble = registry.get("EnsembleCNN")
    assert registry.card_label(ensemble) == "EnsembleCNN (4-fold cross-validated Dice whole tumor 0.81, " \
                                            "tumor core 0.75, enhancing tumor 0.74)"


def test_downloads_are_the_command_lines_files(tmp_path, phantom_case):
    import slicer

    from BrainTumorCNNLib.writing import mrml
    roots = ReadableRoots.of([phantom_case.parent])
    case = cases.read(cases.case_files(phantom_case, roots), roots, CLI_DEFAULT)
    labels = np.zeros(case.geometry.shape, np.uint8)
    labels[30:34, 60:70, 60:70] = 2
    labels[31:33, 63:67, 63:67] = 4
    written = {kind: downloads.write(kind, tmp_path, case, labels, 4, "TwoPathCNN")
               for kind in ("segmentation", "labels", "preview")}
    assert {k: p.name for k, p in written.items()} == {"segmentation": f"{case.name}.seg.nrrd",
                                                       "labels": f"{case.name}_labels.nii.gz",
                                                       "preview": f"{case.name}_preview.png"}
    assert np.array_equal(io.read_image(written["labels"])[0], labels)
    scene = slicer.vtkMRMLScene()
    reference = mrml.add_volume_node(scene, case.images[1], case.geometry, "T1c")
    assert np.array_equal(mrml.labels_of(mrml.read_segmentation_file(written["segmentation"], scene), reference),
                          labels)
    with pytest.raises(ValueError, match="only for DICOM input"):
        downloads.write("dicom_seg", tmp_path, case, labels, 4, "TwoPathCNN")


def test_the_warnings_of_an_upload_name_the_files_sent_not_the_servers_folder(tmp_path, phantom_case):
    """A T2 with NaN voxels is read with a warning (as `segment` reads it); on the page it names the file
    as the user sent it, never the server's upload folder."""
    import SimpleITK as sitk
    files = []
    for path in sorted(phantom_case.glob("*.nii.gz")):
        if "_t2." in path.name:
            image = sitk.Cast(sitk.ReadImage(str(path)), sitk.sitkFloat32)
            image[5, 5, 5] = float("nan")
            sitk.WriteImage(image, str(tmp_path / path.name))
            path = tmp_path / path.name
        files.append((f"sent/{path.name}", path.read_bytes()))
    folder, given = cases.store_upload_named(files, tmp_path / "upload-private", 10 ** 9)
    roots = ReadableRoots.of([folder])
    found = cases.case_files(folder, roots)
    found.given_names = {roots.check(stored): sent for stored, sent in given.items()}
    case = cases.read(found, roots, CLI_DEFAULT)
    nan = [w for w in case.warnings if "NaN" in w]
    assert len(nan) == 1 and "_t2.nii.gz" in nan[0], case.warnings
    assert not any(str(tmp_path) in w for w in case.warnings), case.warnings


@pytest.mark.skipif(importlib.util.find_spec("trame_slicer") is None, reason="trame-slicer not installed")
def test_closing_a_session_removes_its_nodes_and_files(phantom_case):
    from trame_slicer.core import SlicerApp

    from BrainTumorCNNLib.frontends.web.logic.session import Session
    session = Session(SlicerApp(), ReadableRoots.of([]))
    found = session.upload([(p.name, p.read_bytes()) for p in phantom_case.glob("*.nii.gz")])
    folder = session.folder
    assert found.source.parent == folder and stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    nodes = session.scene.GetNumberOfNodes()
    session.show_case(cases.read(found, session.roots, CLI_DEFAULT))
    assert session.scene.GetNumberOfNodes() > nodes
    session.close()
    assert not folder.exists() and session.case is None
    assert session.scene.GetNumberOfNodes() == nodes


@pytest.mark.skipif(importlib.util.find_spec("highdicom") is None, reason="highdicom not installed (the [dicom] extra)")
def test_a_zip_of_dicom_series_opens_as_a_study_and_downloads_a_dicom_seg(tmp_path):
    import pydicom
    import SimpleITK as sitk
    from conftest import write_synthetic_case
    from scanner_like import write_series

    case = write_synthetic_case(tmp_path / "cases", shape=(8, 48, 48))
    archive = bytes_io.BytesIO()
    study = tmp_path / "study"
    with zipfile.ZipFile(archive, "w") as zipped:
        series = [("t1", "t1_se_tra"), ("t1ce", "t1_se_tra_post_gd"), ("t2", "t2_tse_tra"), ("flair", "t2_flair_tra")]
        for number, (suffix, description) in enumerate(series, 2):
            folder = write_series(sitk.ReadImage(str(case / f"{case.name}_{suffix}.nii.gz")), study / f"S{number:02d}",
                                  description, number, "1.2.826.0.1.3680043.8.498.7")
            for path in folder.iterdir():
                zipped.write(path, f"{folder.name}/{path.name}")
    folder = cases.store_upload([("study.zip", archive.getvalue())], tmp_path / "upload")
    roots = ReadableRoots.of([tmp_path / "upload"])
    found = cases.case_files(folder, roots)
    assert found.kind == "dicom"
    read = cases.read(found, roots, CLI_DEFAULT)
    assert sorted(read.series) == ["FLAIR", "T1", "T1c", "T2"]
    labels = (io.read_image(case / f"{case.name}_seg.nii.gz")[0]).astype(np.uint8)
    path = downloads.write("dicom_seg", tmp_path / "out", read, labels, 4, "TwoPathCNN")
    seg = pydicom.dcmread(path)
    assert seg.Modality == "SEG" and len(seg.SegmentSequence) == 3


def test_a_reply_to_a_closed_page_is_dropped_and_other_task_errors_still_reported(caplog):
    """wslink's unawaited send tasks fail with a connection reset when the page closes mid-reply: that
    is no server error (CI saw it printed as a traceback); any other failure of a task still is."""
    import asyncio
    import gc
    import logging

    from aiohttp.client_exceptions import ClientConnectionResetError

    from BrainTumorCNNLib.frontends.web.logic.security import drop_replies_to_closed_pages

    async def send(error: Exception) -> None:
        raise error

    async def leave_unretrieved(error: Exception) -> None:
        drop_replies_to_closed_pages(asyncio.get_running_loop())
        task = asyncio.ensure_future(send(error))
        await asyncio.sleep(0.01)
        assert task.done()
        del task
        gc.collect()  # an unretrieved task's error is reported when the task is collected

    for error in (ClientConnectionResetError("Cannot write to closing transport"), ValueError("a real bug")):
        caplog.clear()
        with caplog.at_level(logging.INFO):
            asyncio.run(leave_unretrieved(error))
        unretrieved = [r for r in caplog.records if "exception was never retrieved" in r.getMessage()]
        dropped = [r for r in caplog.records if "a reply to a page that had closed was dropped" in r.getMessage()]
        if isinstance(error, ConnectionResetError):
            assert dropped and not unretrieved
        else:
            assert unretrieved and not dropped and unretrieved[0].exc_info[1] is error


def test_a_call_replying_to_a_closed_page_logs_one_line_not_tracebacks(caplog):
    """CI saw it: the page closed between wslink's check and its reply, so wslink logged the reset as an
    exception (three records, inside its `except`) and aiohttp logged it again with the request's error.
    Those are dropped for one info line; the same loggers still report any other error."""
    import asyncio
    import logging

    import wslink.protocol
    from aiohttp.client_exceptions import ClientConnectionResetError

    from BrainTumorCNNLib.frontends.web.logic.security import drop_replies_to_closed_pages

    loop = asyncio.new_event_loop()
    drop_replies_to_closed_pages(loop)
    drop_replies_to_closed_pages(loop)  # installed once however often the server becomes ready
    loop.close()
    wslink_log, aiohttp_log = wslink.protocol.logger, logging.getLogger("aiohttp.server")
    for error in (ClientConnectionResetError("Cannot write to closing transport"), ValueError("a real bug")):
        caplog.clear()
        with caplog.at_level(logging.INFO):
            try:
                raise error
            except Exception as handled:  # as wslink's onCompleteMessage does
                wslink_log.error("Exception raised")
                wslink_log.error(repr(handled))
                wslink_log.error("Traceback ...")
            aiohttp_log.error("Error handling request", exc_info=error)
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        dropped = [r for r in caplog.records if "a reply to a page that had closed was dropped" in r.getMessage()]
        if isinstance(error, ConnectionResetError):
            assert not errors and len(dropped) == 1
        else:
            assert len(errors) == 4 and not dropped
