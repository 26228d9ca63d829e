"""When is a file in the watched folder complete? Size/mtime stability and a full read.

A file is read when its size and modification time were the same in two consecutive polls,
its size is not 0 and its modification time is at least ``settle`` seconds old. It is complete
when the reader opens it, its size and modification time did not change during the read, and
(for TIFF files, :func:`tiff_pages`) every page's data lies inside the file and the page count
equals the count the file declares (ImageJ ``images=``, tifffile's ``shape``). A stack (more
than one image) must then stay unchanged for ``stack_settle`` seconds before it is grouped: a
stable page count.

A file that does not open yet is retried with back-off (``settle * 2**k`` s, at most 60 s); only
a file that stayed unchanged through ``max_read_attempts`` failed reads is reported as corrupt.
A change of the file resets its count. Files that vanish before they were read are forgotten.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, Container

import numpy as np

from ._grouping import Item

__all__ = ["FileState", "FileTracker", "IncompleteFileError", "tiff_pages", "check_complete",
           "backoff", "TEMP_SUFFIXES"]

log = logging.getLogger("napari_exitwave.live")

TEMP_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", "~")
"""Names ending so (and names starting with a dot) are a writer's temporaries: never read."""

MAX_BACKOFF = 60.0
"""s, the longest wait between two reads of a file that does not open yet."""


class IncompleteFileError(Exception):
    """The file is a TIFF whose pages or declared image count are not all there (yet)."""


@dataclasses.dataclass
class FileState:
    """What the watcher knows about one file of the folder that is not in the ledger yet."""

    size: int
    mtime_ns: int
    first_mtime_ns: int          # the modification time when first seen: the order of arrival
    stable: int = 0              # consecutive polls with the same (size, mtime)
    failures: int = 0            # failed reads of the current content
    attempted: bool = False      # a read failed once: the file holds its place in the order
    next_try: float = 0.0        # time.monotonic() before which it is not read again
    item: Any = None             # the grouping item once read (None while not read)
    grouped: str | None = None   # the series it went into
    warned: bool = False

    def changed(self, st: os.stat_result) -> bool:
        return (self.size, self.mtime_ns) != (st.st_size, st.st_mtime_ns)

    def update(self, st: os.stat_result) -> None:
        self.size, self.mtime_ns = st.st_size, st.st_mtime_ns
        self.stable, self.failures, self.next_try = 0, 0, 0.0


def backoff(settle: float, failures: int) -> float:
    """s to wait before the next read of a file that failed ``failures`` reads."""
    return min(MAX_BACKOFF, max(0.05, settle) * 2.0 ** failures)


def tiff_pages(path: str | os.PathLike) -> int:
    """Number of images in a TIFF whose every page is complete; raise if any is not.

    Reads the page headers only (tifffile), not the pixels.

    Raises
    ------
    IncompleteFileError
        A page's data lies past the end of the file, or the file declares more images
        (ImageJ ``images=N``, tifffile's ``shape``) than it has pages.
    """
    import tifffile

    size = os.path.getsize(path)
    with tifffile.TiffFile(os.fspath(path)) as tif:
        pages = tif.pages
        pages.useframes = True
        n = 0  # images present: pages, times planes per page (planar samples, depth)
        for page in pages:
            ends = [o + c for o, c in zip(page.dataoffsets, page.databytecounts)]
            if ends and max(ends) > size:
                raise IncompleteFileError(f"{Path(path).name}: page data past the end of the "
                                          f"file ({max(ends)} > {size} bytes): still written?")
            key = page.keyframe  # a TiffFrame shares the tags of its key page
            planes = key.samplesperpixel if key.planarconfig == 2 else 1
            n += planes * max(1, int(key.imagedepth or 1))
        declared = None
        if tif.is_imagej and tif.imagej_metadata:
            ij = tif.imagej_metadata
            declared = int(ij.get("images", 1))
        elif tif.is_shaped and tif.shaped_metadata:
            shape = tif.shaped_metadata[0].get("shape")
            if shape and len(shape) > 2:
                declared = 1
                for s in shape[:-2]:
                    declared *= int(s)
        if declared is not None and n < declared:
            raise IncompleteFileError(f"{Path(path).name}: {n} of the {declared} images it "
                                      "declares are in the file: still written?")
    return n


def check_complete(path: str | os.PathLike) -> int | None:
    """Pages of a TIFF (:func:`tiff_pages`), None for other formats (the reader decides)."""
    if str(path).lower().endswith((".tif", ".tiff")):
        return tiff_pages(path)
    return None


