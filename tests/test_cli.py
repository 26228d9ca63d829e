"""``napari-exitwave`` CLI: outputs of a run, and one clear line + non-zero status on bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx")

from onnx_helpers import make_conv_model  # noqa: E402

from napari_exitwave.cli import build_parser, main  # noqa: E402
from napari_exitwave.io import read_exit_wave, write_series_tiff  # noqa: E402

DM_DIR = Path(os.environ.get("NAPARI_EXITWAVE_DM_SAMPLES",
                             Path(__file__).resolve().parents[2] / "shared" / "dm-samples"))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    make_conv_model(d / "tiny.onnx", sampling=0.1)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:80, :72] * 0.11
    atoms = sum(np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / 0.1)
                for y in np.arange(0.5, 8.8, 1.6) for x in np.arange(0.5, 7.9, 1.6))
    ims = np.stack([1 + 0.3 * atoms + 0.01 * rng.normal(size=atoms.shape) for _ in range(3)])
    write_series_tiff(d / "good.tif", ims.astype(np.float32), 0.11, [-50, 0, 50])
    return d


def run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_reconstruct_writes_all_outputs(setup, tmp_path, capsys):
    out_dir = tmp_path / "res"
    code, out, err = run(["reconstruct", setup / "good.tif", "--model", setup / "tiny.json",
                          "--out", out_dir, "--min-distance", 1.0, "-q"], capsys)
    assert code == 0, err
    assert "device:  CPU" in out and "timings:" in out and "inference" in out
    for name in ("good_exit_wave.tif", "good_exit_wave.zarr", "good_peaks.csv",
                 "good_argand.png", "good.json"):
        assert (out_dir / name).exists(), name
    wave, sampling, meta = read_exit_wave(out_dir / "good_exit_wave.tif")
    wave_z, sampling_z, _ = read_exit_wave(out_dir / "good_exit_wave.zarr")
    np.testing.assert_array_equal(wave, wave_z)
    assert sampling == pytest.approx(0.1) and meta["model"] == "tiny" and meta["device"] == "CPU"
    summary = json.loads((out_dir / "good.json").read_text())
    assert summary["n_peaks"] > 0
    lines = (out_dir / "good_peaks.csv").read_text().splitlines()
    assert lines[0].startswith("y,x,y_A,x_A,real,imag") and len(lines) == summary["n_peaks"] + 1
    assert (out_dir / "good_argand.png").read_bytes()[:4] == b"\x89PNG"


def _bad(tmp_path, kind, setup):
    """Arguments for one kind of bad input, and a fragment of the expected message."""
    rng = np.random.default_rng(1)
    tiny = ["--model", setup / "tiny.json"]
    if kind == "2d":
        import tifffile

        p = tmp_path / "one.tif"
        tifffile.imwrite(p, rng.random((32, 32)).astype(np.float32))
        return [p] + tiny, "single 2-D image"
    if kind == "count":
        p = tmp_path / "two.tif"
        write_series_tiff(p, rng.random((2, 32, 32)).astype(np.float32) + 1, 0.1)
        return [p] + tiny, "model 'tiny' expects 3 images, the stack has 2"
    if kind == "nan":
        ims = rng.random((3, 32, 32)).astype(np.float32) + 1
        ims[2, 5, 5] = np.nan
        p = tmp_path / "nan.tif"
        write_series_tiff(p, ims, 0.1)
        return [p] + tiny, "NaN"
    if kind == "sampling":
        p = tmp_path / "far.tif"
        write_series_tiff(p, rng.random((3, 32, 32)).astype(np.float32) + 1, 0.3)
        return [p] + tiny, "3.0x coarser than the network's 0.1 A"
    if kind == "truncated_dm":
        if not DM_DIR.is_dir() and not os.environ.get("CI"):
            pytest.skip("no DM samples")
        p = tmp_path / "cut.dm4"
        p.write_bytes((DM_DIR / "3D_test-1.dm4").read_bytes()[:10000])
        return [p] + tiny, "truncated"
    if kind == "corrupt_onnx":
        m = tmp_path / "m.onnx"
        m.write_bytes(b"\x08\x07garbage" * 50)
        return [setup / "good.tif", "--model", m], "truncated or not an ONNX network"
    if kind == "hash":
        d = tmp_path / "hm"
        d.mkdir()
        path, _ = make_conv_model(d / "hm.onnx", name="hm")
        path.write_bytes(path.read_bytes() + b"\0")
        return [setup / "good.tif", "--model", d / "hm.json"], "does not match its card"
    if kind == "no_cuda":
        import onnxruntime as ort

        if "CUDAExecutionProvider" in ort.get_available_providers():
            pytest.skip("CUDA is available here")
        return [setup / "good.tif", "--device", "cuda"] + tiny, "CUDA was requested"
    if kind == "missing":
        return [tmp_path / "nothing.dm4"] + tiny, "does not exist"
    if kind == "no_model":
        return [setup / "good.tif", "--model", "no_such_model"], "no model named 'no_such_model'"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["2d", "count", "nan", "sampling", "truncated_dm",
                                  "corrupt_onnx", "hash", "no_cuda", "missing", "no_model"])
def test_bad_input_gives_one_clear_line(setup, tmp_path, capsys, kind):
    args, fragment = _bad(tmp_path, kind, setup)
    code, out, err = run(["reconstruct"] + args + ["--out", tmp_path / "o", "-q"], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("napari-exitwave: error: ") and fragment in lines[0], lines[0]
    assert "Traceback" not in err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_force_accepts_a_distant_pixel_size(setup, tmp_path, capsys):
    args, _ = _bad(tmp_path, "sampling", setup)
    code, out, err = run(["reconstruct"] + args + ["--force", "--out", tmp_path / "o", "-q",
                                                   "--no-peaks"], capsys)
    assert code == 0, err
    assert "warning: the series' pixel size 0.3 A is 3.0x coarser" in out
    # --sampling overrides the file's calibration, which makes the same file fine
    code, out, err = run(["reconstruct"] + args + ["--sampling", 0.1, "--out", tmp_path / "p",
                                                   "-q", "--no-peaks"], capsys)
    assert code == 0, err and "warning" not in out


def test_debug_shows_the_traceback(setup, tmp_path, capsys):
    args, _ = _bad(tmp_path, "count", setup)
    from napari_exitwave.errors import SeriesMismatchError

    with pytest.raises(SeriesMismatchError):
        main([str(a) for a in ["reconstruct"] + args + ["--debug"]])


def test_console_script_exit_status_without_traceback(setup, tmp_path):
    args, fragment = _bad(tmp_path, "count", setup)
    proc = subprocess.run([sys.executable, "-m", "napari_exitwave.cli", "reconstruct"]
                          + [str(a) for a in args] + ["--out", str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert fragment in proc.stderr and "Traceback" not in proc.stderr


def test_models_lists_cards_and_verifies(setup, tmp_path, capsys):
    code, out, err = run(["models", "--dir", setup, "--verify"], capsys)
    assert code == 0 and out.startswith("tiny: 3 images, 0.1 A/px") and "[sha256 ok]" in out
    code, out, err = run(["models", "--dir", setup, "--json"], capsys)
    assert json.loads(out)["tiny"]["size_multiple"] == 16
    d = tmp_path / "broken"
    d.mkdir()
    path, _ = make_conv_model(d / "b.onnx", name="b")
    path.write_bytes(b"x")
    code, out, err = run(["models", "--dir", d, "--verify"], capsys)
    assert code == 2 and "BROKEN" in out
    code, out, err = run(["models", "--dir", tmp_path / "empty"], capsys)
    assert code == 0 and "no models installed" in out


def test_subcommand_registry():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert {"reconstruct", "models"} <= set(sub.choices)


def test_sample_series_if_bundled(setup, tmp_path, capsys):
    from napari_exitwave.data import DATA_DIR, SAMPLE_SERIES

    assert (DATA_DIR / SAMPLE_SERIES).is_file(), "bundled sample data missing"
    code, out, err = run(["reconstruct", "sample", "--model", setup / "tiny.json", "--force",
                          "--out", tmp_path, "-q", "--no-peaks"], capsys)
    assert code == 0, err
    _, sampling, _ = read_exit_wave(tmp_path / "sample_exit_wave.tif")
    assert sampling == pytest.approx(0.1)  # resampled to the tiny network's pixel size


def test_named_sample_series(tmp_path, capsys):
    """`sample:<name>` opens a bundled sample; the outputs are named after it; bad names fail."""
    code, out, err = run(["reconstruct", "sample:mos2-graphene-022", "--method", "wiener",
                          "--Cs", "-8", "--focal-spread", "10", "--out", tmp_path, "-q"], capsys)
    assert code == 0, err
    wave, sampling, _ = read_exit_wave(tmp_path / "sample_mos2-graphene-022_exit_wave.tif")
    assert wave.shape == (128, 128) and sampling == pytest.approx(0.22)
    code, out, err = run(["reconstruct", "sample:graphite", "--method", "wiener",
                          "--out", tmp_path, "-q"], capsys)
    assert code == 2 and "unknown sample 'graphite'" in err and "Traceback" not in err


def test_typed_units_reach_the_pipeline(setup, tmp_path, capsys, monkeypatch):
    """--defocus in A (negative numbers parse), --Cs in um -> A, --sampling in A/px."""
    import napari_exitwave.reconstruct as R

    seen = {}
    real = R.reconstruct_series

    def spy(series, model=None, **kw):
        seen.update(kw, sampling_in=series.sampling)
        return real(series, setup / "tiny.json", **{**kw, "method": "network"})

    monkeypatch.setattr(R, "reconstruct_series", spy)
    code, out, err = run(["reconstruct", setup / "good.tif", "--method", "wiener", "--defocus",
                          "-50", "0", "50", "--Cs", "-15", "--focal-spread", "20",
                          "--sampling", "0.1", "--no-peaks", "-q", "--out", tmp_path], capsys)
    assert code == 0, err
    assert seen["defocus"] == [-50.0, 0.0, 50.0] and seen["Cs"] == pytest.approx(-15e4)
    assert seen["focal_spread"] == 20.0 and seen["sampling_in"] == 0.1
    assert seen["method"] == "wiener" and seen["strict"] is True


def test_sample_with_the_wiener_baseline(tmp_path, capsys):
    from napari_exitwave.data import DATA_DIR, SAMPLE_SERIES, load_sample_exit_wave

    assert (DATA_DIR / SAMPLE_SERIES).is_file(), "bundled sample data missing"
    code, out, err = run(["reconstruct", "sample", "--method", "wiener", "--Cs", "-8",
                          "--focal-spread", "10", "--out", tmp_path, "-q"], capsys)
    assert code == 0, err
    assert "method:  wiener" in out and "at 0.105 A/px" in out
    wave, sampling, meta = read_exit_wave(tmp_path / "sample_exit_wave.tif")
    truth, _, _ = load_sample_exit_wave()
    assert wave.shape == truth.shape and sampling == pytest.approx(0.105)
    assert meta["defocus"] == [-60.0, -10.0, 40.0] and meta["Cs"] == pytest.approx(-8e4)
    assert (tmp_path / "sample_peaks.csv").exists()


def test_a_file_named_sample_is_not_the_bundled_sample(setup, tmp_path, capsys, monkeypatch):
    """Outputs are named after the file's stem, also when its name starts with 'sample'."""
    import shutil

    shutil.copy(setup / "good.tif", tmp_path / "sample_run3.tif")
    monkeypatch.chdir(tmp_path)
    code, out, err = run(["reconstruct", "sample_run3.tif", "--model", setup / "tiny.json",
                          "--out", "res", "-q", "--no-peaks"], capsys)
    assert code == 0, err
    assert (tmp_path / "res" / "sample_run3_exit_wave.tif").is_file()


def test_reconstruct_refine_says_what_it_refined_with(tmp_path, capsys):
    """`--refine` with nothing but the file's defocus: the estimate is fitted, the wave refined
    at the estimated-parameter strength, and the CLI says so and writes it to the JSON."""
    from napari_exitwave.refine import ESTIMATED_STRENGTH

    code, out, err = run(["reconstruct", "sample", "--model", "mos2", "--refine",
                          "--out", tmp_path], capsys)
    assert code == 0, err
    line = next(x for x in out.splitlines() if x.startswith("refined against every image"))
    assert f"+ fit parameters, strength {ESTIMATED_STRENGTH:g}" in line
    saved = json.loads((tmp_path / "sample.json").read_text())
    ref = saved.get("refinement") or saved["metadata"]["refinement"]
    assert ref["strength"] == ESTIMATED_STRENGTH and ref["chi2_end"] < ref["chi2_start"]
