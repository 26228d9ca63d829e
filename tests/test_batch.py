"""Batch reconstruction: parallel == serial, a failed input never stops the rest, summary."""

from __future__ import annotations

import csv
import os

import numpy as np
import pytest
import tifffile

from napari_exitwave.batch import find_inputs, run_batch, summary_table
from napari_exitwave.io import FocalSeries




def tiff_reader(path):
    """Module level, so that spawned worker processes can unpickle it."""
    return FocalSeries(tifffile.imread(path).astype(np.float32), 0.1, "A", None, {}, str(path))


class _Rec:
    def __init__(self, wave):
        self.exit_wave = wave
        self.sampling = 0.1
        self.method = "fake"
        self.model_name = "fake"
        self.device = "CPU"
        self.timings = {}
        self.warnings = []


def fake_reconstruct(series):
    """A deterministic stand-in for the network: a nonlinear function of the whole series."""
    im = np.asarray(series.images, np.float64)
    if not np.all(np.isfinite(im)):
        raise ValueError("series contains NaN")
    wave = np.exp(1j * (im[0] - im[-1])) * (1 + im.std(axis=0))
    return _Rec(wave.astype(np.complex64))


@pytest.fixture
def series_folder(tmp_path):
    rng = np.random.default_rng(0)
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    for i in range(6):
        tifffile.imwrite(src / f"s{i}.tif", rng.normal(size=(3, 24, 24)).astype(np.float32))
    bad = rng.normal(size=(3, 24, 24)).astype(np.float32)
    bad[1, 3, 3] = np.nan
    tifffile.imwrite(src / "s_nan.tif", bad)            # the reconstruction fails
    (src / "s_corrupt.tif").write_bytes(b"not a tiff at all" * 10)  # the reader fails
    (src / "readme.txt").write_text("ignored")
    tifffile.imwrite(src / "sub" / "s0.tif", rng.normal(size=(3, 24, 24)).astype(np.float32))
    return src


def _check(results, out, n_ok, failed):
    assert [r.status for r in results].count("done") == n_ok
    assert {r.file.split("/")[-1] for r in results if r.status == "failed"} == failed
    rows = list(csv.DictReader(open(out / "summary.csv")))
    assert [row["file"] for row in rows] == [r.file for r in results]
    return {r.file: np.load(r.output) for r in results if r.status == "done"}


def test_find_inputs(series_folder):
    names = [p.split("/")[-1] for p in find_inputs(series_folder)]
    assert names == ["s0.tif", "s1.tif", "s2.tif", "s3.tif", "s4.tif", "s5.tif",
                     "s_corrupt.tif", "s_nan.tif", "sub"]
    assert len(find_inputs(str(series_folder / "s[0-2].tif"))) == 3
    assert len(find_inputs(str(series_folder / "**" / "s0.tif"))) == 2
    with pytest.raises(FileNotFoundError, match="neither"):
        find_inputs(str(series_folder / "missing.tif"))


def test_serial_dask_and_processes_agree_and_failures_do_not_stop_the_batch(series_folder,
                                                                              tmp_path):
    pattern = str(series_folder / "s*.tif")
    failed = {"s_nan.tif", "s_corrupt.tif"}
    serial = run_batch(pattern, tmp_path / "serial", reconstruct_fn=fake_reconstruct,
                       reader=tiff_reader, backend="serial")
    ref = _check(serial, tmp_path / "serial", 6, failed)
    err = {r.file.split("/")[-1]: r.error for r in serial}
    assert "NaN" in err["s_nan.tif"] and err["s_corrupt.tif"]

    seen = []
    dask = run_batch(pattern, tmp_path / "dask", reconstruct_fn=fake_reconstruct,
                     reader=tiff_reader, backend="dask", workers=2, processes=False,
                     progress=lambda r, k, n: seen.append((k, n)))
    got = _check(dask, tmp_path / "dask", 6, failed)
    assert seen[-1] == (8, 8)
    for f in ref:
        np.testing.assert_array_equal(got[f], ref[f])

    procs = run_batch(pattern, tmp_path / "procs", reconstruct_fn=fake_reconstruct,
                      reader=tiff_reader, backend="processes", workers=2)
    got = _check(procs, tmp_path / "procs", 6, failed)
    # done in worker processes, not here
    assert all(not r.worker.endswith(f":{os.getpid()}") for r in procs)
    for f in ref:
        np.testing.assert_array_equal(got[f], ref[f])

    table = summary_table(serial)
    assert "6 done, 2 failed" in table and "s_nan.tif" in table and "CPU" in table


def test_same_stem_in_two_folders_gets_two_outputs(series_folder, tmp_path):
    res = run_batch([series_folder / "s0.tif", series_folder / "sub" / "s0.tif"], tmp_path / "o",
                    reconstruct_fn=fake_reconstruct, reader=tiff_reader)
    assert [r.output.split("/")[-1] for r in res] == ["s0_exit_wave.npy", "s0_2_exit_wave.npy"]
    assert not np.array_equal(np.load(res[0].output), np.load(res[1].output))


def test_existing_cluster_by_scheduler_address(series_folder, tmp_path):
    from dask.distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster:
        res = run_batch(str(series_folder / "s[0-2].tif"), tmp_path / "o",
                        reconstruct_fn=fake_reconstruct, reader=tiff_reader,
                        scheduler=cluster.scheduler_address)  # backend "auto" -> dask
        ref = run_batch(str(series_folder / "s[0-2].tif"), tmp_path / "ref",
                        reconstruct_fn=fake_reconstruct, reader=tiff_reader)
    assert [r.status for r in res] == ["done"] * 3
    for a, b in zip(res, ref):
        np.testing.assert_array_equal(np.load(a.output), np.load(b.output))
