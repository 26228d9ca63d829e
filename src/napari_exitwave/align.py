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

    A positive ``dy`` moves the content down (to larger row indices).
    """
    from scipy import ndimage

    image = np.asarray(image, dtype=np.float64)
    dy, dx = float(shift[0]), float(shift[1])
    if dy == 0 and dx == 0:
        return image.copy()
    py = min(int(np.ceil(abs(dy))) + 8, image.shape[0] - 1)
    px = min(int(np.ceil(abs(dx))) + 8, image.shape[1] - 1)
    padded = np.pad(image, ((py, py), (px, px)), mode="reflect")
    shifted = np.fft.ifft2(ndimage.fourier_shift(np.fft.fft2(padded), (dy, dx))).real
    return shifted[py:py + image.shape[0], px:px + image.shape[1]]


def estimate_shifts(images: np.ndarray, upsample: int = 10, reference: int | None = None,
                    smooth: float = 1.0, refine: int = 2) -> np.ndarray:
    """Shifts (n, 2) in pixels that register each image onto the reference (default: middle).

    Applying ``shift_image(images[i], shifts[i])`` aligns image ``i`` with the reference.
    ``smooth`` is the standard deviation (px) of a Gaussian low-pass applied before correlating;
    ``refine`` extra passes re-estimate the residual shift after applying the estimate.
    """
    from scipy import ndimage
    from skimage.registration import phase_cross_correlation

    images = np.asarray(images, dtype=np.float64)
    if images.ndim != 3:
        raise ValueError(f"images must be (n, ny, nx), got shape {images.shape}")
    n = len(images)
    ref_index = n // 2 if reference is None else int(reference)
    if not 0 <= ref_index < n:
        raise ValueError(f"reference must be in 0..{n - 1}, got {reference}")
    window = _taper(images.shape[-2:])

    def prep(im):
        if smooth > 0:
            im = ndimage.gaussian_filter(im, smooth)
        return (im - im.mean()) * window

    ref = prep(images[ref_index])
    shifts = np.zeros((n, 2))
    for i in range(n):
        if i == ref_index:
            continue
        # the taper is fixed in the frame while the content moves, which biases the first
        # estimate towards zero (~3% of the shift): re-estimate the residual on the shifted image
        for _ in range(1 + max(0, int(refine))):
            moving = images[i] if not shifts[i].any() else shift_image(images[i], shifts[i])
            shift, _, _ = phase_cross_correlation(ref, prep(moving),
                                                  upsample_factor=max(1, int(upsample)),
                                                  normalization=None)
            shifts[i] += shift
            if np.abs(shift).max() < 0.5 / max(1, int(upsample)):
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
