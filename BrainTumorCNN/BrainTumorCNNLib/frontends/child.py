"""Work in a child Python process, for a GUI that must outlive it (the Slicer module): a segmentation, and a
prior scan compared with the current one.

The parent (`SegmentationProcess`, `ComparisonProcess`) writes its inputs as NRRD and its job as JSON into a
private temporary folder, and starts `python -m BrainTumorCNNLib.frontends.child FOLDER` with the interpreter it
is given (in Slicer: PythonSlicer, Slicer's own Python).  The child prepares and segments the case as the
worker thread does (task.prepare_and_segment), or registers and compares the two scans as `braintumorcnn
compare` does, tells its progress as one JSON object a line on its stdout, and writes its outputs into the
folder as one group, result.json last (atomic.atomic_paths).  The parent reads them only once the child has
exited 0, then deletes the folder.  So Cancel kills the process at once, even inside a native call (N4,
registration, a convolution); a child that raises, crashes or is killed gives an error that says so and no
result; and torch's settings (its thread count) change only in the child.
"""
from __future__ import annotations

import dataclasses
import faulthandler
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import traceback
import typing
from pathlib import Path
from typing import IO, Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np
import SimpleITK as sitk

from ..atomic import atomic_paths
from ..modalities import MODALITIES
from ..network import registry
from ..preparing import brain_extraction, preparation
from ..reading import io
from ..reading.geometry import Geometry, to_image
from ..scoring import longitudinal
from ..writing.comparison import write_comparison
from ..running import pipeline, task
from ..running.inference import Progress

JOB = "job.json"  # the options, from the parent
RESULT = "result.json"  # what the child made, written last: its presence marks the outputs complete
LABELS = "labels.nrrd"
PROBABILITIES = "probabilities.nrrd"  # (Z, Y, X) vectors of one probability per class
UNCERTAINTY = "uncertainty.nrrd"  # the entropy map, float32 (Segmentation.uncertainty_map)
LOG = "child.log"  # the child's stderr (and anything printed), for the error message of a crash
LOG_TAIL = 20000  # characters of it an error carries


class ChildFailed(RuntimeError):
    """The segmentation process ended without a result; `details` is its traceback or the end of its log."""

    def __init__(self, message: str, details: str = ""):
        super().__init__(message)
        self.details = details


class ChildProcess(task.Followed):
    """A job in a child process, followed by a thread of this process that touches neither a scene nor a GUI:
    progress, cancel, wait, finished, cancelled, error, as SegmentationTask has them, so a GUI polls either
    alike.  A subclass writes its job into the folder (`write_job`) and reads its outputs back (`_read_outputs`,
    once the child exited 0 with result.json written).  `interpreter`: the command that starts Python (in
    Slicer, PythonSlicer; sys.executable elsewhere)."""

    WHAT = "job"  # what the process does, in its error messages

    def _start(self, write_job: Callable[[Path], None], interpreter: Sequence[str]) -> None:
        self.progress = (0.0, "starting")  # replaced whole, so read without a lock
        self.error: Optional[BaseException] = None
        self._cancelled = False
        self._done = False
        self.folder = Path(tempfile.mkdtemp(prefix="braintumorcnn-"))  # readable by this user only
        try:
            write_job(self.folder)
            with open(self.folder / LOG, "wb") as log:
                # stdin stays open and unused: the child exits when it closes, so it never outlives this process
                self.process = subprocess.Popen([*interpreter, "-m", __name__, str(self.folder)], cwd=self.folder,
                                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                                env=_child_environment())
        except BaseException:
            shutil.rmtree(self.folder, ignore_errors=True)
            raise
        self._thread = threading.Thread(target=self._follow, name=f"BrainTumorCNN {self.WHAT}", daemon=True)
        self._thread.start()

    def cancel(self) -> None:
        """Kill the child now; `finished` turns true as soon as it is gone and its folder deleted."""
        self._cancelled = True
        self.process.kill()

    @property
    def cancelled(self) -> bool:
        return self._cancelled and not self._done

    def _read_outputs(self) -> None:
        raise NotImplementedError

    def _follow(self) -> None:
        reported = None
        try:
            for line in self.process.stdout:
                try:
                    message = json.loads(line)
                except ValueError:
                    continue  # not a line of ours (the child sends its own only)
                if "progress" in message:
                    self.progress = tuple(message["progress"])
                elif "error" in message:
                    reported = message["error"]
            code = self.process.wait()
            if self._cancelled:
                return
            if reported is not None:
                raise ChildFailed(f"{reported['kind']}: {reported['message']}", reported["traceback"])
            if code != 0 or not (self.folder / RESULT).is_file():
                raise ChildFailed(_ended(self.WHAT, code), _log_tail(self.folder / LOG))
            self._read_outputs()
            self._done = True
        except ChildFailed as exc:
            self.error = exc
        except BaseException as exc:  # noqa: B036 - handed to the main thread
            self.error = ChildFailed(f"the {self.WHAT}'s results could not be read back: {exc}",
                                     traceback.format_exc())
        finally:
            self.process.stdin.close()
            self.process.stdout.close()
            self.process.wait()
            shutil.rmtree(self.folder, ignore_errors=True)


