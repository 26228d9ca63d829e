"""Alignment of the images of a focal series (drift between exposures).

Shared by the network and the traditional reconstructions. Every pair of images is registered by
cross-correlation (:func:`skimage.registration.phase_cross_correlation`, sub-pixel by upsampled
DFT) of edge-tapered, slightly low-passed copies; the shifts relative to the reference (the
middle image) are the least-squares solution of the pairwise shifts, refined once against the
reference, and applied as a Fourier shift on a reflect-padded copy, so the wrap-around of the
periodic shift does not bring the opposite edge into the frame.

The correlation is not whitened (``normalization=None``): the images of a focal series differ in
contrast (the CTF changes sign between them), and whitened phase correlation then locks onto
noise; on simulated series at 1e3-1e5 e/A^2 the plain, low-passed (sigma 1 px) correlation was
right to ~0.1-1 px where the whitened one was off by tens of pixels.

Correlating images across focus is not always possible: for a weakly scattering monolayer near
Gaussian focus, or at low dose, the best match of two images can be tens of pixels away from the
truth (the sign of the contrast of each lattice frequency depends on the unknown aberrations).
Such estimates are inconsistent with each other and come from weak correlations, so every pair
must correlate with a normalised coefficient of at least ``min_quality`` (0.3) and, with 3 or
more images, the pairwise shifts must close (``s_01 + s_12 = s_02``; least-squares residual at
most ``max_loop_residual`` = 0.3 px). On simulated 3-image series (random atoms, 1e3-1e5 e/A^2,
and the bundled MoS2 sample) every accepted estimate was within 0.45 px of the truth and every
estimate off by 0.6 px or more was rejected (the MoS2 sample: always rejected). An unreliable estimate is not applied by
:func:`align_series` (an :class:`AlignmentWarning` says why) unless asked to.
"""

from __future__ import annotations

import itertools
import warnings
from typing import Callable

import numpy as np

__all__ = ["align_series", "shift_image", "estimate_shifts", "AlignmentWarning"]


class AlignmentWarning(UserWarning):
    """The shifts between the images could not be estimated reliably."""


def _taper(shape: tuple[int, int], fraction: float = 0.1) -> np.ndarray:
    """Separable Tukey window (cosine edges over ``fraction`` of each side)."""
    out = np.ones(shape)
    for axis, n in enumerate(shape):
        m = max(1, int(round(fraction * n)))
        w = np.ones(n)
        ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(m) + 0.5) / m)
        w[:m] = ramp
        w[n - m:] = ramp[::-1]
        out = out * (w[:, None] if axis == 0 else w[None, :])
    return out


