"""The HRTEM image model shared by training and inference.

Everything a network sees is made here: the contrast transfer function (CTF) with its
envelopes, intensity formation, resampling, blur, shot noise, the detector MTF and the
normalisation. Training imports these functions, and the plugin normalises with the same
code, so a network sees at run time exactly what it saw in training.

Units and conventions (used everywhere in this project)
-------------------------------------------------------
- Lengths in Angstrom (A), spatial frequencies in 1/A, energies in eV, dose in electrons/A^2.
- Arrays are ``(..., ny, nx)``; ``sampling`` is the pixel size in A (isotropic).
- Aberrations follow abTEM (polar notation, Krivanek): the wave is multiplied by
  ``exp(-i chi)`` with
  ``chi(alpha, phi) = 2 pi / lambda * [ 1/2 alpha^2 (C10 + C12 cos(2 (phi - phi12)))
  + 1/3 alpha^3 C21 cos(phi - phi21) + 1/4 alpha^4 C30 ]``, ``alpha = lambda k``.
  **defocus = -C10** (abTEM), so a positive defocus is underfocus; ``Cs = C30``.
- The temporal (focal-spread) envelope is abTEM's ``exp(-(pi lambda Delta k^2 / 2)^2)``,
  with ``Delta`` the focal spread in A.
- Blur is a Gaussian applied to the intensity on the image grid. Its standard deviation
  ``blur`` is in **pixels of the image grid** by default (``blur_unit="px"``; Table 1's
  0.5-1.5 is 0.05-0.16 A at 0.105 A/px), or in A with ``blur_unit="A"``. Table 1 prints "A",
  but a sigma of 1-1.5 A would erase the 2.7 A MoS2 fringes the paper's networks resolve, and
  the precursor code (Madsen et al.) blurs in pixels (DESIGN.md).
- The MTF uses the Madsen et al. convention: ``q`` in units of the Nyquist frequency of the
  detector grid, ``MTF(q) = (1 - c1) / (1 + (q / (2 c2))^c3) + c1``; ``MTF(0) = 1`` and
  ``MTF(q -> inf) = c1``. It is applied in Fourier space after the shot noise, which is what
  correlates the noise between neighbouring pixels.
- Normalisation: each image of a series is standardised to zero mean and unit standard
  deviation (:func:`normalize_series`). Vacuum in an exit wave is ``1 + 0j``.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from ._parameters import (BLUR_UNITS, DEFAULT_ENERGY, MicroscopeParameters, ParameterRanges,
                          sample_parameters)

__all__ = [
    "DEFAULT_ENERGY",
    "BLUR_UNITS",
    "MicroscopeParameters",
    "ParameterRanges",
    "energy2wavelength",
    "spatial_frequencies",
    "aberration_phase",
    "temporal_envelope",
    "ctf",
    "mtf",
    "apply_ctf",
    "fourier_resample",
    "resample",
    "gaussian_transfer",
    "mtf_transfer",
    "gaussian_blur",
    "apply_dose",
    "apply_mtf",
    "simulate_image",
    "simulate_focal_series",
    "sample_parameters",
    "normalize_series",
    "debye_waller_u2",
]

_HBAR = 1.054571817e-34
_KB = 1.380649e-23
_AMU = 1.66053906660e-27
_M0C2_EV = 510998.95  # electron rest energy, eV
_HC_EV_A = 12398.419843320026  # h c in eV A


def energy2wavelength(energy: float) -> float:
    """Relativistic electron wavelength in A for an acceleration voltage in eV.

    Examples
    --------
    >>> round(energy2wavelength(50e3), 5)
    0.05357
    """
    if energy <= 0:
        raise ValueError(f"energy must be positive (eV), got {energy}")
    return _HC_EV_A / math.sqrt(energy * (2 * _M0C2_EV + energy))


def debye_waller_u2(mass_amu: float = 32.06, debye_temperature: float = 580.0,
                    temperature: float = 300.0) -> float:
    """Mean-square vibration amplitude <u^2> in A^2 from the Debye model, Eq. (1) of the paper.

    ``<u^2> = 3 hbar^2 / (2 m k_B theta_D) * (1/4 + T / theta_D)``. The defaults (mass of S,
    theta_D = 580 K, T = 300 K) give 0.0030 A^2, the paper's value for MoS2.
    """
    if mass_amu <= 0 or debye_temperature <= 0 or temperature < 0:
        raise ValueError("mass_amu and debye_temperature must be positive, temperature >= 0")
    m = mass_amu * _AMU
    u2 = 3 * _HBAR**2 / (2 * m * _KB * debye_temperature) * (0.25 + temperature / debye_temperature)
    return u2 * 1e20  # m^2 -> A^2


def spatial_frequencies(shape: Sequence[int], sampling: float) -> tuple[np.ndarray, np.ndarray]:
    """Spatial frequencies ``(ky, kx)`` in 1/A of an FFT grid, broadcastable to ``shape``."""
    if sampling <= 0:
        raise ValueError(f"sampling must be positive (A/px), got {sampling}")
    ny, nx = shape[-2:]
    ky = np.fft.fftfreq(ny, d=sampling)[:, None]
    kx = np.fft.fftfreq(nx, d=sampling)[None, :]
    return ky, kx


def aberration_phase(shape: Sequence[int], sampling: float, p: MicroscopeParameters) -> np.ndarray:
    """The aberration function chi (rad) on an FFT grid, in abTEM's convention (see module doc)."""
    wavelength = energy2wavelength(p.energy)
    ky, kx = spatial_frequencies(shape, sampling)
    alpha = np.sqrt(kx**2 + ky**2) * wavelength
    phi = np.arctan2(ky, kx)
    c10 = -p.defocus
    chi = (0.5 * alpha**2 * (c10 + p.astigmatism * np.cos(2 * (phi - p.astigmatism_angle)))
           + 1 / 3 * alpha**3 * p.coma * np.cos(phi - p.coma_angle)
           + 0.25 * alpha**4 * p.Cs)
    return 2 * np.pi / wavelength * chi


