"""Zarr data sets: reproducibility, resume after interruption, completeness, errors, CLI."""

from __future__ import annotations

import json
import os
from collections import namedtuple

import numpy as np
import pytest

pytest.importorskip("abtem")
zarr = pytest.importorskip("zarr")

from exitwave_training import dataset as dsmod  # noqa: E402
from exitwave_training.dataset import (DatasetConfig, ExitWaveDataset, generate_dataset,  # noqa: E402
                                       generate_sample)
from exitwave_training.exitwave import ExitWaveConfig  # noqa: E402
from exitwave_training.structures import StructureConfig  # noqa: E402
from napari_exitwave import physics  # noqa: E402


def small_config(n=4, seed=0, dataset="mos2", **kw):
    return DatasetConfig(n=n, seed=seed, n_images=3,
                         structure=StructureConfig(dataset=dataset, size=64, sampling=0.2, **kw),
                         exitwave=ExitWaveConfig(sampling=0.1, device="cpu"))


class Interrupt(Exception):
    pass


def test_fixed_seed_gives_identical_samples_independent_of_order(tmp_path):
    cfg = small_config(n=3)
    a = generate_sample(cfg, 2)
    b = generate_sample(cfg.to_dict(), 2)  # from the stored JSON form, as Dask workers do
    for key in ("wave", "target", "images"):
        assert np.array_equal(a[key], b[key])
    assert a["params"] == b["params"] and a["columns"] == b["columns"]
    c = generate_sample(small_config(n=3, seed=1), 2)
    assert not np.array_equal(a["wave"], c["wave"])
    d = generate_sample(cfg, 1)
    assert not np.array_equal(a["images"], d["images"])
    # written data equal a sample made alone
    generate_dataset(tmp_path / "d.zarr", cfg, scheduler="serial", progress=False)
    ds = ExitWaveDataset(tmp_path / "d.zarr")
    s = ds.sample(2)
    assert np.array_equal(s.wave, a["wave"]) and np.array_equal(s.images, a["images"])


def test_layout_and_contents(tmp_path):
    cfg = small_config(n=2)
    out = generate_dataset(tmp_path / "d.zarr", cfg, scheduler="serial", progress=False)
    assert out["done"] == 2 and out["generated"] == 2
    g = zarr.open_group(str(tmp_path / "d.zarr"), mode="r")
    assert g["wave"].shape == (2, 64, 64) and g["wave"].dtype == np.complex64
    assert g["target"].shape == (2, 64, 64) and g["target"].dtype == np.complex64
    assert g["images"].shape == (2, 3, 64, 64) and g["images"].dtype == np.float32
    assert g["complete"].dtype == bool and g["complete"][:].all()
    stored = json.loads(g.attrs["config"])
    assert stored["seed"] == 0 and DatasetConfig.from_dict(stored).to_dict() == cfg.to_dict()
    ds = ExitWaveDataset(tmp_path / "d.zarr")
    s = ds.sample(0)
    assert len(s.params) == 3 and isinstance(s.params[0], physics.MicroscopeParameters)
    d = [p.defocus for p in s.params]
    assert np.all(np.abs(np.diff(d) - 50) <= 1.0)  # 5 +- 0.1 nm steps
    assert set(s.columns_label) <= {"Mo", "S", "S2"} and s.columns_xy.shape[1] == 2
    assert abs(s.wave[0, 0] - 1) < 1e-3  # vacuum in the corner
    # the column positions are in the frame of the wave: a column sits on a phase maximum
    r, c = np.round(s.columns_xy[:, 1] / ds.sampling).astype(int), np.round(
        s.columns_xy[:, 0] / ds.sampling).astype(int)
    assert np.angle(s.target[r, c]).mean() > 3 * np.angle(s.target).mean()
    assert ds.read("target", [0, 1]).shape == (2, 64, 64)
    imgs, params = ds.random_series(1, np.random.default_rng(0))
    assert imgs.shape == (3, 64, 64) and len(params) == 3


def test_interrupted_run_resumes_without_redoing_finished_samples(tmp_path):
    path = tmp_path / "r.zarr"
    cfg = small_config(n=5)
    seen = []

    def stop_after_two(i):
        seen.append(i)
        if len(seen) == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        generate_dataset(path, cfg, scheduler="serial", progress=False, callback=stop_after_two)
    ds = ExitWaveDataset(path)
    assert ds.n_complete == 2 and list(ds.indices) == seen
    # a sample whose data were written but whose flag was not (killed mid-sample)
    g = zarr.open_group(str(path), mode="r+")
    g["wave"][3] = np.full((64, 64), 7 + 7j, np.complex64)
    assert 3 not in ds.indices
    with pytest.raises(ValueError, match="not complete"):
        ds.sample(3)
    with pytest.raises(ValueError, match="not complete"):
        ds.read("wave", [0, 3])
    finished = {i: ds.sample(i).wave.copy() for i in seen}
    mtimes = {i: os.path.getmtime(path / "wave" / "c" / str(i) / "0" / "0") for i in seen}

    redone = []
    out = generate_dataset(path, cfg, scheduler="serial", progress=False, callback=redone.append)
    assert sorted(redone) == sorted(set(range(5)) - set(seen))
    assert out["generated"] == 3 and out["done"] == 5
    ds = ExitWaveDataset(path)
    assert ds.complete.all()
    for i in seen:
        assert np.array_equal(ds.sample(i).wave, finished[i])
        assert os.path.getmtime(path / "wave" / "c" / str(i) / "0" / "0") == mtimes[i]
    assert np.array_equal(ds.sample(3).wave, generate_sample(cfg, 3)["wave"])  # rewritten
    # nothing left: a third run does nothing
    assert generate_dataset(path, cfg, scheduler="serial", progress=False)["generated"] == 0
    # growing n keeps the finished samples
    out = generate_dataset(path, small_config(n=6), scheduler="serial", progress=False)
    assert out["generated"] == 1 and ExitWaveDataset(path).n_complete == 6


