"""Checks of a focal series against a network's model card, before reconstructing.

:func:`validate_series` raises :class:`SeriesMismatchError` for what cannot work (wrong number of
images, NaNs, a pixel size too far from the network's when ``strict``) and returns plain-language
warnings for what may work badly (resampling by more than 2x, unknown pixel size, a defocus step
unlike the training one).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .errors import SeriesMismatchError

__all__ = ["validate_series", "MAX_RESAMPLE"]

MAX_RESAMPLE = 2.0
"""Largest factor by which a series may be resampled to the network's pixel size without a
warning (or an error when ``strict``)."""


def validate_series(series, card, *, defocus: Sequence[float] | None = None,
                    sampling: float | None = None, strict: bool = False,
                    max_resample: float = MAX_RESAMPLE) -> list[str]:
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
        Raise instead of warning when the pixel size is more than ``max_resample`` times off or
        unknown (the CLI does; the widget warns).

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
            f"load a series of {card.n_images} images or choose a model made for {n}")
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
            if factor > max_resample:
                how = "up" if s > card.sampling else "down"
                msg = (f"the series' pixel size {s:.4g} A is {factor:.1f}x "
                       f"{'coarser' if s > card.sampling else 'finer'} than the network's "
                       f"{card.sampling:.4g} A: the images must be resampled {how} by "
                       f"{factor:.1f}x, and the result may be poor; acquire at a magnification "
                       "closer to the network's, or choose a network trained for it")
                if strict:
                    raise SeriesMismatchError(msg)
                warnings.append(msg)
    d = list(defocus) if defocus is not None else series.defocus
    if d is not None:
        if len(d) != n:
            raise SeriesMismatchError(f"{len(d)} defocus values were given for {n} images")
        if n > 1 and card.defocus_step:
            dv = np.asarray(d, dtype=float)
            # reconstruct_series hands the images to the network in increasing defocus
            step = float(np.mean(np.diff(np.sort(dv))))
            if np.any(np.diff(dv) < 0):
                warnings.append(
                    "the defocus decreases through the series "
                    f"({', '.join(f'{v:g}' for v in dv)} A); the network was trained on increasing "
                    "defocus (abTEM convention, defocus = -C10), so it is given the images in that "
                    "order: check the sign of the defocus values if this is unexpected")
            if abs(step - card.defocus_step) > 0.25 * card.defocus_step:
                warnings.append(
                    f"the defocus step of the series ({step:g} A) differs from the network's "
                    f"({card.defocus_step:g} A); the reconstruction may be poor")
        if card.defocus_range and len(card.defocus_range) == 2:
            lo, hi = card.defocus_range
            out = [v for v in d if not lo <= v <= hi]
            if out:
                warnings.append(f"defocus values {out} A lie outside the network's training "
                                f"range [{lo:g}, {hi:g}] A")
    return warnings
