"""Physics residual: is an exit wave consistent with the focal series it was made from?

The exit wave is imaged again with the project's image model (:mod:`napari_exitwave.physics`,
the same CTF, blur and detector MTF as in training) and the given microscope parameters, and
compared with the measured images in units of the expected shot noise. For the right exit wave
and the right parameters the residual is noise: its reduced chi-square is near 1. A wrong exit
wave, wrong aberrations, images in the wrong order or a wrong pixel size raise it.

The shot noise of a pixel with expected intensity ``I`` (vacuum = 1) at dose ``D`` e/A^2 on a
``s`` A pixel is ``sqrt(I / (D s^2))``; the detector MTF, applied after the noise, scales its
variance by the mean of ``MTF^2`` over the grid. Each measured image may carry an unknown gain
(a camera's counts per electron): it is the ratio of the image's mean to the model's mean, which
the lens does not change (the CTF moves intensity around, the blur and MTF keep the mean), so it
does not depend on the wave's contrast. A least-squares gain and offset would not do: a wave with
too little contrast would get a larger gain, and the residual, in units of the gain-scaled noise,
would *fall* (a weak-phase start scored 0.39 against the truth's 1.02). A known camera offset
(dark level) is subtracted first (``offset``). A border of ``border`` px is left out (the periodic
image model wraps there).

This module is the second part of the microscope-estimate issue; the parameters come from the
user, the file or (later) the estimator network.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from . import physics

__all__ = ["Residual", "physics_residual", "noise_variance_factor"]


@dataclasses.dataclass
class Residual:
    """The residual of one focal series.

    Attributes
    ----------
    images : float32 (n, ny, nx)
        ``(measured - model) / sigma`` per pixel (the border set to 0).
    chi2 : float array (n,)
        Reduced chi-square of each image (mean of the squared residual inside the border).
    reduced_chi2 : float
        Of the whole series (mean over the images).
    gain, offset : float arrays (n,)
        ``measured ~ gain * model + offset`` of each image (the gain from the means, the offset
        as given).
    model : float32 (n, ny, nx)
        The noise-free images the exit wave gives with the parameters.
    misfit : float array (n,)
        The dose-free size of the misfit: rms of ``measured / gain - model`` beyond the
        expected shot noise, in units of the vacuum intensity (``sqrt(max(mean(d^2) -
        mean(sigma^2), 0))``). The reduced chi-square is about ``1 + misfit^2 / sigma^2``, so
        for the same misfit it grows with the dose; this does not (docs/residual.md: it
        separates good from failed reconstructions better across doses).
    """

    images: np.ndarray
    chi2: np.ndarray
    reduced_chi2: float
    gain: np.ndarray
    offset: np.ndarray
    model: np.ndarray
    misfit: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))

    @property
    def misfit_rms(self) -> float:
        """The series' misfit (rms over its images), vacuum-intensity units."""
        return float(np.sqrt(np.mean(self.misfit**2))) if self.misfit.size else float("nan")


def noise_variance_factor(shape: Sequence[int], p: physics.MicroscopeParameters) -> float:
    """Factor by which the detector MTF scales white shot-noise variance: ``mean(MTF^2)``."""
    if p.mtf_c1 == 1.0:
        return 1.0
    m = physics.mtf_transfer(shape, p.mtf_c1, p.mtf_c2, p.mtf_c3)
    return float(np.mean(m**2))


def physics_residual(exit_wave: np.ndarray, sampling: float, images: np.ndarray,
                     params: Sequence[physics.MicroscopeParameters], *, fit_gain: bool = True,
                     offset: float = 0.0, border: int = 8) -> Residual:
    """Residual of ``images`` against ``exit_wave`` imaged with ``params``.

    Parameters
    ----------
    exit_wave : complex (ny, nx)
        Vacuum = 1 + 0j, at ``sampling`` A/px (the images' grid).
    sampling : float
        Pixel size of the exit wave and the images, A/px.
    images : float (n, ny, nx)
        The measured focal series: intensities (counts or vacuum = 1; any gain when
        ``fit_gain``), not zero-mean normalised images.
    params : n :class:`~napari_exitwave.physics.MicroscopeParameters`
        One per image (defocus, aberrations, blur, MTF and the finite dose in e/A^2).
    fit_gain : bool
        Take each image's gain from its mean (else the images must be vacuum-normalised).
    offset : float
        Known camera offset (dark level) of the images, subtracted before the gain.
    border : int
        Pixels left out at each edge.
    """
    wave = np.asarray(exit_wave)
    images = np.asarray(images, dtype=np.float64)
    if wave.ndim != 2 or not np.iscomplexobj(wave):
        raise ValueError(f"exit_wave must be a complex 2-D array, got {wave.dtype} {wave.shape}")
    if images.ndim != 3 or images.shape[1:] != wave.shape:
        raise ValueError(f"images must be (n, {wave.shape[0]}, {wave.shape[1]}) like the exit "
                         f"wave, got {images.shape}")
    if len(params) != len(images):
        raise ValueError(f"{len(params)} parameter sets for {len(images)} images")
    if not all(np.isfinite(p.dose) and p.dose > 0 for p in params):
        raise ValueError("every image needs a finite dose (e/A^2): the noise model depends on it")
    if not 0 <= 2 * border < min(wave.shape):
        raise ValueError(f"border ({border} px) leaves nothing of a {wave.shape} frame")
    clean = [dataclasses.replace(p, dose=np.inf) for p in params]
    model = physics.simulate_focal_series(wave, sampling, clean)
    inner = (slice(border, wave.shape[0] - border), slice(border, wave.shape[1] - border))
    n = len(images)
    res = np.zeros_like(images)
    chi2, gain, misfit = np.empty(n), np.ones(n), np.zeros(n)
    offsets = np.full(n, float(offset))
    for i, (meas, mod, p) in enumerate(zip(images, model, params)):
        if fit_gain:
            gain[i] = (meas[inner].mean() - offsets[i]) / mod[inner].mean()
            if not gain[i] > 0:
                raise ValueError(
                    f"image {i} has a mean of {meas[inner].mean():.3g} (after the offset "
                    f"{offsets[i]:g}): the residual needs intensities (counts, or vacuum = 1), "
                    "not zero-mean normalised images")
        var = (np.clip(mod, 1e-6, None) / (p.dose * sampling**2)
               * noise_variance_factor(wave.shape, p))
        r = (meas - gain[i] * mod - offsets[i]) / (gain[i] * np.sqrt(var))
        res[i][inner] = r[inner]
        chi2[i] = float(np.mean(r[inner] ** 2))
        d = (meas - offsets[i])[inner] / gain[i] - mod[inner]
        misfit[i] = np.sqrt(max(float(np.mean(d**2) - np.mean(var[inner])), 0.0))
    return Residual(images=res.astype(np.float32), chi2=chi2, reduced_chi2=float(chi2.mean()),
                    gain=gain, offset=offsets, model=model.astype(np.float32),
                    misfit=misfit)