class SegmentationProcess(ChildProcess):
    """`task.prepare_and_segment` in a child process; `result`, `prepared` and `warnings` as SegmentationTask
    has them.  `probabilities` / `keep_prepared` / `uncertainty`: bring back the probabilities / the volumes
    preparation put on the T1c grid / the uncertainty map (the confidence figure always comes back).  `inputs`:
    {sequence: name} for the result's provenance record (mrml.inputs_of for volume nodes)."""

    WHAT = "segmentation"

    def __init__(self, volumes: task.Volumes, options: pipeline.SegmentationOptions,
                 prepare: preparation.PreparationOptions = preparation.PreparationOptions(register=False,
                                                                                          resample=False),
                 names: Optional[Mapping[str, str]] = None, probabilities: bool = False,
                 keep_prepared: bool = False, inputs: Optional[Mapping[str, str]] = None,
                 interpreter: Sequence[str] = (sys.executable,), uncertainty: bool = False):
        names = dict(names or {m: m for m in MODALITIES})
        preparation.plan({m: g for m, (_, g) in volumes.items()}, prepare, names)  # a refused plan raises here
        self.geometry = volumes[preparation.REFERENCE][1]  # the result's grid
        self.warnings: List[str] = []
        self.prepared: Optional[preparation.Prepared] = None
        self.result: Optional[pipeline.Segmentation] = None
        self._start(lambda folder: _write_job(folder, volumes, options, prepare, names, probabilities,
                                              keep_prepared, inputs, uncertainty), interpreter)

    def _read_outputs(self) -> None:
        made = json.loads((self.folder / RESULT).read_text(encoding="utf-8"))
        labels = _read(self.folder / LABELS)
        if labels.shape != self.geometry.shape:
            raise ValueError(f"labels of shape {labels.shape} for a T1c grid of {self.geometry.shape}")
        probabilities = (np.moveaxis(_read(self.folder / PROBABILITIES), -1, 0)
                         if (self.folder / PROBABILITIES).is_file() else None)
        uncertainty = _read(self.folder / UNCERTAINTY) if (self.folder / UNCERTAINTY).is_file() else None
        steps = [preparation.Step(sequence, action) for sequence, action in made["steps"]]
        kept = {s.sequence: _read(self.folder / _prepared_file(s.sequence)) for s in steps
                if (self.folder / _prepared_file(s.sequence)).is_file()}
        extraction = made["extraction"] and _build(brain_extraction.ExtractionReport, made["extraction"])
        self.prepared = preparation.Prepared(kept, self.geometry, steps)
        self.warnings = made["warnings"]
        self.result = pipeline.Segmentation(labels, probabilities, made["num_classes"], made["model_name"],
                                            made["card"], made["cleanup"], extraction, made["provenance"],
                                            confidence=made["confidence"], uncertainty=uncertainty)


