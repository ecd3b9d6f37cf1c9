"""`braintumorcnn segment --scheduler`: every case one task on a Dask cluster.

The workers read the inputs and write the outputs themselves (atomically, as
in a local run), so the input and output folders must be on a filesystem
every worker sees under the same path; only names, paths, options and each
case's metrics row travel.  A case that fails is reported and the others go
on; finished cases are skipped (their metrics recomputed from the label map
on disk); the client reports a missing DICOM SEG with its reason and writes the
one `metrics.csv` at the end (batch.main).

`local:N` starts N worker processes of one thread each on this machine.
Dask's nanny starts workers with OMP_NUM_THREADS=1, so each task gives torch
(and ITK) its share of its host's cores: the cores over the task slots
(worker threads) on that host.
"""
from __future__ import annotations

import os
import sys
import time
import traceback
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from ..reading import io
from ..running import cases
from ..running.pipeline import SegmentationOptions
from ..writing.outputs import finished, output_paths
from .segment_case import Source, finished_row, run_case

LOCAL_PREFIX = "local:"
CONNECT_TIMEOUT = "30s"


def segment_cases(scheduler: str, jobs: Sequence[Tuple[str, Source]], output: Path,
                  options: SegmentationOptions, truth: Optional[Path], resample: bool,
                  overwrite: bool) -> Tuple[List[dict], List[str], int, List[str]]:
    """Run every job on the cluster at `scheduler`; returns (metrics rows in job order, failed names, skipped,
    names of cases delivered without their DICOM SEG)."""
    try:
        from distributed import Client, LocalCluster  # noqa: PLC0415 - optional extra
    except ImportError:
        raise SystemExit("--scheduler needs Dask: pip install 'braintumorcnn[cluster]'") from None
    cluster = None
    if scheduler.startswith(LOCAL_PREFIX):
        workers = scheduler[len(LOCAL_PREFIX):]
        if not workers.isdigit() or int(workers) < 1:
            raise SystemExit(f"--scheduler {scheduler}: expected local:N with N >= 1 worker processes")
        # memory_limit=0: no worker is restarted for memory; a case takes what it needs
        cluster = LocalCluster(n_workers=int(workers), threads_per_worker=1, processes=True,
                               memory_limit=0, dashboard_address=":0")
    try:
        client = Client(cluster if cluster is not None else scheduler, timeout=CONNECT_TIMEOUT)
    except OSError as exc:
        raise SystemExit(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None
    try:
        print(f"cluster: {scheduler}, {len(client.scheduler_info()['workers'])} workers"
              + (f", dashboard {client.dashboard_link}" if client.dashboard_link else ""), flush=True)
        return _run(client, jobs, output, options, truth, resample, overwrite)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _run(client, jobs, output, options, truth, resample, overwrite):
    from distributed import as_completed  # noqa: PLC0415 - optional extra

    # Workers have their own working folders: send absolute paths.
    output, truth = output.resolve(), truth.resolve() if truth else None
    if options.weights_path:
        options = replace(options, weights_path=str(Path(options.weights_path).resolve()))
    slots = task_slots(client.scheduler_info()["workers"])
    futures = [client.submit(segment_task, name, _absolute(source), output, options, truth, resample, overwrite,
                             slots, key=f"segment-{name}-{os.urandom(4).hex()}", pure=False)
               for name, source in jobs]
    index = {future.key: i for i, future in enumerate(futures)}
    results: List[Optional[dict]] = [None] * len(jobs)
    for done, future in enumerate(as_completed(futures), 1):
        i = index[future.key]
        try:
            result = future.result()
        except Exception as exc:  # the task never returned: its worker died or the cluster failed
            result = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
        results[i] = result
        _report(done, len(jobs), jobs[i][0], result)
    rows = [r["row"] for r in results if r.get("row")]
    failed = [name for (name, _), r in zip(jobs, results) if r["status"] == "failed"]
    skipped = sum(r["status"] == "done" for r in results)
    without_dicom_seg = [name for (name, _), r in zip(jobs, results) if r.get("missing")]
    return rows, failed, skipped, without_dicom_seg


def task_slots(workers: Dict[str, dict]) -> Dict[str, int]:
    """Worker address -> task slots (threads of all workers) on its host."""
    per_host = Counter()
    for info in workers.values():
        per_host[info["host"]] += info["nthreads"]
    return {address: per_host[info["host"]] for address, info in workers.items()}


def segment_task(name: str, source: Source, output: Path, options: SegmentationOptions,
                 truth: Optional[Path], resample: bool, overwrite: bool, slots: Dict[str, int]) -> dict:
    """One case on a worker: {"status": "segmented" | "done" | "failed", "row", "missing", "seconds", "worker",
    "threads", "error"}."""
    import SimpleITK as sitk  # noqa: PLC0415 - in the worker
    import torch  # noqa: PLC0415
    from distributed import get_worker  # noqa: PLC0415

    worker = get_worker()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    share = max(1, cores // slots.get(worker.address, worker.state.nthreads))
    torch.set_num_threads(share)  # the nanny's OMP_NUM_THREADS=1 would leave torch one core
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(share)  # ITK would take every core (N4)
    started = time.time()
    result = {"worker": worker.address, "threads": share}
    try:
        paths = output_paths(output, name)
        if finished(paths) and not overwrite:
            case = cases.read_case(source, truth=truth, resample=resample, name=name)
            row = finished_row(name, paths["provenance"], io.read_image(paths["labels"])[0], case)
            return {**result, "status": "done", "row": row}
        delivered = run_case(name, source, output, options, truth, resample)
        return {**result, "status": "segmented", "row": delivered.row, "missing": delivered.missing,
                "seconds": time.time() - started}
    except Exception as exc:  # a bad case must not stop the others
        error = str(exc) if isinstance(exc, (ValueError, OSError)) else traceback.format_exc()
        return {**result, "status": "failed", "error": error}


def _absolute(source: Source) -> Source:
    if isinstance(source, dict):
        return {key: Path(path).resolve() for key, path in source.items()}
    return Path(source).resolve()


def _report(done: int, total: int, name: str, result: dict) -> None:
    where = f" on {result['worker']}" if "worker" in result else ""
    if result["status"] == "segmented":
        print(f"[{done}/{total}] {name}: segmented in {result['seconds']:.1f} s{where} "
              f"({result['threads']} threads)", flush=True)
        for line in result["missing"]:
            print(f"  {line}", file=sys.stderr, flush=True)
    elif result["status"] == "done":
        print(f"[{done}/{total}] {name}: already done (use --overwrite to redo)", flush=True)
    else:
        print(f"[{done}/{total}] {name}: FAILED{where}: {result['error']}", file=sys.stderr, flush=True)
