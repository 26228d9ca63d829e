"""The focal-series record and the calibration helpers every reader shares.

:class:`FocalSeries` is what :func:`napari_exitwave.io.read_series` returns; :class:`RawSeries`
is what each format's reader (``_dm``, ``_tiff``, the folder reader) hands to ``io``, which turns
it into a checked :class:`FocalSeries`. Lengths are converted to Angstrom by :func:`to_angstrom`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ReaderError

__all__ = ["FocalSeries", "RawSeries", "to_angstrom", "natural_sort_key", "json_default",
           "METADATA_KEY"]

METADATA_KEY = "exitwave"
"""Key of our JSON metadata inside ImageJ descriptions (series and exit-wave TIFFs)."""

# length units -> Angstrom
_UNIT_TO_A = {
    "a": 1.0, "å": 1.0, "\u212b": 1.0, "ang": 1.0, "angstrom": 1.0, "angstroms": 1.0,
    "ångström": 1.0,
    "pm": 1e-2, "picometer": 1e-2, "picometre": 1e-2,
    "nm": 10.0, "nanometer": 10.0, "nanometre": 10.0, "nanometers": 10.0,
    "um": 1e4, "µm": 1e4, "\u03bcm": 1e4, "micron": 1e4, "microns": 1e4, "micrometer": 1e4,
    "micrometre": 1e4, "\\u00b5m": 1e4,
    "mm": 1e7, "millimeter": 1e7, "cm": 1e8, "m": 1e10, "meter": 1e10, "metre": 1e10,
}
_NO_UNITS = {"", "px", "pixel", "pixels", "<auto>", "none", "<undefined>", "undefined"}


@dataclasses.dataclass
class FocalSeries:
    """A focal series with its calibration.

    Attributes
    ----------
    images : float32 array (n, ny, nx)
        The images, in acquisition order.
    sampling : float or None
        Pixel size in A/px; ``None`` when the file carried no length calibration.
    units : str
        Unit of ``sampling``: ``"Å"`` when calibrated, ``"px"`` otherwise. The file's own unit
        and scale are kept in ``metadata["original_units"]`` / ``metadata["original_scale"]``.
    defocus : list of float or None
        Defocus of each image in A (abTEM convention: ``defocus = -C10``, positive = underfocus),
        or ``None`` when unknown.
    metadata : dict
        Anything else read from the file (``energy`` in eV where known, original calibration,
        per-file names of a folder series...).
    source : str
        Where the series came from (a path, ``"sample"``, ``"array"``).
    """

    images: np.ndarray
    sampling: float | None = None
    units: str = "px"
    defocus: list[float] | None = None
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)
    source: str = "array"

    def __post_init__(self):
        images = np.asarray(self.images)
        if images.ndim == 2:
            images = images[None]
        if images.ndim != 3:
            raise ValueError(f"images must be (n, ny, nx), got shape {images.shape}")
        if np.iscomplexobj(images):
            raise ValueError("images must be real intensities, got a complex array")
        self.images = images.astype(np.float32, copy=False)
        if self.sampling is not None:
            self.sampling = float(self.sampling)
            if not self.sampling > 0:
                raise ValueError(f"sampling must be positive (A/px), got {self.sampling}")
            if self.units == "px":
                self.units = "Å"
        if self.defocus is not None:
            self.defocus = [float(d) for d in self.defocus]
            if len(self.defocus) != len(self.images):
                raise ValueError(f"{len(self.defocus)} defocus values for "
                                 f"{len(self.images)} images")

    @property
    def n_images(self) -> int:
        return int(self.images.shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.images.shape[-2:])

    def __repr__(self) -> str:  # arrays are too long for the default repr
        s = "unknown" if self.sampling is None else f"{self.sampling:.4g} A/px"
        return (f"FocalSeries({self.n_images} x {self.shape[0]} x {self.shape[1]}, sampling={s}, "
                f"defocus={self.defocus}, source={self.source!r})")


@dataclasses.dataclass
class RawSeries:
    """What a format reader found in a file, before ``io`` checks it.

    Attributes
    ----------
    data : array
        The pixels as stored: (ny, nx) or (n, ny, nx), any real dtype.
    sampling : float or None
        Pixel size in A/px (``None``: no length calibration).
    unit, scale : str, float or None
        The file's own unit and pixel size, as written in it.
    defocus : list of float or None
        Defocus of each image in A (abTEM convention), when the file holds it.
    metadata : dict
        ``format``, ``energy`` (eV) and whatever else the reader keeps.
    """

    data: np.ndarray
    sampling: float | None = None
    unit: str = ""
    scale: float | None = None
    defocus: list[float] | None = None
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)


def to_angstrom(scale: float | None, unit: str | None) -> float | None:
    """Convert a pixel size ``scale`` in ``unit`` to A; ``None`` if the unit is not a length.

    >>> to_angstrom(0.0105, "nm")
    0.105
    >>> to_angstrom(1.0, "") is None
    True
    """
    if scale is None or unit is None:
        return None
    u = str(unit).strip()
    key = u.lower()
    if key in _NO_UNITS:
        return None
    if key.startswith("1/") or key.endswith("^-1") or key.endswith("-1"):
        raise ReaderError(
            f"the image is calibrated in {u} (reciprocal space): this looks like a diffraction "
            "pattern or an FFT, not an HRTEM image")
    factor = _UNIT_TO_A.get(key, _UNIT_TO_A.get(u))
    if factor is None:
        return None
    scale = float(scale)
    if not (math.isfinite(scale) and scale > 0):
        return None
    return scale * factor


def natural_sort_key(name: str) -> list:
    """Sort key that orders ``img2`` before ``img10``."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", str(name))]


def json_default(o):
    """``json.dumps(..., default=json_default)``: numpy scalars and arrays as Python values,
    anything else (paths, ...) as its string."""
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    return str(o)


def dumps(d: dict) -> str:
    """Compact ASCII JSON of ``d`` (numpy values allowed)."""
    return json.dumps(d, default=json_default, ensure_ascii=True)
