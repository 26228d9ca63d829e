"""`napari-exitwave watch` and `batch` end to end, through the real reconstruct path (tiny net)."""

from __future__ import annotations

import csv
import json
import threading
import time

import numpy as np
import pytest

pytest.importorskip("onnx")

from onnx_helpers import make_conv_model  # noqa: E402

from napari_exitwave import physics  # noqa: E402
from napari_exitwave.cli import main  # noqa: E402
from napari_exitwave.io import read_exit_wave, write_series_tiff  # noqa: E402
from napari_exitwave.reconstruct import reconstruct_series  # noqa: E402

N = 64


@pytest.fixture
def model(tmp_path):
    (tmp_path / "models").mkdir()
    path, _ = make_conv_model(tmp_path / "models" / "tiny.onnx", n_images=3, n_pool=4,
                              sampling=0.1)
    return str(path.with_suffix(".json"))


def _series(seed):
    rng = np.random.default_rng(seed)
    return rng.normal(10, 1, (3, N, N)).astype(np.float32)


def test_batch_cli_matches_reconstruct_series_and_reports_failures(model, tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(3):
        write_series_tiff(src / f"s{i}.tif", _series(i), sampling=0.1, defocus=[-50, 0, 50])
    write_series_tiff(src / "two.tif", _series(9)[:2], sampling=0.1)  # wrong number of images
    out = tmp_path / "out"
    status = main(["batch", str(src), "--model", model, "--out", str(out), "--workers", "2",
                   "--backend", "dask", "-q"])
    text = capsys.readouterr().out
    assert status == 2  # one series failed, the others were done
    assert "3 done, 1 failed" in text
    rows = {r["file"].split("/")[-1]: r for r in csv.DictReader(open(out / "summary.csv"))}
    assert rows["two.tif"]["status"] == "failed" and "3 images" in rows["two.tif"]["error"]
    for i in range(3):
        assert rows[f"s{i}.tif"]["status"] == "done" and rows[f"s{i}.tif"]["device"] == "CPU"
        ref = reconstruct_series(_series(i), model, tile=1024)  # same path, in this process
        wave, sampling, _ = read_exit_wave(out / f"s{i}_exit_wave.tif")
        np.testing.assert_allclose(np.load(out / f"s{i}_exit_wave.npy"), ref.exit_wave, atol=1e-5)
        np.testing.assert_allclose(wave, ref.exit_wave, atol=1e-5)
        assert sampling == pytest.approx(0.1)
        assert (out / f"s{i}_peaks.csv").exists()


def test_watch_cli_reconstructs_arriving_images_and_exits_when_idle(model, tmp_path, capsys):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    images = _series(1)

    def acquire():
        for k in range(3):
            tmp = src / f".img{k}.tif"
            write_series_tiff(tmp, images[k:k + 1], sampling=0.1, defocus=[-50 + 50 * k])
            tmp.rename(src / f"img{k}.tif")
            time.sleep(0.05)

    writer = threading.Thread(target=acquire)
    writer.start()
    status = main(["watch", str(src), "--model", model, "--out", str(out), "--poll", "0.1",
                   "--idle-exit", "1.0"])
    writer.join()
    text = capsys.readouterr().out
    assert status == 0 and "1 series done, 0 failed" in text
    meta = json.loads((out / "series_0001.json").read_text())
    assert meta["files"] == ["img0.tif", "img1.tif", "img2.tif"] and meta["device"] == "CPU"
    ref = reconstruct_series(images, model, tile=1024)
    np.testing.assert_allclose(np.load(out / "series_0001_exit_wave.npy"), ref.exit_wave, atol=1e-5)
    # the network really ran: real part = 1 + correlation of the normalised images
    assert np.std(ref.exit_wave.real) > 0.1
    assert physics.normalize_series(images).shape == (3, N, N)
