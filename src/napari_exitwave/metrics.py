"""Quality measures of a reconstructed exit wave, the same code for every model and baseline.

All functions take complex exit waves ``(ny, nx)`` or stacks ``(n, ny, nx)`` (vacuum = 1 + 0j)
and compare a prediction with the ground truth (the target: the exit wave folded with the
15 pm Gaussian, at the network's sampling).

- :func:`rmse`: root-mean-square error of the real and of the imaginary part, per sample.
- :func:`delta`: Eq. (A.1) of Larsen et al., ``sum |pred - true|^2 / sum |true - 1|^2``.
- :func:`y_scramble`: the same RMSE for a prediction against a *different* sample's truth,
  the baseline any useful model must beat by far.
- :func:`peak_position_error`: distance in pm between the peaks of ``|pred - 1|``
  (:func:`napari_exitwave.peaks.find_wave_peaks`, re-exported here) and the true
  atomic-column positions, matched one to one.
- :func:`peak_values`: complex values of a wave at given positions (Argand plots).

Positions are ``(row, col)`` = ``(y, x)``; in A they are ``pixel * sampling`` with the first
pixel's centre at 0.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .peaks import find_wave_peaks  # the package's one peak finder, re-exported

__all__ = ["rmse", "delta", "y_scramble", "find_wave_peaks", "peak_position_error",
           "peak_values", "summarize", "PEAK_FINDER"]


def _pair(pred, true) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred)
    true = np.asarray(true)
    if pred.shape != true.shape:
        raise ValueError(f"pred and true must have the same shape, got {pred.shape} and {true.shape}")
    if pred.ndim < 2:
        raise ValueError(f"exit waves must be at least 2-D (ny, nx), got shape {pred.shape}")
    return pred.astype(np.complex128), true.astype(np.complex128)


def rmse(pred, true) -> tuple[np.ndarray | float, np.ndarray | float]:
    """RMSE of the real and of the imaginary part over the last two axes.

    Returns ``(rmse_real, rmse_imag)``: floats for single waves, arrays ``(n,)`` for stacks.

    Examples
    --------
    >>> w = np.ones((4, 4), complex)
    >>> rmse(w, w)
    (0.0, 0.0)
    >>> rmse(w + 0.1j, w)[1]
    0.1
    """
    pred, true = _pair(pred, true)
    d = pred - true
    r = np.sqrt(np.mean(d.real**2, axis=(-2, -1)))
    i = np.sqrt(np.mean(d.imag**2, axis=(-2, -1)))
    if r.ndim == 0:
        return round(float(r), 15), round(float(i), 15)
    return r, i


def delta(pred, true, eps: float = 1e-30) -> np.ndarray | float:
    """Eq. (A.1): ``sum |pred - true|^2 / sum |true - 1|^2`` over the last two axes.

    0 for a perfect prediction; 1 for predicting vacuum (``pred = 1``) everywhere.
    """
    pred, true = _pair(pred, true)
    num = np.sum(np.abs(pred - true) ** 2, axis=(-2, -1))
    den = np.sum(np.abs(true - 1) ** 2, axis=(-2, -1))
    out = num / np.maximum(den, eps)
    return float(out) if out.ndim == 0 else out


def _derangement(n: int, rng: np.random.Generator) -> np.ndarray:
    if n < 2:
        raise ValueError("the Y-scramble baseline needs at least 2 samples")
    while True:
        perm = rng.permutation(n)
        if not np.any(perm == np.arange(n)):
            return perm


def y_scramble(pred: Sequence[np.ndarray], true: Sequence[np.ndarray], seed: int = 0
               ) -> tuple[np.ndarray, np.ndarray]:
    """RMSE (real, imag) of each prediction against a random *other* sample's truth.

    ``pred`` and ``true`` are sequences (or stacks) of ``n >= 2`` waves; pairs of different
    sizes are compared on their common top-left region. Returns two arrays ``(n,)``.
    """
    if len(pred) != len(true):
        raise ValueError(f"pred and true must hold the same number of samples, "
                         f"got {len(pred)} and {len(true)}")
    perm = _derangement(len(pred), np.random.default_rng(seed))
    rr, ri = [], []
    for i, j in enumerate(perm):
        p, t = np.asarray(pred[i]), np.asarray(true[j])
        ny, nx = min(p.shape[-2], t.shape[-2]), min(p.shape[-1], t.shape[-1])
        r, m = rmse(p[..., :ny, :nx], t[..., :ny, :nx])
        rr.append(r)
        ri.append(m)
    return np.asarray(rr), np.asarray(ri)


PEAK_FINDER = "napari_exitwave.peaks.find_wave_peaks"
"""The peak finder of :func:`peak_position_error` (recorded in evaluation reports)."""


def peak_position_error(pred, true_columns_A, sampling: float, *, min_distance: float = 1.0,
                        threshold: float = 0.1, max_distance: float = 0.5,
                        margin: float = 1.0, return_matches: bool = False):
    """Distances in pm between the peaks of ``|pred - 1|`` and the true column positions.

    Parameters
    ----------
    pred : complex (ny, nx)
        Predicted exit wave.
    true_columns_A : (n, 2)
        True atomic-column positions ``(y, x)`` in A in the frame of ``pred``.
    sampling : float
        Pixel size in A.
    min_distance, threshold : peak finding (A; relative to the maximum of ``|pred - 1|``).
    max_distance : float
        Largest distance (A) at which a peak counts as the column's; columns without a peak
        this close are reported as missed.
    margin : float
        Columns closer than this (A) to the image border are ignored.
    return_matches : bool
        Also return ``(matched_true_A, matched_pred_A, n_missed)``.

    Returns
    -------
    errors_pm : (m,) distances of the matched (one-to-one, Hungarian) pairs in pm.
    """
    from scipy.optimize import linear_sum_assignment

    pred = np.asarray(pred)
    cols = np.asarray(true_columns_A, dtype=float).reshape(-1, 2)
    ny, nx = pred.shape[-2:]
    inside = ((cols[:, 0] >= margin) & (cols[:, 0] <= (ny - 1) * sampling - margin)
              & (cols[:, 1] >= margin) & (cols[:, 1] <= (nx - 1) * sampling - margin))
    cols = cols[inside]
    peaks = find_wave_peaks(pred, sampling, min_distance, threshold) * sampling
    if len(cols) == 0 or len(peaks) == 0:
        errors = np.zeros(0)
        matches = (np.zeros((0, 2)), np.zeros((0, 2)), len(cols))
    else:
        d = np.linalg.norm(cols[:, None, :] - peaks[None, :, :], axis=-1)
        cost = np.where(d <= max_distance, d, 1e6)
        ri, ci = linear_sum_assignment(cost)
        ok = d[ri, ci] <= max_distance
        ri, ci = ri[ok], ci[ok]
        errors = d[ri, ci] * 100.0  # A -> pm
        matches = (cols[ri], peaks[ci], len(cols) - len(ri))
    return (errors, *matches) if return_matches else errors


def peak_values(wave, positions_px) -> np.ndarray:
    """Complex values of ``wave`` at sub-pixel ``(row, col)`` positions (bilinear)."""
    from scipy import ndimage

    wave = np.asarray(wave)
    pos = np.asarray(positions_px, dtype=float).reshape(-1, 2).T
    re = ndimage.map_coordinates(wave.real, pos, order=1, mode="nearest")
    im = ndimage.map_coordinates(wave.imag, pos, order=1, mode="nearest")
    return re + 1j * im


def summarize(values: dict[str, np.ndarray]) -> dict[str, float]:
    """Medians (and 25th/75th percentiles) of per-sample metric arrays, ignoring NaNs."""
    out = {}
    for k, v in values.items():
        v = np.asarray(v, dtype=float).ravel()
        v = v[np.isfinite(v)]
        if v.size == 0:
            out[f"{k}_median"] = None
            continue
        out[f"{k}_median"] = float(np.median(v))
        out[f"{k}_p25"] = float(np.percentile(v, 25))
        out[f"{k}_p75"] = float(np.percentile(v, 75))
    return out
