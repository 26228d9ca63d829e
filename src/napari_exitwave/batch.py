"""Batch reconstruction: many focal series, headless, in parallel or on a Dask cluster.

Each input (a file holding a focal series, or a folder of single images) is read, reconstructed
and written to the output folder by :func:`napari_exitwave.results.write_result` (the same files
as ``reconstruct`` and ``watch``; earlier results are kept unless ``overwrite``). A failed input
is recorded, never stops the others. At the end :func:`summary_table` prints file, status, time, device and output, and
``summary.csv`` is written next to the results.

Backends (:func:`run_batch`):

- ``serial``: one after the other in this process.
- ``processes``: a :class:`concurrent.futures.ProcessPoolExecutor` with ``workers`` processes
  (spawned; the reconstruct function and reader must be picklable: module-level functions).
- ``dask``: a ``dask.distributed`` ``LocalCluster`` of ``workers`` workers, or an existing
  cluster when ``scheduler`` (an address such as ``tcp://host:8786``) or ``client`` is given.
  On a remote cluster the inputs and the output folder must be on a file system the workers
  share with this machine.

Each ONNX Runtime session uses all the cores it sees; with several workers on one machine,
``run_batch`` sets ``OMP_NUM_THREADS`` / ``NAPARI_EXITWAVE_THREADS`` in the workers to
``cores // workers`` so that they do not fight over the cores.
"""

from __future__ import annotations

import csv
import dataclasses
import glob
import logging
import os
import time
import traceback
from io import StringIO
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from .io import SERIES_EXTENSIONS
from .results import atomic_write_text, write_result

__all__ = ["BatchResult", "ModelReconstructor", "find_inputs", "reconstruct_file", "run_batch",
           "summary_table", "write_summary"]

log = logging.getLogger(__name__)


@dataclasses.dataclass
class BatchResult:
    """One row of the batch summary."""

    file: str
    status: str                 # "done" or "failed"
    time: float                 # s, read + reconstruct + write
    device: str | None = None
    output: str | None = None   # the <name>_exit_wave.npy written
    error: str | None = None
    worker: str | None = None   # host:pid that did it
    reduced_chi2: float | None = None  # the physics residual (None without the check)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def find_inputs(spec: str | os.PathLike | Sequence[str | os.PathLike],
                extensions: Iterable[str] = SERIES_EXTENSIONS) -> list[str]:
    """The inputs of a batch, sorted: a folder, a glob pattern, a file, or a list of those.

    In a folder, every file with one of ``extensions`` is one focal series, and so is every
    sub-folder that holds such files (a folder of single images, read by ``io.read_series``).
    """
    exts = tuple(e.lower() for e in extensions)
    if isinstance(spec, (list, tuple)):
        found: list[str] = []
        for s in spec:
            found.extend(find_inputs(s, exts))
        return sorted(dict.fromkeys(found))
    spec = os.fspath(spec)
    if os.path.isdir(spec):
        out = []
        for e in sorted(os.scandir(spec), key=lambda e: e.name):
            if e.name.startswith("."):
                continue
            if e.is_file() and e.name.lower().endswith(exts):
                out.append(e.path)
            elif e.is_dir() and any(f.lower().endswith(exts) for f in os.listdir(e.path)):
                out.append(e.path)
        return out
    if os.path.isfile(spec):
        return [spec]
    matches = sorted(glob.glob(spec, recursive=True))
    if not matches and not glob.has_magic(spec):
        raise FileNotFoundError(f"{spec!r} is neither a file, a folder nor a glob pattern "
                                "that matches anything; check the path (quote globs in the shell)")
    return [m for m in matches if os.path.isdir(m) or m.lower().endswith(exts)]


def _stems(inputs: Sequence[str]) -> list[str]:
    """Output names: the file stem, made unique with a counter where two inputs share it."""
    stems, seen = [], {}
    for p in inputs:
        base = Path(p).name if os.path.isdir(p) else Path(p).stem
        if base.lower().endswith(".ome"):
            base = base[:-4]
        n = seen.get(base, 0)
        seen[base] = n + 1
        stems.append(base if n == 0 else f"{base}_{n + 1}")
    return stems


