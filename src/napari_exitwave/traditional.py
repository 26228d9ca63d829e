"""Traditional focal-series exit-wave reconstruction: a linear Wiener filter and Gerchberg-Saxton.

Both methods need what the network does not: the defocus of every image, and Cs and the focal
spread of the microscope (optionally two-fold astigmatism and coma). They use the shared image
model of :mod:`napari_exitwave.physics` (abTEM convention, **defocus = -C10**, a positive
defocus is underfocus; the wave is multiplied by ``H_n(k) = exp(-i chi_n(k)) E_t(k)`` in Fourier
space, ``E_t`` the focal-spread envelope applied to the wave) and never re-implement it.

Images are intensities relative to vacuum (vacuum ~ 1), as :func:`physics.simulate_image` makes
them; with ``normalize=True`` (the default) each image is first divided by its mean, which puts
experimental counts on that scale (exact for a pure phase object without envelope, by
Parseval). The images must be aligned (``align=True`` calls
:func:`napari_exitwave.align.align_series`).

Wiener (``method="wiener"``): FTSR-style linear restoring filter
    In the linear (weak-object) imaging model, with ``psi = 1 + s`` and ``S = FFT(s)``,
    ``I_n(k) = delta(k) + S(k) H_n(k) + S*(-k) H_n*(-k)``. At every frequency the series gives
    ``N`` equations in the two unknowns ``a = S(k)`` and ``b = S*(-k)``; they are solved by
    regularised least squares,
    ``min sum_n |D_n(k) - a H_n(k) - b H_n*(-k)|^2 + eps N (|a|^2 + |b|^2)``,
    ``D_n = FFT(I_n - 1)``, a 2x2 system per pixel. ``eps`` (``wiener_eps``) is the
    noise-to-signal ratio per image. For noise-free linear images and ``eps -> 0`` this is the
    exact inverse wherever the series transfers the frequency. The phase at the lowest
    frequencies (where ``sin chi_n ~ 0`` for every image) is not transferred and comes out ~0:
    the "long wavelengths not reconstructed" of Larsen et al., Sec. 6.

Gerchberg-Saxton (``method="gs"``): iterative focal-series reconstruction (Allen et al. 2004)
    Start from the Wiener solution. Each iteration propagates the estimate to every defocus
    (``psi_n = IFFT(Psi H_n)``), replaces the amplitude by ``sqrt(I_n)`` keeping the phase,
    and combines the back-propagated waves by least squares,
    ``Psi <- sum_n H_n* Phi_n / sum_n |H_n|^2`` (the conjugate transfer, i.e. a division by
    the envelope), at the frequencies where the mean ``|H_n|^2`` exceeds
    ``envelope_cutoff**2``; elsewhere the previous estimate is kept. This is the
    averaged-projections form of GS, and the consistency error
    ``sqrt(sum_n || |psi_n| - sqrt(I_n) ||^2 / sum_n ||I_n||_1)`` never increases from one
    iteration to the next (a majorise-minimise step). The error is returned per iteration.

Array modules
-------------
Every function takes ``xp``: ``None`` (auto: CuPy when it imports and sees a GPU, else NumPy),
the module itself, or ``"numpy"`` / ``"cupy"``. The same code runs on both; results come back
as NumPy arrays. :data:`last_device` holds ``"CUDA"`` or ``"CPU"`` after each call.

Examples
--------
>>> import numpy as np
>>> from napari_exitwave import physics, traditional
>>> y, x = np.mgrid[:64, :64]
>>> wave = np.exp(0.1j * np.exp(-((x - 32.0)**2 + (y - 32.0)**2) / 8))
>>> defocus = [-50.0, 0.0, 50.0]
>>> images = physics.simulate_focal_series(
...     wave, 0.1, [physics.MicroscopeParameters(defocus=d) for d in defocus])
>>> est = traditional.reconstruct(images, 0.1, defocus, method="gs", n_iter=10, xp="numpy")
>>> est.shape, est.dtype
((64, 64), dtype('complex128'))
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Callable, Sequence

import numpy as np

from . import physics
from .errors import ExitWaveError, ReconstructionCancelled, SeriesMismatchError

__all__ = [
    "METHODS",
    "GSResult",
    "reconstruct",
    "wiener_reconstruction",
    "gerchberg_saxton",
    "transfer_functions",
    "linear_images",
    "intensity_transfer",
    "get_array_module",
    "last_device",
]

METHODS = ("gs", "wiener")
DEFAULT_WIENER_EPS = 1e-2
DEFAULT_N_ITER = 50
DEFAULT_ENVELOPE_CUTOFF = 0.2
_AUTO_EPS_GAIN = 8.0
_AUTO_EPS_FLOOR = 1e-3

last_device: str = "CPU"
"""Device of the last reconstruction, ``"CUDA"`` or ``"CPU"`` (read by ``reconstruct_series``)."""
last_wiener_eps: float | None = None
"""The ``wiener_eps`` the last reconstruction used (the estimate, for ``"auto"``)."""


# --------------------------------------------------------------------------------------------
# array module
def _cupy_if_usable():
    try:
        import cupy  # noqa: F401
    except Exception:  # ImportError, or a broken CUDA install
        return None
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return None
    except Exception:
        return None
    return cupy


def get_array_module(xp: Any = None):
    """The array module to compute with: NumPy, or CuPy on a GPU.

    ``xp`` is ``None``/``"auto"`` (CuPy when importable with a GPU, else NumPy), ``"numpy"``,
    ``"cupy"`` (an error when unusable) or a module.
    """
    if xp is None or (isinstance(xp, str) and xp.lower() == "auto"):
        cp = _cupy_if_usable()
        return np if cp is None else cp
    if isinstance(xp, str):
        name = xp.lower()
        if name == "numpy":
            return np
        if name == "cupy":
            cp = _cupy_if_usable()
            if cp is None:
                raise ExitWaveError("xp='cupy' was asked for but CuPy is not installed or sees "
                                    "no GPU; use xp='numpy' (or leave xp unset)")
            return cp
        raise ExitWaveError(f"unknown array module {xp!r}; use 'numpy', 'cupy' or 'auto'")
    if not hasattr(xp, "fft") or not hasattr(xp, "asarray"):
        raise ExitWaveError(f"xp must be an array module such as numpy or cupy, got {xp!r}")
    return xp


def _is_numpy(xp) -> bool:
    return xp is np


def _fft2(xp, a):
    if _is_numpy(xp):
        from scipy import fft

        return fft.fft2(a, workers=-1, overwrite_x=False)
    return xp.fft.fft2(a)


def _ifft2(xp, a):
    if _is_numpy(xp):
        from scipy import fft

        return fft.ifft2(a, workers=-1, overwrite_x=False)
    return xp.fft.ifft2(a)


def _to_numpy(a) -> np.ndarray:
    if isinstance(a, np.ndarray):
        return a
    get = getattr(a, "get", None)
    return np.asarray(get() if get is not None else a)


def _set_device(xp) -> None:
    global last_device
    last_device = "CPU" if _is_numpy(xp) else "CUDA"


# --------------------------------------------------------------------------------------------
# validation and the transfer functions
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

    ``exp(-2 pi^2 blur^2 k^2)`` (the Gaussian blur of :func:`physics.gaussian_blur`, standard
    deviation ``blur`` A) times the detector MTF (:func:`physics.mtf`, ``mtf = (c1, c2, c3)``,
    frequencies in units of Nyquist as in :func:`physics.apply_mtf`). ``None`` when both are
    off. Both are even in ``k`` and 1 at ``k = 0``.
    """
    if not (math.isfinite(blur) and blur >= 0):
        raise ExitWaveError(f"blur must be >= 0 (A, standard deviation), got {blur}")
    if blur == 0 and mtf is None:
        return None
    ky, kx = physics.spatial_frequencies(shape, sampling)
    out = np.exp(-2 * np.pi**2 * blur**2 * (kx**2 + ky**2))
    if mtf is not None:
        if len(mtf) != 3:
            raise ExitWaveError(f"mtf must be (c1, c2, c3), got {mtf!r}")
        q = 2 * np.hypot(ky * sampling, kx * sampling)  # cycles/px -> units of Nyquist
        out = out * physics.mtf(q, *[float(c) for c in mtf])
    return out


