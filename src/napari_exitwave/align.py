"""Alignment of the images of a focal series (drift between exposures).

Shared by the network and the traditional reconstructions. The shift of every image relative to
the middle one is found by phase correlation (:func:`skimage.registration.phase_cross_correlation`,
sub-pixel by upsampled DFT) on edge-tapered, slightly low-passed copies, and applied as a
Fourier shift on a reflect-padded copy, so the wrap-around of the periodic shift does not bring the opposite edge
into the frame.

The correlation is not whitened (``normalization=None``): the images of a focal series differ in
contrast (the CTF changes sign between them), and whitened phase correlation then locks onto
noise; on simulated MoS2-like series at 1e3-1e5 e/A^2 the plain, low-passed (sigma 1 px)
cross-correlation was right to ~0.1-1 px where the whitened one was off by tens of pixels.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

__all__ = ["align_series", "shift_image", "estimate_shifts"]


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
                    smooth: float = 1.0, refine: int = 1, max_size: int = 1024) -> np.ndarray:
    """Shifts (n, 2) in pixels that register each image onto the reference (default: middle).

    Applying ``shift_image(images[i], shifts[i])`` aligns image ``i`` with the reference.
    ``smooth`` is the standard deviation (px) of a Gaussian low-pass applied before correlating;
    ``refine`` extra passes re-estimate the residual shift after applying the estimate; the
    estimate uses the central ``max_size`` x ``max_size`` px of larger frames (speed).
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

    ref = prep(_centre(images[ref_index], size)[0])
    shifts = np.zeros((n, 2))
    for i in range(n):
        if i == ref_index:
            continue
        # the taper is fixed in the frame while the content moves, which biases the first
        # estimate towards zero (~3% of the shift): re-estimate the residual on the shifted image
        for _ in range(1 + max(0, int(refine))):
            if shifts[i].any():
                margin = int(np.ceil(np.abs(shifts[i]).max())) + 8
                win, (oy, ox) = _centre(images[i], size, margin)
                moving = shift_image(win, shifts[i])[oy:oy + size[0], ox:ox + size[1]]
            else:
                moving = _centre(images[i], size)[0]
            shift, _, _ = phase_cross_correlation(ref, prep(moving), upsample_factor=up,
                                                  normalization=None)
            shifts[i] += shift
            if np.abs(shift).max() < 0.5 / up:
                break
    return shifts


def align_series(images: np.ndarray, upsample: int = 10,
                 progress: Callable[[float, str], None] | None = None, smooth: float = 1.0
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Align a focal series on its middle image by phase correlation.

    Parameters
    ----------
    images : array (n, ny, nx)
        The focal series.
    upsample : int
        Sub-pixel precision of the shift estimate is ``1 / upsample`` px.
    progress : callable(fraction, message), optional
    smooth : float
        Gaussian low-pass (px) applied to the copies used for the shift estimate only.

    Returns
    -------
    aligned : float32 array (n, ny, nx)
        Images shifted onto the middle one (edges filled by reflection).
    shifts_px : float array (n, 2)
        (dy, dx) applied to each image, in pixels; the drift of image ``i`` relative to the
        reference is ``-shifts_px[i]``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> im = rng.random((64, 64))
    >>> series = np.stack([shift_image(im, (1.5, -2.0)), im, im])
    >>> aligned, shifts = align_series(series)
    >>> np.round(shifts[0], 1).tolist()
    [-1.5, 2.0]
    """
    images = np.asarray(images)
    if images.ndim != 3:
        raise ValueError(f"images must be (n, ny, nx), got shape {images.shape}")
    if len(images) < 2:
        return images.astype(np.float32), np.zeros((len(images), 2))
    shifts = estimate_shifts(images, upsample=upsample, smooth=smooth)
    aligned = np.empty(images.shape, dtype=np.float32)
    for i, (im, s) in enumerate(zip(images, shifts)):
        aligned[i] = shift_image(im, s)
        if progress is not None:
            progress((i + 1) / len(images), f"aligned image {i + 1}/{len(images)}")
    return aligned, shifts
