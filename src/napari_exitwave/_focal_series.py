"""A focal series made ready for the traditional reconstructions (:mod:`.traditional`).

Validation of the series, the wave transfer functions of every image (straight from
:mod:`napari_exitwave.physics`, abTEM convention ``defocus = -C10``), the intensity transfer of
a known blur and MTF, the linear image model Wiener inverts, and :class:`Setup`: all of it on
the chosen device, with the Wiener regularisation resolved (``"auto"`` estimated from the
images). Lengths in A, energies in eV.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import numpy as np

from . import physics
from ._array import device_name, fft2, get_array_module
from .errors import ExitWaveError, SeriesMismatchError

__all__ = ["Setup", "setup", "transfer_functions", "linear_images", "intensity_transfer",
           "DEFAULT_WIENER_EPS"]

DEFAULT_WIENER_EPS = 1e-2
_AUTO_EPS_GAIN = 8.0
_AUTO_EPS_FLOOR = 1e-3


def _validate(images, sampling, defocus, energy) -> tuple[np.ndarray, float, list[float]]:
    images = np.asarray(images)
    if images.ndim != 3:
        raise SeriesMismatchError(f"images must be a focal series (n, ny, nx), got an array of "
                                  f"shape {images.shape}")
    n = images.shape[0]
    if n < 1 or images.shape[1] < 2 or images.shape[2] < 2:
        raise SeriesMismatchError(f"the focal series is empty or too small: shape {images.shape}")
    if np.iscomplexobj(images):
        raise SeriesMismatchError("images must be real intensities, got a complex array")
    if not np.all(np.isfinite(images)):
        raise SeriesMismatchError("the images contain NaN or infinite pixels; replace them first")
    if defocus is None:
        raise SeriesMismatchError("the defocus of every image is needed (A, abTEM convention "
                                  "defocus = -C10, positive = underfocus)")
    d = np.atleast_1d(np.asarray(defocus, dtype=float)).ravel()
    if d.size != n:
        raise SeriesMismatchError(f"{d.size} defocus values were given for {n} images; give one "
                                  "per image (A, abTEM convention defocus = -C10)")
    if not np.all(np.isfinite(d)):
        raise SeriesMismatchError(f"the defocus values must be finite, got {d.tolist()}")
    try:
        sampling = float(sampling)
    except (TypeError, ValueError):
        raise SeriesMismatchError(f"sampling must be a pixel size in A, got {sampling!r}") from None
    if not (math.isfinite(sampling) and sampling > 0):
        raise SeriesMismatchError(f"sampling must be a positive pixel size in A, got {sampling}")
    if not (math.isfinite(energy) and energy > 0):
        raise ExitWaveError(f"energy must be positive (eV), got {energy}")
    return images, sampling, d.tolist()


def _parameters(defocus: Sequence[float], Cs: float, focal_spread: float, energy: float,
                aberrations: dict | None) -> list[physics.MicroscopeParameters]:
    extra = dict(aberrations or {})
    allowed = {"astigmatism", "astigmatism_angle", "coma", "coma_angle"}
    unknown = set(extra) - allowed
    if unknown:
        raise ExitWaveError(f"unknown aberrations {sorted(unknown)}; allowed: {sorted(allowed)}")
    if focal_spread < 0 or not math.isfinite(focal_spread):
        raise ExitWaveError(f"focal_spread must be >= 0 (A), got {focal_spread}")
    if not math.isfinite(Cs):
        raise ExitWaveError(f"Cs must be finite (A), got {Cs}")
    return [physics.MicroscopeParameters(defocus=float(d), Cs=float(Cs),
                                         focal_spread=float(focal_spread), energy=float(energy),
                                         **{k: float(v) for k, v in extra.items()})
            for d in defocus]


def transfer_functions(shape: Sequence[int], sampling: float, defocus: Sequence[float], *,
                       Cs: float = 0.0, focal_spread: float = 0.0,
                       energy: float = physics.DEFAULT_ENERGY,
                       aberrations: dict | None = None) -> np.ndarray:
    """The wave transfer functions ``H_n(k) = exp(-i chi_n) E_t`` (n, ny, nx), unshifted FFT grid.

    Straight from :func:`physics.ctf` (abTEM convention, ``defocus = -C10``, lengths in A).
    """
    params = _parameters(defocus, Cs, focal_spread, energy, aberrations)
    shape = tuple(shape[-2:])
    if len(params) < 3:
        return np.stack([physics.ctf(shape, sampling, p) for p in params])
    # chi is linear in the defocus: two calls of physics.aberration_phase give every image's
    # (the same numbers as physics.ctf per image, to rounding, 4x faster for 11 images)
    p0 = dataclasses.replace(params[0], defocus=0.0)
    chi0 = physics.aberration_phase(shape, sampling, p0)
    dchi = physics.aberration_phase(shape, sampling, dataclasses.replace(p0, defocus=1.0)) - chi0
    env = (physics.temporal_envelope(shape, sampling, p0.focal_spread, p0.energy)
           if p0.focal_spread > 0 else None)
    out = np.empty((len(params),) + shape, dtype=np.complex128)
    for i, p in enumerate(params):
        out[i] = np.exp(-1j * (chi0 + p.defocus * dchi))
        if env is not None:
            out[i] *= env
    return out


def _mirror(xp, a):
    """``a(-k)`` on an unshifted FFT grid (last two axes)."""
    return xp.roll(xp.flip(a, axis=(-2, -1)), shift=(1, 1), axis=(-2, -1))


def linear_images(wave, sampling: float, defocus: Sequence[float], *, Cs: float = 0.0,
                  focal_spread: float = 0.0, energy: float = physics.DEFAULT_ENERGY,
                  aberrations: dict | None = None, blur: float = 0.0,
                  mtf: Sequence[float] | None = None) -> np.ndarray:
    """Images of the *linear* imaging model, ``1 + 2 Re(IFFT(S H_n))``, ``S = FFT(wave - 1)``
    (times the intensity transfer of ``blur`` / ``mtf`` when given).

    What :func:`wiener_reconstruction` inverts exactly; the full model (with ``|s_n|^2``) is
    :func:`physics.simulate_focal_series`.
    """
    wave = np.asarray(wave, dtype=np.complex128)
    h = transfer_functions(wave.shape, sampling, defocus, Cs=Cs, focal_spread=focal_spread,
                           energy=energy, aberrations=aberrations)
    s = np.fft.ifft2(np.fft.fft2(wave - 1)[None] * h)
    out = 2 * s.real
    b = intensity_transfer(wave.shape, sampling, blur, mtf)
    if b is not None:
        out = np.fft.ifft2(np.fft.fft2(out) * b).real
    return 1 + out


def intensity_transfer(shape: Sequence[int], sampling: float, blur: float = 0.0,
                       mtf: Sequence[float] | None = None) -> np.ndarray | None:
    """Transfer of the image *intensity* after ``|psi|^2`` in the shared image model.

    :func:`physics.gaussian_transfer` of ``blur`` (the standard deviation in **A**) times
    :func:`physics.mtf_transfer` of ``mtf = (c1, c2, c3)`` (frequencies in units of Nyquist).
    ``None`` when both are off. Both are even in ``k`` and 1 at ``k = 0``.
    """
    if not (math.isfinite(blur) and blur >= 0):
        raise ExitWaveError(f"blur must be >= 0 (A, standard deviation), got {blur}")
    if blur == 0 and mtf is None:
        return None
    out = physics.gaussian_transfer(shape, sampling, blur)
    if mtf is not None:
        if len(mtf) != 3:
            raise ExitWaveError(f"mtf must be (c1, c2, c3), got {mtf!r}")
        out = out * physics.mtf_transfer(shape, *[float(c) for c in mtf])
    return out


@dataclasses.dataclass(frozen=True)
class Setup:
    """What Wiener and GS share, on the chosen device (:func:`setup`).

    Attributes
    ----------
    xp : module
        NumPy or CuPy.
    images : (n, ny, nx) real array on the device
        Validated (and normalised / aligned, when asked) intensities.
    transfer : (n, ny, nx) complex array on the device
        The wave transfer functions ``H_n`` (:func:`transfer_functions`).
    intensity : (ny, nx) real array on the device, or None
        The intensity transfer of blur and MTF (:func:`intensity_transfer`).
    sampling : float
        A/px.
    defocus : list of float
        A, one per image.
    dtype : numpy dtype
        complex64 or complex128.
    wiener_eps : float
        The regularisation, resolved (``"auto"`` estimated from the images).
    """

    xp: Any
    images: Any
    transfer: Any
    intensity: Any
    sampling: float
    defocus: list
    dtype: np.dtype
    wiener_eps: float

    @property
    def device(self) -> str:
        """``"CUDA"`` or ``"CPU"``."""
        return device_name(self.xp)


def setup(images, sampling, defocus, *, Cs=0.0, focal_spread=0.0,
          energy=physics.DEFAULT_ENERGY, aberrations=None, normalize=True, align=False, xp=None,
          dtype=None, blur=0.0, mtf=None, wiener_eps=DEFAULT_WIENER_EPS) -> Setup:
    """Validate a series and put it with its transfer functions on the device (see
    :func:`wiener_reconstruction` for the parameters)."""
    wiener_eps = _check_eps(wiener_eps)
    images, sampling, d = _validate(images, sampling, defocus, energy)
    if align and images.shape[0] > 1:
        from .align import align_series

        images, _ = align_series(images)
        images = np.asarray(images)
    images = images.astype(np.float64)
    if normalize:
        means = images.mean(axis=(-2, -1), keepdims=True)
        if np.any(means <= 0):
            raise SeriesMismatchError("an image has a mean intensity <= 0; give intensities "
                                      "(counts or relative to vacuum), not normalised images")
        images = images / means
    # negative pixels (noise through a negative MTF, ringing) are clipped to 0 by GS's sqrt()
    xp = get_array_module(xp)
    dtype = np.dtype(np.complex128 if dtype is None else dtype)
    if dtype not in (np.complex64, np.complex128):
        raise ExitWaveError(f"dtype must be complex64 or complex128, got {dtype}")
    real_dtype = np.float32 if dtype == np.complex64 else np.float64
    h = transfer_functions(images.shape, sampling, d, Cs=Cs, focal_spread=focal_spread,
                           energy=energy, aberrations=aberrations)
    b = intensity_transfer(images.shape, sampling, blur, mtf)
    if b is not None:
        b = xp.asarray(b.astype(real_dtype))
    imgs, h = xp.asarray(images.astype(real_dtype)), xp.asarray(h.astype(dtype))
    if wiener_eps == "auto":
        wiener_eps = _auto_eps(xp, imgs, h, b, sampling, mtf)
    return Setup(xp, imgs, h, b, sampling, d, dtype, wiener_eps)


def _check_eps(wiener_eps):
    if isinstance(wiener_eps, str):
        if wiener_eps.lower() != "auto":
            raise ExitWaveError(f"wiener_eps must be a number >= 0 or 'auto', got {wiener_eps!r}")
        return "auto"
    try:
        eps = float(wiener_eps)
    except (TypeError, ValueError):
        raise ExitWaveError(f"wiener_eps must be a number >= 0 or 'auto', got "
                            f"{wiener_eps!r}") from None
    if not (math.isfinite(eps) and eps >= 0):
        raise ExitWaveError(f"wiener_eps must be >= 0 or 'auto', got {wiener_eps}")
    return eps


def _auto_eps(xp, images, h, b, sampling, mtf=None) -> float:
    """Noise-to-signal ratio from the data (``wiener_eps="auto"``).

    The noise power is the median image power at frequencies beyond twice the information
    limit (where even the quadratic term of the image carries no signal; the MTF, when known,
    is divided out there), the signal power per unknown the excess power inside the
    well-transferred band. Falls back to :data:`DEFAULT_WIENER_EPS` when the grid has no
    signal-free band.
    """
    n = images.shape[0]
    transfer = xp.abs(h[0]) if b is None else xp.abs(h[0] * b)
    ky, kx = physics.spatial_frequencies(images.shape, sampling)
    k = xp.asarray(np.hypot(ky, kx))
    passed = transfer > 1e-3
    if not bool(xp.any(passed)):
        return DEFAULT_WIENER_EPS
    k_info = float(xp.max(k[passed]))
    quiet = k > 2 * k_info
    good = (transfer > 0.3) & (k > 0)
    if float(xp.mean(quiet)) < 0.02 or not bool(xp.any(good)):
        return DEFAULT_WIENER_EPS
    power = xp.abs(fft2(xp, images - xp.mean(images, axis=(-2, -1), keepdims=True))) ** 2
    power = xp.mean(power, axis=0) / (images.shape[-2] * images.shape[-1])
    # shot noise is white before the MTF (physics.simulate_image: noise, then MTF)
    m2 = 1.0 if mtf is None else xp.asarray(intensity_transfer(images.shape, sampling, 0.0,
                                                               mtf) ** 2)
    white = power / m2 if mtf is not None else power
    quiet &= (m2 > 1e-6) if mtf is not None else quiet
    if not bool(xp.any(quiet)):
        return DEFAULT_WIENER_EPS
    sigma2 = float(xp.median(white[quiet]))
    noise_good = sigma2 * (m2[good] if mtf is not None else 1.0)
    hb2 = (xp.abs(h) ** 2).sum(axis=0) if b is None else (xp.abs(h * b) ** 2).sum(axis=0)
    # image power in the band: noise + |S|^2 (|H|^2 + |G|^2) B^2 ~ noise + 2 |S|^2 |HB|^2
    s2 = float(xp.mean((power[good] - noise_good) / (2 * hb2[good] / n)))
    if s2 <= 0:
        return 1.0
    # the flat-prior ratio, scaled by a factor calibrated on simulated series (Gaussian-atom
    # phase objects, doses 1e3-1e5 e/A^2, with and without blur/MTF: within ~30% of the best
    # fixed eps in RMSE) since the signal falls off inside the band; floored because the
    # quadratic image term the linear model ignores acts as noise even without shot noise
    return float(np.clip(_AUTO_EPS_GAIN * sigma2 / s2 / n, _AUTO_EPS_FLOOR, 10.0))