def _prepare(images, sampling, defocus, Cs, focal_spread, energy, aberrations, normalize,
             align, xp, dtype, blur=0.0, mtf=None):
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
    return (xp, xp.asarray(images.astype(real_dtype)), xp.asarray(h.astype(dtype)),
            sampling, d, dtype, b)


def _setup(images, sampling, defocus, Cs, focal_spread, energy, aberrations, normalize, align,
           xp, dtype, blur, mtf, wiener_eps):
    """What Wiener and GS share: validated arrays and transfer functions on the chosen device,
    and the regularisation resolved ("auto" estimated from the images) and recorded."""
    global last_wiener_eps
    wiener_eps = _check_eps(wiener_eps)
    xp, imgs, h, s_, d, dt, b = _prepare(images, sampling, defocus, Cs, focal_spread, energy,
                                         aberrations, normalize, align, xp, dtype, blur, mtf)
    _set_device(xp)
    if wiener_eps == "auto":
        wiener_eps = _auto_eps(xp, imgs, h, b, s_, mtf)
    last_wiener_eps = wiener_eps
    return xp, imgs, h, s_, d, dt, b, wiener_eps


def _check_cancel(cancel):
    if cancel is not None and cancel():
        raise ReconstructionCancelled("reconstruction cancelled")


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
    power = xp.abs(_fft2(xp, images - xp.mean(images, axis=(-2, -1), keepdims=True))) ** 2
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


