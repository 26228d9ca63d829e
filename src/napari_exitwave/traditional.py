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
the module itself, or ``"numpy"`` / ``"cupy"`` (:mod:`napari_exitwave._array`). The same code
runs on both; results come back as NumPy arrays. The device that ran and the regularisation
used come back with the result (:class:`TraditionalResult`, :class:`GSResult`): the module
keeps no state, so reconstructions may run in parallel threads.

Units: lengths in A (``blur`` too: the standard deviation of the image blur in A, unlike
:attr:`physics.MicroscopeParameters.blur`, which is in pixels of the image grid by default;
convert with :meth:`physics.MicroscopeParameters.blur_sigma`), energies in eV.

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
>>> res = traditional.reconstruct(images, 0.1, defocus, method="wiener", wiener_eps="auto",
...                               xp="numpy", full_output=True)
>>> res.device, res.wiener_eps > 0
('CPU', True)
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Callable, Sequence

import numpy as np

from . import physics
from ._array import fft2, get_array_module, ifft2, synchronize, to_numpy
from ._focal_series import (  # noqa: F401 - _AUTO_EPS_FLOOR: the documented floor of "auto"
    _AUTO_EPS_FLOOR, DEFAULT_WIENER_EPS, Setup, _mirror, intensity_transfer, linear_images,
    setup, transfer_functions,
)
from ._progress import ProgressGenerator, drive
from .errors import ExitWaveError, SeriesMismatchError

__all__ = [
    "METHODS",
    "GSResult",
    "TraditionalResult",
    "Setup",
    "setup",
    "reconstruct",
    "iter_reconstruct",
    "wiener_reconstruction",
    "gerchberg_saxton",
    "transfer_functions",
    "linear_images",
    "intensity_transfer",
    "get_array_module",
]

METHODS = ("gs", "wiener")
DEFAULT_N_ITER = 50
DEFAULT_ENVELOPE_CUTOFF = 0.2

def _wiener_spectrum(xp, images, h, eps):
    """Least-squares spectrum ``S(k)`` of the scattered wave from the linear model (see module)."""
    n = images.shape[0]
    data = fft2(xp, (images - 1).astype(h.dtype))
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
        default where the grid has no signal-free band); ``reconstruct(..., full_output=True)``
        returns the value used.
    aberrations : dict, optional
        ``astigmatism``, ``astigmatism_angle``, ``coma``, ``coma_angle`` (A, rad), as in
        :class:`physics.MicroscopeParameters`.
    blur, mtf : float, (c1, c2, c3), optional
        The image blur (standard deviation in **A**; a blur of ``b`` pixels of the image grid
        is ``b * sampling``) and detector MTF of the image model, when known
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
    st = setup(images, sampling, defocus, Cs=Cs, focal_spread=focal_spread, energy=energy,
               aberrations=aberrations, normalize=normalize, align=align, xp=xp, dtype=dtype,
               blur=blur, mtf=mtf, wiener_eps=wiener_eps)
    return _wiener(st)


def _wiener(st: Setup) -> np.ndarray:
    xp, b = st.xp, st.intensity
    spec = _wiener_spectrum(xp, st.images, st.transfer if b is None else st.transfer * b,
                            st.wiener_eps)
    return to_numpy(1 + ifft2(xp, spec))


class GSResult(tuple):
    """``(exit_wave, errors)`` of :func:`gerchberg_saxton`, with ``.exit_wave``, ``.errors``,
    ``.times`` (s per iteration), ``.n_iter``, ``.device`` (``"CPU"`` or ``"CUDA"``) and
    ``.wiener_eps`` (the regularisation used) as attributes too."""

    def __new__(cls, exit_wave, errors, times, device="CPU", wiener_eps=None):
        self = super().__new__(cls, (exit_wave, errors))
        self.times = times
        self.device = device
        self.wiener_eps = wiener_eps
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


@dataclasses.dataclass
class TraditionalResult:
    """An exit wave from :func:`reconstruct` (``full_output=True``) or :func:`iter_reconstruct`.

    Attributes
    ----------
    exit_wave : complex ndarray (ny, nx)
        Vacuum = 1 + 0j.
    method : str
        ``"gs"`` or ``"wiener"``.
    device : str
        ``"CPU"`` or ``"CUDA"``: where it ran.
    wiener_eps : float
        The regularisation used (the estimate, for ``wiener_eps="auto"``).
    errors, times : float arrays or None
        Gerchberg-Saxton's consistency error per iteration (and at the start) and seconds per
        iteration; None for Wiener.
    """

    exit_wave: np.ndarray
    method: str
    device: str
    wiener_eps: float
    errors: np.ndarray | None = None
    times: np.ndarray | None = None


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
    return drive(_iter_gs(images, sampling, defocus, Cs=Cs, focal_spread=focal_spread,
                           energy=energy, n_iter=n_iter, wiener_eps=wiener_eps,
                           envelope_cutoff=envelope_cutoff, initial=initial,
                           aberrations=aberrations, blur=blur, mtf=mtf, normalize=normalize,
                           align=align, xp=xp, dtype=dtype), progress, cancel)


