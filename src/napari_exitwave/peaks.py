"""Atomic-column peaks of an exit wave, and the complex value at each of them.

Pure numpy/scipy/scikit-image, no Qt: usable from a notebook, the CLI and the widget alike.

The usual use is on ``|psi - 1|`` (the deviation of the exit wave from vacuum), where every
atomic column is a bright blob::

    >>> import numpy as np
    >>> from napari_exitwave.peaks import find_peaks, peak_table
    >>> yy, xx = np.mgrid[:64, :64]
    >>> psi = 1 + 0.3j * np.exp(-((yy - 20.3) ** 2 + (xx - 40.6) ** 2) / (2 * 2.0**2))
    >>> pos = find_peaks(np.abs(psi - 1), sampling=0.1, min_distance=0.5)
    >>> np.round(pos, 1)
    array([[20.3, 40.6]])
    >>> tab = peak_table(psi, pos, sampling=0.1)
    >>> round(float(tab["imag"][0]), 2)
    0.3

Units: positions in pixels ``(row, col)`` = ``(y, x)``; ``sampling`` in A/px; ``min_distance`` in A.

:func:`find_wave_peaks` (``find_peaks`` of ``|psi - 1|``) is the one peak finder of the package:
the widget (:mod:`napari_exitwave._layers`), the CLI, live and batch results and the metrics of
the training package (:func:`napari_exitwave.metrics.peak_position_error`) all call it.
"""

from __future__ import annotations

import csv
import os
from typing import Mapping, Sequence

import numpy as np

__all__ = ["find_peaks", "find_wave_peaks", "refine_peaks", "peak_table", "write_peaks_csv",
           "read_peaks_csv", "PEAK_COLUMNS"]

PEAK_COLUMNS = ("y", "x", "y_A", "x_A", "real", "imag", "amplitude", "phase")
"""Columns of :func:`peak_table`, in the order they are written to CSV."""


def find_peaks(
    image: np.ndarray,
    sampling: float = 1.0,
    min_distance: float = 1.0,
    threshold: float = 0.1,
    refine: bool = True,
) -> np.ndarray:
    """Find local maxima (atomic columns) with sub-pixel positions.

    Parameters
    ----------
    image : (ny, nx) real array
        Usually ``|psi - 1|`` of an exit wave. Non-finite pixels are ignored.
    sampling : float
        Pixel size in A/px.
    min_distance : float
        Minimum separation of two peaks in A (converted to ``round(min_distance / sampling)``
        pixels, at least 1). Of two maxima closer than this, only the higher is kept.
    threshold : float
        Keep peaks higher than ``threshold * max(image)`` (0 <= threshold <= 1).
    refine : bool
        Refine each integer maximum to sub-pixel precision by a least-squares fit of a 2-D
        quadratic to the logarithm of its 3x3 neighbourhood (exact for a Gaussian peak); the
        raw values are fitted where the neighbourhood is not positive. A fit that moves the
        peak by more than one pixel is discarded (the integer position is kept).

    Returns
    -------
    positions : (n, 2) float64 array
        ``(row, col)`` of every peak in pixels, sorted by decreasing peak height.
    """
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"image must be 2-D (ny, nx), got shape {image.shape}")
    if np.iscomplexobj(image):
        raise ValueError("image must be real; pass e.g. np.abs(psi - 1) for an exit wave")
    if not sampling > 0:
        raise ValueError(f"sampling must be positive (A/px), got {sampling}")
    if not min_distance >= 0:
        raise ValueError(f"min_distance must be >= 0 (A), got {min_distance}")
    if not 0 <= threshold <= 1:
        raise ValueError(
            f"threshold must be between 0 and 1 (fraction of the max), got {threshold}")
    from skimage.feature import peak_local_max

    img = np.asarray(image, dtype=np.float64)
    finite = np.isfinite(img)
    if not finite.any():
        return np.zeros((0, 2))
    lo = np.min(img[finite])
    img = np.where(finite, img, lo)
    vmax = float(img.max())
    if vmax <= 0 or vmax == lo:
        return np.zeros((0, 2))
    md = max(1, int(round(min_distance / sampling)))
    coords = peak_local_max(
        img, min_distance=md, threshold_abs=threshold * vmax, exclude_border=False,
    )
    coords = np.asarray(coords, dtype=np.int64).reshape(-1, 2)
    if coords.size == 0:
        return np.zeros((0, 2))
    order = np.argsort(-img[coords[:, 0], coords[:, 1]], kind="stable")
    coords = coords[order]
    if not refine:
        return coords.astype(np.float64)
    return refine_peaks(img, coords)


def find_wave_peaks(exit_wave: np.ndarray, sampling: float = 1.0, min_distance: float = 1.0,
                    threshold: float = 0.1, refine: bool = True) -> np.ndarray:
    """Atomic columns of an exit wave: :func:`find_peaks` of ``|exit_wave - 1|``.

    Parameters are those of :func:`find_peaks` (``sampling`` A/px, ``min_distance`` A,
    ``threshold`` a fraction of the highest peak); ``exit_wave`` is complex (ny, nx), vacuum
    ``1 + 0j``. Returns the sub-pixel ``(row, col)`` (n, 2) in pixels, highest first.
    """
    wave = np.asarray(exit_wave)
    if wave.ndim != 2:
        raise ValueError(f"exit_wave must be 2-D (ny, nx), got shape {wave.shape}")
    return find_peaks(np.abs(wave - 1), sampling=sampling, min_distance=min_distance,
                      threshold=threshold, refine=refine)