def _wiener_spectrum(xp, images, h, eps):
    """Least-squares spectrum ``S(k)`` of the scattered wave from the linear model (see module)."""
    n = images.shape[0]
    data = _fft2(xp, (images - 1).astype(h.dtype))
    g = xp.conj(_mirror(xp, h))  # H_n*(-k), the transfer of S*(-k)
    a11 = xp.sum(xp.abs(h) ** 2, axis=0) + eps * n
    a22 = xp.sum(xp.abs(g) ** 2, axis=0) + eps * n
    a12 = xp.sum(xp.conj(h) * g, axis=0)
    r1 = xp.sum(xp.conj(h) * data, axis=0)
    r2 = xp.sum(xp.conj(g) * data, axis=0)
    det = a11 * a22 - xp.abs(a12) ** 2
    # a pixel whose 2x2 system is singular (eps = 0 and a frequency no image transfers) gets 0
    rcond, atol = (1e-12, 1e-16) if det.real.dtype == np.float64 else (1e-6, 1e-8)
    ok = det.real > rcond * (a11.real * a22.real) + atol * n * n
    safe = xp.where(ok, det, 1)
    spec = xp.where(ok, (a22 * r1 - a12 * r2) / safe, 0)
    return spec.astype(h.dtype)


def wiener_reconstruction(images, sampling: float, defocus: Sequence[float], *, Cs: float = 0.0,
                          focal_spread: float = 0.0, energy: float = physics.DEFAULT_ENERGY,
                          wiener_eps: float = DEFAULT_WIENER_EPS,
                          aberrations: dict | None = None, blur: float = 0.0,
                          mtf: Sequence[float] | None = None, normalize: bool = True,
                          align: bool = False, xp=None, dtype=None) -> np.ndarray:
    """Linear (FTSR-style) Wiener restoration of the exit wave from a focal series.

    Parameters
    ----------
    images : array (n, ny, nx)
        Aligned intensities, vacuum ~ 1 (or counts with ``normalize=True``).
    sampling : float
        Pixel size in A.
    defocus : sequence of n floats
        Defocus of each image in A (abTEM: ``defocus = -C10``, positive = underfocus).
    Cs, focal_spread : float
        Spherical aberration C30 and focal spread, both in A (1 um = 1e4 A).
    energy : float
        Acceleration voltage in eV.
    wiener_eps : float or "auto"
        Regularisation: the noise-to-signal power ratio divided by the number of images
        (0 gives the plain least-squares inverse, with untransferred frequencies set to 0).
        ``"auto"`` estimates it from the images: the noise from the power beyond twice the
        information limit, the signal from the excess power inside it (falls back to the
        default where the grid has no signal-free band); :data:`last_wiener_eps` holds it.
    aberrations : dict, optional
        ``astigmatism``, ``astigmatism_angle``, ``coma``, ``coma_angle`` (A, rad), as in
        :class:`physics.MicroscopeParameters`.
    blur, mtf : float, (c1, c2, c3), optional
        The image blur (A, standard deviation) and detector MTF of the image model, when known
        (:func:`intensity_transfer`); they multiply the linear transfer.
    normalize : bool
        Divide each image by its mean first.
    align : bool
        Align the images with :func:`napari_exitwave.align.align_series` first.
    xp : module or str, optional
        ``numpy``, ``cupy`` or ``None`` (auto).
    dtype : complex64 or complex128 (default)

    Returns
    -------
    complex ndarray (ny, nx): ``1 + s``, vacuum = 1 + 0j.
    """
    xp, imgs, h, s_, _, _, b, wiener_eps = _setup(
        images, sampling, defocus, Cs, focal_spread, energy, aberrations, normalize, align, xp,
        dtype, blur, mtf, wiener_eps)
    spec = _wiener_spectrum(xp, imgs, h if b is None else h * b, wiener_eps)
    return _to_numpy(1 + _ifft2(xp, spec))