class ComparisonProcess(ChildProcess):
    """A prior scan compared with the current one in a child process, as `braintumorcnn compare` compares them
    (longitudinal.compare_scans: the prior's T1c registered onto the current T1c unless `register` is False),
    its files written into `output` (writing/comparison.py; the child writes them all or none).  Each scan is
    (name, labels, grid, T1c voxels), the labels on the T1c's grid.  Once done: `table` and `caveats`
    (longitudinal.table / caveats, as the reader sees them), `difference` (the difference map on the current
    grid), `paths` (the files written), `prior` and `current` (the names)."""

    WHAT = "comparison"

    def __init__(self, prior: longitudinal.Scan, current: longitudinal.Scan, output: Path, register: bool = True,
                 interpreter: Sequence[str] = (sys.executable,)):
        self.prior, self.current = prior[0], current[0]
        self.geometry = current[2]  # the difference map's grid
        self.output = Path(output)
        if not self.output.is_dir():
            raise NotADirectoryError(f"{self.output}: no such folder to save the comparison in")
        for name in (self.prior, self.current):
            if not name or any(sep in name for sep in "/\\") or name in (".", ".."):
                raise ValueError(f"{name!r} cannot name the comparison's files: rename the volume")
        self.table: List[Dict[str, str]] = []
        self.caveats: List[str] = []
        self.paths: Dict[str, Path] = {}
        self.difference: Optional[np.ndarray] = None
        self._start(lambda folder: _write_comparison_job(folder, prior, current, self.output, register),
                    interpreter)

    def _read_outputs(self) -> None:
        made = json.loads((self.folder / RESULT).read_text(encoding="utf-8"))
        self.table, self.caveats = made["table"], made["caveats"]
        self.paths = {key: Path(path) for key, path in made["paths"].items()}
        difference, geometry = io.read_image(self.paths["difference"])
        if geometry.differences(self.geometry):
            raise ValueError(f"{self.paths['difference']} is not on the current T1c's grid")
        self.difference = difference.astype(np.uint8)


