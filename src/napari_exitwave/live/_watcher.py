"""The folder watcher: poll, read complete files, group them, reconstruct, write, remember."""

from __future__ import annotations

import bisect
import dataclasses
import logging
import re
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
from psygnal import Signal

from ..io import SERIES_EXTENSIONS
from ..results import OutputError, remove_temporaries, write_result
from ._files import FileTracker, backoff
from ._grouping import (Grouping, Item, group_by_count, group_by_defocus, group_by_pattern,
                        pattern_key, safe_name)
from ._ledger import Ledger

__all__ = ["FolderWatcher", "SeriesResult", "IMAGE_EXTENSIONS"]

log = logging.getLogger("napari_exitwave.live")

IMAGE_EXTENSIONS = SERIES_EXTENSIONS
"""File types the watcher picks up by default (case-insensitive)."""


@dataclasses.dataclass
class SeriesResult:
    """What happened to one focal series (passed to ``series_done`` / ``series_failed``)."""

    series_id: str
    files: list[str]
    status: str                      # "done" or "failed"
    reconstruction: Any = None
    outputs: list[str] = dataclasses.field(default_factory=list)
    elapsed: float = 0.0             # s, read excluded: reconstruct + write
    error: str | None = None


def _default_reader(path: str):
    from ..io import read_image

    return read_image(path)  # one image per file is the usual case in live mode


def combine(items: Sequence[Item]):
    """Stack the images of several files (each a FocalSeries) into one FocalSeries."""
    series = [it.series for it in items]
    first = series[0]
    if not dataclasses.is_dataclass(first):
        raise TypeError("the reader must return a FocalSeries dataclass")
    meta = dict(getattr(first, "metadata", {}) or {})
    meta["files"] = [it.name for it in items]
    if len(series) == 1:
        return dataclasses.replace(first, metadata=meta)
    images = np.concatenate([np.asarray(s.images, dtype=np.float32).reshape(
        (-1,) + np.shape(s.images)[-2:]) for s in series])
    defoci: list | None = []
    for s in series:
        d = getattr(s, "defocus", None)
        if d is None:
            defoci = None
            break
        defoci.extend(float(v) for v in d)
    samplings = {getattr(s, "sampling", None) for s in series}
    if len(samplings) > 1:
        meta["sampling_mismatch"] = sorted(str(v) for v in samplings)
    source = ";".join(str(getattr(s, "source", it.name)) for s, it in zip(series, items))
    return dataclasses.replace(first, images=images, defocus=defoci, metadata=meta,
                               source=source)


