"""Bundled sample data: a small simulated MoS2 focal series and its true exit wave.

The files are made by ``scripts/make_sample_data.py`` (abTEM multislice -> physics image model)
with :func:`napari_exitwave.io.write_series_tiff` and
:func:`napari_exitwave.io.write_exit_wave_tiff`, so the pixel size (A/px) and the defoci (A, abTEM convention) travel inside the TIFFs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["DATA_DIR", "SAMPLE_SERIES", "SAMPLE_EXIT_WAVE", "SAMPLE_COLUMNS", "SAMPLE_PARAMETERS",
           "load_sample_series", "load_sample_exit_wave", "load_sample_columns",
           "load_sample_parameters", "sample_series_path"]

DATA_DIR = Path(__file__).resolve().parent
SAMPLE_SERIES = "sample_series.tif"
"""Focal series (n, ny, nx) float32 ImageJ stack, sampling and defoci in its metadata."""
SAMPLE_EXIT_WAVE = "sample_exit_wave.tif"
"""The true exit wave (real, imag channels), at the same pixel size as the series."""
SAMPLE_COLUMNS = "sample_columns.csv"
"""Projected atomic columns: ``x_A, y_A, row, col, label`` (Mo, S2, S)."""
SAMPLE_PARAMETERS = "sample_parameters.json"
"""Microscope parameters of each image, structure and simulation settings."""


def _path(name: str) -> Path:
    p = DATA_DIR / name
    if not p.is_file():
        raise FileNotFoundError(f"sample data {p} is missing; create it with "
                                "`python scripts/make_sample_data.py` (needs the training extra)")
    return p


def sample_series_path() -> Path:
    """Path of the bundled focal-series TIFF."""
    return _path(SAMPLE_SERIES)


def load_sample_series():
    """The bundled simulated MoS2 focal series as a :class:`~napari_exitwave.io.FocalSeries`."""
    from ..io import read_series

    series = read_series(_path(SAMPLE_SERIES))
    series.source = "sample"
    return series


def load_sample_exit_wave() -> tuple[np.ndarray, float | None, dict]:
    """The sample's true exit wave: ``(complex64 (ny, nx), sampling A/px, metadata)``."""
    from ..io import read_exit_wave

    return read_exit_wave(_path(SAMPLE_EXIT_WAVE))


def load_sample_columns() -> dict[str, np.ndarray]:
    """True atomic columns of the sample: ``x_A``, ``y_A`` (A), ``row``, ``col`` (px), ``label``."""
    import csv

    with open(_path(SAMPLE_COLUMNS), newline="") as fh:
        rows = list(csv.DictReader(fh))
    out: dict[str, np.ndarray] = {}
    for key in (rows[0].keys() if rows else ()):
        values = [r[key] for r in rows]
        try:
            out[key] = np.array([float(v) for v in values])
        except ValueError:
            out[key] = np.array(values, dtype=object)
    return out


def load_sample_parameters() -> dict:
    """Microscope parameters (``microscope``: one dict per image) and simulation settings."""
    import json

    return json.loads(_path(SAMPLE_PARAMETERS).read_text())
