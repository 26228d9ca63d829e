"""Physics refinement: the exit wave that best explains every image of a focal series.

Starting from a network's exit wave ``psi0`` and microscope parameters (given, or estimated by
:mod:`napari_exitwave.estimate`), minimise over the complex wave ``psi``

    L(psi) = sum_i sum_px w (g_i I_i(psi) + o_i - m_i)^2 / (2 v_i)  +  lambda / 2 sum_px |psi - psi0|^2

where ``I_i`` is the project's image model without noise (:mod:`napari_exitwave.physics`: CTF
with the focal-spread envelope, ``|.|^2`` on the 2x grid, Fourier crop, blur and detector MTF),
``m_i`` the measured images, ``g_i`` their gain (mean of ``m_i`` over mean of ``I_i(psi0)``,
as in :mod:`napari_exitwave.residual`, then fixed; ``o_i = 0``), ``v_i`` the shot-noise variance of a vacuum pixel at the image's dose,
the detector MTF's share of it included (as in
:mod:`napari_exitwave.residual`), ``w`` 0 on a ``border`` of the frame (the model is periodic, the images are not) and 1 inside.
The Gaussian noise term is the Poisson likelihood at the dose's scale. ``lambda`` (``strength``)
pulls the wave toward the network's answer where the images say little (the CTF's zeros, the
lowest frequencies). Any number of images works, also the paper's 11-image series of Section 6.

The gradient is analytic (adjoint FFTs, checked against finite differences in the tests) and
L-BFGS (SciPy) does the minimisation.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from . import physics
from .physics import _fourier_crop_or_pad

__all__ = ["RefineResult", "refine_exit_wave", "ImageModel", "GIVEN_STRENGTH",
           "ESTIMATED_STRENGTH"]

#: ``strength`` with the microscope's own parameters (benchmarks/compare_traditional.py
#: --refine: median complex RMSE 0.0147 -> 0.0131 on the 11-image series, docs/traditional.md)
GIVEN_STRENGTH = 1.0
#: ``strength`` with estimated and fitted parameters (the pipeline's when nothing is given):
#: their remaining errors (coma, the detector MTF) are fitted into the wave at strength 1
#: (0.0147 -> 0.0159); a stronger pull toward the network's wave keeps what the images add
#: without that (benchmarks/refine_parameters.py --strengths, docs/traditional.md)
ESTIMATED_STRENGTH = 10.0


class ImageModel:
    """Noise-free images of a wave and the adjoint of their derivative (one focal series)."""

    def __init__(self, shape: tuple[int, int], sampling: float,
                 params: Sequence[physics.MicroscopeParameters]):
        self.shape = tuple(shape)
        self.sampling = float(sampling)
        self.ctfs = [physics.ctf(self.shape, sampling, p) for p in params]
        self.filters = []
        for p in params:
            k = physics.gaussian_transfer(self.shape, sampling, p.blur_sigma(sampling))
            if p.mtf_c1 != 1.0:
                k = k * physics.mtf_transfer(self.shape, p.mtf_c1, p.mtf_c2, p.mtf_c3)
            self.filters.append(k)
        ny, nx = self.shape
        self.big = (2 * ny, 2 * nx)

    def forward(self, psi: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        """Images ``(n, ny, nx)`` and the 2x-grid waves (kept for :meth:`adjoint`)."""
        f = np.fft.fft2(psi)
        images, waves = [], []
        for t, k in zip(self.ctfs, self.filters):
            phi = 4 * np.fft.ifft2(_fourier_crop_or_pad(f * t, self.big))
            j = phi.real**2 + phi.imag**2
            s = _fourier_crop_or_pad(np.fft.fft2(j), self.shape) * k
            images.append(np.fft.ifft2(s).real / 4)
            waves.append(phi)
        return np.stack(images), waves

    def adjoint(self, grads: np.ndarray, waves: list[np.ndarray]) -> np.ndarray:
        """``dL/d(Re psi) + i dL/d(Im psi)`` from ``dL/dI_i`` (``grads``, (n, ny, nx))."""
        n_small = self.shape[0] * self.shape[1]
        n_big = self.big[0] * self.big[1]
        out = np.zeros(self.shape, complex)
        for r, t, k, phi in zip(grads, self.ctfs, self.filters, waves):
            s_bar = np.fft.fft2(r) / (4 * n_small) * k
            j_bar = (n_big * np.fft.ifft2(_fourier_crop_or_pad(s_bar, self.big))).real
            phi_bar = 2 * j_bar * phi
            g_bar = 4 * _fourier_crop_or_pad(np.fft.fft2(phi_bar), self.shape) / n_big
            out += n_small * np.fft.ifft2(np.conj(t) * g_bar)
        return out


@dataclasses.dataclass
class RefineResult:
    """The refined wave and how the fit went.

    ``chi2_start`` / ``chi2_end`` are the data term per pixel and image (``2 L_data / (n N)``,
    about the reduced chi-square) at the start and the end; ``iterations`` L-BFGS steps.
    """

    exit_wave: np.ndarray
    chi2_start: float
    chi2_end: float
    iterations: int
    gain: np.ndarray
    offset: np.ndarray
    message: str


def refine_exit_wave(start: np.ndarray, sampling: float, images: np.ndarray,
                     params: Sequence[physics.MicroscopeParameters], *, strength: float = 1.0,
                     iterations: int = 60, border: int = 8, information: float = 0.1,
                     target_chi2: float = 1.0) -> RefineResult:
    """Refine ``start`` (complex ``(ny, nx)``, vacuum 1) against ``images`` ``(n, ny, nx)``.

    Parameters
    ----------
    start : the network's exit wave at ``sampling`` A/px (the images' grid).
    images : measured intensities, any gain and offset.
    params : one :class:`~napari_exitwave.physics.MicroscopeParameters` per image, with a finite
        dose (e/A^2): it sets the noise scale and so the balance with ``strength``.
    strength : ``lambda`` of the module doc in units of ``1 / v`` of the first image: 1 means a
        deviation of 1 from the start costs as much as one noise-sigma of misfit in one pixel.
    iterations : largest number of L-BFGS iterations.
    border : pixels at each edge left out of the data term.
    information : the wave changes only at frequencies where some image's transfer (focal-spread
        envelope x blur x MTF) exceeds this; elsewhere the start is kept.
    target_chi2 : stop once the data term per pixel reaches this (the discrepancy principle:
        the images are then explained to their noise; going on fits the noise).
    """
    from scipy.optimize import minimize

    psi0 = np.asarray(start, complex)
    m = np.asarray(images, float)
    if m.ndim != 3 or m.shape[1:] != psi0.shape:
        raise ValueError(f"images must be (n, {psi0.shape[0]}, {psi0.shape[1]}), got {m.shape}")
    if len(params) != len(m):
        raise ValueError(f"{len(params)} parameter sets for {len(m)} images")
    if not all(np.isfinite(p.dose) and p.dose > 0 for p in params):
        raise ValueError("every image needs a finite dose (e/A^2) for the noise scale")
    model = ImageModel(psi0.shape, sampling, params)
    w = np.zeros(psi0.shape)
    w[border:psi0.shape[0] - border, border:psi0.shape[1] - border] = 1.0
    first, _ = model.forward(psi0)
    gain, offset = np.ones(len(m)), np.zeros(len(m))
    inner = w > 0
    for i in range(len(m)):  # the gain from the means, as in residual (contrast-free)
        gain[i] = m[i][inner].mean() / first[i][inner].mean()
        if not gain[i] > 0:
            raise ValueError(f"image {i} has a mean of {m[i][inner].mean():.3g}: refinement "
                             "needs intensities (counts, or vacuum = 1), not normalised images")
    from .residual import noise_variance_factor

    var = np.array([g**2 / (p.dose * sampling**2) * noise_variance_factor(psi0.shape, p)
                    for g, p in zip(gain, params)])
    lam = float(strength) / var[0]
    n_data = len(m) * inner.sum()
    shape = psi0.shape

    def data_term(psi):
        imgs, waves = model.forward(psi)
        r = (gain[:, None, None] * imgs + offset[:, None, None] - m) * w
        return float(np.sum(r**2 / (2 * var[:, None, None]))), r, waves

    # the update lives where the images carry information: frequencies whose transfer
    # (temporal envelope x blur x MTF) exceeds ``information`` in at least one image; beyond
    # the information limit a fit would only absorb noise
    transfer = np.max([np.abs(t) * k for t, k in zip(model.ctfs, model.filters)], axis=0)
    band = transfer > float(information)

    def project(z):
        return np.fft.ifft2(np.fft.fft2(z) * band)

    def to_wave(x):
        return psi0 + project(x[:x.size // 2].reshape(shape) + 1j * x[x.size // 2:].reshape(shape))

    def fun(x):
        psi = to_wave(x)
        d, r, waves = data_term(psi)
        grad = model.adjoint(gain[:, None, None] * r / var[:, None, None], waves)
        diff = psi - psi0
        value = d + 0.5 * lam * float(np.sum(np.abs(diff) ** 2))
        grad = project(grad + lam * diff)
        return value, np.concatenate([grad.real.ravel(), grad.imag.ravel()])

    chi_start = 2 * data_term(psi0)[0] / n_data
    x0 = np.zeros(2 * psi0.size)
    last = {"x": x0}

    def stop_at_noise_level(intermediate_result):
        # the discrepancy principle: a fit below the noise level only absorbs noise
        last["x"] = intermediate_result.x
        if 2 * data_term(to_wave(intermediate_result.x))[0] / n_data <= target_chi2:
            raise StopIteration

    res = minimize(fun, x0, jac=True, method="L-BFGS-B", callback=stop_at_noise_level,
                   options={"maxiter": int(iterations), "maxcor": 10})
    psi = to_wave(res.x)
    chi_end = 2 * data_term(psi)[0] / n_data
    return RefineResult(exit_wave=psi.astype(np.complex64), chi2_start=chi_start,
                        chi2_end=chi_end, iterations=int(res.nit), gain=gain, offset=offset,
                        message=str(res.message))