def temporal_envelope(shape: Sequence[int], sampling: float, focal_spread: float,
                      energy: float = DEFAULT_ENERGY) -> np.ndarray:
    """abTEM's focal-spread envelope ``exp(-(pi lambda Delta k^2 / 2)^2)`` on an FFT grid."""
    wavelength = energy2wavelength(energy)
    ky, kx = spatial_frequencies(shape, sampling)
    k2 = kx**2 + ky**2
    return np.exp(-((0.5 * np.pi * wavelength * focal_spread * k2) ** 2))


def ctf(shape: Sequence[int], sampling: float, p: MicroscopeParameters) -> np.ndarray:
    """Complex wave transfer function ``exp(-i chi) * E_t`` on an FFT grid (unshifted)."""
    h = np.exp(-1j * aberration_phase(shape, sampling, p))
    if p.focal_spread > 0:
        h = h * temporal_envelope(shape, sampling, p.focal_spread, p.energy)
    return h.astype(np.complex128)


def mtf(q: np.ndarray, c1: float, c2: float, c3: float) -> np.ndarray:
    """Detector modulation transfer function, ``(1 - c1) / (1 + (q / (2 c2))^c3) + c1``.

    ``q`` is the spatial frequency in units of the Nyquist frequency (Madsen et al.).
    """
    q = np.abs(np.asarray(q, dtype=float))
    if c2 <= 0:
        raise ValueError(f"mtf c2 must be positive, got {c2}")
    return (1 - c1) / (1 + (q / (2 * c2)) ** c3) + c1


def apply_ctf(wave: np.ndarray, sampling: float, p: MicroscopeParameters) -> np.ndarray:
    """Propagate a complex wave through the objective lens: ``IFFT(FFT(wave) * CTF)``."""
    wave = np.asarray(wave)
    return np.fft.ifft2(np.fft.fft2(wave) * ctf(wave.shape, sampling, p))


def _fourier_crop_or_pad(ft: np.ndarray, new_shape: tuple[int, int]) -> np.ndarray:
    """Crop or zero-pad an unshifted 2-D spectrum (last two axes) to ``new_shape``."""
    old = ft.shape[-2:]
    out = np.zeros(ft.shape[:-2] + tuple(new_shape), dtype=ft.dtype)
    sl_old, sl_new = [], []
    for n_old, n_new in zip(old, new_shape):
        n = min(n_old, n_new)
        lo = (n + 1) // 2  # non-negative frequencies incl. 0
        hi = n - lo  # negative frequencies
        sl_old.append((slice(0, lo), slice(n_old - hi, n_old) if hi else slice(0, 0)))
        sl_new.append((slice(0, lo), slice(n_new - hi, n_new) if hi else slice(0, 0)))
    for a in range(2):
        for b in range(2):
            out[..., sl_new[0][a], sl_new[1][b]] = ft[..., sl_old[0][a], sl_old[1][b]]
    return out


