"""Checks of the CLI's option values, run before anything is read or computed.

Each bad value is an :class:`~napari_exitwave.errors.ExitWaveError` (exit status 2) whose message
names the option, its unit and what it must be, e.g. ``--min-distance must be a finite distance
>= 0 in A, got -1.0``.
"""

from __future__ import annotations

import math

__all__ = ["check_options"]


def check_options(args) -> None:
    """Reject bad option values before anything is read or computed (ExitWaveError: exit 2)."""
    from .errors import ExitWaveError

    def need(name: str, ok: bool, what: str) -> None:
        if not ok:
            value = getattr(args, name.lstrip("-").replace("-", "_"))
            raise ExitWaveError(f"{name} must be {what}, got {value}")

    def finite(v) -> bool:
        return v is not None and math.isfinite(v)

    get = lambda name: getattr(args, name, None)  # noqa: E731
    checks = [("--min-distance", "min_distance", lambda v: finite(v) and v >= 0,
               "a finite distance >= 0 in A"),
              ("--threshold", "threshold", lambda v: finite(v) and 0 <= v <= 1,
               "a fraction of the maximum between 0 and 1"),
              ("--sampling", "sampling", lambda v: finite(v) and v > 0,
               "a finite pixel size > 0 in A/px"),
              ("--Cs", "Cs", finite, "a finite number in um"),
              ("--focal-spread", "focal_spread", lambda v: finite(v) and v >= 0,
               "a finite focal spread >= 0 in A"),
              ("--tile", "tile", lambda v: v > 0, "a tile size > 0 in px"),
              ("--overlap", "overlap", lambda v: v >= 0, "an overlap >= 0 in px"),
              ("--poll", "poll", lambda v: finite(v) and v > 0, "a finite interval > 0 in s"),
              ("--timeout", "timeout", lambda v: finite(v) and v > 0, "a finite time > 0 in s"),
              ("--idle-exit", "idle_exit", lambda v: finite(v) and v >= 0,
               "a finite time >= 0 in s"),
              ("--n-images", "n_images", lambda v: v >= 1, "at least 1"),
              ("--workers", "workers", lambda v: v >= 1, "at least 1")]
    for flag, attr, ok, what in checks:
        if get(attr) is not None:
            need(flag, ok(get(attr)), what)
    if get("defocus") is not None and not all(math.isfinite(d) for d in args.defocus):
        raise ExitWaveError(f"--defocus must be finite numbers in A, got {args.defocus}")
    name = get("name")
    if name is not None and (not name.strip() or "/" in name or "\\" in name
                             or name in (".", "..")):
        raise ExitWaveError(f"--name must be a plain file name (no folders), got {name!r}")
