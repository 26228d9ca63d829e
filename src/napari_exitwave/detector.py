"""The detector MTF and the dose, read from the noise power spectrum of the images themselves.

Beyond the information limit an HRTEM image carries no signal: the temporal envelope of Table 1's
focal spreads (5-20 A) has taken the wave's transfer below 1e-2 by half the Nyquist frequency of a
0.105 A/px grid. What is left there is shot noise, which is white when the electrons arrive and
then goes through the detector's MTF (:mod:`napari_exitwave.physics`: the MTF is applied after the
noise). The power spectrum of an image divided by its mean is therefore, for ``q > q_min``
(``q`` in units of the grid's Nyquist frequency),

    ``P(q) = MTF(q)^2 / (D s^2)``,

with ``D`` the dose (e/A^2) and ``s`` the pixel size (A): the dose sets the level, the MTF the
shape, and a negative ``c1`` (Table 1: -0.6 to 0.2) puts a zero in it where the MTF changes sign.
:func:`fit_noise_spectrum` fits the MTF of the Madsen et al. form (shared by the images of a
series) and one dose per image to that spectrum by the Whittle likelihood of the periodogram
(each Fourier coefficient of white noise through a filter is complex Gaussian with variance
``P(q)``), the dose in closed form for each MTF tried.

This is what the aberration estimator cannot learn well (it sees normalised images, in which the
noise level and the MTF trade against each other), and what the physics residual needs most: its
noise model and its model images both go through the MTF (docs/residual.md).

The fit needs images whose mean is the intensity (counts or vacuum = 1, any gain; the gain
cancels in ``P / mean``) and a pixel size at which the signal has died out by ``q_min``; a camera
offset (dark level) not subtracted biases the dose high.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from . import physics

__all__ = ["NoiseSpectrumFit", "fit_noise_spectrum", "noise_spectrum", "Q_MIN", "MTF_BOUNDS"]

Q_MIN = 0.45
"""Lowest frequency of the fit, units of Nyquist (1.07 1/A, 0.93 A at 0.105 A/px): beyond the
information limit of every Table-1 microscope (the signal's share of the power there was below
2% on simulated series; docs/estimator.md)."""

_R = physics.ParameterRanges()
MTF_BOUNDS = (tuple(_R.mtf_c1), tuple(_R.mtf_c2), tuple(_R.mtf_c3))
"""Search bounds of ``c1, c2, c3``: the training ranges of Table 1. Inside them the fit is
well posed (on simulated series the pixel noise variance comes out within 4%, median); with
bounds twice as wide the tail beyond ``q_min`` trades the MTF's level against the dose
(median MTF error 0.13 instead of 0.06, docs/estimator.md). A camera outside the training
ranges is out of distribution for the networks as well."""


@dataclasses.dataclass
class NoiseSpectrumFit:
    """The detector MTF and doses of one focal series, from its noise power spectrum.

    Attributes
    ----------
    mtf : (c1, c2, c3)
        :func:`napari_exitwave.physics.mtf` parameters, frequencies in units of the Nyquist
        frequency of the grid the images were given on.
    dose : float array (n,)
        Dose of each image, e/A^2 (the noise level relative to the image's mean).
    sampling : float
        Pixel size of that grid, A.
    q_min : float
        Lowest frequency fitted (units of Nyquist).
    ratio_rms : float
        Rms of ``measured / fitted - 1`` over the fitted frequency bins, against ``expected_rms``
        for pure noise: a ratio well above 1 says the spectrum does not follow the model (signal
        beyond ``q_min``, a camera offset, processed images).
    expected_rms : float
    """

    mtf: tuple[float, float, float]
    dose: np.ndarray
    sampling: float
    q_min: float
    ratio_rms: float
    expected_rms: float

    @property
    def log10_dose(self) -> float:
        """Mean log10 dose of the series."""
        return float(np.mean(np.log10(self.dose)))

    @property
    def consistent(self) -> bool:
        """Whether the spectrum follows the noise model (``ratio_rms <= 2 expected_rms``)."""
        return bool(self.ratio_rms <= 2.0 * self.expected_rms)

    def mtf_at(self, q) -> np.ndarray:
        return physics.mtf(np.asarray(q, float), *self.mtf)

    def to_dict(self) -> dict[str, Any]:
        return {"mtf_c1": self.mtf[0], "mtf_c2": self.mtf[1], "mtf_c3": self.mtf[2],
                "dose": [float(d) for d in self.dose], "sampling": self.sampling,
                "q_min": self.q_min, "ratio_rms": self.ratio_rms,
                "expected_rms": self.expected_rms, "consistent": self.consistent}


def _frequencies(shape) -> np.ndarray:
    qy = np.fft.fftfreq(shape[0]) * 2.0
    qx = np.fft.fftfreq(shape[1]) * 2.0
    return np.sqrt(qy[:, None] ** 2 + qx[None, :] ** 2)


def _spectrum(image: np.ndarray, q_min: float, axis_exclusion: int):
    """``(q, power)`` of every Fourier coefficient of ``image / mean - 1`` kept for the fit."""
    img = np.asarray(image, np.float64)
    mean = img.mean()
    if not mean > 0:
        raise ValueError(f"the image has a mean of {mean:.3g}: the noise spectrum needs "
                         "intensities (counts or vacuum = 1), not zero-mean normalised images")
    x = img / mean - 1.0
    power = np.abs(np.fft.fft2(x)) ** 2 / x.size
    q = _frequencies(x.shape)
    ny, nx = x.shape
    iy = np.minimum(np.arange(ny), ny - np.arange(ny))
    ix = np.minimum(np.arange(nx), nx - np.arange(nx))
    keep = (q >= q_min) & (iy[:, None] >= axis_exclusion) & (ix[None, :] >= axis_exclusion)
    return q[keep], power[keep]


def noise_spectrum(image: np.ndarray, q_min: float = Q_MIN, bins: int | None = 240,
                   axis_exclusion: int = 2):
    """Periodogram of ``image / mean(image)`` beyond ``q_min`` (units of Nyquist).

    Returns ``(q, power, count)``: with ``bins``, per non-empty frequency bin the mean frequency,
    the mean ``|FFT|^2 / N`` and the number of Fourier coefficients; with ``bins=None`` per
    distinct ``|q|`` (exact for a model evaluated at ``q``, also where the MTF has a zero).
    Coefficients within ``axis_exclusion`` px of the ``kx = 0`` and ``ky = 0`` axes are left out:
    a frame that is not periodic puts its edge discontinuities there (the cross in a power
    spectrum).
    """
    qk, pk = _spectrum(image, q_min, axis_exclusion)
    if bins is None:
        q, idx = np.unique(np.round(qk, 9), return_inverse=True)
        count = np.bincount(idx, minlength=q.size).astype(float)
        return q, np.bincount(idx, pk, minlength=q.size) / count, count
    edges = np.linspace(q_min, qk.max() + 1e-9, bins + 1) if qk.size else np.array([q_min])
    idx = np.clip(np.digitize(qk, edges) - 1, 0, max(bins - 1, 0))
    count = np.bincount(idx, minlength=bins).astype(float)
    psum = np.bincount(idx, pk, minlength=bins)
    qsum = np.bincount(idx, qk, minlength=bins)
    ok = count > 0
    return qsum[ok] / count[ok], psum[ok] / count[ok], count[ok]


def fit_noise_spectrum(images: np.ndarray, sampling: float, q_min: float = Q_MIN,
                       bounds=MTF_BOUNDS, starts: int = 5) -> NoiseSpectrumFit:
    """Fit the detector MTF and the dose of each image to the noise power spectrum.

    Parameters
    ----------
    images : float (n, ny, nx) or (ny, nx)
        Intensities (counts, any gain; or vacuum = 1) on the detector grid, not normalised to
        zero mean. At least 32 px a side.
    sampling : float
        Pixel size, A (only converts the noise level into a dose).
    q_min : float
        Lowest frequency of the fit, units of Nyquist (:data:`Q_MIN`).

    The MTF is shared by the images, the dose is per image. The likelihood is profiled over the
    doses and maximised over ``(c1, c2, c3)`` inside ``bounds`` from a grid of starts (the zero
    of a negative ``c1`` makes it multimodal).
    """
    from scipy.optimize import minimize

    images = np.asarray(images, np.float64)
    if images.ndim == 2:
        images = images[None]
    if images.ndim != 3 or min(images.shape[1:]) < 32:
        raise ValueError(f"need images of at least 32 x 32 px, got shape {images.shape}")
    if not np.all(np.isfinite(images)):
        raise ValueError("the images contain NaN or infinite pixels")
    spectra = [noise_spectrum(im, q_min, bins=None) for im in images]
    q = spectra[0][0]
    if q.size < 8:
        raise ValueError(f"too few frequencies beyond q_min = {q_min} to fit")
    counts = spectra[0][2]
    powers = np.stack([s[1] for s in spectra])
    # Whittle likelihood on bins of 0.005 Nyquist, the model averaged over each bin's
    # coefficients exactly: near a zero of the MTF the per-coefficient likelihood is a needle
    # no optimiser finds, the bin average keeps it smooth
    n_bins = max(8, int(round((q.max() - q.min()) / 0.005)))
    b = np.minimum(((q - q.min()) / (q.max() - q.min() + 1e-12) * n_bins).astype(int),
                   n_bins - 1)
    n_b = np.bincount(b, counts, minlength=n_bins)
    used = n_b > 0
    n_b = n_b[used]
    p_b = np.stack([np.bincount(b, counts * p, minlength=n_bins)[used] for p in powers]) / n_b
    weight = n_b / n_b.sum()

    def profile(c):
        m2 = np.bincount(b, counts * physics.mtf(q, *c) ** 2, minlength=n_bins)[used] / n_b
        m2 = m2 + 1e-12
        # for each image the level a = 1 / (D s^2) maximising the likelihood: mean(P / MTF^2)
        level = (p_b / m2 * weight).sum(axis=1)
        model = level[:, None] * m2
        return float(np.sum(weight * (np.log(model) + p_b / model))), level

    lo, hi = zip(*bounds)
    # a coarse grid first, then Nelder-Mead from its best points: the zero of a negative c1
    # makes the likelihood rough and multimodal (gradient steps stop in the nearest dip)
    grid = [(a, b, g) for a in np.linspace(lo[0], hi[0], 13) for b in np.linspace(lo[1], hi[1], 8)
            for g in np.geomspace(lo[2], hi[2], 9)]
    scores = np.array([profile(c)[0] for c in grid])
    best = None
    for i in np.argsort(scores)[:starts]:
        res = minimize(lambda c: profile(c)[0], x0=grid[i], method="Nelder-Mead", bounds=bounds,
                       options=dict(xatol=1e-4, fatol=1e-7))
        if best is None or res.fun < best.fun:
            best = res
    c = tuple(float(np.clip(v, a, b)) for v, a, b in zip(best.x, lo, hi))
    _, level = profile(c)
    # goodness of fit on coarse bins (enough coefficients each to see a deviation)
    edges = np.linspace(q.min(), q.max() + 1e-9, 61)
    gb = np.digitize(q, edges) - 1
    m2 = physics.mtf(q, *c) ** 2
    gn = np.bincount(gb, counts, minlength=60)
    model_b = np.stack([np.bincount(gb, counts * lv * m2, minlength=60) for lv in level])
    meas_b = np.stack([np.bincount(gb, counts * p, minlength=60) for p in powers])
    # bins where the fitted MTF nearly vanishes carry no scale information: leave them out
    good = (gn > 0) & (model_b.min(axis=0) > 1e-3 * model_b.max())
    ratio = meas_b[:, good] / model_b[:, good]
    ratio_rms = float(np.sqrt(np.mean((ratio - 1.0) ** 2)))
    # a real image's coefficients at q and -q are one: half the count is independent
    expected = float(np.sqrt(np.mean(2.0 / gn[good])))
    dose = 1.0 / (level * float(sampling) ** 2)
    return NoiseSpectrumFit(mtf=c, dose=dose, sampling=float(sampling), q_min=float(q_min),
                            ratio_rms=ratio_rms, expected_rms=expected)
