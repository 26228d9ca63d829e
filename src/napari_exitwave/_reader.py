"""npe2 reader contribution (``get_reader`` in ``napari.yaml``) and the layers it makes.

No Qt here: the hook and the layer builders turn the core readers' results into napari
``LayerData`` tuples, so they are testable without a viewer; the widgets and the sample data
build their layers with the same functions.

Layer conventions (shared with the widgets)
-------------------------------------------
- A focal series is one 3-D Image layer ``(n, ny, nx)``, ``scale = (1, s, s)`` with ``s`` in A/px
  and ``units = ("pixel", "angstrom", "angstrom")``; ``metadata["exitwave"]`` holds the series'
  ``sampling``, ``defocus`` (A), ``source`` and the reader's metadata.
- An exit wave is shown as two Image layers (real and imaginary part); both carry the complex
  array in ``metadata["exitwave"]["exit_wave"]`` and the part in ``metadata["exitwave"]["part"]``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["EXIT_WAVE_COLORMAP", "get_reader", "read_paths", "exit_wave_layers", "series_layer",
           "symmetric_limits"]

# Exit-wave display: one diverging colormap for every part, centred on vacuum.
EXIT_WAVE_COLORMAP = "PiYG"
_READ_EXTENSIONS = (".dm3", ".dm4", ".tif", ".tiff")


# ----------------------------------------------------------------------------------------------
# layers (shared by the reader, the sample data and the widgets)


def symmetric_limits(data: np.ndarray, centre: float, quantile: float = 0.999) -> tuple:
    """Contrast limits ``(centre - d, centre + d)`` covering ``quantile`` of ``|data - centre|``."""
    dev = np.abs(np.asarray(data, dtype=np.float64) - centre)
    dev = dev[np.isfinite(dev)]
    d = float(np.quantile(dev, quantile)) if dev.size else 0.0
    if not d > 0:
        d = 1e-3
    return (centre - d, centre + d)


def exit_wave_layers(exit_wave: np.ndarray, sampling: float | None, name: str = "exit wave",
                     parts=("real", "imag"), metadata: dict | None = None) -> list:
    """LayerData tuples showing a complex exit wave.

    Parameters
    ----------
    exit_wave : (ny, nx) complex
    sampling : A/px or None (then the layers are in pixels)
    parts : any of ``"real"``, ``"imag"``, ``"amplitude"``, ``"phase"``
    metadata : extra entries for ``metadata["exitwave"]`` (model, method, timings...)

    Every part uses :data:`EXIT_WAVE_COLORMAP` with contrast limits symmetric around its vacuum
    value (1 for real and amplitude, 0 for imaginary part and phase), so vacuum is the neutral
    colour and the real and imaginary parts share one look. The symmetric half-width is the same
    for real and imaginary part (the larger of the two), so their colours compare directly.
    """
    wave = np.asarray(exit_wave)
    funcs = {"real": (np.real, 1.0), "imag": (np.imag, 0.0),
             "amplitude": (np.abs, 1.0), "phase": (np.angle, 0.0)}
    s = float(sampling) if sampling else 1.0
    units = ("angstrom", "angstrom") if sampling else ("pixel", "pixel")
    arrays = {p: funcs[p][0](wave).astype(np.float32) for p in parts}
    half = {p: symmetric_limits(arrays[p], funcs[p][1]) for p in parts}
    ri = [half[p][1] - funcs[p][1] for p in ("real", "imag") if p in parts]
    out = []
    for p in parts:
        centre = funcs[p][1]
        d = max(ri) if p in ("real", "imag") else half[p][1] - centre
        meta = {"exitwave": {"exit_wave": wave, "part": p, "sampling": sampling,
                             **(metadata or {})}}
        out.append((arrays[p], {
            "name": f"{name} [{p}]", "scale": (s, s), "units": units,
            "colormap": EXIT_WAVE_COLORMAP, "contrast_limits": (centre - d, centre + d),
            "metadata": meta,
        }, "image"))
    return out


def series_layer(series, name: str | None = None) -> tuple:
    """LayerData tuple of a :class:`napari_exitwave.io.FocalSeries`."""
    s = series.sampling or 1.0
    units = ("pixel", "angstrom", "angstrom") if series.sampling else ("pixel",) * 3
    name = name or (Path(series.source).stem if series.source else "focal series")
    meta = {"exitwave": {"sampling": series.sampling, "defocus": series.defocus,
                         "source": series.source, "metadata": series.metadata}}
    return (series.images, {"name": name, "scale": (1.0, s, s), "units": units,
                            "colormap": "gray", "metadata": meta}, "image")


# ----------------------------------------------------------------------------------------------
# reader hook


def _is_series_folder(path: Path) -> bool:
    from .io import SERIES_EXTENSIONS

    try:
        return any(p.is_file() and p.suffix.lower() in SERIES_EXTENSIONS
                   and not p.name.startswith(".") for p in path.iterdir())
    except OSError:
        return False


def get_reader(path):
    """npe2 reader hook: a reader function for DM3/DM4/TIFF files and image folders, else None.

    Never raises: anything it does not recognise gets ``None`` so napari tries other readers.
    """
    try:
        if isinstance(path, (list, tuple)):
            if not path:
                return None
            return read_paths if all(get_reader(p) is not None for p in path) else None
        p = Path(os.fspath(path))
        if p.is_dir():
            if p.suffix.lower() == ".zarr":
                return read_paths if (p / ".zarray").exists() or (p / "zarr.json").exists() \
                    else None
            return read_paths if _is_series_folder(p) else None
        if p.suffix.lower() in _READ_EXTENSIONS and p.is_file():
            return read_paths
    except Exception:  # a reader hook must never raise
        return None
    return None


def _is_exit_wave_tiff(path: Path) -> bool:
    """Whether ``path`` is an exit-wave TIFF written by :func:`io.write_exit_wave_tiff`."""
    import json

    if path.suffix.lower() not in (".tif", ".tiff") or not path.is_file():
        return False
    try:
        import tifffile

        from .io import _METADATA_KEY

        with tifffile.TiffFile(str(path)) as tif:
            info = (tif.imagej_metadata or {}).get(_METADATA_KEY)
        return json.loads(info).get("kind") == "exit wave" if info else False
    except Exception:  # noqa: BLE001 - not ours: read_series will say what is wrong
        return False


def read_paths(path) -> list:
    """Read one or several paths into napari LayerData tuples.

    A focal series becomes one 3-D Image layer (scale in A); an exit wave written by this
    plugin (two-channel TIFF or Zarr) becomes its real and imaginary layers. A single 2-D image
    is opened too (the reconstruction widget then says that it needs a series). Unreadable
    files raise :class:`napari_exitwave.errors.ReaderError`, whose message napari shows.
    """
    from .io import read_exit_wave, read_series

    paths = list(path) if isinstance(path, (list, tuple)) else [path]
    layers = []
    for p in paths:
        p = Path(os.fspath(p))
        if p.suffix.lower() == ".zarr":
            wave, sampling, meta = read_exit_wave(p)
            layers += exit_wave_layers(wave, sampling, name=p.stem, metadata={"file": str(p)})
            continue
        if _is_exit_wave_tiff(p):
            wave, sampling, meta = read_exit_wave(p)
            layers += exit_wave_layers(wave, sampling, name=p.stem, metadata={"file": str(p)})
            continue
        series = read_series(p, allow_single=True, allow_nonfinite=True)
        data, kwargs, kind = series_layer(series, name=p.stem if p.is_file() else p.name)
        if data.shape[0] == 1:  # a single image: show it 2-D
            data = data[0]
            kwargs["scale"] = kwargs["scale"][1:]
            kwargs["units"] = kwargs["units"][1:]
        layers.append((data, kwargs, kind))
    return layers
