"""Bundled sample data: small simulated focal series with their true exit waves.

Three samples, each a 3-image focal series with its truth (``SAMPLES``):

- ``mos2`` (the default): an unsupported MoS2 nanoflake, 256 x 256 px at 0.105 A/px;
- ``mos2-graphene-022``: MoS2 on graphene, 128 x 128 px at 0.22 A/px, the pixel size of the
  paper's experimental series (for the ``mos2-graphene-022`` network);
- ``mos2-film``: MoS2 on a continuous graphene film covering the field, 256 x 256 px at
  0.105 A/px (for the ``mos2-graphene`` networks; ``reconstruct sample:mos2-film``).

The files are made by ``scripts/make_sample_data.py`` (abTEM multislice -> physics image model)
with :func:`napari_exitwave.io.write_series_tiff` and
:func:`napari_exitwave.io.write_exit_wave_tiff`, so the pixel size (A/px) and the defoci (A,
abTEM convention) travel inside the TIFFs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["DATA_DIR", "SAMPLES", "SAMPLE_SERIES", "SAMPLE_EXIT_WAVE", "SAMPLE_COLUMNS",
           "SAMPLE_PARAMETERS", "load_sample_series", "load_sample_exit_wave",
           "load_sample_columns", "load_sample_parameters", "sample_series_path",
           "sample_for_sampling"]

DATA_DIR = Path(__file__).resolve().parent

SAMPLES: dict[str, dict] = {
    "mos2": {"prefix": "sample", "sampling": 0.105,
             "description": "MoS2 nanoflake, 0.105 A/px, 3 images (simulated)"},
    "mos2-graphene-022": {"prefix": "sample_mosg22", "sampling": 0.22,
                          "description": "MoS2 on graphene, 0.22 A/px, 3 images (simulated)"},
    "mos2-film": {"prefix": "sample_mosfilm", "sampling": 0.105,
                  "description": "MoS2 on a continuous graphene film, 0.105 A/px, 3 images "
                                 "(simulated; for the mos2-graphene networks)"},
}
"""Bundled samples: file prefix, pixel size (A/px) and a one-line description."""

SAMPLE_SERIES = "sample_series.tif"
"""Focal series (n, ny, nx) float32 ImageJ stack, sampling and defoci in its metadata."""
SAMPLE_EXIT_WAVE = "sample_exit_wave.tif"
"""The true exit wave (real, imag channels), at the same pixel size as the series."""
SAMPLE_COLUMNS = "sample_columns.csv"
"""Projected atomic columns: ``x_A, y_A, row, col, label`` (Mo, S2, S; C for graphene)."""
SAMPLE_PARAMETERS = "sample_parameters.json"
"""Microscope parameters of each image, structure and simulation settings."""


def _path(kind: str, sample: str = "mos2") -> Path:
    if sample not in SAMPLES:
        raise ValueError(f"unknown sample {sample!r}; bundled: {', '.join(SAMPLES)}")
    name = SAMPLES[sample]["prefix"] + "_" + kind
    p = DATA_DIR / name
    if not p.is_file():
        raise FileNotFoundError(f"sample data {p} is missing; create it with "
                                f"`python scripts/make_sample_data.py --sample {sample}` "
                                "(needs the training extra)")
    return p


def sample_series_path(sample: str = "mos2") -> Path:
    """Path of a bundled focal-series TIFF."""
    return _path("series.tif", sample)


def load_sample_series(sample: str = "mos2"):
    """A bundled simulated focal series as a :class:`~napari_exitwave.io.FocalSeries`."""
    from ..io import read_series

    series = read_series(_path("series.tif", sample))
    series.source = "sample" if sample == "mos2" else f"sample:{sample}"
    return series


def load_sample_exit_wave(sample: str = "mos2") -> tuple[np.ndarray, float | None, dict]:
    """A sample's true exit wave: ``(complex64 (ny, nx), sampling A/px, metadata)``."""
    from ..io import read_exit_wave

    return read_exit_wave(_path("exit_wave.tif", sample))


def load_sample_columns(sample: str = "mos2") -> dict[str, np.ndarray]:
    """True atomic columns: ``x_A``, ``y_A`` (A), ``row``, ``col`` (px), ``label``."""
    import csv

    with open(_path("columns.csv", sample), newline="") as fh:
        rows = list(csv.DictReader(fh))
    out: dict[str, np.ndarray] = {}
    for key in (rows[0].keys() if rows else ()):
        values = [r[key] for r in rows]
        try:
            out[key] = np.array([float(v) for v in values])
        except ValueError:
            out[key] = np.array(values, dtype=object)
    return out


def load_sample_parameters(sample: str = "mos2") -> dict:
    """Microscope parameters (``microscope``: one dict per image) and simulation settings."""
    import json

    return json.loads(_path("parameters.json", sample).read_text())


def sample_for_sampling(sampling: float) -> str:
    """The bundled sample whose pixel size is closest to ``sampling`` (A/px), e.g. a model's."""
    return min(SAMPLES, key=lambda k: abs(np.log(SAMPLES[k]["sampling"] / float(sampling))))