# Design matrix of z = a + b y + c x + d y^2 + e x y + f x^2 on a 3x3 grid.
_DY, _DX = np.mgrid[-1:2, -1:2]
_DY, _DX = _DY.ravel().astype(float), _DX.ravel().astype(float)
_A = np.stack([np.ones(9), _DY, _DX, _DY**2, _DX * _DY, _DX**2], axis=1)
_PINV = np.linalg.pinv(_A)


def refine_peaks(image: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """Sub-pixel refinement of integer peak positions (see :func:`find_peaks`).

    Parameters
    ----------
    image : (ny, nx) real array
    coords : (n, 2) int array of ``(row, col)``

    Returns
    -------
    (n, 2) float64 array of refined ``(row, col)``.
    """
    image = np.asarray(image, dtype=np.float64)
    coords = np.asarray(coords).reshape(-1, 2)
    out = coords.astype(np.float64).copy()
    ny, nx = image.shape
    for i, (r, c) in enumerate(coords.astype(np.int64)):
        if r < 1 or c < 1 or r > ny - 2 or c > nx - 2:
            continue  # no full neighbourhood at the border: keep the integer position
        patch = image[r - 1:r + 2, c - 1:c + 2].ravel()
        z = np.log(patch) if np.all(patch > 0) else patch
        _, b, cc, d, e, f = _PINV @ z
        # gradient zero: [2d e; e 2f] [dy dx]^T = -[b c]^T
        det = 4 * d * f - e * e
        if not (det > 0 and d < 0):  # not a maximum
            continue
        dy = (-2 * f * b + e * cc) / det
        dx = (-2 * d * cc + e * b) / det
        if abs(dy) <= 1 and abs(dx) <= 1:
            out[i] = (r + dy, c + dx)
    return out


def peak_table(
    exit_wave: np.ndarray, positions: np.ndarray, sampling: float, order: int = 3
) -> dict:
    """Complex value of the exit wave at each peak.

    Parameters
    ----------
    exit_wave : (ny, nx) complex array
    positions : (n, 2) array of sub-pixel ``(row, col)`` in pixels
    sampling : float
        A/px, for the ``y_A``/``x_A`` columns.
    order : int
        Interpolation order at the sub-pixel positions: 3 (cubic spline, default; a bilinear
        value at the top of a column is low by ~1% of its contrast) or 1 (bilinear).

    Returns
    -------
    dict of (n,) float64 arrays: ``y``, ``x`` (px), ``y_A``, ``x_A`` (A), ``real``, ``imag``,
    ``amplitude`` (``|psi|``), ``phase`` (``angle(psi)``, rad), the value interpolated
    at the sub-pixel position (nearest edge value outside the image).
    """
    from scipy.ndimage import map_coordinates

    wave = np.asarray(exit_wave)
    if wave.ndim != 2:
        raise ValueError(f"exit_wave must be 2-D (ny, nx), got shape {wave.shape}")
    if not sampling > 0:
        raise ValueError(f"sampling must be positive (A/px), got {sampling}")
    pos = np.asarray(positions, dtype=np.float64).reshape(-1, 2)
    wave = wave.astype(np.complex128)
    coords = pos.T
    if order not in (0, 1, 2, 3, 4, 5):
        raise ValueError(f"order must be 0..5, got {order}")
    if len(pos) == 0:
        re = im = np.zeros(0)
    else:
        re = map_coordinates(wave.real, coords, order=order, mode="nearest")
        im = map_coordinates(wave.imag, coords, order=order, mode="nearest")
    val = re + 1j * im
    return {
        "y": pos[:, 0].copy(),
        "x": pos[:, 1].copy(),
        "y_A": pos[:, 0] * sampling,
        "x_A": pos[:, 1] * sampling,
        "real": re,
        "imag": im,
        "amplitude": np.abs(val),
        "phase": np.angle(val),
    }


def write_peaks_csv(
    table: Mapping[str, np.ndarray],
    path: str | os.PathLike,
    labels: Sequence | None = None,
) -> str:
    """Write a peak table (:func:`peak_table`) to CSV, with an optional ``label`` column.

    The columns of :data:`PEAK_COLUMNS` come first, in that order, then any other column of
    ``table`` (e.g. ``label``); ``labels`` (one per peak) overrides a ``label`` column.
    Returns the path written.
    """
    cols = [c for c in PEAK_COLUMNS if c in table] + [
        c for c in table if c not in PEAK_COLUMNS and c != "label"
    ]
    n = len(np.asarray(table[cols[0]])) if cols else 0
    if labels is None and "label" in table:
        labels = table["label"]
    if labels is not None:
        labels = [str(v) for v in np.asarray(labels, dtype=object).ravel()]
        if len(labels) != n:
            raise ValueError(f"labels has {len(labels)} entries for {n} peaks")
    path = os.fspath(path)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(cols + (["label"] if labels is not None else []))
        arrays = [np.asarray(table[c]).ravel() for c in cols]
        for i in range(n):
            row = [repr(float(a[i])) for a in arrays]
            if labels is not None:
                row.append(labels[i])
            w.writerow(row)
    return path


def read_peaks_csv(path: str | os.PathLike) -> dict:
    """Read a CSV written by :func:`write_peaks_csv`.

    Returns a dict of (n,) arrays: float64 for numeric columns, str for ``label``.
    """
    with open(os.fspath(path), newline="") as fh:
        rows = list(csv.reader(fh))
    if not rows:
        raise ValueError(f"{path} is empty; expected a header line with {', '.join(PEAK_COLUMNS)}")
    header, body = rows[0], rows[1:]
    out = {}
    for j, name in enumerate(header):
        vals = [r[j] for r in body]
        if name == "label":
            out[name] = np.array(vals, dtype=str)
        else:
            out[name] = np.array([float(v) for v in vals], dtype=np.float64)
    return out