class ModelReconstructor:
    """The default ``reconstruct_fn`` of batch and live: the network path of
    :func:`~napari_exitwave.reconstruct.reconstruct_series` with fixed options.

    ``kwargs`` go to ``reconstruct_series`` (``providers``, ``strict``, ``align``, ``overlap``...);
    ``tile="auto"`` (the default) leaves the tile to the inference's own rule. Picklable (holds
    only the model name and options), so it travels to batch worker processes; the ONNX session
    is built once per process, on first use (:func:`napari_exitwave.inference.get_reconstructor`
    caches it).
    """

    def __init__(self, model: str, tile: int | str = "auto", **kwargs: Any) -> None:
        self.model = model
        self.tile = tile
        self.kwargs = kwargs

    def __call__(self, series):
        from .reconstruct import reconstruct_series

        return reconstruct_series(series, self.model, tile=self.tile, **self.kwargs)


def _default_reader(path: str):
    from .io import read_series

    return read_series(path)


def reconstruct_file(path: str, out: str, stem: str | None = None,
                     reconstruct_fn: Callable | None = None, model: str | None = None,
                     reader: Callable | None = None, peaks: bool = False,
                     overwrite: bool = False, peak_options: dict | None = None) -> BatchResult:
    """Read, reconstruct and write one focal series; never raises (a failure is a result)."""
    import socket

    t0 = time.perf_counter()
    worker = f"{socket.gethostname()}:{os.getpid()}"
    stem = stem or Path(path).stem
    try:
        if reconstruct_fn is None and model is None:
            raise ValueError("give a model (name or path) or a reconstruct_fn")
        fn = reconstruct_fn or ModelReconstructor(model)
        series = (reader or _default_reader)(str(path))
        rec = fn(series)
        outputs = write_result(rec, out, stem, extra={"source": str(path)}, peaks=peaks,
                               overwrite=overwrite, **(peak_options or {}))
    except Exception as exc:  # noqa: BLE001 - reported in the summary, the batch goes on
        log.debug("batch: %s failed:\n%s", path, traceback.format_exc())
        return BatchResult(str(path), "failed", time.perf_counter() - t0,
                           error=f"{type(exc).__name__}: {exc}", worker=worker)
    return BatchResult(str(path), "done", time.perf_counter() - t0,
                       device=getattr(rec, "device", None), output=outputs["npy"],
                       worker=worker, reduced_chi2=_reduced_chi2(rec))


def _reduced_chi2(rec) -> float | None:
    """The physics residual's reduced chi-square of a reconstruction, if it was checked."""
    r = getattr(rec, "residual", None)
    return None if r is None else round(float(r.reduced_chi2), 4)


def _limit_threads(n: int) -> None:
    n = str(max(1, int(n)))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                "NAPARI_EXITWAVE_THREADS"):
        os.environ[var] = n


def run_batch(inputs: str | Sequence[str], out: str | os.PathLike, *, model: str | None = None,
              reconstruct_fn: Callable | None = None, reader: Callable | None = None,
              workers: int = 1, backend: str = "auto", scheduler: str | None = None,
              client: Any = None, processes: bool = True, peaks: bool = False,
              overwrite: bool = False, min_distance: float = 1.0, threshold: float = 0.1,
              progress: Callable[[BatchResult, int, int], None] | None = None,
              ) -> list[BatchResult]:
    """Reconstruct every input; return one :class:`BatchResult` per input, in input order.

    Parameters
    ----------
    inputs : str or sequence of str
        Passed to :func:`find_inputs` (a folder, a glob, files).
    out : path
        Output folder (created); receives the results and ``summary.csv``.
    model, reconstruct_fn : str, callable
        A model name/path for ``reconstruct_series`` (network path, default options), or any
        picklable ``fn(series) -> Reconstruction`` (e.g. ``live.ModelReconstructor(model,
        tile=1024, providers="cpu")``).
    reader : callable or None
        ``reader(path) -> FocalSeries``; default :func:`napari_exitwave.io.read_series`.
    workers : int
        Parallel workers on this machine (``processes`` or local ``dask``).
    backend : {"auto", "serial", "processes", "dask"}
        ``auto``: ``dask`` when a scheduler/client is given, ``processes`` when workers > 1,
        else ``serial``.
    scheduler, client : str, distributed.Client
        An existing Dask cluster to run on.
    processes : bool
        Local dask only: worker processes (True) or threads in this process (False).
    peaks : bool
        Also write the peak table and Argand plot of each input.
    overwrite : bool
        Replace earlier results of the same name (else such an input fails, its files kept).
    min_distance, threshold : float
        Peak finding (A; fraction of the maximum of ``|psi - 1|``).
    progress : callable or None
        ``progress(result, n_finished, n_total)`` after each input, in order of completion.
    """
    paths = find_inputs(inputs)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if not paths:
        log.warning("batch: no inputs found in %s", inputs)
        write_summary([], out)
        return []
    if reconstruct_fn is None and model is None:
        raise ValueError("give a model (name or path) or a reconstruct_fn")
    if backend == "auto":
        backend = ("dask" if (scheduler or client) else
                   "processes" if workers > 1 and len(paths) > 1 else "serial")
    if backend not in ("serial", "processes", "dask"):
        raise ValueError(f"backend must be 'auto', 'serial', 'processes' or 'dask', "
                         f"got {backend!r}")
    stems = _stems(paths)
    options = {"min_distance": min_distance, "threshold": threshold}
    jobs = [(p, str(out), s, reconstruct_fn, model, reader, peaks, overwrite, options)
            for p, s in zip(paths, stems)]
    results: dict[int, BatchResult] = {}

    def done(i: int, r: BatchResult) -> None:
        results[i] = r
        log.info("batch: [%d/%d] %s %s (%.2f s)", len(results), len(jobs), r.status, r.file,
                 r.time)
        if progress is not None:
            progress(r, len(results), len(jobs))

    if backend == "serial":
        for i, job in enumerate(jobs):
            done(i, reconstruct_file(*job))
    elif backend == "processes":
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        n = max(1, min(int(workers), len(jobs)))
        threads = max(1, (os.cpu_count() or 1) // n)
        with ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_limit_threads, initargs=(threads,)) as pool:
            futures = {pool.submit(reconstruct_file, *job): i for i, job in enumerate(jobs)}
            _collect(futures, as_completed(futures), jobs, done)
    else:
        _run_dask(jobs, done, workers=workers, scheduler=scheduler, client=client,
                  processes=processes)
    ordered = [results[i] for i in range(len(jobs))]
    write_summary(ordered, out)
    return ordered