class FolderWatcher:
    """Watch ``folder``, reconstruct every complete focal series into ``out``.

    Parameters
    ----------
    folder : path
        Where the acquisition software writes its images (not searched recursively).
    out : path
        Output folder (created). Holds the results (:func:`napari_exitwave.results.write_result`),
        ``live-ledger.json`` and ``errors.jsonl``.
    grouping : Grouping or None
        How images form series (default: every 3 images).
    reconstruct_fn : callable or None
        ``reconstruct_fn(series) -> Reconstruction``; default
        :class:`napari_exitwave.batch.ModelReconstructor` of ``model``.
    model : str or None
        Model name or path, for the default ``reconstruct_fn``.
    poll_interval : float
        s between polls in :meth:`run`.
    settle : float or None
        s a file's modification time must be old before it is read (default: ``poll_interval``).
    stack_settle : float or None
        s a file holding several images must stay unchanged after it was read before it is
        grouped (a stable page count; default ``max(2, 3 * settle)``).
    reader : callable or None
        ``reader(path) -> FocalSeries``; default :func:`napari_exitwave.io.read_image`.
    extensions : sequence of str
        File suffixes to pick up.
    max_read_attempts : int
        Failed reads of an unchanged file (with back-off) before it is reported as corrupt.
    peaks : bool
        Also write the peak table and Argand plot of each series.
    min_distance, threshold : float
        Peak finding (A; fraction of the maximum of ``|psi - 1|``).

    Signals (psygnal; emitted in the watcher's thread): ``series_done(SeriesResult)``,
    ``series_failed(SeriesResult)``, ``file_error(name, message)``, ``error(message)`` (output
    folder or ledger trouble: the watch goes on and retries), ``status(message)``.
    """

    series_done = Signal(object)
    series_failed = Signal(object)
    file_error = Signal(str, str)
    error = Signal(str)
    status = Signal(str)

    def __init__(self, folder, out, grouping: Grouping | None = None,
                 reconstruct_fn: Callable | None = None, *, model: str | None = None,
                 poll_interval: float = 1.0, settle: float | None = None,
                 stack_settle: float | None = None, reader: Callable | None = None,
                 extensions: Iterable[str] = IMAGE_EXTENSIONS,
                 max_read_attempts: int = 5, peaks: bool = False, min_distance: float = 1.0,
                 threshold: float = 0.1) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise FileNotFoundError(f"watch folder {str(self.folder)!r} does not exist or is not "
                                    "a folder; create it or check the path")
        self.out = Path(out)
        try:
            self.out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # retried when the first result is written
            log.error("live watcher: cannot create %s (%s)", self.out, exc)
        self.grouping = grouping or Grouping()
        if reconstruct_fn is None:
            if model is None:
                raise ValueError("give a model (name or path) or a reconstruct_fn")
            from ..batch import ModelReconstructor

            reconstruct_fn = ModelReconstructor(model)
        self.reconstruct_fn = reconstruct_fn
        self.poll_interval = float(poll_interval)
        self.settle = self.poll_interval if settle is None else float(settle)
        self.stack_settle = (max(2.0, 3 * self.settle) if stack_settle is None
                             else float(stack_settle))
        self.reader = reader or _default_reader
        self.extensions = tuple(e.lower() for e in extensions)
        self.max_read_attempts = max(1, int(max_read_attempts))
        self.peaks = bool(peaks)
        self.peak_options = {"min_distance": float(min_distance), "threshold": float(threshold)}
        self._pattern = re.compile(self.grouping.pattern) if self.grouping.pattern else None

        self._lock = threading.RLock()
        self._tracker = FileTracker(self.folder, self.extensions, self.settle,
                                    self.max_read_attempts, self.reader, self._report,
                                    lambda n, m: self._emit(self.file_error, n, m))
        self._files = self._tracker.files         # name -> FileState, until in the ledger
        self._arrived: list[Item] = []            # count/defocus: in order of arrival
        self._by_key: dict[str, list[Item]] = {}  # pattern mode
        self._last_arrival = time.monotonic()
        self._queue: deque[tuple[str, list[Item]]] = deque()
        self._unwritten: dict[str, Any] = {}      # series id -> reconstruction not yet on disk
        self._write_failures = 0
        self._write_retry_at = 0.0
        left = remove_temporaries(self.out)  # of a watcher killed while writing
        if left:
            log.info("live watcher: removed %d temporaries of an earlier run", len(left))
        self._ledger = Ledger(self.out, self.folder, self.grouping.to_dict())
        self.ledger_path: Path = self._ledger.path
        self.errors_path: Path = self._ledger.errors_path
        series = self._ledger.series.values()
        self.n_done = sum(1 for s in series if s["status"] == "done")
        self.n_failed = sum(1 for s in series if s["status"] != "done")

    # ------------------------------------------------------------------ state
    @property
    def finished_series(self) -> dict[str, dict]:
        """The ledger's series entries (id -> files, status, outputs, ...)."""
        return dict(self._ledger.series)

    @property
    def pending(self) -> int:
        """Series waiting to be reconstructed (or written)."""
        return len(self._queue)

    @property
    def idle_for(self) -> float:
        """s since the last file arrived (or since the watcher started)."""
        return time.monotonic() - self._last_arrival

    @property
    def busy(self) -> bool:
        """True while files are being written / retried or series wait to be reconstructed."""
        return bool(self._queue) or self._tracker.busy or self._ledger.dirty

    @property
    def output_blocked(self) -> bool:
        """True while writing is paused after the output folder refused a result."""
        return time.monotonic() < self._write_retry_at

    def _emit(self, signal, *args) -> None:
        try:
            signal.emit(*args)
        except Exception:  # noqa: BLE001 - a listener must never stop the watch
            log.exception("live watcher: a callback raised")

    def _report(self, kind: str, name: str, message: str) -> None:
        self._ledger.report(kind, name, message)

    # ------------------------------------------------------------------ polling
    def scan(self) -> int:
        """One poll of the folder: read the files that became complete and group them.

        Returns the number of series that became complete (queued) in this poll.
        """
        with self._lock:
            self._ledger.flush()
            arrived, withdrawn = self._tracker.poll(self._ledger.files)
            for item in withdrawn:
                self._withdraw(item)
            for item in arrived:
                self._arrive(item)
            n_before = len(self._queue)
            self._group()
            return len(self._queue) - n_before

    def _withdraw(self, item: Item) -> None:
        if item in self._arrived:
            self._arrived.remove(item)
        for items in self._by_key.values():
            if item in items:
                items.remove(item)

    def _arrive(self, item: Item) -> None:
        self._last_arrival = time.monotonic()
        if self.grouping.mode != "pattern":
            bisect.insort(self._arrived, item, key=lambda it: it.order)
            return
        found = pattern_key(self._pattern, item.name)
        if found is None:
            log.info("live watcher: %s does not match the pattern; ignored", item.name)
            self._drop([item], None, "ignored")
            return
        item.key, item.index = found
        sid = safe_name(item.key)
        if sid in self._ledger.series:
            log.warning("live watcher: %s belongs to series %s, which is already finished; "
                        "ignored", item.name, sid)
            self._drop([item], sid, "ignored")
            return
        self._by_key.setdefault(item.key, []).append(item)

    def _drop(self, items: Sequence[Item], sid: str | None, status: str) -> None:
        self._ledger.mark_files(items, sid, status)
        for it in items:
            self._files.pop(it.name, None)

    # ------------------------------------------------------------------ grouping
    def _groupable(self, item: Item) -> bool:
        if item.n_images <= 1 or item.error is not None:
            return True
        return time.time() - item.mtime_ns / 1e9 >= self.stack_settle  # stable page count

    def _barrier(self) -> tuple | None:
        """Order key of the oldest file that holds its place but cannot be grouped yet.

        A file whose read failed (a stalled writer) and a stack whose page count is not yet
        known to be stable; count and defocus grouping never look past it.
        """
        waiting = self._tracker.waiting()
        waiting += [it.order for it in self._arrived if not self._groupable(it)]
        return min(waiting) if waiting else None

    def _queue_series(self, sid: str, items: list[Item]) -> None:
        for it in items:
            self._files[it.name].grouped = sid
        self._queue.append((sid, items))

    def _group(self) -> None:
        g = self.grouping
        if g.mode == "pattern":
            blocked = {it.key for items in self._by_key.values() for it in items
                       if not self._groupable(it)}
            for n, fs in self._files.items():
                if fs.attempted and fs.item is None and (k := pattern_key(self._pattern, n)):
                    blocked.add(k[0])
            ready = {k: v for k, v in self._by_key.items() if k not in blocked}
            groups, rest = group_by_pattern(ready, g.n_images)
            self._by_key = {**{k: v for k, v in self._by_key.items() if k in blocked}, **rest}
            for key, items in groups:
                self._queue_series(safe_name(key), items)
            return
        barrier = self._barrier()
        k = len(self._arrived) if barrier is None else \
            bisect.bisect_left(self._arrived, barrier, key=lambda it: it.order)
        usable, later = self._arrived[:k], self._arrived[k:]
        if g.mode == "count":
            groups, rest = group_by_count(usable, g.n_images)
        else:
            close = (not later and barrier is None and g.timeout is not None
                     and self.idle_for >= g.timeout)
            groups, rest, skipped = group_by_defocus(usable, g.n_images, g.defocus_tolerance,
                                                     close)
            for it in skipped:
                if it.error is None:
                    msg = ("no defocus in its metadata; group by count or pattern instead "
                           "(--group-by count)")
                    self._report("file", it.name, msg)
                    self._emit(self.file_error, it.name, msg)
            if skipped:
                self._drop(skipped, None, "skipped")
        self._arrived = rest + later
        for items in groups:
            self._queue_series(self._ledger.next_id(), items)

    # ------------------------------------------------------------------ processing
    def process_pending(self, max_series: int | None = None) -> list[SeriesResult]:
        """Reconstruct queued series (all, or at most ``max_series``), in order of arrival.

        Stops early while the output folder refuses results (:attr:`output_blocked`).
        """
        results = []
        while self._queue and not self.output_blocked \
                and (max_series is None or len(results) < max_series):
            with self._lock:
                sid, items = self._queue.popleft()
            result = self._process(sid, items)
            if result is not None:
                results.append(result)
        return results

    def _process(self, sid: str, items: list[Item]) -> SeriesResult | None:
        names = [it.name for it in items]
        t0 = time.perf_counter()
        self._emit(self.status, f"reconstructing {sid} ({len(names)} files)")
        bad = [it for it in items if it.error is not None]
        try:
            if bad:
                raise RuntimeError("unreadable file(s) in the series: "
                                   + ", ".join(f"{it.name} ({it.error})" for it in bad))
            rec = self._unwritten.get(sid)
            if rec is None:
                rec = self._unwritten[sid] = self.reconstruct_fn(combine(items))
            # the ledger decides what is done: a leftover of a killed run is replaced
            written = write_result(rec, self.out, sid, peaks=self.peaks, overwrite=True,
                                   **self.peak_options, extra={
                "series_id": sid, "files": names, "folder": str(self.folder),
                "grouping": self.grouping.to_dict()})
        except (OutputError, OSError) as exc:
            if not bad and sid in self._unwritten:
                return self._defer(sid, items, exc)
            return self._fail(sid, items, exc, t0)
        except Exception as exc:  # noqa: BLE001 - one failed series never stops the watch
            return self._fail(sid, items, exc, t0)
        self._unwritten.pop(sid, None)
        self._write_failures = 0
        outputs = list(written.values())
        outputs.insert(0, outputs.pop(list(written).index("npy")))  # the .npy first
        result = SeriesResult(sid, names, "done", reconstruction=rec, outputs=outputs,
                              elapsed=time.perf_counter() - t0)
        self._finish(result, items)
        self.n_done += 1
        log.info("live watcher: %s done in %.2f s -> %s", sid, result.elapsed, outputs[0])
        self._emit(self.series_done, result)
        return result

    def _defer(self, sid: str, items: list[Item], exc: Exception) -> None:
        """The output folder refused the result: keep it, retry later with back-off."""
        self._write_failures += 1
        wait = backoff(self.poll_interval, self._write_failures)
        self._write_retry_at = time.monotonic() + wait
        with self._lock:
            self._queue.appendleft((sid, items))
        why = str(exc) if isinstance(exc, OutputError) else f"cannot write {sid}: {exc}"
        msg = f"{why}; the result is kept and written again in {wait:.1f} s"
        self._report("output", sid, msg)
        self._emit(self.error, msg)
        return None

    def _fail(self, sid: str, items: list[Item], exc: Exception, t0: float) -> SeriesResult:
        self._unwritten.pop(sid, None)
        msg = f"{type(exc).__name__}: {exc}"
        names = [it.name for it in items]
        self._report("series", sid, f"{msg} (files: {', '.join(names)})")
        result = SeriesResult(sid, names, "failed", elapsed=time.perf_counter() - t0,
                              error=msg)
        self._finish(result, items)
        self.n_failed += 1
        self._emit(self.series_failed, result)
        return result

    def _finish(self, result: SeriesResult, items: list[Item]) -> None:
        with self._lock:
            self._ledger.finish(result, items)
            for it in items:
                self._files.pop(it.name, None)

    # ------------------------------------------------------------------ loops
    def poll_once(self) -> list[SeriesResult]:
        """Scan the folder once and reconstruct every series that is complete."""
        self.scan()
        return self.process_pending()

    def iter_results(self, stop_event: threading.Event | None = None, *,
                     max_polls: int | None = None, idle_exit: float | None = None
                     ) -> Iterator[SeriesResult]:
        """The watch loop as a generator: poll every ``poll_interval`` s, yield each result.

        A napari ``thread_worker`` can run it as is. Stops when ``stop_event`` is set (between
        two series), after ``max_polls`` polls, or once nothing arrived for ``idle_exit`` s and
        nothing is pending. Never raises for trouble with files or the output folder: that is
        reported (``error``, ``errors.jsonl``) and retried.
        """
        stop_event = stop_event or threading.Event()
        n = 0
        while not stop_event.is_set():
            t0 = time.monotonic()
            try:
                self.scan()
            except Exception as exc:  # noqa: BLE001 - the watch goes on
                log.exception("live watcher: poll failed")
                self._emit(self.error, f"poll failed: {type(exc).__name__}: {exc}")
            while self._queue and not stop_event.is_set() and not self.output_blocked:
                yield from self.process_pending(max_series=1)
            n += 1
            if max_polls is not None and n >= max_polls:
                break
            if idle_exit is not None and self.idle_for >= idle_exit and not self.busy:
                break
            stop_event.wait(max(0.0, self.poll_interval - (time.monotonic() - t0)))

    def run(self, stop_event: threading.Event | None = None, *,
            max_polls: int | None = None, idle_exit: float | None = None) -> None:
        """Run :meth:`iter_results` to its end (see there). A restart on the same output
        folder resumes where this one stopped."""
        self._emit(self.status, f"watching {self.folder}")
        for _ in self.iter_results(stop_event, max_polls=max_polls, idle_exit=idle_exit):
            pass
        self._emit(self.status, f"stopped ({self.n_done} done, {self.n_failed} failed)")
