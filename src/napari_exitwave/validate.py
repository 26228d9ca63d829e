"""Checks of a focal series against a network's model card, before reconstructing.

:func:`validate_series` raises :class:`SeriesMismatchError` for what cannot work (wrong number of
images, NaNs, constant frames, frames smaller than the network's receptive field, a resampled
series larger than the memory available, a pixel size 2x or more off when ``strict``) and
returns plain-language warnings for what may work badly (resampling by 2x or more, unknown pixel
size, non-square pixels, a defocus step unlike the training one, images that are not positive
intensities: see :func:`intensity_warnings`).
"""

from __future__ import annotations

import math
import os
from typing import Sequence

import numpy as np

from .errors import SeriesMismatchError

__all__ = ["validate_series", "intensity_warnings", "resampled_shape", "available_memory",
           "MAX_RESAMPLE", "MIN_FRAME"]

MAX_RESAMPLE = 2.0
"""Factor, from the network's pixel size, at which resampling a series gets a warning (or an
error when ``strict``): 2x and more."""

MIN_FRAME = 32
"""Smallest frame (px at the network's pixel size) reconstructed; the network's own
``size_multiple`` (2**depth) when larger. Smaller frames are mostly padding to a U-Net."""

BYTES_PER_PIXEL = 40
"""Working memory per resampled pixel and image: the spline resampling and the normalisation
peak at 36 bytes (float64 intermediates, measured with tracemalloc), the padded network input
adds 4; plus 24 bytes per frame pixel for the complex output and the tile accumulators."""