def fourier_resample(array: np.ndarray, sampling: float, new_sampling: float,
                     shape: tuple[int, int] | None = None) -> tuple[np.ndarray, float]:
    """Band-limited resampling of a periodic 2-D array by cropping/padding its spectrum.

    The field of view is kept, so the output shape is ``round(n * sampling / new_sampling)``
    (or ``shape``) and the returned sampling is the exact one of the new grid, which can
    differ slightly from ``new_sampling``. Works for real and complex arrays; mean preserved.

    Returns
    -------
    resampled, actual_sampling
    """
    array = np.asarray(array)
    ny, nx = array.shape[-2:]
    if shape is None:
        shape = (max(1, round(ny * sampling / new_sampling)),
                 max(1, round(nx * sampling / new_sampling)))
    ft = np.fft.fft2(array)
    out = np.fft.ifft2(_fourier_crop_or_pad(ft, shape)) * (shape[0] * shape[1] / (ny * nx))
    if not np.iscomplexobj(array):
        out = out.real
    return out.astype(array.dtype, copy=False), ny * sampling / shape[0]


def resample(image: np.ndarray, sampling: float, new_sampling: float, order: int = 3) -> np.ndarray:
    """Resample a (non-periodic) image to a new pixel size with spline interpolation.

    Used at inference on experimental images, whose edges are not periodic. Complex arrays
    are resampled part by part. Leading axes (e.g. the images of a series) are kept.
    """
    from scipy import ndimage

    if sampling <= 0 or new_sampling <= 0:
        raise ValueError("sampling and new_sampling must be positive (A/px)")
    image = np.asarray(image)
    if np.isclose(sampling, new_sampling, rtol=1e-6):
        return image.copy()
    zoom = [sampling / new_sampling] * 2
    if np.iscomplexobj(image):
        return (resample(image.real, sampling, new_sampling, order)
                + 1j * resample(image.imag, sampling, new_sampling, order))
    if image.ndim > 2:
        # image by image: the same values as one zoom with factor 1 on the leading axes (a
        # spline through integer positions reproduces them), without interpolating across
        # images, which costs 4x (order 3) per leading axis
        flat = image.reshape((-1,) + image.shape[-2:])
        out = [ndimage.zoom(im, zoom, order=order, mode="nearest") for im in flat]
        return np.stack(out).reshape(image.shape[:-2] + out[0].shape)
    return ndimage.zoom(image, zoom, order=order, mode="nearest")


def gaussian_transfer(shape: Sequence[int], sampling: float, sigma: float,
                      half: bool = False) -> np.ndarray:
    """Transfer function of a Gaussian blur, ``exp(-2 pi^2 sigma^2 k^2)``, on an FFT grid.

    Parameters
    ----------
    shape : (..., ny, nx)
        Grid shape; only the last two axes count.
    sampling : float
        Pixel size in A/px.
    sigma : float
        Standard deviation of the blur in A (``sigma = 0`` gives ones).
    half : bool
        The ``rfft2`` half grid ``(ny, nx // 2 + 1)`` instead (for real images).

    Returns
    -------
    float64 array (ny, nx), 1 at ``k = 0``, even in ``k``.

    Examples
    --------
    >>> float(gaussian_transfer((4, 4), 0.1, 0.0).min())
    1.0
    """
    if not (np.isfinite(sigma) and sigma >= 0):
        raise ValueError(f"sigma must be >= 0 (A, standard deviation), got {sigma}")
    ky, kx = spatial_frequencies(shape, sampling)
    if half:
        kx = np.fft.rfftfreq(shape[-1], d=sampling)[None, :]
    return np.exp(-2 * np.pi**2 * sigma**2 * (kx**2 + ky**2))


def mtf_transfer(shape: Sequence[int], c1: float, c2: float, c3: float,
                 half: bool = False) -> np.ndarray:
    """The detector MTF (:func:`mtf`) on an FFT grid (unshifted), frequencies in units of Nyquist.

    A detector property, so it needs no pixel size: ``q = 2 * sqrt(fy^2 + fx^2)`` with ``f`` in
    cycles per pixel (Nyquist is 0.5 cycles/px). Returns a float64 array (ny, nx), 1 at ``q = 0``
    (``half=True``: the ``rfft2`` half grid ``(ny, nx // 2 + 1)``).

    Examples
    --------
    >>> float(mtf_transfer((8, 8), 0.2, 0.15, 1.0)[0, 0])
    1.0
    """
    ny, nx = shape[-2:]
    qy = np.fft.fftfreq(ny)[:, None] * 2  # cycles/px -> units of Nyquist (0.5 cycles/px)
    qx = (np.fft.rfftfreq(nx) if half else np.fft.fftfreq(nx))[None, :] * 2
    return mtf(np.sqrt(qx**2 + qy**2), c1, c2, c3)


