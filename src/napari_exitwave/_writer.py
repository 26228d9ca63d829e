"""npe2 writer contributions (``write_exit_wave``, ``write_points_csv`` in ``napari.yaml``).

No Qt here: napari hands the writers plain ``(data, attributes, layer_type)`` tuples; they write
through the core writers of :mod:`napari_exitwave.io` and :mod:`napari_exitwave.peaks`. The layer
conventions they read back are those of :mod:`napari_exitwave._reader`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["write_exit_wave", "write_points_csv"]


def _complex_from_layers(layer_data: list) -> tuple[np.ndarray, float | None, dict]:
    """(exit wave, sampling, metadata) from the (data, attributes, type) tuples of a writer."""
    metas = [(attrs.get("metadata") or {}).get("exitwave", {}) for _, attrs, _ in layer_data]
    for m in metas:
        if isinstance(m.get("exit_wave"), np.ndarray) and np.iscomplexobj(m["exit_wave"]):
            info = {k: v for k, v in m.items()
                    if k not in ("exit_wave", "part") and _jsonable(v)}
            return np.asarray(m["exit_wave"]), m.get("sampling"), info
    parts = {m.get("part"): np.asarray(d) for (d, _, _), m in zip(layer_data, metas)}
    if "real" in parts and "imag" in parts:
        scale = layer_data[0][1].get("scale")
        sampling = float(scale[-1]) if scale is not None else None
        return parts["real"] + 1j * parts["imag"], sampling, {}
    names = ", ".join(a.get("name", "?") for _, a, _ in layer_data)
    raise ValueError(
        f"cannot write {names} as an exit wave: select the real and imaginary layers of a "
        "reconstruction (or one of them); other images can be saved with napari's own writers")


def _jsonable(v) -> bool:
    return isinstance(v, (str, int, float, bool, type(None), list, tuple, dict))


def write_exit_wave(path: str, layer_data: list) -> list[str]:
    """npe2 writer: an exit wave (its real/imag layers) to TIFF (2 channels) or Zarr (complex)."""
    from .io import write_exit_wave_tiff, write_exit_wave_zarr

    wave, sampling, meta = _complex_from_layers(layer_data)
    p = Path(path)
    if p.suffix.lower() == ".zarr":
        write_exit_wave_zarr(p, wave, sampling, metadata=meta)
    else:
        if p.suffix.lower() not in (".tif", ".tiff"):
            p = p.with_suffix(".tif")
        write_exit_wave_tiff(p, wave, sampling, metadata=meta)
    return [str(p)]


def write_points_csv(path: str, data: Any, attributes: dict) -> list[str]:
    """npe2 writer: a Points layer (atomic-column peaks) to CSV with its features.

    Columns: y, x (px), y_A, x_A, real, imag, amplitude, phase, label (as in
    :func:`napari_exitwave.peaks.write_peaks_csv`). ``y``/``x`` are the data coordinates of the
    points; features missing from the layer are left out.
    """
    from .peaks import write_peaks_csv

    pts = np.asarray(data, dtype=np.float64).reshape(-1, 2) if len(data) else np.zeros((0, 2))
    features = attributes.get("features")
    cols: dict[str, np.ndarray] = {"y": pts[:, 0], "x": pts[:, 1]}
    scale = attributes.get("scale")
    if scale is not None:
        cols["y_A"] = pts[:, 0] * float(scale[-2])
        cols["x_A"] = pts[:, 1] * float(scale[-1])
    labels = None
    if features is not None and len(features):
        for c in features.columns:
            if c in ("y", "x", "y_A", "x_A"):
                continue
            if c == "label":
                labels = np.asarray(features[c]).astype(str)
            else:
                try:
                    cols[c] = np.asarray(features[c], dtype=np.float64)
                except (TypeError, ValueError):
                    continue
    p = Path(path)
    if p.suffix.lower() != ".csv":
        p = p.with_suffix(".csv")
    write_peaks_csv(cols, p, labels=labels)
    return [str(p)]
