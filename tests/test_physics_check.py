"""The physics check in the pipeline, the CLI and the summaries: the microscope estimate (a
stand-in for :mod:`napari_exitwave.estimate` that returns the sample's true parameters) and
the physics residual of the reconstructed exit wave against the images it came from."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from estimate_stand_in import true_parameters, install_no_estimator, install_stand_in

from napari_exitwave import physics
from napari_exitwave.data import load_sample_exit_wave, load_sample_series
from napari_exitwave.reconstruct import reconstruct_series


@pytest.fixture
def stand_in(monkeypatch):
    return install_stand_in(monkeypatch)


@pytest.fixture
def no_estimator(monkeypatch):
    install_no_estimator(monkeypatch)


def test_residual_with_the_true_parameters_is_near_the_noise(no_estimator):
    series = load_sample_series("mos2")
    rec = reconstruct_series(series, "mos2", physics_check=True, microscope=true_parameters())
    assert rec.estimate is None and rec.residual is not None
    assert rec.residual.images.shape == (3,) + rec.exit_wave.shape
    assert np.isfinite(rec.reduced_chi2) and 0.3 < rec.reduced_chi2 < 3
    meta = rec.to_metadata()["physics_residual"]
    assert meta["reduced_chi2"] == pytest.approx(rec.reduced_chi2)
    assert len(meta["chi2"]) == 3 and meta["parameters_from"] == "given"
    assert len(meta["microscope"]) == 3 and "residual" in rec.timings


def test_the_residual_separates_a_wrong_exit_wave():
    from napari_exitwave._check import check_residual

    series = load_sample_series("mos2")
    wave, s, _ = load_sample_exit_wave("mos2")
    true = true_parameters()
    good, _ = check_residual(wave, s, series.images, true, params_sampling=s)
    moved = np.roll(wave, (3, 2), axis=(0, 1))  # the right columns 0.4 A off
    bad, _ = check_residual(moved, s, series.images, true, s)
    # (the gain comes from the means since the residual stopped fitting gain and offset by
    # least squares, which had pulled the truth to 0.80 and this shift to 8.3)
    assert 0.8 < good.reduced_chi2 < 1.5 and bad.reduced_chi2 > 4 * good.reduced_chi2
    # images in the wrong order
    backwards, _ = check_residual(wave, s, series.images[::-1], true, s)
    assert backwards.reduced_chi2 > 4 * good.reduced_chi2
    # zero-mean (normalised) images cannot be compared in noise units: a clear refusal
    none, why = check_residual(wave, s, physics.normalize_series(series.images), true, s)
    assert none is None and "not zero-mean normalised" in why
    # params of another grid (a detector at half the pixel size): the blur in px is converted
    # through A, the MTF's frequencies (units of that grid's Nyquist) by the pixel-size ratio
    half = [dataclasses.replace(p, blur=2 * p.blur, mtf_c2=p.mtf_c2 / 2) for p in true]
    same, _ = check_residual(wave, s, series.images, half, params_sampling=s / 2)
    assert same.reduced_chi2 == pytest.approx(good.reduced_chi2, rel=1e-6)


def test_the_estimate_feeds_the_residual(stand_in):
    series = load_sample_series("mos2")
    series.defocus = None  # the file's defocus would win over the estimate's
    rec = reconstruct_series(series, "mos2", physics_check="auto")
    assert rec.estimate is not None and rec.residual is not None
    assert stand_in == [((3, 256, 256), 0.105)]  # the images the network saw, its pixel size
    meta = rec.to_metadata()
    assert meta["estimate"]["model"] == "stand-in"
    # the estimate's defocus, C12, C21 and Cs fitted with the exit wave held fixed: from the
    # true parameters (the stand-in's) the fit stays near them
    assert meta["physics_residual"]["parameters_from"] == "estimate + fit"
    fit = meta["aberration_fit"]
    assert abs(fit["changes"]["defocus"]) < 5 and abs(fit["changes"]["Cs"]) < 1e4
    assert {"mtf_c1", "mtf_c2", "mtf_c3"} <= set(fit["changes"])  # the estimate has an MTF
    assert fit["misfit"] <= fit["start_misfit"] and "aberration_fit" in rec.timings
    assert "estimate" in rec.timings and rec.reduced_chi2 < 3
    plain = reconstruct_series(series, "mos2", physics_check="auto", fit_aberrations=False)
    assert plain.to_metadata()["physics_residual"]["parameters_from"] == "estimate"
    assert "aberration_fit" not in plain.to_metadata()
    assert any("microscope estimate: Cs = -8 um" in w for w in rec.warnings)
    # what the user gives wins over the estimate
    rec2 = reconstruct_series(series, "mos2", physics_check=True, dose=1e2)
    assert rec2.to_metadata()["physics_residual"]["parameters_from"] == "estimate + given + fit"
    assert rec2.to_metadata()["physics_residual"]["microscope"][0]["dose"] == 1e2
    # ... and a dose given fixes the noise: no MTF fitted against it (else fitted, the noise
    # variance held)
    fit2 = rec2.to_metadata()["aberration_fit"]
    assert not {"mtf_c1", "mtf_c2", "mtf_c3"} & set(fit2["changes"])
    assert rec2.reduced_chi2 < rec.reduced_chi2 / 10  # 100x less dose: 100x the variance


def test_skipped_with_a_reason(no_estimator):
    series = load_sample_series("mos2")
    series.defocus = None
    rec = reconstruct_series(series, "mos2", physics_check="auto")
    assert rec.residual is None
    assert rec.to_metadata()["physics_residual"]["skipped"].startswith("no aberration")
    assert any(w.startswith("physics residual skipped") for w in rec.warnings)
    rec = reconstruct_series(series, "mos2", physics_check="auto", defocus=[-60, -10, 40])
    assert rec.residual is None and "dose is unknown" in rec.metadata["physics_residual"][
        "skipped"]
    rec = reconstruct_series(series, "mos2")  # off by default in the library
    assert "physics_residual" not in rec.metadata and rec.residual is None


def test_gs_without_parameters_runs_on_the_estimate(stand_in):
    series = load_sample_series("mos2")
    series.defocus = None
    rec = reconstruct_series(series, method="gs", n_iter=3, physics_check="auto")
    true = true_parameters()
    assert rec.metadata["defocus"] == [p.defocus for p in true]
    assert rec.metadata["Cs"] == true[0].Cs and rec.metadata["focal_spread"] == 10.0
    said = [w for w in rec.warnings if w.startswith("gs uses the estimated defocus")]
    assert len(said) == 1 and "Cs -8 um" in said[0] and "focal spread 10.0 A" in said[0]
    assert len(stand_in) == 1  # estimated once, reused by the check
    assert rec.residual is not None and rec.residual.images.shape == (3, 256, 256)
    # what the user gave is kept; with a defocus given nothing comes from the estimate
    rec = reconstruct_series(series, method="wiener", Cs=-1e4, physics_check=False)
    assert rec.metadata["Cs"] == -1e4 and any("focal spread 10.0 A" in w and "Cs" not in w
                                              for w in rec.warnings)
    rec = reconstruct_series(series, method="wiener", defocus=[-60, -10, 40],
                             physics_check=False)
    assert rec.metadata["Cs"] is None and rec.estimate is None and len(stand_in) == 2
    assert not any("estimated" in w for w in rec.warnings)
    # with the check on, a Cs and focal spread not given come from the estimate too
    rec = reconstruct_series(series, method="gs", n_iter=3, defocus=[-60, -10, 40],
                             physics_check="auto")
    assert rec.metadata["Cs"] == true[0].Cs and rec.metadata["defocus"] == [-60, -10, 40]
    assert any(w.startswith("gs uses the estimated Cs -8 um, focal spread 10.0 A")
               for w in rec.warnings)
    assert rec.residual is not None and rec.reduced_chi2 > 0


def test_cli_prints_and_writes_the_check(stand_in, tmp_path, capsys):
    from napari_exitwave import cli
    from napari_exitwave.io import read_series

    code = cli.main(["reconstruct", "sample", "--out", str(tmp_path), "-q", "--no-peaks",
                     "--residual-images"])
    out = capsys.readouterr().out
    assert code == 0
    assert "microscope estimate (stand-in):" in out and "defocus_step" in out
    # the stand-in's parameters count as estimated and are fitted: no alarm on the sample, and
    # the line says how little that proves
    assert "physics residual: reduced chi-square" in out and "(no alarm with the fitted parameters" in out
    meta = json.loads((tmp_path / "sample.json").read_text())
    assert meta["physics_residual"]["reduced_chi2"] > 0 and meta["estimate"]["values"]
    assert "aberration fit (exit wave held fixed)" in out
    assert meta["aberration_fit"]["misfit"] <= meta["aberration_fit"]["start_misfit"]
    assert meta["physics_residual"]["parameters_from"].endswith("+ fit")
    res = read_series(str(tmp_path / "sample_residual.tif"))
    assert res.images.shape == (3, 256, 256) and res.sampling == pytest.approx(0.105)
    # without the fit the estimate is used as it is, and the line gives no verdict
    code = cli.main(["reconstruct", "sample", "--out", str(tmp_path / "nofit"), "-q",
                     "--no-peaks", "--no-aberration-fit"])
    out = capsys.readouterr().out
    meta = json.loads((tmp_path / "nofit" / "sample.json").read_text())
    assert code == 0 and "aberration fit" not in out and "not conclusive" in out
    assert "aberration_fit" not in meta
    assert not meta["physics_residual"]["parameters_from"].endswith("+ fit")
    # an earlier residual file is kept unless --overwrite (and is no output without the option)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "sample_residual.tif").write_bytes(b"earlier")
    code = cli.main(["reconstruct", "sample", "--out", str(tmp_path / "b"), "-q",
                     "--no-peaks", "--residual-images"])
    assert code == 2 and (tmp_path / "b" / "sample_residual.tif").read_bytes() == b"earlier"
    assert not (tmp_path / "b" / "sample.json").exists()
    code = cli.main(["reconstruct", "sample", "--out", str(tmp_path / "b"), "-q",
                     "--no-peaks"])
    assert code == 0 and (tmp_path / "b" / "sample_residual.tif").read_bytes() == b"earlier"
    capsys.readouterr()
    code = cli.main(["reconstruct", "sample", "--out", str(tmp_path), "-q", "--no-peaks",
                     "--overwrite", "--no-check", "--residual-images"])
    out = capsys.readouterr().out
    assert code == 0 and "physics residual:" not in out
    assert "no residual images written" in out
    assert "physics_residual" not in json.loads((tmp_path / "sample.json").read_text())


def test_batch_summary_has_the_reduced_chi2(stand_in, tmp_path):
    from napari_exitwave.batch import ModelReconstructor, reconstruct_file, summary_table
    from napari_exitwave.io import write_series_tiff

    s = load_sample_series("mos2")
    write_series_tiff(tmp_path / "a.tif", s.images, s.sampling, s.defocus)
    fn = ModelReconstructor("mos2", physics_check="auto")
    r = reconstruct_file(str(tmp_path / "a.tif"), str(tmp_path / "out"), reconstruct_fn=fn)
    assert r.status == "done" and 0 < r.reduced_chi2 < 3
    assert "chi2_red" in summary_table([r]).splitlines()[0]


def test_live_ledger_has_the_reduced_chi2(tmp_path):
    from types import SimpleNamespace

    from napari_exitwave.live._ledger import Ledger
    from napari_exitwave.live._watcher import SeriesResult

    ledger = Ledger(tmp_path, tmp_path, {"mode": "count"})
    rec = SimpleNamespace(residual=SimpleNamespace(reduced_chi2=1.23456))
    ledger.finish(SeriesResult("s1", ["a.tif"], "done", rec, ["a.npy"], 0.5), [])
    ledger.finish(SeriesResult("s2", ["b.tif"], "done", object(), ["b.npy"], 0.5), [])
    saved = json.loads((tmp_path / "live-ledger.json").read_text())["series"]
    assert saved["s1"]["reduced_chi2"] == 1.2346 and saved["s2"]["reduced_chi2"] is None


def test_refinement_option_lowers_the_residual(no_estimator):
    series = load_sample_series("mos2")
    plain = reconstruct_series(series, "mos2", physics_check=True, microscope=true_parameters())
    refined = reconstruct_series(series, "mos2", physics_check=True, refine=True,
                                 microscope=true_parameters())
    info = refined.to_metadata()["refinement"]
    assert info["residual_before"] == pytest.approx(plain.reduced_chi2)
    assert refined.reduced_chi2 < plain.reduced_chi2
    assert info["chi2_end"] < info["chi2_start"] and "refine" in refined.timings
    assert not np.allclose(refined.exit_wave, plain.exit_wave)
    # without parameters there is nothing to refine against: a warning, the network's wave
    alone = reconstruct_series(series, "mos2", refine=True)
    assert any("refinement skipped" in w for w in alone.warnings)


def test_refinement_is_skipped_on_unfitted_estimated_parameters(stand_in):
    """Refined with the estimate as it is, waves got worse in the benchmark: without the
    aberration fit the network's wave is kept, with a warning that says what to do instead."""
    series = dataclasses.replace(load_sample_series("mos2"), defocus=None)  # nothing given
    plain = reconstruct_series(series, "mos2")
    rec = reconstruct_series(series, "mos2", physics_check=True, refine=True,
                             fit_aberrations=False)
    assert any("refinement skipped: the microscope parameters are estimated" in w
               for w in rec.warnings)
    assert rec.to_metadata()["refinement"] == {"skipped": "estimated parameters, not fitted"}
    np.testing.assert_array_equal(rec.exit_wave, plain.exit_wave)