def gaussian_blur(image: np.ndarray, sampling: float, sigma: float) -> np.ndarray:
    """Gaussian blur of standard deviation ``sigma`` A, applied in Fourier space (periodic).

    The kernel is :func:`gaussian_transfer`."""
    if sigma <= 0:
        return np.asarray(image)
    g = gaussian_transfer(np.shape(image), sampling, sigma)
    out = np.fft.ifft2(np.fft.fft2(image) * g)
    return out if np.iscomplexobj(image) else out.real


def apply_dose(intensity: np.ndarray, sampling: float, dose: float,
               rng: np.random.Generator | None = None) -> np.ndarray:
    """Poisson shot noise for ``dose`` e/A^2; returns counts / expected counts (mean ~1 in vacuum).

    ``intensity`` is the image relative to vacuum (vacuum = 1). The expected number of electrons
    in a pixel is ``intensity * dose * sampling^2``. ``dose = inf`` returns the image unchanged.
    """
    if not np.isfinite(dose):
        return np.asarray(intensity, dtype=float)
    if dose <= 0:
        raise ValueError(f"dose must be positive (e/A^2), got {dose}")
    rng = np.random.default_rng() if rng is None else rng
    electrons_per_pixel = dose * sampling**2
    lam = np.clip(intensity, 0, None) * electrons_per_pixel
    return rng.poisson(lam).astype(float) / electrons_per_pixel


def apply_mtf(image: np.ndarray, c1: float, c2: float, c3: float) -> np.ndarray:
    """Apply the detector MTF (frequencies in units of the grid's Nyquist frequency).

    The kernel is :func:`mtf_transfer` (on the half spectrum of the real image)."""
    ny, nx = np.shape(image)[-2:]
    m = mtf_transfer((ny, nx), c1, c2, c3, half=True)
    return np.fft.irfft2(np.fft.rfft2(image) * m, s=(ny, nx))


def simulate_image(wave: np.ndarray, sampling: float, p: MicroscopeParameters,
                   new_sampling: float | None = None,
                   rng: np.random.Generator | None = None) -> np.ndarray:
    """One HRTEM image from an exit wave, in the order fixed by DESIGN.md.

    CTF with envelopes -> ``|psi|^2`` -> resample to ``new_sampling`` -> blur (of ``p.blur``
    pixels of the image grid, or A with ``p.blur_unit == "A"``) -> Poisson noise at the dose
    -> MTF. The intensity is formed on a 2x oversampled grid (Fourier padding), so
    ``|psi|^2`` does not alias even when ``wave`` is stored at the network's sampling.

    Parameters
    ----------
    wave : complex array (ny, nx)
        Exit wave, periodic, vacuum = 1.
    sampling : float
        Pixel size of ``wave`` in A.
    p : MicroscopeParameters
    new_sampling : float, optional
        Pixel size of the image in A (default: ``sampling``). The field of view is kept.
    rng : numpy Generator, optional
        Source of the shot noise.

    Returns
    -------
    image : float array, vacuum intensity ~1 (before normalisation).
    """
    wave = np.asarray(wave)
    if wave.ndim != 2 or not np.iscomplexobj(wave):
        raise ValueError(f"wave must be a complex 2-D array, got {wave.dtype} {wave.shape}")
    return _image_from_spectrum(np.fft.fft2(wave), sampling, p, new_sampling, rng)


