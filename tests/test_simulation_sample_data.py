"""The bundled sample data (scripts/make_sample_data.py) is consistent and self-describing."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from napari_exitwave import physics

DATA = Path(__file__).resolve().parents[1] / "src" / "napari_exitwave" / "data"


@pytest.mark.parametrize("prefix, size, labels, vacuum", [
    ("sample", 256, {"Mo", "S2", "S"}, True),
    ("sample_mosg22", 128, {"Mo", "S2", "S", "C"}, True),  # MoS2 on graphene at 0.22 A/px
    # MoS2 on a graphene film at 0.105 A/px: no vacuum anywhere, graphene in the corners
    ("sample_mosfilm", 256, {"Mo", "S2", "S", "C"}, False),
])
def test_sample_files_are_small_and_consistent(prefix, size, labels, vacuum):
    files = [f"{prefix}_{f}" for f in ("series.tif", "exit_wave.tif", "exit_wave.npy",
                                       "columns.csv", "parameters.json")]
    assert sum((DATA / f).stat().st_size for f in files) < 2e6
    info = json.loads((DATA / f"{prefix}_parameters.json").read_text())
    params = [physics.MicroscopeParameters.from_dict(p) for p in info["microscope"]]
    assert len(params) == 3
    d = [p.defocus for p in params]
    assert d[2] - d[0] == pytest.approx(100.0) and all(-150 <= x <= 150 for x in d)
    assert all(p.dose == pytest.approx(1e4) for p in params)

    tifffile = pytest.importorskip("tifffile")
    images = tifffile.imread(DATA / f"{prefix}_series.tif")
    assert images.shape == (3, size, size) and images.dtype == np.float32
    assert images.mean() == pytest.approx(1.0, abs=0.05)  # vacuum-normalised intensity

    wave = np.load(DATA / f"{prefix}_exit_wave.npy")
    assert wave.shape == (size, size) and wave.dtype == np.complex64
    if vacuum:
        assert abs(wave[0, 0] - 1) < 1e-3  # vacuum corner
    else:  # a carbon film: a weak phase object in every corner
        assert 1e-3 < abs(wave[0, 0] - 1) < 0.2
    sampling = info["structure_config"]["sampling"]
    with open(DATA / f"{prefix}_columns.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["label"] for r in rows} <= labels and len(rows) > 20
    rc = np.array([[float(r["row"]), float(r["col"])] for r in rows])
    xy = np.array([[float(r["x_A"]), float(r["y_A"])] for r in rows])
    np.testing.assert_allclose(rc, xy[:, ::-1] / sampling, atol=2e-3)
    # columns sit on phase maxima of the exit wave
    r, c = (np.round(rc).astype(int) % size).T  # periodic cell: a film column at the edge
    assert np.angle(wave[r, c]).min() > 0.05
    # mostly vacuum around the flake; on a film, the columns stand out of the film's mean phase
    assert np.angle(wave).mean() < (0.05 if vacuum else np.median(np.angle(wave[r, c])))


def test_sample_series_metadata_reads_back():
    io = pytest.importorskip("napari_exitwave.io")
    if not hasattr(io, "read_series"):
        pytest.skip("napari_exitwave.io.read_series not available")
    s = io.read_series(DATA / "sample_series.tif")
    assert s.sampling == pytest.approx(0.105)
    assert s.defocus == pytest.approx([-60.0, -10.0, 40.0])
    assert s.images.shape == (3, 256, 256)
    wave, sampling, _ = io.read_exit_wave(DATA / "sample_exit_wave.tif")
    np.testing.assert_allclose(wave, np.load(DATA / "sample_exit_wave.npy"), atol=1e-6)
    assert sampling == pytest.approx(0.105)