def test_refinement_on_estimated_and_fitted_parameters_pulls_harder(stand_in):
    """Nothing given: the estimate is fitted, then the wave refined at ESTIMATED_STRENGTH
    (docs/traditional.md); it explains the images better than the network's wave and stays
    close to it (closer to the truth than the network's, 0.0102 -> 0.0096 complex RMSE)."""
    from napari_exitwave.metrics import rmse
    from napari_exitwave.refine import ESTIMATED_STRENGTH, GIVEN_STRENGTH

    assert ESTIMATED_STRENGTH > GIVEN_STRENGTH
    series = dataclasses.replace(load_sample_series("mos2"), defocus=None)
    plain = reconstruct_series(series, "mos2", physics_check=True)
    rec = reconstruct_series(series, "mos2", physics_check=True, refine=True)
    info = rec.to_metadata()["refinement"]
    assert info["strength"] == ESTIMATED_STRENGTH
    assert info["parameters_from"].endswith("+ fit")
    assert info["chi2_end"] < info["chi2_start"] and rec.reduced_chi2 < plain.reduced_chi2
    truth, _, _ = load_sample_exit_wave("mos2")
    ny, nx = rec.exit_wave.shape
    before = np.hypot(*rmse(plain.exit_wave, truth[:ny, :nx]))
    after = np.hypot(*rmse(rec.exit_wave, truth[:ny, :nx]))
    assert after < before, (before, after)