def test_clear_errors(tmp_path, monkeypatch):
    path = tmp_path / "e.zarr"
    generate_dataset(path, small_config(n=1), scheduler="serial", progress=False)
    with pytest.raises(ValueError, match="different configuration"):
        generate_dataset(path, small_config(n=1, seed=5), scheduler="serial", progress=False)
    out = generate_dataset(path, small_config(n=1, seed=5), scheduler="serial", progress=False,
                           overwrite=True)
    assert out["generated"] == 1
    with pytest.raises(ValueError, match="unknown data set"):
        small_config(dataset="nanotubes")
    with pytest.raises(ValueError, match="positive integer"):
        small_config(n=0)
    with pytest.raises(FileNotFoundError, match="no data set"):
        ExitWaveDataset(tmp_path / "missing.zarr")
    (tmp_path / "notzarr").mkdir()
    with pytest.raises(ValueError, match="not an exit-wave data set"):
        ExitWaveDataset(tmp_path / "notzarr")

    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr(dsmod.shutil, "disk_usage", lambda p: Usage(10**6, 10**6 - 1000, 1000))
    with pytest.raises(OSError, match="not enough disk space"):
        generate_dataset(tmp_path / "full.zarr", small_config(n=3), scheduler="serial",
                         progress=False)


def test_2d_dataset_with_an_unusable_database_fails_early(tmp_path):
    from ase.db import connect
    from exitwave_training.structures import mos2_layer

    db = tmp_path / "big.db"
    with connect(str(db)) as con:
        con.write(mos2_layer().repeat((3, 3, 1)), name="too-big")
    cfg = small_config(n=2, dataset="2d", database=str(db), split="all")
    with pytest.raises(ValueError, match="no usable 2D structure"):
        generate_dataset(tmp_path / "x.zarr", cfg, scheduler="serial", progress=False)


def test_cli_simulate_and_its_errors(tmp_path, capsys):
    from exitwave_training.cli import main

    out = tmp_path / "cli.zarr"
    args = ["simulate", "--dataset", "2d", "--n", "2", "--out", str(out), "--size", "64",
            "--sampling", "0.2", "--multislice-sampling", "0.1", "--scheduler", "serial",
            "--device", "cpu", "--no-progress", "--split", "validation"]
    assert main(args) == 0
    assert "2/2 samples complete" in capsys.readouterr().out
    ds = ExitWaveDataset(out)
    assert ds.config.structure.split == "validation" and ds.n_complete == 2
    assert main(["simulate", "--dataset", "bulk", "--out", str(tmp_path / "b.zarr")]) == 2
    assert "unknown data set" in capsys.readouterr().err
    assert main(args[:-1] + ["train"]) == 2  # same path, different split
    assert "different configuration" in capsys.readouterr().err
    assert main(["simulate", "--out", str(tmp_path / "s.zarr"), "--size", "512",
                 "--sampling", "0.04", "--scheduler", "serial"]) == 2
    assert "finer than the multislice sampling" in capsys.readouterr().err
    assert not (tmp_path / "s.zarr").exists()


@pytest.mark.slow
def test_local_dask_cluster_gives_the_same_samples(tmp_path):
    pytest.importorskip("distributed")
    cfg = small_config(n=3)
    out = generate_dataset(tmp_path / "dask.zarr", cfg, scheduler="local", workers=1,
                           progress=False)
    assert out["done"] == 3
    ds = ExitWaveDataset(tmp_path / "dask.zarr")
    assert np.array_equal(ds.sample(1).images, generate_sample(cfg, 1)["images"])


@pytest.mark.slow
def test_existing_scheduler_address(tmp_path):
    distributed = pytest.importorskip("distributed")
    cfg = small_config(n=2, seed=3)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster:
        out = generate_dataset(tmp_path / "addr.zarr", cfg, scheduler=cluster.scheduler_address,
                               progress=False)
    assert out["done"] == 2
    ds = ExitWaveDataset(tmp_path / "addr.zarr")
    assert np.array_equal(ds.sample(0).target, generate_sample(cfg, 0)["target"])


def test_random_training_example_at_a_random_pixel_size():
    from exitwave_training.dataset import random_training_example

    cfg = small_config(n=1)
    r = generate_sample(cfg, 0)
    rng = np.random.default_rng(0)
    imgs, tgt, params, used = random_training_example(r["wave"], r["target"], 0.2, rng)
    assert used == 0.2 and np.array_equal(tgt, r["target"]) and imgs.shape == (3, 64, 64)
    for lo, hi in ((0.18, 0.19), (0.21, 0.22)):
        imgs, tgt, params, used = random_training_example(r["wave"], r["target"], 0.2, rng,
                                                          sampling_range=(lo, hi))
        assert lo - 0.005 <= used <= hi + 0.005
        assert tgt.shape == (64, 64) and imgs.shape == (3, 64, 64)
        assert abs(tgt[0, 0] - 1) < 1e-3  # padded or cropped vacuum stays vacuum
        # the same total phase (atoms are conserved), at a new scale
        phase_sum = np.angle(tgt).sum() * used**2
        assert phase_sum == pytest.approx(np.angle(r["target"]).sum() * 0.2**2, rel=0.03)
    with pytest.raises(ValueError, match="sampling_range"):
        random_training_example(r["wave"], r["target"], 0.2, rng, sampling_range=(0.3, 0.1))
