"""Outputs written safely: one writer for every command, no write through links, atomic result
sets, no silent overwrite, options and --out checked before anything is computed."""

from __future__ import annotations

import errno
import json
import threading
import time

import numpy as np
import pytest

pytest.importorskip("onnx")

from onnx_helpers import make_conv_model  # noqa: E402

from napari_exitwave import results  # noqa: E402
from napari_exitwave.cli import main  # noqa: E402
from napari_exitwave.io import read_exit_wave, write_series_tiff  # noqa: E402
from napari_exitwave.results import (OutputExistsError, output_names,  # noqa: E402
                                     write_result)

N = 64


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("outputs")
    make_conv_model(d / "tiny.onnx", sampling=0.1)
    rng = np.random.default_rng(0)
    ims = rng.normal(10, 1, (3, N, N)).astype(np.float32)
    write_series_tiff(d / "good.tif", ims, 0.1, [-50, 0, 50])
    return d, ims


def _wave(seed=0):
    rng = np.random.default_rng(seed)
    return (1 + 0.1 * rng.normal(size=(32, 32)) + 0.1j * rng.normal(size=(32, 32))
            ).astype(np.complex64)


class _Rec:
    def __init__(self, wave):
        self.exit_wave, self.sampling, self.method = wave, 0.1, "fake"
        self.model_name, self.device, self.timings, self.warnings = "fake", "CPU", {}, []


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_reconstruct_watch_and_batch_write_the_same_files(setup, tmp_path, capsys):
    d, ims = setup
    model = str(d / "tiny.json")
    assert main(["reconstruct", str(d / "good.tif"), "--model", model, "--out",
                 str(tmp_path / "r"), "-q", "--name", "s"]) == 0
    (tmp_path / "b_in").mkdir()
    write_series_tiff(tmp_path / "b_in" / "s.tif", ims, 0.1, [-50, 0, 50])
    assert main(["batch", str(tmp_path / "b_in"), "--model", model, "--out",
                 str(tmp_path / "b"), "-q"]) == 0
    src = tmp_path / "w_in"
    src.mkdir()

    def acquire():
        for k in range(3):
            write_series_tiff(src / f".i{k}.tif", ims[k:k + 1], 0.1, [-50 + 50 * k])
            (src / f".i{k}.tif").rename(src / f"i{k}.tif")

    t = threading.Thread(target=acquire)
    t.start()
    assert main(["watch", str(src), "--model", model, "--out", str(tmp_path / "w"),
                 "--poll", "0.1", "--idle-exit", "1.0", "-q"]) == 0
    t.join()
    capsys.readouterr()

    def files(folder, stem):
        return {"<stem>" + p.name[len(stem):] for p in folder.iterdir()
                if p.name.startswith(stem + "_") or p.name.startswith(stem + ".")}

    expected = {"<stem>" + n[1:] for n in output_names("s").values()}
    assert files(tmp_path / "r", "s") == expected
    assert files(tmp_path / "b", "s") == expected
    assert files(tmp_path / "w", "series_0001") == expected
    waves = [read_exit_wave(tmp_path / f / f"{stem}_exit_wave.tif")[0]
             for f, stem in [("r", "s"), ("b", "s"), ("w", "series_0001")]]
    np.testing.assert_allclose(waves[1], waves[0], atol=1e-6)
    np.testing.assert_allclose(waves[2], waves[0], atol=1e-5)
    metas = [json.loads((tmp_path / f / f"{stem}.json").read_text())
             for f, stem in [("r", "s"), ("b", "s"), ("w", "series_0001")]]
    core = {"method", "model", "device", "sampling", "timings", "warnings", "shifts_px",
            "n_peaks", "outputs", "shape", "units"}
    for m in metas:
        assert core <= set(m)
        assert m["model"] == "tiny" and m["n_peaks"] == metas[0]["n_peaks"]