def _collect(futures: dict, completed, jobs, done) -> None:
    """Hand each finished future's result to ``done`` (a worker that died is a failure)."""
    for fut in completed:
        i = futures[fut]
        try:
            r = fut.result()
        except Exception as exc:  # noqa: BLE001 - e.g. a worker killed (out of memory)
            r = BatchResult(jobs[i][0], "failed", float("nan"),
                            error=f"{type(exc).__name__}: {exc}")
        done(i, r)


def _run_dask(jobs, done, *, workers, scheduler, client, processes) -> None:
    from dask.distributed import Client, LocalCluster, as_completed

    own_client = own_cluster = None
    if client is None:
        if scheduler:
            client = own_client = Client(scheduler)
        else:
            n = max(1, min(int(workers), len(jobs)))
            threads = max(1, (os.cpu_count() or 1) // n)
            if processes:
                # environment of the worker processes, set before they start
                env = {v: str(threads) for v in ("OMP_NUM_THREADS", "NAPARI_EXITWAVE_THREADS")}
                own_cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                           dashboard_address=None, env=env)
            else:
                own_cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=False,
                                           dashboard_address=None)
            client = own_client = Client(own_cluster)
    try:
        futures = {client.submit(reconstruct_file, *job, pure=False, retries=0): i
                   for i, job in enumerate(jobs)}
        _collect(futures, as_completed(list(futures)), jobs, done)
    finally:
        if own_client is not None:
            own_client.close()
        if own_cluster is not None:
            own_cluster.close()


def summary_table(results: Sequence[BatchResult]) -> str:
    """A plain-text table: file, status, time (s), device, reduced chi-square of the physics
    residual, output; failures with their error."""
    rows = [("file", "status", "time_s", "device", "chi2_red", "output")]
    for r in results:
        chi2 = "-" if r.reduced_chi2 is None else f"{r.reduced_chi2:.3g}"
        rows.append((r.file, r.status, f"{r.time:.2f}", r.device or "-", chi2,
                     r.output or (r.error or "-")))
    widths = [max(len(row[k]) for row in rows) for k in range(5)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row[:5], widths)) + "  " + row[5]
             for row in rows]
    lines.insert(1, "-" * min(120, max(len(line) for line in lines)))
    n_ok = sum(r.status == "done" for r in results)
    total = sum(r.time for r in results if r.time == r.time)
    lines.append(f"{n_ok} done, {len(results) - n_ok} failed, {total:.1f} s of work")
    return "\n".join(lines)


def write_summary(results: Sequence[BatchResult], out: str | os.PathLike) -> Path:
    """Write ``summary.csv`` (one row per input) into ``out``; returns its path."""
    path = Path(out) / "summary.csv"
    buf = StringIO()
    w = csv.DictWriter(buf, fieldnames=[f.name for f in dataclasses.fields(BatchResult)])
    w.writeheader()
    for r in results:
        w.writerow(r.to_dict())
    atomic_write_text(path, buf.getvalue())
    return path
