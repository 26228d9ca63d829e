"""Live reconstruction: watch the folder the acquisition software writes into.

A :class:`FolderWatcher` polls a folder, waits until each new file is complete, groups the
arriving images into focal series, reconstructs every complete series and writes the result
into an output folder. It is Qt-free; the napari widget (``_qt/live_widget.py``) and the CLI
(``napari-exitwave watch``) are thin layers on top.

How a file is judged complete
-----------------------------
Polling, not file-system events, so that it works the same on local disks and network shares
(SMB/NFS deliver events late or not at all). A file is read only when

1. its size and modification time are the same in two consecutive polls, its size is not 0,
   and its modification time is at least ``settle`` seconds old, and
2. it opens cleanly with the reader, and its size and modification time did not change while
   it was read.

A file that is stable but does not open is retried on the next polls (a writer may have paused);
after ``max_read_attempts`` failures it is reported as corrupt (log + ``errors.jsonl``) and
skipped. Every file is used once: a file that changes after it was read is ignored (with a
warning). Temporary names (``.*``, ``*.tmp``, ``*.part``, ``*~``) are ignored, so writers that
write-then-rename are handled too.

Grouping into focal series (:class:`Grouping`)
----------------------------------------------
- ``count``: every ``n_images`` consecutive images (in order of arrival) form one series. A file
  holding a stack counts with all of its images. A corrupt file keeps its place (one image), so
  its series is reported as failed and the following series stay aligned.
- ``pattern``: a regular expression is searched in each file name; its group ``series`` (or its
  first group) names the series, an optional group ``index`` orders the images within it. A
  series is complete when it has ``n_images`` images.
- ``defocus``: a series ends when the defocus in the metadata resets (goes back, or repeats the
  previous value), when it has ``n_images`` images (if given), or when no new image arrived for
  ``timeout`` seconds (and it has at least two images).

Nothing is dropped: files stay on disk until they are grouped, and complete series wait in a
queue (in order) until they are reconstructed.

Resuming
--------
The output folder holds a ledger (``live-ledger.json``, rewritten atomically after every
series) listing every file that was consumed and every series that finished or failed. Stopping
and restarting the watcher on the same output folder skips what is in the ledger and regroups
the files that were not yet consumed.

Outputs per series (see :func:`write_reconstruction`): ``<series>.npy`` (complex64 exit wave),
``<series>.tif`` (:func:`napari_exitwave.io.write_exit_wave_tiff`: real and imaginary part as
two float32 channels, calibrated; :func:`napari_exitwave.io.read_exit_wave` reads it back),
``<series>.json`` (sampling in A/px, method, model, device, timings, warnings, source files) and,
with ``peaks``, ``<series>_peaks.csv``.
"""

from __future__ import annotations

import bisect
import dataclasses
import json
import logging
import os
import re
import threading
import time
from collections import deque
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from .io import json_default

__all__ = [
    "Grouping",
    "SeriesResult",
    "FolderWatcher",
    "ModelReconstructor",
    "auto_tile",
    "write_reconstruction",
    "atomic_write_text",
    "IMAGE_EXTENSIONS",
]

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".tif", ".tiff", ".dm3", ".dm4", ".npy")
"""File types the watcher picks up by default (case-insensitive)."""