def _image_from_spectrum(wave_ft: np.ndarray, sampling: float, p: MicroscopeParameters,
                         new_sampling: float | None, rng: np.random.Generator | None
                         ) -> np.ndarray:
    """:func:`simulate_image` from the wave's unshifted spectrum (shared by a focal series).

    ``|psi|^2`` on the 2x grid is real, so its spectrum is taken with ``rfft2`` and cropped to
    the image grid (the half-spectrum version of :func:`fourier_resample`, the same values);
    the blur multiplies that cropped spectrum (the same Gaussian :func:`gaussian_blur` applies
    on the image grid) before the single inverse transform.
    """
    new_sampling = sampling if new_sampling is None else new_sampling
    ny, nx = wave_ft.shape
    filtered_ft = wave_ft * ctf((ny, nx), sampling, p)
    # intensity on a 2x grid: no aliasing of the doubled bandwidth of |psi|^2
    padded = np.fft.ifft2(_fourier_crop_or_pad(filtered_ft, (2 * ny, 2 * nx))) * 4
    intensity = padded.real**2 + padded.imag**2
    my = max(1, round(ny * sampling / new_sampling))
    mx = max(1, round(nx * sampling / new_sampling))
    if my > 2 * ny or mx > 2 * nx:  # finer than the 2x grid: the general resampling
        image, actual = fourier_resample(intensity, sampling / 2, new_sampling)
        return _finish_image(image, actual, p, rng)
    actual = ny * sampling / my
    spec = _rfft_crop(np.fft.rfft2(intensity), (my, mx))
    sigma = p.blur_sigma(actual)
    if sigma > 0:
        spec = spec * gaussian_transfer((my, mx), actual, sigma, half=True)
    image = np.fft.irfft2(spec, s=(my, mx)) * (my * mx / (4 * ny * nx))
    image = apply_dose(image, actual, p.dose, rng)
    if p.mtf_c1 != 1.0:
        image = apply_mtf(image, p.mtf_c1, p.mtf_c2, p.mtf_c3)
    return image


def _finish_image(image, actual, p, rng):
    """Blur, shot noise and MTF of an intensity already on the image grid."""
    image = gaussian_blur(image, actual, p.blur_sigma(actual))
    image = apply_dose(image, actual, p.dose, rng)
    if p.mtf_c1 != 1.0:
        image = apply_mtf(image, p.mtf_c1, p.mtf_c2, p.mtf_c3)
    return image


def _rfft_crop(spec: np.ndarray, new_shape: tuple[int, int]) -> np.ndarray:
    """Crop the ``rfft2`` half-spectrum of a real ``(oy, ox)`` array to a smaller grid.

    Rows as :func:`_fourier_crop_or_pad` keeps them; columns ``0 .. nx//2`` (the new grid's
    Nyquist column, for even ``nx``, from the old spectrum's ``+nx/2`` column). ``irfft2`` of
    the result equals ``ifft2(_fourier_crop_or_pad(fft2(a))).real`` except in the Nyquist
    row/column, which the two symmetrise differently (<= 1e-6 of the image;
    tests/test_physics.py checks the whole image model against its public steps).
    """
    oy = spec.shape[0]
    ny, nx = new_shape
    lo, hi = (ny + 1) // 2, ny - (ny + 1) // 2
    out = np.zeros((ny, nx // 2 + 1), dtype=spec.dtype)
    cols = nx // 2 + 1
    out[:lo] = spec[:lo, :cols]
    if hi:
        out[ny - hi:] = spec[oy - hi:, :cols]
    return out


def simulate_focal_series(wave: np.ndarray, sampling: float,
                          params: Sequence[MicroscopeParameters],
                          new_sampling: float | None = None,
                          rng: np.random.Generator | None = None) -> np.ndarray:
    """A focal series ``(n_images, ny, nx)``, one image per entry of ``params``."""
    wave = np.asarray(wave)
    if wave.ndim != 2 or not np.iscomplexobj(wave):
        raise ValueError(f"wave must be a complex 2-D array, got {wave.dtype} {wave.shape}")
    wave_ft = np.fft.fft2(wave)  # once for every image of the series
    return np.stack([_image_from_spectrum(wave_ft, sampling, p, new_sampling, rng)
                     for p in params])


def normalize_series(images: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    """Standardise each image of a series to zero mean and unit standard deviation.

    ``images`` is ``(n_images, ny, nx)`` (or ``(batch, n_images, ny, nx)``); the statistics are
    taken per image over its pixels. Returns float32. This is the only normalisation the
    networks see, in training and at inference.
    """
    images = np.asarray(images, dtype=np.float64)
    if images.ndim < 2:
        raise ValueError(f"images must be at least 2-D, got shape {images.shape}")
    if not np.all(np.isfinite(images)):
        raise ValueError("images contain NaN or infinite values")
    mean = images.mean(axis=(-2, -1), keepdims=True)
    std = images.std(axis=(-2, -1), keepdims=True)
    return ((images - mean) / np.maximum(std, eps)).astype(np.float32)