def shift_image(image: np.ndarray, shift: tuple[float, float]) -> np.ndarray:
    """Shift a 2-D image by ``shift`` = (dy, dx) pixels (sub-pixel, Fourier), edges reflected.

    A positive ``dy`` moves the content down (to larger row indices). The image is
    reflect-padded by at least the shift (to an FFT-friendly size) so nothing wraps around.
    """
    from scipy import fft, ndimage

    image = np.asarray(image, dtype=np.float64)
    dy, dx = float(shift[0]), float(shift[1])
    if dy == 0 and dx == 0:
        return image.copy()
    ny, nx = image.shape
    pads = []
    for n, d in ((ny, dy), (nx, dx)):
        total = fft.next_fast_len(n + 2 * (int(np.ceil(abs(d))) + 8), real=True) - n
        before = min(total // 2, n - 1)
        pads.append((before, min(total - before, n - 1)))
    padded = np.pad(image, pads, mode="reflect")
    spectrum = fft.rfft2(padded, workers=-1)
    spectrum = ndimage.fourier_shift(spectrum, (dy, dx), n=padded.shape[-1])
    shifted = fft.irfft2(spectrum, s=padded.shape, workers=-1)
    return shifted[pads[0][0]:pads[0][0] + ny, pads[1][0]:pads[1][0] + nx]


def _centre(image: np.ndarray, size: tuple[int, int], margin: int = 0):
    """The central ``size`` (+ ``margin`` on each side, where available) of an image, and the
    offset of the central ``size`` inside the returned window."""
    out, offset = image, []
    for axis, s in enumerate(size):
        n = image.shape[axis]
        lo = max(0, (n - s) // 2 - margin)
        hi = min(n, (n - s) // 2 + s + margin)
        out = out[lo:hi] if axis == 0 else out[:, lo:hi]
        offset.append((n - s) // 2 - lo)
    return out, tuple(offset)


def estimate_shifts(images: np.ndarray, upsample: int = 10, reference: int | None = None,
                    smooth: float = 1.0, refine: int = 1, max_size: int = 1024,
                    min_quality: float = 0.3, max_loop_residual: float = 0.3,
                    return_info: bool = False):
    """Shifts (n, 2) in pixels that register each image onto the reference (default: middle).

    Applying ``shift_image(images[i], shifts[i])`` aligns image ``i`` with the reference.

    Parameters
    ----------
    smooth : float
        Standard deviation (px) of a Gaussian low-pass applied before correlating.
    refine : int
        Passes that re-estimate the residual shift against the reference after applying the
        estimate (the fixed edge taper biases a first estimate towards zero by ~3%).
    max_size : int
        Larger frames are correlated on their central ``max_size`` x ``max_size`` px (speed).
    min_quality, max_loop_residual : float
        Reliability criteria (see the module docstring).
    return_info : bool
        Also return a dict: ``reliable`` (bool), ``reason`` (str), ``loop_residual`` (px),
        ``pair_shifts`` and ``pair_quality`` (normalised correlation of each pair).
    """
    from scipy import ndimage
    from skimage.registration import phase_cross_correlation

    images = np.asarray(images)
    if images.ndim != 3:
        raise ValueError(f"images must be (n, ny, nx), got shape {images.shape}")
    n = len(images)
    ref_index = n // 2 if reference is None else int(reference)
    if not 0 <= ref_index < n:
        raise ValueError(f"reference must be in 0..{n - 1}, got {reference}")
    size = tuple(min(int(max_size), s) for s in images.shape[-2:])
    window = _taper(size)
    up = max(1, int(upsample))

    def prep(im):
        im = np.asarray(im, dtype=np.float64)
        if smooth > 0:
            im = ndimage.gaussian_filter(im, smooth)
        return ((im - im.mean()) * window).astype(np.float32)

    def register(ref, moving):
        shift, error, _ = phase_cross_correlation(ref, moving, upsample_factor=up,
                                                  normalization=None)
        return np.asarray(shift, float), float(np.sqrt(max(0.0, 1.0 - float(error) ** 2)))

    info = {"reliable": True, "reason": "", "loop_residual": 0.0, "pair_shifts": {},
            "pair_quality": {}}
    shifts = np.zeros((n, 2))
    if n < 2:
        return (shifts, info) if return_info else shifts
    windows = [prep(_centre(im, size)[0]) for im in images]
    # pairwise shifts (all pairs up to 6 images, else neighbours and pairs with the reference)
    if n <= 6:
        pairs = list(itertools.combinations(range(n), 2))
    else:
        pairs = sorted({(i, i + 1) for i in range(n - 1)}
                       | {tuple(sorted((i, ref_index))) for i in range(n) if i != ref_index})
    rows, rhs = [], []
    for i, j in pairs:
        sij, q = register(windows[j], windows[i])  # registers i onto j
        info["pair_shifts"][(i, j)] = sij.tolist()
        info["pair_quality"][(i, j)] = q
        r = np.zeros(n)
        r[i], r[j] = 1.0, -1.0
        rows.append(r)
        rhs.append(sij)
    r = np.zeros(n)
    r[ref_index] = 1.0
    rows.append(r)
    rhs.append(np.zeros(2))
    a, b = np.array(rows), np.array(rhs)
    shifts = np.linalg.lstsq(a, b, rcond=None)[0]
    shifts[ref_index] = 0.0
    residual = float(np.abs(a[:-1] @ shifts - b[:-1]).max())
    info["loop_residual"] = residual
    worst = min(info["pair_quality"].values())
    if n >= 3 and residual > max_loop_residual:
        info.update(reliable=False, reason=(
            f"the pairwise shifts of the images disagree by up to {residual:.1f} px (too noisy, "
            "or too different across focus, to correlate)"))
    elif worst < min_quality:
        info.update(reliable=False, reason=(
            f"the images correlate poorly (normalised correlation {worst:.2f} < "
            f"{min_quality:g}; too noisy, or too different across focus)"))
    elif np.abs(shifts).max() > 0.25 * min(images.shape[-2:]):
        info.update(reliable=False, reason=(
            f"an implausibly large drift of {np.abs(shifts).max():.0f} px was found"))
    if info["reliable"]:
        for i in range(n):
            if i == ref_index:
                continue
            for _ in range(max(0, int(refine))):
                margin = int(np.ceil(np.abs(shifts[i]).max())) + 8
                win, (oy, ox) = _centre(images[i], size, margin)
                moving = shift_image(win, shifts[i])[oy:oy + size[0], ox:ox + size[1]]
                extra, _ = register(windows[ref_index], prep(moving))
                shifts[i] += extra
                if np.abs(extra).max() < 0.5 / up:
                    break
    return (shifts, info) if return_info else shifts


def align_series(images: np.ndarray, upsample: int = 10,
                 progress: Callable[[float, str], None] | None = None, smooth: float = 1.0,
                 *, on_unreliable: str = "skip") -> tuple[np.ndarray, np.ndarray]:
    """Align a focal series on its middle image by cross-correlation.

    Parameters
    ----------
    images : array (n, ny, nx)
        The focal series.
    upsample : int
        Sub-pixel precision of the shift estimate is ``1 / upsample`` px.
    progress : callable(fraction, message), optional
    smooth : float
        Gaussian low-pass (px) applied to the copies used for the shift estimate only.
    on_unreliable : {"skip", "apply", "raise"}
        What to do when the shifts cannot be estimated reliably (see the module docstring):
        leave the series unaligned (zero shifts) with an :class:`AlignmentWarning`, apply the
        estimate anyway (with the warning), or raise ``ValueError``.

    Returns
    -------
    aligned : float32 array (n, ny, nx)
        Images shifted onto the middle one (edges filled by reflection).
    shifts_px : float array (n, 2)
        (dy, dx) applied to each image, in pixels; the drift of image ``i`` relative to the
        reference is ``-shifts_px[i]``.

    Examples
    --------
    >>> from scipy import ndimage
    >>> im = ndimage.gaussian_filter(np.random.default_rng(0).normal(size=(64, 64)), 2)
    >>> series = np.stack([shift_image(im, (1.5, -2.0)), im, shift_image(im, (0.5, 1.0))])
    >>> aligned, shifts = align_series(series)
    >>> np.round(shifts, 1).tolist()
    [[-1.5, 2.0], [0.0, 0.0], [-0.5, -1.0]]
    """
    if on_unreliable not in ("skip", "apply", "raise"):
        raise ValueError(f"on_unreliable must be 'skip', 'apply' or 'raise', got {on_unreliable!r}")
    images = np.asarray(images)
    if images.ndim != 3:
        raise ValueError(f"images must be (n, ny, nx), got shape {images.shape}")
    if len(images) < 2:
        return images.astype(np.float32), np.zeros((len(images), 2))
    shifts, info = estimate_shifts(images, upsample=upsample, smooth=smooth, return_info=True)
    if not info["reliable"]:
        msg = f"alignment: {info['reason']}"
        if on_unreliable == "raise":
            raise ValueError(msg)
        if on_unreliable == "skip":
            shifts = np.zeros_like(shifts)
            msg += "; the series was left unaligned (align it beforehand if it drifted)"
        else:
            msg += "; the estimate was applied anyway"
        warnings.warn(msg, AlignmentWarning, stacklevel=2)
    aligned = np.empty(images.shape, dtype=np.float32)
    for i, (im, s) in enumerate(zip(images, shifts)):
        aligned[i] = shift_image(im, s) if np.any(s) else im
        if progress is not None:
            progress((i + 1) / len(images), f"aligned image {i + 1}/{len(images)}")
    return aligned, shifts