LEDGER_NAME = "live-ledger.json"
ERRORS_NAME = "errors.jsonl"
_TEMP_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", "~")


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# --------------------------------------------------------------------------- small helpers
def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (temporary file in the same folder + rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _atomic_save(path: Path, save: Callable[[Path], None]) -> None:
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.{threading.get_ident()}.tmp{path.suffix}")
    save(tmp)
    os.replace(tmp, path)


def _safe_name(text: str) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("._")
    return name or "series"


def write_reconstruction(rec: Any, out: str | os.PathLike, stem: str,
                         extra: dict | None = None, peaks: bool = False,
                         min_distance: float = 1.0, threshold: float = 0.1) -> list[str]:
    """Write one reconstruction as ``<stem>.npy``, ``<stem>.tif`` and ``<stem>.json`` in ``out``.

    ``rec`` is a :class:`napari_exitwave.reconstruct.Reconstruction` (or anything with an
    ``exit_wave`` attribute, or a bare complex array). With ``peaks``, the atomic columns of
    ``|psi - 1|`` (``min_distance`` in A, ``threshold`` relative to the maximum) go to
    ``<stem>_peaks.csv`` (:func:`napari_exitwave.peaks.peak_table`). Every file is written
    atomically, so a reader of the output folder never sees a half-written result. Returns the
    paths written (the ``.npy`` first).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    wave = np.asarray(getattr(rec, "exit_wave", rec)).astype(np.complex64, copy=False)
    if wave.ndim != 2:
        raise ValueError(f"exit wave must be 2-D (ny, nx), got shape {wave.shape}")
    sampling = getattr(rec, "sampling", None)
    meta: dict[str, Any] = {
        "sampling": sampling,
        "units": "A/px",
        "shape": list(wave.shape),
        "method": getattr(rec, "method", None),
        "model_name": getattr(rec, "model_name", None),
        "device": getattr(rec, "device", None),
        "timings": dict(getattr(rec, "timings", {}) or {}),
        "warnings": list(getattr(rec, "warnings", []) or []),
        "written": _now_iso(),
    }
    shifts = getattr(rec, "shifts", None)
    if shifts is not None:
        meta["shifts_px"] = np.asarray(shifts).tolist()
    meta.update(extra or {})
    written = []
    if peaks:
        from napari_exitwave.peaks import find_peaks, peak_table, write_peaks_csv

        s = float(sampling) if sampling else 1.0
        pos = find_peaks(np.abs(wave - 1), sampling=s, min_distance=min_distance,
                         threshold=threshold)
        csv_path = out / f"{stem}_peaks.csv"
        _atomic_save(csv_path, lambda p: write_peaks_csv(peak_table(wave, pos, s), p))
        meta["n_peaks"] = int(len(pos))
        written.append(str(csv_path))

    npy = out / f"{stem}.npy"
    tif = out / f"{stem}.tif"
    js = out / f"{stem}.json"
    _atomic_save(npy, lambda p: np.save(p, wave))
    from napari_exitwave.io import write_exit_wave_tiff

    _atomic_save(tif, lambda p: write_exit_wave_tiff(p, wave, sampling, metadata=meta))
    atomic_write_text(js, json.dumps(meta, indent=2, default=json_default))
    return [str(npy), str(tif), str(js)] + written


class _Callbacks:
    """A minimal signal: ``connect(fn)``, ``disconnect(fn)``, ``emit(*args)``.

    Callbacks run in the watcher's thread; an exception in one is logged, never stops the watch.
    """

    def __init__(self) -> None:
        self._fns: list[Callable] = []

    def connect(self, fn: Callable) -> Callable:
        self._fns.append(fn)
        return fn

    def disconnect(self, fn: Callable) -> None:
        self._fns.remove(fn)

    def emit(self, *args: Any) -> None:
        for fn in list(self._fns):
            try:
                fn(*args)
            except Exception:  # noqa: BLE001 - a listener must never stop the watch
                log.exception("live watcher: a callback raised")


# --------------------------------------------------------------------------- grouping
@dataclasses.dataclass
class Grouping:
    """How arriving images are grouped into focal series.

    Parameters
    ----------
    mode : {"count", "pattern", "defocus"}
        See the module docstring.
    n_images : int or None
        Images per series (``count`` and ``pattern``: required; ``defocus``: an optional maximum).
    pattern : str or None
        Regular expression for ``pattern`` mode, searched in the file name; its named group
        ``series`` (else its first group) is the series name, an optional group ``index``
        orders the images. Example: ``r"(?P<series>.+)_(?P<index>\\d+)\\.tif$"``.
    timeout : float or None
        ``defocus`` mode: close a pending series with >= 2 images after this many seconds
        without a new image (None: wait for the reset).
    defocus_tolerance : float
        A, two defoci closer than this count as equal (a reset).
    """

    mode: str = "count"
    n_images: int | None = 3
    pattern: str | None = None
    timeout: float | None = None
    defocus_tolerance: float = 1.0

    def __post_init__(self) -> None:
        if self.mode not in ("count", "pattern", "defocus"):
            raise ValueError(f"grouping mode must be 'count', 'pattern' or 'defocus', "
                             f"got {self.mode!r}")
        if self.mode in ("count", "pattern") and (self.n_images is None or self.n_images < 1):
            raise ValueError(f"grouping by {self.mode} needs n_images >= 1, got {self.n_images}")
        if self.mode == "pattern":
            if not self.pattern:
                raise ValueError("grouping by pattern needs a regular expression (pattern=...)")
            rx = re.compile(self.pattern)
            if "series" not in rx.groupindex and rx.groups < 1:
                raise ValueError(f"pattern {self.pattern!r} must have a group naming the series: "
                                 "(?P<series>...) or a first (...) group")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class _Item:
    """One complete file, read (or unreadable), waiting to be grouped."""

    name: str
    size: int
    mtime_ns: int
    series: Any = None           # the FocalSeries read from it, None if unreadable
    error: str | None = None     # why it could not be read
    n_images: int = 1
    defocus: list | None = None
    key: str | None = None       # pattern mode: the series name
    index: Any = None            # pattern mode: order inside the series


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


@dataclasses.dataclass
class _FileState:
    size: int
    mtime_ns: int
    stable: int = 0          # consecutive polls with the same (size, mtime)
    failures: int = 0        # failed reads while stable
    consumed: bool = False   # read and handed to the grouping (or reported corrupt)
    warned: bool = False     # "changed after it was read" was logged


def _default_reader(path: str):
    from napari_exitwave.io import read_image

    return read_image(path)  # one image per file is the usual case in live mode


def _combine(items: Sequence[_Item]):
    """Stack the images of several files (each a FocalSeries) into one FocalSeries."""
    series = [it.series for it in items]
    first = series[0]
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
    meta = dict(getattr(first, "metadata", {}) or {})
    meta["files"] = [it.name for it in items]
    if len(samplings) > 1:
        meta["sampling_mismatch"] = sorted(str(v) for v in samplings)
    source = ";".join(str(getattr(s, "source", it.name)) for s, it in zip(series, items))
    fields = {"images": images, "defocus": defoci, "metadata": meta, "source": source}
    if len(series) == 1 and dataclasses.is_dataclass(first):
        return dataclasses.replace(first, metadata=meta)
    if dataclasses.is_dataclass(first):
        return dataclasses.replace(first, **fields)
    raise TypeError("the reader must return a FocalSeries dataclass")


# --------------------------------------------------------------------------- the watcher
class FolderWatcher:
    """Watch ``folder``, reconstruct every complete focal series into ``out``.

    Parameters
    ----------
    folder : path
        Where the acquisition software writes its images (not searched recursively).
    out : path
        Output folder (created). Holds the results, ``live-ledger.json`` and ``errors.jsonl``.
    grouping : Grouping or None
        How images form series (default: every 3 images).
    reconstruct_fn : callable or None
        ``reconstruct_fn(series) -> Reconstruction``. Default:
        ``reconstruct_series(series, model)`` from :mod:`napari_exitwave.reconstruct`.
    model : str or None
        Model name or path, for the default ``reconstruct_fn``.
    poll_interval : float
        s between polls in :meth:`run`.
    settle : float or None
        s a file's modification time must be old before it is read (default: ``poll_interval``).
    reader : callable or None
        ``reader(path) -> FocalSeries``; default :func:`napari_exitwave.io.read_image` (a
        single image or a stack per file).
    extensions : sequence of str
        File suffixes to pick up.
    max_read_attempts : int
        Failed reads of a stable file before it is reported as corrupt.
    peaks : bool
        Also write ``<series>_peaks.csv`` (atomic columns of ``|psi - 1|``).

    Events (``.connect(fn)``): ``series_done(SeriesResult)``, ``series_failed(SeriesResult)``,
    ``file_error(name, message)``, ``status(message)``.
    """

    def __init__(self, folder, out, grouping: Grouping | None = None,
                 reconstruct_fn: Callable | None = None, *, model: str | None = None,
                 poll_interval: float = 1.0, settle: float | None = None,
                 reader: Callable | None = None,
                 extensions: Iterable[str] = IMAGE_EXTENSIONS,
                 max_read_attempts: int = 3, peaks: bool = False) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise FileNotFoundError(f"watch folder {str(self.folder)!r} does not exist or is not "
                                    "a folder; create it or check the path")
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.grouping = grouping or Grouping()
        if reconstruct_fn is None:
            if model is None:
                raise ValueError("give a model (name or path) or a reconstruct_fn")
            reconstruct_fn = ModelReconstructor(model)
        self.reconstruct_fn = reconstruct_fn
        self.poll_interval = float(poll_interval)
        self.settle = self.poll_interval if settle is None else float(settle)
        self.reader = reader or _default_reader
        self.extensions = tuple(e.lower() for e in extensions)
        self.max_read_attempts = int(max_read_attempts)
        self.peaks = bool(peaks)
        self._pattern = re.compile(self.grouping.pattern) if self.grouping.pattern else None

        self.series_done = _Callbacks()
        self.series_failed = _Callbacks()
        self.file_error = _Callbacks()
        self.status = _Callbacks()

        self._lock = threading.RLock()
        self._files: dict[str, _FileState] = {}
        self._arrived: list[_Item] = []            # count/defocus: in order of arrival
        self._by_key: dict[str, list[_Item]] = {}  # pattern mode
        self._last_arrival = time.monotonic()
        self._queue: deque[tuple[str, list[_Item]]] = deque()
        self._ledger = self._load_ledger()
        self.n_done = sum(1 for s in self._ledger["series"].values() if s["status"] == "done")
        self.n_failed = sum(1 for s in self._ledger["series"].values() if s["status"] != "done")

    # ------------------------------------------------------------------ ledger
    @property
    def ledger_path(self) -> Path:
        return self.out / LEDGER_NAME

    @property
    def errors_path(self) -> Path:
        return self.out / ERRORS_NAME

    def _load_ledger(self) -> dict:
        fresh = {"version": 1, "folder": str(self.folder.resolve()),
                 "grouping": self.grouping.to_dict(), "next_index": 1, "files": {}, "series": {}}
        if not self.ledger_path.exists():
            return fresh
        try:
            ledger = json.loads(self.ledger_path.read_text(encoding="utf-8"))
            if ledger.get("version") != 1:
                raise ValueError(f"unknown ledger version {ledger.get('version')!r}")
        except (OSError, ValueError) as exc:
            bad = self.ledger_path.with_suffix(".json.bad")
            os.replace(self.ledger_path, bad)
            log.warning("live watcher: could not read %s (%s); moved it to %s and start afresh",
                        self.ledger_path, exc, bad)
            return fresh
        if ledger.get("grouping") != self.grouping.to_dict():
            log.warning("live watcher: resuming with a different grouping (%s, was %s); "
                        "finished series are kept", self.grouping.to_dict(), ledger.get("grouping"))
            ledger["grouping"] = self.grouping.to_dict()
        return ledger

    def _save_ledger(self) -> None:
        atomic_write_text(self.ledger_path, json.dumps(self._ledger, indent=1,
                                                       default=json_default))

    def _report_error(self, kind: str, name: str, message: str) -> None:
        log.error("live watcher: %s %s: %s", kind, name, message)
        entry = {"time": _now_iso(), "kind": kind, "name": name, "error": message}
        with open(self.errors_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry, default=json_default) + "\n")

    @property
    def finished_series(self) -> dict[str, dict]:
        """The ledger's series entries (id -> files, status, outputs, ...)."""
        return dict(self._ledger["series"])

    @property
    def pending(self) -> int:
        """Series waiting to be reconstructed."""
        return len(self._queue)

    # ------------------------------------------------------------------ polling
    def _candidates(self) -> list[os.DirEntry]:
        entries = []
        try:
            it = os.scandir(self.folder)
        except OSError as exc:  # share gone for a moment: try again next poll
            log.warning("live watcher: cannot list %s: %s", self.folder, exc)
            return []
        with it:
            for e in it:
                name = e.name
                if name.startswith(".") or name.lower().endswith(_TEMP_SUFFIXES):
                    continue
                if not name.lower().endswith(self.extensions):
                    continue
                try:
                    if e.is_file():
                        entries.append(e)
                except OSError:
                    continue
        return entries

    def scan(self) -> int:
        """One poll of the folder: read the files that became complete and group them.

        Returns the number of series that became complete (queued) in this poll.
        """
        with self._lock:
            now = time.time()
            ready: list[tuple[int, str, os.stat_result]] = []
            for e in self._candidates():
                name = e.name
                try:
                    st = e.stat()
                except OSError:
                    continue
                if name in self._ledger["files"]:
                    continue  # consumed in this or an earlier run
                fs = self._files.get(name)
                changed = fs is None or (fs.size, fs.mtime_ns) != (st.st_size, st.st_mtime_ns)
                if fs is not None and fs.consumed:
                    # a file is used once: reading a rewritten file again would put an
                    # extra image into the grouping
                    if changed and not fs.warned:
                        fs.warned = True
                        log.warning("live watcher: %s changed after it was read; the new "
                                    "content is ignored", name)
                    continue
                if changed:
                    self._files[name] = _FileState(st.st_size, st.st_mtime_ns)
                    continue
                fs.stable += 1
                if st.st_size == 0 or now - st.st_mtime_ns / 1e9 < self.settle:
                    continue
                ready.append((st.st_mtime_ns, name, st))
            n_before = len(self._queue)
            for _, name, st in sorted(ready):
                self._read(name, st)
            self._group()
            return len(self._queue) - n_before

    def _read(self, name: str, st: os.stat_result) -> None:
        fs = self._files[name]
        path = self.folder / name
        try:
            series = self.reader(str(path))
            images = np.asarray(series.images)
            if images.ndim not in (2, 3) or images.size == 0:
                raise ValueError(f"expected an image or a stack of images, got shape "
                                 f"{images.shape}")
            st2 = path.stat()
            if (st2.st_size, st2.st_mtime_ns) != (st.st_size, st.st_mtime_ns):
                fs.size, fs.mtime_ns, fs.stable = st2.st_size, st2.st_mtime_ns, 0
                return  # it changed while we read it: not complete after all
        except Exception as exc:  # noqa: BLE001 - any failure means "not readable (yet)"
            fs.failures += 1
            if fs.failures < self.max_read_attempts:
                log.info("live watcher: %s does not open yet (%s); retrying", name, exc)
                return
            msg = f"{type(exc).__name__}: {exc}"
            fs.consumed = True
            self._report_error("file", name, f"could not be read after {fs.failures} "
                               f"attempts, skipped ({msg})")
            self.file_error.emit(name, msg)
            self._arrive(_Item(name, st.st_size, st.st_mtime_ns, error=msg))
            return
        fs.consumed = True
        n = 1 if images.ndim == 2 else images.shape[0]
        d = getattr(series, "defocus", None)
        item = _Item(name, st.st_size, st.st_mtime_ns, series=series, n_images=n,
                     defocus=None if d is None else [float(v) for v in d])
        self._arrive(item)

    def _arrive(self, item: _Item) -> None:
        self._last_arrival = time.monotonic()
        g = self.grouping
        if g.mode == "pattern":
            m = self._pattern.search(item.name)
            if m is None:
                log.info("live watcher: %s does not match the pattern; ignored", item.name)
                self._mark_files([item], series_id=None, status="ignored")
                return
            key = m.group("series") if "series" in self._pattern.groupindex else m.group(1)
            item.key = key
            if "index" in self._pattern.groupindex:
                idx = m.group("index")
                item.index = int(idx) if idx is not None and idx.isdigit() else idx
            sid = _safe_name(key)
            if sid in self._ledger["series"]:
                log.warning("live watcher: %s belongs to series %s, which is already finished; "
                            "ignored", item.name, sid)
                self._mark_files([item], series_id=sid, status="ignored")
                return
            self._by_key.setdefault(key, []).append(item)
        else:
            # keep the order of arrival (modification time, then name), whatever the read order
            bisect.insort(self._arrived, item, key=lambda it: (it.mtime_ns, it.name))

    def _next_id(self) -> str:
        i = int(self._ledger.get("next_index", 1))
        self._ledger["next_index"] = i + 1
        return f"series_{i:04d}"

    def _barrier(self) -> tuple[int, str] | None:
        """(mtime, name) of the oldest file that is stable but did not open yet.

        Count and defocus grouping never look past it, so that a file which needs a retry (or
        turns out corrupt) keeps its place in the order of arrival.
        """
        waiting = [(fs.mtime_ns, name) for name, fs in self._files.items()
                   if fs.failures and not fs.consumed]
        return min(waiting) if waiting else None

    def _group(self) -> None:
        g = self.grouping
        barrier = self._barrier()
        if g.mode == "count":
            while True:
                total, k = 0, 0
                for k, it in enumerate(self._arrived, start=1):
                    if barrier is not None and (it.mtime_ns, it.name) > barrier:
                        break  # total stays short: wait for the file that needs a retry
                    total += it.n_images
                    if total >= g.n_images:
                        break
                if total < g.n_images:
                    return
                items, self._arrived = self._arrived[:k], self._arrived[k:]
                self._queue.append((self._next_id(), items))
        elif g.mode == "pattern":
            for key in list(self._by_key):
                items = self._by_key[key]
                if sum(it.n_images for it in items) >= g.n_images:
                    items.sort(key=lambda it: (it.index is None, str(type(it.index)),
                                               it.index if it.index is not None else 0, it.name))
                    del self._by_key[key]
                    self._queue.append((_safe_name(key), items))
        else:
            self._group_defocus()

    def _group_defocus(self) -> None:
        g = self.grouping
        tol = g.defocus_tolerance
        current: list[_Item] = []
        defoci: list[float] = []
        closed: list[list[_Item]] = []
        barrier = self._barrier()
        later: list[_Item] = []
        for it in self._arrived:
            if barrier is not None and (it.mtime_ns, it.name) > barrier:
                later.append(it)
                continue
            if it.error is not None or it.defocus is None:
                if it.error is None:
                    msg = ("no defocus in its metadata; group by count or pattern instead "
                           "(--group-by count)")
                    self._report_error("file", it.name, msg)
                    self.file_error.emit(it.name, msg)
                self._mark_files([it], series_id=None, status="skipped")
                continue
            reset = False
            for d in it.defocus:
                if defoci:
                    step = d - defoci[-1]
                    direction = (defoci[-1] - defoci[-2]) if len(defoci) >= 2 else None
                    if abs(step) < tol or (direction is not None and step * direction < 0):
                        reset = True
                        break
            if reset and current:
                closed.append(current)
                current, defoci = [], []
            current.append(it)
            defoci.extend(it.defocus)
            if g.n_images and len(defoci) >= g.n_images:
                closed.append(current)
                current, defoci = [], []
        idle = time.monotonic() - self._last_arrival
        if current and not later and g.timeout is not None and idle >= g.timeout \
                and len(defoci) >= 2:
            closed.append(current)
            current = []
        self._arrived = current + later
        for items in closed:
            self._queue.append((self._next_id(), items))

    def _mark_files(self, items: Sequence[_Item], series_id: str | None, status: str) -> None:
        for it in items:
            self._ledger["files"][it.name] = {"size": it.size, "mtime_ns": it.mtime_ns,
                                              "series": series_id, "status": status}
        self._save_ledger()

    # ------------------------------------------------------------------ processing
    def process_pending(self, max_series: int | None = None) -> list[SeriesResult]:
        """Reconstruct queued series (all, or at most ``max_series``), in order of arrival."""
        results = []
        while self._queue and (max_series is None or len(results) < max_series):
            with self._lock:
                sid, items = self._queue.popleft()
            results.append(self._process(sid, items))
        return results

    def _process(self, sid: str, items: list[_Item]) -> SeriesResult:
        names = [it.name for it in items]
        t0 = time.perf_counter()
        self.status.emit(f"reconstructing {sid} ({len(names)} files)")
        bad = [it for it in items if it.error is not None]
        try:
            if bad:
                raise RuntimeError("unreadable file(s) in the series: "
                                   + ", ".join(f"{it.name} ({it.error})" for it in bad))
            series = _combine(items)
            rec = self.reconstruct_fn(series)
            outputs = write_reconstruction(rec, self.out, sid, peaks=self.peaks, extra={
                "series_id": sid, "files": names, "folder": str(self.folder),
                "grouping": self.grouping.to_dict()})
        except Exception as exc:  # noqa: BLE001 - one failed series never stops the watch
            elapsed = time.perf_counter() - t0
            msg = f"{type(exc).__name__}: {exc}"
            self._report_error("series", sid, f"{msg} (files: {', '.join(names)})")
            result = SeriesResult(sid, names, "failed", elapsed=elapsed, error=msg)
            self._finish(result, items)
            self.n_failed += 1
            self.series_failed.emit(result)
            return result
        elapsed = time.perf_counter() - t0
        result = SeriesResult(sid, names, "done", reconstruction=rec, outputs=outputs,
                              elapsed=elapsed)
        self._finish(result, items)
        self.n_done += 1
        log.info("live watcher: %s done in %.2f s -> %s", sid, elapsed, outputs[0])
        self.series_done.emit(result)
        return result

    def _finish(self, result: SeriesResult, items: list[_Item]) -> None:
        with self._lock:
            self._ledger["series"][result.series_id] = {
                "files": result.files, "status": result.status, "outputs": result.outputs,
                "elapsed_s": round(result.elapsed, 4), "finished": _now_iso(),
                "error": result.error}
            for it in items:
                self._ledger["files"][it.name] = {"size": it.size, "mtime_ns": it.mtime_ns,
                                                  "series": result.series_id,
                                                  "status": result.status}
            self._save_ledger()

    def poll_once(self) -> list[SeriesResult]:
        """Scan the folder once and reconstruct every series that is complete."""
        self.scan()
        return self.process_pending()

    @property
    def idle_for(self) -> float:
        """s since the last file arrived (or since the watcher started)."""
        return time.monotonic() - self._last_arrival

    @property
    def busy(self) -> bool:
        """True while files are being written / retried or series wait to be reconstructed."""
        waiting = any(not fs.consumed for fs in self._files.values())
        return bool(self._queue) or waiting

    def run(self, stop_event: threading.Event | None = None, *,
            max_polls: int | None = None, idle_exit: float | None = None) -> None:
        """Poll every ``poll_interval`` s until ``stop_event`` is set.

        Also stops after ``max_polls`` polls, or once nothing arrived for ``idle_exit`` s and
        nothing is pending. Stopping leaves the ledger consistent: a restart resumes where this
        one stopped (series still incomplete are regrouped from their files).
        """
        stop_event = stop_event or threading.Event()
        self.status.emit(f"watching {self.folder}")
        n = 0
        while not stop_event.is_set():
            t0 = time.monotonic()
            self.scan()
            # one series at a time, so that a stop request is honoured between series
            while self._queue and not stop_event.is_set():
                self.process_pending(max_series=1)
            n += 1
            if max_polls is not None and n >= max_polls:
                break
            if idle_exit is not None and self.idle_for >= idle_exit and not self.busy:
                break
            stop_event.wait(max(0.0, self.poll_interval - (time.monotonic() - t0)))
        self.status.emit(f"stopped ({self.n_done} done, {self.n_failed} failed)")


SINGLE_PASS_MAX = 1024
"""Largest network frame (px) inferred in one pass by :func:`auto_tile`."""


def auto_tile(shape, sampling: float | None, network_sampling: float | None,
              size_multiple: int = 16, single_pass_max: int = SINGLE_PASS_MAX,
              max_tile: int = 512, overlap: int = 64) -> int:
    """The inference tile for a frame: the whole frame up to ``single_pass_max`` px, else
    balanced tiles of at most ``max_tile`` px.

    On a CPU one pass over a frame of up to ~1k px is the fastest (no overlap is computed
    twice: 512 px tiles of a 976 px frame cost 2.5x the pixels) and needs less memory than the
    batches of tiles. Larger frames are cut into the fewest tiles of at most ``max_tile`` px
    that cover them with ``overlap``, all of about the same size (a 1952 px frame: 5 x 5 tiles
    of 448 px instead of 512 px tiles whose last row and column mostly repeat the previous
    ones: 23% fewer pixels). Memory stays bounded by the tile (the inference batches up to 4
    tiles). See docs/performance.md.
    """
    n = max(int(v) for v in shape[-2:])
    if sampling and network_sampling:
        n = int(np.ceil(n * float(sampling) / float(network_sampling)))
    m = max(1, int(size_multiple))
    n = -(-n // m) * m
    if n <= single_pass_max:
        return n
    k = -(-(n - overlap) // (max_tile - overlap))          # tiles per axis
    tile = -(-(n + (k - 1) * overlap) // k)                 # equal tiles covering n
    return min(max_tile, -(-tile // m) * m)


class ModelReconstructor:
    """The default ``reconstruct_fn``: the network path of ``reconstruct_series``.

    ``kwargs`` go to :func:`~napari_exitwave.reconstruct.reconstruct_series` (``providers``,
    ``strict``, ``align``...); ``tile="auto"`` (the default) picks the tile per series with
    :func:`auto_tile`. Picklable (holds only the model name and options), so it travels to batch
    worker processes; the ONNX session is built once per process, on first use
    (:func:`napari_exitwave.inference.get_reconstructor` caches it).
    """

    def __init__(self, model: str, tile: int | str = "auto", **kwargs: Any) -> None:
        self.model = model
        self.tile = tile
        self.kwargs = kwargs

    def __call__(self, series):
        from napari_exitwave.reconstruct import reconstruct_series

        tile = self.tile
        if tile in (None, "auto"):
            from napari_exitwave.inference import find_model

            card = find_model(self.model) if not hasattr(self.model, "card") else self.model.card
            s_in = self.kwargs.get("sampling") or getattr(series, "sampling", None)
            tile = auto_tile(np.shape(series.images), s_in, card.sampling,
                             card.size_multiple or 16, overlap=self.kwargs.get("overlap", 64))
        return reconstruct_series(series, self.model, tile=int(tile), **self.kwargs)