class GSResult(tuple):
    """``(exit_wave, errors)`` of :func:`gerchberg_saxton`, with ``.exit_wave``, ``.errors``,
    ``.times`` (s per iteration) and ``.n_iter`` as attributes too."""

    def __new__(cls, exit_wave, errors, times):
        self = super().__new__(cls, (exit_wave, errors))
        self.times = times
        return self

    @property
    def exit_wave(self) -> np.ndarray:
        return self[0]

    @property
    def errors(self) -> np.ndarray:
        return self[1]

    @property
    def n_iter(self) -> int:
        return len(self[1]) - 1


def _consistency_error(xp, psi_n, amp, norm):
    return float(xp.sqrt(xp.sum((xp.abs(psi_n) - amp) ** 2) / norm))


def gerchberg_saxton(images, sampling: float, defocus: Sequence[float], *, Cs: float = 0.0,
                     focal_spread: float = 0.0, energy: float = physics.DEFAULT_ENERGY,
                     n_iter: int = DEFAULT_N_ITER, wiener_eps: float = DEFAULT_WIENER_EPS,
                     envelope_cutoff: float = DEFAULT_ENVELOPE_CUTOFF, initial=None,
                     aberrations: dict | None = None, blur: float = 0.0,
                     mtf: Sequence[float] | None = None, normalize: bool = True,
                     align: bool = False,
                     progress: Callable[[float, str], None] | None = None,
                     cancel: Callable[[], bool] | None = None,
                     xp=None, dtype=None) -> GSResult:
    """Iterative Gerchberg-Saxton focal-series reconstruction (Allen et al. 2004 style).

    Parameters are those of :func:`wiener_reconstruction`, plus:

    n_iter : int
        Number of iterations (0 returns the starting estimate).
    envelope_cutoff : float
        Frequencies where ``sqrt(mean_n |H_n|^2)`` (the focal-spread envelope) is below this are
        not updated (no division by a tiny envelope); they keep the starting estimate.
    initial : complex array (ny, nx), optional
        Starting exit wave; default the Wiener solution with ``wiener_eps``.
    blur, mtf : optional
        Known image blur / detector MTF (:func:`intensity_transfer`). The images are then
        Wiener-deconvolved once (``B / (B^2 + wiener_eps)``) and GS runs on the result, to
        which the error refers.
    progress : callable(fraction, message), optional
        Called after every iteration.
    cancel : callable() -> bool, optional
        Polled every iteration; True raises
        :class:`~napari_exitwave.errors.ReconstructionCancelled`.

    Returns
    -------
    GSResult ``(exit_wave, errors)``
        ``exit_wave`` complex (ny, nx) (NumPy), ``errors`` float array (n_iter + 1,): the
        consistency error ``sqrt(sum_n || |psi_n| - sqrt(I_n) ||^2 / sum_n sum I_n)`` of the
        start (index 0) and after every iteration. Non-increasing.
    """
    n_iter = int(n_iter)
    if n_iter < 0:
        raise ExitWaveError(f"n_iter must be >= 0, got {n_iter}")
    if not (math.isfinite(envelope_cutoff) and 0 <= envelope_cutoff < 1):
        raise ExitWaveError(f"envelope_cutoff must be in [0, 1), got {envelope_cutoff}")
    xp, imgs, h, s_, _, dt, b, wiener_eps = _setup(
        images, sampling, defocus, Cs, focal_spread, energy, aberrations, normalize, align, xp,
        dtype, blur, mtf, wiener_eps)
    n = imgs.shape[0]
    if initial is None:
        spec = _wiener_spectrum(xp, imgs, h if b is None else h * b, wiener_eps)
        spec[0, 0] += imgs.shape[-2] * imgs.shape[-1]  # + FFT of the unscattered 1
    else:
        initial = np.asarray(initial)
        if initial.shape != tuple(imgs.shape[-2:]):
            raise SeriesMismatchError(f"initial has shape {initial.shape}, the images "
                                      f"{tuple(imgs.shape[-2:])}")
        spec = _fft2(xp, xp.asarray(initial.astype(dt)))
    if b is not None:
        # known blur / MTF: GS runs on Wiener-deconvolved images (regularised once, so the
        # iterations cannot converge to the unregularised inverse)
        deconv = b / (b**2 + wiener_eps) if wiener_eps > 0 else xp.where(
            b != 0, 1 / xp.where(b != 0, b, 1), 0)
        deconv[0, 0] = 1.0
        imgs = _ifft2(xp, _fft2(xp, imgs) * deconv).real
    amp = xp.sqrt(xp.maximum(imgs, 0))
    norm = float(xp.sum(amp**2)) or 1.0
    weight = xp.sum(xp.abs(h) ** 2, axis=0)
    update = weight > n * envelope_cutoff**2
    inv_weight = xp.where(update, 1 / xp.where(update, weight, 1), 0).astype(h.real.dtype)
    hc = xp.conj(h)

    errors: list[float] = []
    times: list[float] = []
    for it in range(n_iter + 1):
        t0 = time.perf_counter()
        _check_cancel(cancel)
        acc = xp.zeros_like(spec)
        err2 = 0.0
        for i in range(n):
            psi_n = _ifft2(xp, spec * h[i])
            mag = xp.abs(psi_n)
            err2 = err2 + xp.sum((mag - amp[i]) ** 2)
            if it == n_iter:
                continue
            # keep the phase, impose the measured amplitude (phase 0 where the wave vanishes)
            phase = xp.where(mag > 0, psi_n / xp.where(mag > 0, mag, 1), 1)
            acc += hc[i] * _fft2(xp, amp[i] * phase)
        errors.append(math.sqrt(float(err2) / norm))
        if it == n_iter:
            break
        spec = xp.where(update, acc * inv_weight, spec)
        if not _is_numpy(xp):
            xp.cuda.Device().synchronize()
        times.append(time.perf_counter() - t0)
        if progress is not None:
            progress((it + 1) / n_iter, f"Gerchberg-Saxton iteration {it + 1}/{n_iter}, "
                                        f"error {errors[-1]:.4g}")
    wave = _to_numpy(_ifft2(xp, spec))
    return GSResult(wave, np.asarray(errors), np.asarray(times))


