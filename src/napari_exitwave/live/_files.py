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
import os
from pathlib import Path
from typing import Any

__all__ = ["FileState", "IncompleteFileError", "tiff_pages", "check_complete", "backoff",
           "TEMP_SUFFIXES"]

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
