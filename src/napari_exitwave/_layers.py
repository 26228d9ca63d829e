"""Qt-free glue between napari layers and the core: series from a layer, fit checks, peaks.

The widgets in :mod:`napari_exitwave._qt` are thin views over these functions, which take and
return plain arrays, dataclasses and dicts (a layer is only read through ``data``, ``scale``,
``units``, ``metadata`` and ``name``), so they are tested without a viewer.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

__all__ = ["FitCheck", "layer_sampling", "series_from_layer", "check_fit",
           "peak_features", "exit_wave_of_layer", "ensemble"]

def layer_sampling(layer) -> float | None:
    """Pixel size in A of an Image layer: our metadata, else ``scale`` in a length unit."""
    meta = (getattr(layer, "metadata", None) or {}).get("exitwave", {})
    if meta.get("sampling"):
        return float(meta["sampling"])
    from .errors import ReaderError
    from .io import to_angstrom

    units = getattr(layer, "units", None)
    scale = getattr(layer, "scale", None)
    if units is None or scale is None or len(units) == 0:
        return None
    try:
        return to_angstrom(float(scale[-1]), str(units[-1]))
    except ReaderError:  # a reciprocal-space unit: not an image
        return None


def series_from_layer(layer, sampling: float | None = None):
    """A :class:`napari_exitwave.io.FocalSeries` from an Image layer (2-D gives n = 1).

    ``sampling`` (A/px) overrides the layer's calibration; defocus values come from the
    layer's metadata (written by this plugin's reader) when present.
    """
    from .io import FocalSeries

    data = np.asarray(layer.data)
    if data.ndim not in (2, 3):
        raise ValueError(f"layer {layer.name!r} has {data.ndim} dimensions {data.shape}; a focal "
                         "series is a 3-D stack (n, ny, nx)")
    if np.iscomplexobj(data) or getattr(layer, "rgb", False):
        raise ValueError(f"layer {layer.name!r} is not a grayscale intensity image")
    meta = (getattr(layer, "metadata", None) or {}).get("exitwave", {})
    defocus = meta.get("defocus")
    n = 1 if data.ndim == 2 else data.shape[0]
    if defocus is not None and len(defocus) != n:
        defocus = None
    s = sampling if sampling else layer_sampling(layer)
    return FocalSeries(images=data, sampling=s, defocus=defocus,
                       metadata=dict(meta.get("metadata") or {}), source=str(layer.name))


@dataclasses.dataclass
class FitCheck:
    """Whether a series fits a method/model: ``errors`` block a run, ``warnings`` do not."""

    errors: list[str] = dataclasses.field(default_factory=list)
    warnings: list[str] = dataclasses.field(default_factory=list)
    info: list[str] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def text(self) -> str:
        return "\n".join([f"✖ {e}" for e in self.errors] + [f"⚠ {w}" for w in self.warnings]
                         + self.info)


def check_fit(series, card=None, method: str = "network", defocus=None) -> FitCheck:
    """Check a :class:`~napari_exitwave.io.FocalSeries` against a model card or a method.

    Parameters
    ----------
    series : FocalSeries (a single image is ``n_images == 1``)
    card : :class:`napari_exitwave.inference.ModelCard`, needed for method ``"network"``
    method : ``"network"``, ``"gs"`` or ``"wiener"``
    defocus : defocus values (A) overriding ``series.defocus``

    The network checks are :func:`napari_exitwave.validate.validate_series` (its errors block a
    run, its warnings do not); the traditional methods need >= 2 images and one defocus per image.
    """
    from .errors import SeriesMismatchError
    from .validate import validate_series

    chk = FitCheck()
    n, (ny, nx) = series.n_images, series.shape
    if n == 1:
        chk.errors.append(
            f"this is a single 2-D image ({ny} x {nx} px); a reconstruction needs a focal "
            "series: open a 3-D stack, or a folder of the series' single images")
        return chk
    d = list(defocus) if defocus is not None else series.defocus
    if method == "network":
        if card is None:
            chk.errors.append("choose a model (or an ONNX file)")
            return chk
        try:
            chk.warnings += validate_series(series, card, defocus=d)
        except SeriesMismatchError as e:
            chk.errors.append(str(e))
        if series.sampling and card.sampling and abs(series.sampling / card.sampling - 1) > 0.01:
            chk.info.append(f"resampled {series.sampling:.4g} -> {card.sampling:.4g} A/px")
        return chk
    if not np.all(np.isfinite(series.images)):
        chk.errors.append("the series contains NaN or infinite pixels; replace them (e.g. by the "
                          "image median) before reconstructing")
    if series.sampling is None:
        chk.errors.append("the pixel size is unknown: enter it (A/px) in 'Pixel size'")
    if d is None or len(d) != n:
        got = 0 if d is None else len(d)
        chk.errors.append(f"enter {n} defocus values (A), one per image (got {got})")
    return chk


def exit_wave_of_layer(layer) -> tuple[np.ndarray, float | None] | None:
    """(complex exit wave, sampling) shown by an exit-wave Image layer, or None."""
    meta = (getattr(layer, "metadata", None) or {}).get("exitwave", {})
    wave = meta.get("exit_wave")
    if isinstance(wave, np.ndarray) and np.iscomplexobj(wave):
        return wave, meta.get("sampling")
    return None


def peak_features(exit_wave: np.ndarray, sampling: float, min_distance: float,
                  threshold: float, refine: bool = True) -> tuple[np.ndarray, dict[str, Any]]:
    """Peaks of ``|psi - 1|`` and their feature table (with an empty ``label`` column)."""
    from .peaks import find_wave_peaks, peak_table

    wave = np.asarray(exit_wave)
    pos = find_wave_peaks(wave, sampling=sampling, min_distance=min_distance,
                          threshold=threshold, refine=refine)
    table = peak_table(wave, pos, sampling)
    features = {k: table[k] for k in ("real", "imag", "amplitude", "phase", "y_A", "x_A")}
    features["label"] = np.array([""] * len(pos), dtype=object)
    return pos, features


def ensemble(waves: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
    """Mean exit wave and the models' disagreement ``sqrt(mean |psi_i - mean|^2)`` (None for 1)."""
    stack = np.stack([np.asarray(w, dtype=np.complex64) for w in waves])
    mean = stack.mean(axis=0).astype(np.complex64)
    if len(stack) < 2:
        return mean, None
    std = np.sqrt(np.mean(np.abs(stack - mean) ** 2, axis=0)).astype(np.float32)
    return mean, std