def test_write_result_never_writes_through_a_link(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    out = tmp_path / "out"
    out.mkdir()
    for name in output_names("s").values():
        (out / name).symlink_to(outside)
    with pytest.raises(OutputExistsError, match="--overwrite"):
        write_result(_Rec(_wave()), out, "s")
    assert outside.read_text() == "precious"
    paths = write_result(_Rec(_wave()), out, "s", overwrite=True)
    assert outside.read_text() == "precious"  # the links were replaced, not followed
    for p in paths.values():
        assert not (out / p).is_symlink()
    np.testing.assert_array_equal(np.load(paths["npy"]), _wave())
    assert _leftovers(out) == []


def test_a_failure_mid_write_leaves_the_earlier_result_whole(tmp_path):
    out = tmp_path / "out"
    write_result(_Rec(_wave(0)), out, "s")
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}

    def full_at_png(name):
        if name.endswith("_argand.png"):
            raise OSError(errno.ENOSPC, "No space left on device")

    results.set_fault_hook(full_at_png)
    try:
        with pytest.raises(results.OutputError, match="free space"):
            write_result(_Rec(_wave(1)), out, "s", overwrite=True)
    finally:
        results.set_fault_hook(None)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert _leftovers(out) == []


@pytest.mark.parametrize("args, fragment", [
    (["--min-distance", "-1"], "--min-distance must be a finite distance >= 0 in A, got -1.0"),
    (["--threshold", "nan"], "--threshold must be a fraction of the maximum between 0 and 1"),
    (["--sampling", "inf", "--force"], "--sampling must be a finite pixel size > 0 in A/px"),
    (["--tile", "0"], "--tile must be a tile size > 0 in px"),
    (["--name", "../x"], "--name must be a plain file name"),
])
def test_bad_options_exit_2_before_computing(setup, tmp_path, capsys, monkeypatch, args,
                                             fragment):
    import napari_exitwave.reconstruct as R

    called = []
    monkeypatch.setattr(R, "reconstruct_series", lambda *a, **k: called.append(1))
    d, _ = setup
    code = main(["reconstruct", str(d / "good.tif"), "--model", str(d / "tiny.json"),
                 "--out", str(tmp_path / "o"), "-q"] + args)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and fragment in err[0], err
    assert not called and not (tmp_path / "o").exists()


def test_an_unusable_out_is_refused_before_computing(setup, tmp_path, capsys, monkeypatch):
    import napari_exitwave.reconstruct as R

    called = []
    monkeypatch.setattr(R, "reconstruct_series", lambda *a, **k: called.append(1))
    d, _ = setup
    (tmp_path / "file").write_text("x")
    for out, fragment in [(tmp_path / "file", "is a file, not a folder"),
                          (tmp_path / "file" / "sub", "cannot write into the output folder")]:
        code = main(["reconstruct", str(d / "good.tif"), "--model", str(d / "tiny.json"),
                     "--out", str(out), "-q"])
        err = capsys.readouterr().err
        assert code == 2 and fragment in err and "Traceback" not in err, err
    # a read-only folder (simulated: the probe file cannot be created, as on a read-only mount)
    ro = tmp_path / "ro"
    ro.mkdir()
    real = results.tempfile.mkstemp

    def refuse(*a, dir=None, **k):
        if str(dir) == str(ro):
            raise OSError(errno.EROFS, "Read-only file system")
        return real(*a, dir=dir, **k)

    monkeypatch.setattr(results.tempfile, "mkstemp", refuse)
    for cmd in (["reconstruct", str(d / "good.tif")], ["batch", str(d / "good.tif")],
                ["watch", str(tmp_path)]):
        code = main(cmd + ["--model", str(d / "tiny.json"), "--out", str(ro), "-q"])
        err = capsys.readouterr().err
        assert code == 2 and "Read-only file system" in err and "choose a writable --out" in err
    assert not called and list(ro.iterdir()) == []


def test_reconstruct_refuses_to_overwrite_unless_asked(setup, tmp_path, capsys):
    d, _ = setup
    argv = ["reconstruct", str(d / "good.tif"), "--model", str(d / "tiny.json"), "--out",
            str(tmp_path / "o"), "-q"]
    assert main(argv) == 0
    js = tmp_path / "o" / "good.json"
    first = js.read_text()
    time.sleep(1.1)  # the JSON carries the time it was written (s)
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and "good_exit_wave.tif exists" in err and "--overwrite" in err
    assert js.read_text() == first
    outside = tmp_path / "outside.csv"
    outside.write_text("precious")
    (tmp_path / "o" / "good_peaks.csv").unlink()
    (tmp_path / "o" / "good_peaks.csv").symlink_to(outside)
    assert main(argv + ["--overwrite"]) == 0
    assert js.read_text() != first and outside.read_text() == "precious"
    assert not (tmp_path / "o" / "good_peaks.csv").is_symlink()
    assert _leftovers(tmp_path / "o") == []