def _child_environment() -> dict:
    """This environment, with this library importable and the models folder this process uses."""
    env = dict(os.environ)
    library_parent = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join([library_parent] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env["BRAINTUMORCNN_MODELS"] = str(registry.MODELS_DIR)
    return env


def _write_job(folder: Path, volumes: task.Volumes, options: pipeline.SegmentationOptions,
               prepare: preparation.PreparationOptions, names: Mapping[str, str], probabilities: bool,
               keep_prepared: bool, inputs: Optional[Mapping[str, str]], uncertainty: bool = False) -> None:
    for sequence, (array, geometry) in volumes.items():
        sitk.WriteImage(to_image(array, geometry), str(folder / f"{sequence}.nrrd"))
    job = {"kind": "segment", "options": dataclasses.asdict(options), "preparation": dataclasses.asdict(prepare),
           "names": dict(names), "probabilities": probabilities, "keep_prepared": keep_prepared,
           "inputs": dict(inputs or {}), "uncertainty": uncertainty}
    (folder / JOB).write_text(json.dumps(job), encoding="utf-8")


def _write_comparison_job(folder: Path, prior: longitudinal.Scan, current: longitudinal.Scan, output: Path,
                          register: bool) -> None:
    for role, (_, labels, geometry, t1c) in (("prior", prior), ("current", current)):
        sitk.WriteImage(to_image(np.asarray(labels, np.uint8), geometry), str(folder / f"{role} labels.nrrd"))
        sitk.WriteImage(to_image(np.asarray(t1c, np.float32), geometry), str(folder / f"{role} T1c.nrrd"))
    job = {"kind": "compare", "prior": prior[0], "current": current[0], "output": str(output), "register": register}
    (folder / JOB).write_text(json.dumps(job), encoding="utf-8")


def _ended(what: str, code: int) -> str:
    if code < 0:
        name = signal.Signals(-code).name
        why = {"SIGKILL": " (out of memory, or killed from outside)", "SIGSEGV": " (a crash in native code)"}
        return f"the {what} process was stopped by {name}{why.get(name, '')}"
    return f"the {what} process ended with exit status {code} without a result"


def _log_tail(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")[-LOG_TAIL:]
    except OSError:
        return ""


def _read(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def _prepared_file(sequence: str) -> str:
    return f"{sequence} on T1c grid.nrrd"


def _build(kind, data: dict):
    """A dataclass of `kind` from its dataclasses.asdict form read back from JSON (tuples came back as lists)."""
    hints = typing.get_type_hints(kind)
    return kind(**{f.name: _value(hints[f.name], data[f.name]) for f in dataclasses.fields(kind)
                   if f.init and f.name in data})


def _value(hint, value):
    if value is None:
        return None
    for candidate in typing.get_args(hint) if typing.get_origin(hint) is typing.Union else (hint,):
        if dataclasses.is_dataclass(candidate) and isinstance(value, dict):
            return _build(candidate, value)
        if typing.get_origin(candidate) is tuple and isinstance(value, list):
            return tuple(value)
    return value


# --------------------------------------------------------------------------- the child
def run_job(folder: Path, progress: Progress) -> None:
    """Do the job of `folder` and write its outputs there, result.json last."""
    job = json.loads((folder / JOB).read_text(encoding="utf-8"))
    {"segment": _segment, "compare": _compare}[job["kind"]](folder, job, progress)


def _segment(folder: Path, job: dict, progress: Progress) -> None:
    """Segment the case of `folder` (written by _write_job)."""
    volumes = {}
    for sequence in MODALITIES:
        image = sitk.ReadImage(str(folder / f"{sequence}.nrrd"))
        volumes[sequence] = (sitk.GetArrayFromImage(image), Geometry.from_image(image))
    prepared, warnings, result = task.prepare_and_segment(
        volumes, _build(pipeline.SegmentationOptions, job["options"]),
        _build(preparation.PreparationOptions, job["preparation"]), job["names"], progress, lambda: False,
        job["inputs"])
    images = {LABELS: to_image(result.labels.astype(np.uint8), prepared.geometry)}
    if job["probabilities"]:
        images[PROBABILITIES] = prepared.geometry.apply(sitk.GetImageFromArray(
            np.ascontiguousarray(np.moveaxis(result.probabilities, 0, -1)), isVector=True))
    if job.get("uncertainty"):
        images[UNCERTAINTY] = to_image(result.uncertainty_map(), prepared.geometry)
    if job["keep_prepared"]:
        for step in prepared.steps:
            images[_prepared_file(step.sequence)] = to_image(prepared.volumes[step.sequence], prepared.geometry)
    made = {"model_name": result.model_name, "num_classes": result.num_classes, "card": result.card,
            "cleanup": str(result.cleanup_report) if result.cleanup_report else None,
            "extraction": result.extraction and dataclasses.asdict(result.extraction), "warnings": warnings,
            "steps": [[s.sequence, s.action] for s in prepared.steps], "provenance": result.provenance,
            "confidence": result.confidence}
    with atomic_paths([folder / name for name in images] + [folder / RESULT]) as paths:
        for path, image in zip(paths, images.values()):
            sitk.WriteImage(image, str(path))
        paths[-1].write_text(json.dumps(made), encoding="utf-8")


def _compare(folder: Path, job: dict, progress: Progress) -> None:
    """Compare the scans of `folder` (written by _write_comparison_job); the comparison's files go into the
    job's output folder, all or none, before result.json names them."""
    scans = []
    for role in ("prior", "current"):
        labels = sitk.ReadImage(str(folder / f"{role} labels.nrrd"))
        scans.append((job[role], sitk.GetArrayFromImage(labels), Geometry.from_image(labels),
                      _read(folder / f"{role} T1c.nrrd")))
    progress(0.05, "registering the prior's T1c onto the current T1c" if job["register"] else "comparing")
    comparison, prior_image = longitudinal.compare_scans(*scans[0], *scans[1], register=job["register"])
    progress(0.8, f"writing the comparison into {job['output']}")
    _, current_labels, current_grid, current_t1c = scans[1]
    paths = write_comparison(Path(job["output"]), comparison, current_grid, prior_image, current_t1c, current_labels)
    made = {"table": longitudinal.table(comparison), "caveats": longitudinal.caveats(comparison),
            "paths": {key: str(path) for key, path in paths.items()}}
    with atomic_paths([folder / RESULT]) as (path,):
        path.write_text(json.dumps(made), encoding="utf-8")


def _progress_channel() -> IO[str]:
    """The real stdout, for the progress lines alone; file descriptor 1 (print, native libraries' output) is
    sent to stderr, the parent's log, so nothing else can break a line."""
    channel = os.fdopen(os.dup(1), "w", encoding="utf-8")
    sys.stdout.flush()
    os.dup2(2, 1)
    return channel


def _exit_with_parent(folder: Path) -> None:
    """End this process when the parent closes stdin or dies, deleting the job's folder (the patient's
    images) that the parent can no longer delete: a killed Slicer leaves nothing behind."""
    def watch():
        while os.read(0, 4096):  # the raw descriptor: sys.stdin's lock would stop the interpreter's exit
            pass
        shutil.rmtree(folder, ignore_errors=True)
        os._exit(1)

    threading.Thread(target=watch, name="parent watch", daemon=True).start()


def main(argv: Optional[List[str]] = None) -> int:
    folder = Path((sys.argv[1:] if argv is None else argv)[0])
    faulthandler.enable()  # a crash in native code leaves the Python stack in the log
    channel = _progress_channel()
    _exit_with_parent(folder)

    def send(**message) -> None:
        channel.write(json.dumps(message) + "\n")
        channel.flush()

    try:
        run_job(folder, lambda fraction, text: send(progress=[fraction, text]))
    except Exception as exc:  # the parent shows it; its traceback goes with it
        send(error={"kind": type(exc).__name__, "message": str(exc), "traceback": traceback.format_exc()})
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