def available_memory() -> int | None:
    """Bytes of memory available to this process now (None when the system does not say)."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:  # noqa: BLE001 - psutil missing: ask the OS
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def resampled_shape(shape: Sequence[int], sampling: float | None,
                    network_sampling: float | None) -> tuple[int, int]:
    """(ny, nx) of a frame of ``shape`` (last two entries, px) once resampled from ``sampling``
    to ``network_sampling`` (A/px); unchanged when either is unknown."""
    ny, nx = (int(v) for v in shape[-2:])
    if not (sampling and network_sampling):
        return ny, nx
    f = float(sampling) / float(network_sampling)
    return int(math.floor((ny - 1) * f)) + 1, int(math.floor((nx - 1) * f)) + 1


def _blocks(image: np.ndarray, n_blocks: int = 16) -> tuple[np.ndarray, np.ndarray] | None:
    ny, nx = image.shape
    b = max(8, min(ny, nx) // n_blocks)
    if ny < 2 * b or nx < 2 * b:
        return None
    h, w = ny // b * b, nx // b * b
    blk = image[:h, :w].reshape(h // b, b, w // b, b).transpose(0, 2, 1, 3).reshape(-1, b * b)
    return blk.mean(axis=1), blk.std(axis=1)


def _vacuum_darker(image: np.ndarray) -> bool:
    """Whether ``image`` has a clear vacuum (its flattest 15% of blocks, with less than half the
    fluctuation of the busier half) that is darker than the specimen by a quarter of its noise.
    Vacuum is the brightest part of an HRTEM intensity image: the specimen scatters out of it."""
    stats = _blocks(np.asarray(image, dtype=np.float64))
    if stats is None:
        return False
    mean, std = stats
    flat = std <= np.quantile(std, 0.15)
    busy = std >= np.quantile(std, 0.5)
    noise = float(np.median(std[flat]))
    if not noise > 0 or noise >= 0.5 * float(np.median(std[busy])):
        return False  # no clear vacuum in the frame: nothing to compare
    return float(mean[flat].mean() - mean[busy].mean()) < -0.25 * noise


def intensity_warnings(images: np.ndarray) -> list[str]:
    """Warnings when a series does not look like positive intensities (electron counts).

    The networks are trained on intensities: non-negative, with the vacuum bright. A series that
    is mostly negative, or whose vacuum is darker than the specimen in most images, has been
    inverted or background-subtracted, and reconstructs badly (its phase comes out wrong).
    """
    images = np.asarray(images)
    out = []
    negative = float(np.mean(images < 0))
    if negative > 0.5:
        out.append(f"{100 * negative:.0f}% of the pixels are negative: the series is not a "
                   "positive intensity (counts); open the raw camera images, not inverted or "
                   "background-subtracted ones")
        return out
    dark = [i + 1 for i, im in enumerate(images) if _vacuum_darker(im)]
    if dark and len(dark) * 2 >= len(images):
        out.append(f"in image(s) {dark} the vacuum (the flattest part of the frame) is darker "
                   "than the specimen: the contrast looks inverted; open the raw intensity "
                   "images (bright vacuum), not inverted ones")
    return out


def _count_advice(n: int, card, models_dir) -> str:
    from .model_cards import models_for_n_images

    names = [m for m in models_for_n_images(n, models_dir) if m != card.name]
    if names:
        return f"or choose a model made for {n} images ({', '.join(names)})"
    return f"no installed model takes {n} images"


def validate_series(series, card, *, defocus: Sequence[float] | None = None,
                    sampling: float | None = None, strict: bool = False,
                    max_resample: float = MAX_RESAMPLE, memory_limit: int | None = None,
                    models_dir=None) -> list[str]:
    """Check ``series`` (a :class:`~napari_exitwave.io.FocalSeries`) against ``card``.

    Parameters
    ----------
    series : FocalSeries
    card : ModelCard
    defocus : list of float, optional
        Defoci in A overriding ``series.defocus``.
    sampling : float, optional
        Pixel size in A/px overriding ``series.sampling``.
    strict : bool
        Raise instead of warning when the pixel size is ``max_resample`` times off or more, or
        unknown (the CLI does unless ``--force``; the widget warns).
    memory_limit : int, optional
        Bytes the resampled series may take (default: the memory available now).
    models_dir : optional
        Where to look for other networks to suggest (default: the model folders).

    Returns
    -------
    warnings : list of str

    Raises
    ------
    SeriesMismatchError
    """
    images = np.asarray(series.images)
    warnings: list[str] = []
    n = images.shape[0]
    if n != card.n_images:
        raise SeriesMismatchError(
            f"model {card.name!r} expects {card.n_images} images, the stack has {n}; "
            f"load a series of {card.n_images} images {_count_advice(n, card, models_dir)}")
    bad = ~np.isfinite(images)
    if bad.any():
        counts = bad.reshape(n, -1).sum(axis=1)
        which = ", ".join(f"image {i + 1}: {c} px" for i, c in enumerate(counts) if c)
        raise SeriesMismatchError(f"the series contains NaN or infinite pixels ({which}); "
                                  "replace them (e.g. by the image median) first")
    flat = [i + 1 for i in range(n) if float(np.ptp(images[i])) == 0.0]
    if flat:
        raise SeriesMismatchError(f"image(s) {flat} of the series are constant (blank frames?)")

    s = sampling if sampling is not None else series.sampling
    if s is not None and not (math.isfinite(float(s)) and float(s) > 0):
        raise SeriesMismatchError(f"the pixel size must be a positive finite number (A/px), "
                                  f"got {s}; give the right --sampling")
    if card.sampling:
        if s is None:
            msg = (f"the pixel size of the series is unknown; it is used as if it were the "
                   f"network's {card.sampling:.4g} A/px - give the pixel size (--sampling) if "
                   "that is wrong")
            if strict:
                raise SeriesMismatchError(msg)
            warnings.append(msg)
        else:
            factor = max(s / card.sampling, card.sampling / s)
            if factor >= max_resample * (1 - 1e-9):
                how = "up" if s > card.sampling else "down"
                msg = (f"the series' pixel size {s:.4g} A is {factor:.1f}x "
                       f"{'coarser' if s > card.sampling else 'finer'} than the network's "
                       f"{card.sampling:.4g} A: the images must be resampled {how} by "
                       f"{factor:.1f}x, and the result may be poor; acquire at a magnification "
                       "closer to the network's, or choose a network trained for it")
                if strict:
                    raise SeriesMismatchError(msg)
                warnings.append(msg)
    _check_size(images.shape, s, card, memory_limit)
    aniso = (series.metadata or {}).get("anisotropic_sampling")
    if aniso:
        warnings.append(f"the pixels are not square (y {aniso[0]:.4g} A, x {aniso[1]:.4g} A); "
                        "they are used as square at the x pixel size: resample the images to "
                        "square pixels first")
    warnings += intensity_warnings(images)
    warnings += _defocus_warnings(defocus if defocus is not None else series.defocus, n, card)
    return warnings


def _check_size(shape, s, card, memory_limit) -> None:
    """Refuse frames below the network's receptive field and series too large for memory."""
    ny, nx = resampled_shape(shape, s, card.sampling)
    at = f"{card.sampling:.4g} A/px" if (card.sampling and s) else "their own pixel size"
    smallest = max(MIN_FRAME, int(card.size_multiple or 1))
    if min(ny, nx) < smallest:
        raise SeriesMismatchError(
            f"frames of {ny} x {nx} px (at {at}) are smaller than the {smallest} px the network "
            f"{card.name!r} needs to see a column with its surroundings; reconstruct a region of "
            f"at least {smallest} x {smallest} px")
    need = ny * nx * (BYTES_PER_PIXEL * int(shape[0]) + 24)
    limit = memory_limit if memory_limit is not None else available_memory()
    if limit is not None and need > limit:
        raise SeriesMismatchError(
            f"resampled to {at}, the series becomes {shape[0]} x {ny} x {nx} px and needs about "
            f"{need / 2**30:.1f} GiB, more than the {limit / 2**30:.1f} GiB of memory "
            "available; check the pixel size (--sampling), or crop the series")


def _defocus_warnings(d, n: int, card) -> list[str]:
    out: list[str] = []
    if d is None:
        return out
    d = list(d)
    if len(d) != n:
        raise SeriesMismatchError(f"{len(d)} defocus values were given for {n} images")
    if n > 1 and card.defocus_step:
        dv = np.asarray(d, dtype=float)
        # reconstruct_series hands the images to the network in increasing defocus
        step = float(np.mean(np.diff(np.sort(dv))))
        if np.any(np.diff(dv) < 0):
            out.append(
                "the defocus decreases through the series "
                f"({', '.join(f'{v:g}' for v in dv)} A); the network was trained on increasing "
                "defocus (abTEM convention, defocus = -C10), so it is given the images in that "
                "order: check the sign of the defocus values if this is unexpected")
        if abs(step - card.defocus_step) > 0.25 * card.defocus_step:
            out.append(
                f"the defocus step of the series ({step:g} A) differs from the network's "
                f"({card.defocus_step:g} A); the reconstruction may be poor")
    if card.defocus_range and len(card.defocus_range) == 2:
        lo, hi = card.defocus_range
        outside = [v for v in d if not lo <= v <= hi]
        if outside:
            out.append(f"defocus values {outside} A lie outside the network's training "
                       f"range [{lo:g}, {hi:g}] A")
    return out