def test_verdict_uses_the_misfit_as_well_as_the_chi_square():
    """A low-dose failure keeps the chi-square near 1 but not the misfit (docs/residual.md):
    the verdict says so; a small misfit at any chi-square up to marginal stays as before."""
    from napari_exitwave._check import MISFIT_ALARM, residual_line, verdict

    assert verdict(1.1) == "consistent" and verdict(1.1, 0.008) == "consistent"
    assert verdict(1.1, 2 * MISFIT_ALARM).startswith("the exit wave does not explain")
    assert verdict(2.0, 0.01).startswith("marginal")
    assert verdict(5.0, 0.001).startswith("the exit wave does not explain")
    assert verdict(float("nan"), 0.001).startswith("not finite")
    # estimated parameters: the study found no separation, so no verdict either way
    for chi2, misfit in ((1.2, 0.05), (1.2, 0.005), (50.0, 0.1)):
        line = residual_line(chi2, "estimate + given", misfit)
        assert "not conclusive" in line and "consistent)" not in line
    assert residual_line(1.2, "given", 0.005).endswith("(consistent)")
    # estimated, then fitted: an alarm above the fitted study's threshold (2-5% false alarms),
    # below it no verdict of consistency
    from napari_exitwave._check import FITTED_MISFIT_ALARM, NOT_CONTRADICTED

    for source in ("estimate + fit", "estimate + given + fit"):
        alarm = verdict(1.1, 1.2 * FITTED_MISFIT_ALARM, source)
        assert alarm.startswith("the exit wave does not")
        assert "give the microscope's parameters" in alarm
        assert verdict(1.1, 0.8 * FITTED_MISFIT_ALARM, source) == NOT_CONTRADICTED
        assert verdict(50.0, 0.8 * FITTED_MISFIT_ALARM, source) == NOT_CONTRADICTED