class FileTracker:
    """The files of a watched folder from first sight until they are read whole.

    Parameters
    ----------
    folder : Path
    extensions : tuple of str
        Lower-case suffixes to pick up.
    settle : float
        s a file's modification time must be old before it is read; also the back-off unit.
    max_read_attempts : int
        Failed reads of an unchanged file before it is reported as corrupt.
    reader : callable
        ``reader(path) -> FocalSeries``.
    report : callable
        ``report(kind, name, message)``: the error log.
    on_file_error : callable
        ``on_file_error(name, message)`` when a file is given up as corrupt.
    """

    def __init__(self, folder: Path, extensions: tuple, settle: float, max_read_attempts: int,
                 reader: Callable, report: Callable, on_file_error: Callable) -> None:
        self.folder, self.extensions, self.settle = folder, extensions, settle
        self.max_read_attempts, self.reader = max_read_attempts, reader
        self.report, self.on_file_error = report, on_file_error
        self.files: dict[str, FileState] = {}

    def waiting(self) -> list[tuple]:
        """Order keys of files that failed a read and are not read yet (they hold a place)."""
        return [(fs.first_mtime_ns, n) for n, fs in self.files.items()
                if fs.attempted and fs.item is None and fs.grouped is None]

    @property
    def busy(self) -> bool:
        """True while a file is seen but not read yet."""
        return any(fs.item is None and fs.grouped is None for fs in self.files.values())

    def _candidates(self) -> list[tuple[str, os.stat_result]]:
        found = []
        try:
            it = os.scandir(self.folder)
        except OSError as exc:  # share gone for a moment: try again next poll
            log.warning("live watcher: cannot list %s: %s", self.folder, exc)
            return []
        with it:
            for e in it:
                name = e.name.lower()
                if name.startswith(".") or name.endswith(TEMP_SUFFIXES) \
                        or not name.endswith(self.extensions):
                    continue
                try:
                    if e.is_file():
                        found.append((e.name, e.stat()))
                except OSError:
                    continue
        return found

    def poll(self, consumed: Container[str]) -> tuple[list[Item], list[Item]]:
        """One look at the folder -> (items read whole now, items to withdraw from grouping).

        ``consumed``: names already used (the ledger's); they are not looked at again.
        """
        now_wall, now = time.time(), time.monotonic()
        ready, present, withdrawn = [], set(), []
        for name, st in self._candidates():
            present.add(name)
            if name in consumed:
                continue
            fs = self.files.get(name)
            if fs is None:
                self.files[name] = FileState(st.st_size, st.st_mtime_ns, st.st_mtime_ns)
            elif fs.changed(st):
                withdrawn += self._changed(name, fs, st)
            else:
                fs.stable += 1
                if fs.item is None and fs.grouped is None and st.st_size > 0 \
                        and now_wall - st.st_mtime_ns / 1e9 >= self.settle \
                        and now >= fs.next_try:
                    ready.append((fs.first_mtime_ns, name, st))
        for name in [n for n, fs in self.files.items()
                     if n not in present and fs.item is None and fs.grouped is None]:
            log.info("live watcher: %s vanished before it was complete; forgotten", name)
            del self.files[name]
        arrived = [self._read(name, st) for _, name, st in sorted(ready)]
        return [it for it in arrived if it is not None], withdrawn

    def _changed(self, name: str, fs: FileState, st: os.stat_result) -> list[Item]:
        item, withdrawn = fs.item, []
        if fs.grouped is not None:
            if not fs.warned:
                fs.warned = True
                self.report("file", name, f"changed after it was used in {fs.grouped}; the "
                            "new content is not used (give it a new name to reconstruct it)")
        elif item is not None and not self._grown(name, item, st):
            if not fs.warned:  # a file is used once: a rewrite would add an image twice
                fs.warned = True
                log.warning("live watcher: %s changed after it was read; the new content is "
                            "ignored", name)
            fs.size, fs.mtime_ns = st.st_size, st.st_mtime_ns
            return withdrawn
        elif item is not None:  # more pages, or a corrupt file written again: read it again
            log.info("live watcher: %s grew after it was read; reading it again", name)
            withdrawn.append(item)
            fs.item = None
        fs.update(st)
        return withdrawn

    def _grown(self, name: str, item: Item, st: os.stat_result) -> bool:
        if item.error is not None:
            return True
        if not name.lower().endswith((".tif", ".tiff")):
            return False
        try:
            return tiff_pages(self.folder / name) > item.n_images
        except IncompleteFileError:
            return st.st_size > item.size
        except Exception:  # noqa: BLE001 - unreadable for now: judged when it settles
            return False

    def _read(self, name: str, st: os.stat_result) -> Item | None:
        fs = self.files[name]
        path = self.folder / name
        try:
            check_complete(path)
            series = self.reader(str(path))
            images = np.asarray(series.images)
            if images.ndim not in (2, 3) or images.size == 0:
                raise ValueError(f"expected an image or a stack of images, got shape "
                                 f"{images.shape}")
            st2 = path.stat()
            if fs.changed(st2):
                fs.update(st2)
                return None  # it changed while we read it: not complete after all
        except FileNotFoundError:
            del self.files[name]
            return None
        except Exception as exc:  # noqa: BLE001 - any failure means "not readable (yet)"
            fs.failures += 1
            fs.attempted = True
            if fs.failures < self.max_read_attempts:
                fs.next_try = time.monotonic() + backoff(self.settle, fs.failures)
                log.info("live watcher: %s does not open yet (%s); retrying", name, exc)
                return None
            msg = f"{type(exc).__name__}: {exc}"
            self.report("file", name, f"could not be read after {fs.failures} attempts "
                        f"while unchanged, skipped ({msg})")
            self.on_file_error(name, msg)
            fs.item = Item(name, st.st_size, st.st_mtime_ns, (fs.first_mtime_ns, name),
                           error=msg)
            return fs.item
        d = getattr(series, "defocus", None)
        fs.item = Item(name, st.st_size, st.st_mtime_ns, (fs.first_mtime_ns, name),
                       series=series, n_images=1 if images.ndim == 2 else images.shape[0],
                       defocus=None if d is None else [float(v) for v in d])
        return fs.item