def _iter_gs(images, sampling, defocus, *, n_iter=DEFAULT_N_ITER,
             envelope_cutoff=DEFAULT_ENVELOPE_CUTOFF, initial=None,
             **setup_kwargs) -> ProgressGenerator:
    """Gerchberg-Saxton as a generator: yields ``(fraction, message)`` after every iteration,
    returns the :class:`GSResult`."""
    n_iter = int(n_iter)
    if n_iter < 0:
        raise ExitWaveError(f"n_iter must be >= 0, got {n_iter}")
    if not (math.isfinite(envelope_cutoff) and 0 <= envelope_cutoff < 1):
        raise ExitWaveError(f"envelope_cutoff must be in [0, 1), got {envelope_cutoff}")
    st = setup(images, sampling, defocus, **setup_kwargs)
    xp, imgs, h, b, wiener_eps = st.xp, st.images, st.transfer, st.intensity, st.wiener_eps
    n = imgs.shape[0]
    if initial is None:
        spec = _wiener_spectrum(xp, imgs, h if b is None else h * b, wiener_eps)
        spec[0, 0] += imgs.shape[-2] * imgs.shape[-1]  # + FFT of the unscattered 1
    else:
        initial = np.asarray(initial)
        if initial.shape != tuple(imgs.shape[-2:]):
            raise SeriesMismatchError(f"initial has shape {initial.shape}, the images "
                                      f"{tuple(imgs.shape[-2:])}")
        spec = fft2(xp, xp.asarray(initial.astype(st.dtype)))
    if b is not None:
        # known blur / MTF: GS runs on Wiener-deconvolved images (regularised once, so the
        # iterations cannot converge to the unregularised inverse)
        deconv = b / (b**2 + wiener_eps) if wiener_eps > 0 else xp.where(
            b != 0, 1 / xp.where(b != 0, b, 1), 0)
        deconv[0, 0] = 1.0
        imgs = ifft2(xp, fft2(xp, imgs) * deconv).real
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
        acc = xp.zeros_like(spec)
        err2 = 0.0
        for i in range(n):
            psi_n = ifft2(xp, spec * h[i])
            mag = xp.abs(psi_n)
            err2 = err2 + xp.sum((mag - amp[i]) ** 2)
            if it == n_iter:
                continue
            # keep the phase, impose the measured amplitude (phase 0 where the wave vanishes)
            phase = xp.where(mag > 0, psi_n / xp.where(mag > 0, mag, 1), 1)
            acc += hc[i] * fft2(xp, amp[i] * phase)
        errors.append(math.sqrt(float(err2) / norm))
        if it == n_iter:
            break
        spec = xp.where(update, acc * inv_weight, spec)
        synchronize(xp)
        times.append(time.perf_counter() - t0)
        yield (it + 1) / n_iter, (f"Gerchberg-Saxton iteration {it + 1}/{n_iter}, "
                                  f"error {errors[-1]:.4g}")
    wave = to_numpy(ifft2(xp, spec))
    return GSResult(wave, np.asarray(errors), np.asarray(times), st.device, wiener_eps)


def iter_reconstruct(images, sampling: float, defocus: Sequence[float], *, method: str = "gs",
                     n_iter: int = DEFAULT_N_ITER, **kwargs) -> ProgressGenerator:
    """:func:`reconstruct` as a generator: yields ``(fraction, message)`` (after every
    Gerchberg-Saxton iteration; once for Wiener) and returns a :class:`TraditionalResult`
    (``StopIteration.value``; ``result = yield from iter_reconstruct(...)``).

    Stopping early is just not asking for the next item; nothing runs in the background.
    """
    method = str(method).lower()
    if method not in METHODS:
        raise ExitWaveError(f"unknown traditional method {method!r}; choose 'gs' or 'wiener'")
    if method == "wiener":
        kwargs.pop("envelope_cutoff", None)
        kwargs.pop("initial", None)
        st = setup(images, sampling, defocus, **kwargs)
        wave = _wiener(st)
        yield 1.0, "Wiener reconstruction done"
        return TraditionalResult(wave, "wiener", st.device, st.wiener_eps)
    res = yield from _iter_gs(images, sampling, defocus, n_iter=n_iter, **kwargs)
    return TraditionalResult(res.exit_wave, "gs", res.device, res.wiener_eps, res.errors,
                             res.times)


def reconstruct(images, sampling: float, defocus: Sequence[float], *, method: str = "gs",
                Cs: float = 0.0, focal_spread: float = 0.0,
                energy: float = physics.DEFAULT_ENERGY, n_iter: int = DEFAULT_N_ITER,
                wiener_eps: float = DEFAULT_WIENER_EPS,
                progress: Callable[[float, str], None] | None = None,
                cancel: Callable[[], bool] | None = None, xp=None, full_output: bool = False,
                **kwargs):
    """Exit wave of a focal series by Gerchberg-Saxton (``"gs"``) or the Wiener filter.

    ``images`` (n, ny, nx) aligned intensities, ``sampling`` in A/px, ``defocus`` one value per
    image in A (abTEM: ``defocus = -C10``, positive = underfocus), ``Cs`` and ``focal_spread``
    in A, ``energy`` in eV. Further keywords (``envelope_cutoff``, ``aberrations``, ``blur``
    (A), ``mtf``, ``normalize``, ``align``, ``dtype``, ``initial``) go to
    :func:`gerchberg_saxton` / :func:`wiener_reconstruction`. ``progress(fraction, message)``
    is called after every step, ``cancel()`` polled before and after each (True raises
    :class:`~napari_exitwave.errors.ReconstructionCancelled`).

    Returns the complex exit wave (ny, nx), vacuum = 1 + 0j; with ``full_output=True`` the
    :class:`TraditionalResult` (with the device and the regularisation used).
    """
    gen = iter_reconstruct(images, sampling, defocus, method=method, Cs=Cs,
                           focal_spread=focal_spread, energy=energy, n_iter=n_iter,
                           wiener_eps=wiener_eps, xp=xp, **kwargs)
    res = drive(gen, progress, cancel)
    return res if full_output else res.exit_wave