def reconstruct(images, sampling: float, defocus: Sequence[float], *, method: str = "gs",
                Cs: float = 0.0, focal_spread: float = 0.0,
                energy: float = physics.DEFAULT_ENERGY, n_iter: int = DEFAULT_N_ITER,
                wiener_eps: float = DEFAULT_WIENER_EPS,
                progress: Callable[[float, str], None] | None = None,
                cancel: Callable[[], bool] | None = None, xp=None, **kwargs) -> np.ndarray:
    """Exit wave of a focal series by Gerchberg-Saxton (``"gs"``) or the Wiener filter.

    ``images`` (n, ny, nx) aligned intensities, ``sampling`` in A/px, ``defocus`` one value per
    image in A (abTEM: ``defocus = -C10``, positive = underfocus), ``Cs`` and ``focal_spread``
    in A, ``energy`` in eV. Further keywords (``envelope_cutoff``, ``aberrations``, ``blur``,
    ``mtf``, ``normalize``, ``align``, ``dtype``, ``initial``) go to :func:`gerchberg_saxton` /
    :func:`wiener_reconstruction`. Returns the complex exit wave (ny, nx), vacuum = 1 + 0j.
    """
    method = str(method).lower()
    if method not in METHODS:
        raise ExitWaveError(f"unknown traditional method {method!r}; choose 'gs' or 'wiener'")
    if method == "wiener":
        kwargs.pop("envelope_cutoff", None)
        kwargs.pop("initial", None)
        _check_cancel(cancel)
        out = wiener_reconstruction(images, sampling, defocus, Cs=Cs, focal_spread=focal_spread,
                                    energy=energy, wiener_eps=wiener_eps, xp=xp, **kwargs)
        if progress is not None:
            progress(1.0, "Wiener reconstruction done")
        return out
    return gerchberg_saxton(images, sampling, defocus, Cs=Cs, focal_spread=focal_spread,
                            energy=energy, n_iter=n_iter, wiener_eps=wiener_eps,
                            progress=progress, cancel=cancel, xp=xp, **kwargs).exit_wave
