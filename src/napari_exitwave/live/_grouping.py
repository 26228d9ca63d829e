"""Grouping arriving images into focal series: three modes, pure functions on lists of items.

- ``count``: every ``n_images`` consecutive images (in order of arrival) form one series. A file
  holding a stack counts with all of its images. A corrupt file keeps its place (one image), so
  its series is reported as failed and the following series stay aligned.
- ``pattern``: a regular expression is searched in each file name; its group ``series`` (or its
  first group) names the series, an optional group ``index`` orders the images within it. A
  series is complete when it has ``n_images`` images.
- ``defocus``: a series ends when the defocus in the metadata resets (goes back, or repeats the
  previous value), when it has ``n_images`` images (if given), or when no new image arrived for
  ``timeout`` seconds (and it has at least two images).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Sequence

__all__ = ["Grouping", "Item", "group_by_count", "group_by_pattern", "group_by_defocus",
           "pattern_key", "safe_name"]


def safe_name(text: str) -> str:
    """``text`` as a file-name stem: runs of other characters than ``A-Za-z0-9._-`` become _."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("._")
    return name or "series"


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
        if self.timeout is not None and not self.timeout > 0:
            raise ValueError(f"timeout must be > 0 s, got {self.timeout}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Item:
    """One complete file, read (or unreadable), waiting to be grouped."""

    name: str
    size: int
    mtime_ns: int
    order: tuple = ()            # sort key of the order of arrival
    series: Any = None           # the FocalSeries read from it, None if unreadable
    error: str | None = None     # why it could not be read
    n_images: int = 1
    defocus: list | None = None
    key: str | None = None       # pattern mode: the series name
    index: Any = None            # pattern mode: order inside the series


def pattern_key(rx: re.Pattern, name: str) -> tuple[str, Any] | None:
    """(series name, index) of a file name, or None when it does not match."""
    m = rx.search(name)
    if m is None:
        return None
    key = m.group("series") if "series" in rx.groupindex else m.group(1)
    index = None
    if "index" in rx.groupindex:
        idx = m.group("index")
        index = int(idx) if idx is not None and idx.isdigit() else idx
    return key, index


def group_by_count(items: Sequence[Item], n_images: int) -> tuple[list[list[Item]], list[Item]]:
    """Consecutive items holding ``n_images`` images (or more, a stack) -> (series, rest)."""
    groups, current, total = [], [], 0
    for it in items:
        current.append(it)
        total += it.n_images
        if total >= n_images:
            groups.append(current)
            current, total = [], 0
    return groups, current


def group_by_pattern(by_key: dict[str, list[Item]], n_images: int
                     ) -> tuple[list[tuple[str, list[Item]]], dict[str, list[Item]]]:
    """Series with at least ``n_images`` images, ordered by their index -> (series, rest)."""
    groups, rest = [], {}
    for key, items in by_key.items():
        if sum(it.n_images for it in items) >= n_images:
            items = sorted(items, key=lambda it: (it.index is None, str(type(it.index)),
                                                  it.index if it.index is not None else 0,
                                                  it.name))
            groups.append((key, items))
        else:
            rest[key] = items
    return groups, rest


def group_by_defocus(items: Sequence[Item], n_images: int | None, tolerance: float,
                     close_last: bool) -> tuple[list[list[Item]], list[Item], list[Item]]:
    """Split at defocus resets -> (series, rest, skipped).

    ``skipped``: items without a defocus (or unreadable), which defocus grouping cannot place.
    ``close_last``: also close the last open series when it has at least two images (the
    caller's timeout expired).
    """
    groups, skipped = [], []
    current: list[Item] = []
    defoci: list[float] = []
    for it in items:
        if it.error is not None or it.defocus is None:
            skipped.append(it)
            continue
        reset = False
        for d in it.defocus:
            if defoci:
                step = d - defoci[-1]
                direction = (defoci[-1] - defoci[-2]) if len(defoci) >= 2 else None
                if abs(step) < tolerance or (direction is not None and step * direction < 0):
                    reset = True
                    break
        if reset and current:
            groups.append(current)
            current, defoci = [], []
        current.append(it)
        defoci.extend(it.defocus)
        if n_images and len(defoci) >= n_images:
            groups.append(current)
            current, defoci = [], []
    if current and close_last and len(defoci) >= 2:
        groups.append(current)
        current = []
    return groups, current, skipped
