"""The reconstruction dock's logic without Qt or a viewer: models, ticks, checks, runs."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnx")
from onnx_helpers import make_conv_model  # noqa: E402

from napari_exitwave._session import ReconstructionSession, RunResult, run_jobs  # noqa: E402
from napari_exitwave.errors import ExitWaveError  # noqa: E402
from napari_exitwave.io import FocalSeries  # noqa: E402


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    return {name: make_conv_model(d / f"{name}.onnx", n_pool=2, seed=seed, name=name,
                                  n_images=n)[0]
            for name, seed, n in (("a", 0, 3), ("b", 1, 3), ("two", 2, 2))}


def _series(n=3):
    rng = np.random.default_rng(0)
    return FocalSeries(rng.normal(1, 0.1, (n, 32, 48)).astype(np.float32), sampling=0.1,
                       defocus=list(np.linspace(-50, 50, n)), source="test")


def _drain(gen):
    items = []
    while True:
        try:
            items.append(next(gen))
        except StopIteration as stop:
            return items, stop.value


def test_ticking_keeps_models_of_one_kind_and_signals(models):
    s = ReconstructionSession()
    seen = []
    s.models_changed.connect(lambda: seen.append(1))
    assert s.add_model(str(models["a"])) == "a" and s.ticked == ["a"]
    assert s.add_model(str(models["b"]), tick=False) == "b" and s.ticked == ["a"]
    s.tick("b")
    assert s.ticked == ["a", "b"]  # same image count and pixel size: an ensemble
    s.add_model(str(models["two"]))
    assert s.ticked == ["two"]  # a 2-image network unticks the 3-image ones
    assert len(seen) == 4
    s.set_ticked(["a", "two"])  # by hand, mixed kinds are possible, and the check says so
    assert "differ in image count" in s.check(_series(), "network").errors[0]
    s.set_ticked([])
    assert "choose a model" in s.check(_series(), "network").errors[0]
    with pytest.raises(KeyError, match="no model 'c'"):
        s.tick("c")


def test_a_bad_file_is_refused_when_added(tmp_path):
    bad = tmp_path / "corrupt.onnx"
    bad.write_bytes(b"\x08\x01garbage" * 50)
    s = ReconstructionSession()
    with pytest.raises(ExitWaveError, match="could not load model"):
        s.add_model(str(bad))
    assert s.cards == {}


def test_jobs_for_networks_and_traditional_methods(models):
    s = ReconstructionSession()
    s.add_model(str(models["a"]))
    s.add_model(str(models["b"]), tick=False)
    s.tick("b")
    jobs = s.jobs("network", align=False, providers="cpu")
    assert [j["model"].name for j in jobs] == ["a", "b"]
    assert all(j["providers"] == "cpu" and j["align"] is False for j in jobs)
    (job,) = s.jobs("gs", defocus=[-50, 0, 50], Cs_um=-8.0, focal_spread=20.0)
    assert job == dict(model=None, method="gs", align=True, defocus=[-50, 0, 50], Cs=-8e4,
                       focal_spread=20.0, physics_check="auto")
    assert "enter 3 defocus values" in s.check(_series(), "gs", defocus=[0.0]).text()


def test_run_jobs_and_finish_give_the_ensemble(models):
    s = ReconstructionSession()
    s.add_model(str(models["a"]))
    s.add_model(str(models["b"]), tick=False)
    s.tick("b")
    items, result = _drain(run_jobs(_series(), s.jobs("network", providers="cpu")))
    assert isinstance(result, RunResult) and result.error is None
    assert len(result.reconstructions) == 2
    fr = [f for f, _ in items]
    assert fr == sorted(fr) and fr[-1] == 1.0 and 0.5 in fr  # the second job starts at 1/2
    done = []
    s.finished.connect(done.append)
    summary = s.finish(result, "series")
    assert done == [result] and s.last_result is result
    a, b = (r.exit_wave for r in result.reconstructions)
    np.testing.assert_allclose(summary.exit_wave, (a + b) / 2, atol=1e-6)
    np.testing.assert_allclose(summary.uncertainty, np.abs(a - b) / 2, atol=1e-6)
    assert summary.name == "series exit wave" and s.exit_wave is summary.exit_wave
    assert summary.status.startswith("✔ a, b on CPU in ")
    assert "uncertainty layer" in summary.status


def test_run_jobs_returns_errors_instead_of_raising(models):
    s = ReconstructionSession()
    s.add_model(str(models["a"]))
    _, result = _drain(run_jobs(_series(n=2), s.jobs("network")))
    assert "expects 3 images" in result.error and result.reconstructions == []
    assert s.finish(result, "x") is None and s.exit_wave is None
    _, result = _drain(run_jobs(_series(), s.jobs("network"), cancel=lambda: True))
    assert result.cancelled and result.error is None


def test_finish_carries_the_physics_check(monkeypatch):
    from estimate_stand_in import install_stand_in

    from napari_exitwave.data import load_sample_series

    install_stand_in(monkeypatch)
    s = ReconstructionSession()
    s.add_model("mos2")
    series = load_sample_series("mos2")
    (job,) = s.jobs("network", providers="cpu")
    assert job["physics_check"] == "auto"
    _, result = _drain(run_jobs(series, [job]))
    assert result.error is None, result.error
    summary = s.finish(result, "mos2")
    assert summary.estimate_model == "stand-in" and summary.estimate_rows
    assert summary.estimate_rows[0][0] == "defocus_mean"
    assert summary.check_text.startswith("physics residual: reduced chi-square")
    assert summary.reduced_chi2 == pytest.approx(result.reconstructions[0].reduced_chi2)
    data, kwargs = summary.residual_layer()
    assert data.shape == (3, 256, 256) and kwargs["name"] == "mos2 residual"
    assert kwargs["contrast_limits"] == (-5.0, 5.0) and kwargs["scale"][1:] == (0.105, 0.105)
    assert "physics_residual" in summary.metadata and "estimate" in summary.metadata
    # the aberration fit ran on the estimate: its values for the table's "fitted" column (the
    # series' own defocus values are given, so they are not fitted)
    assert summary.metadata["aberration_fit"]["misfit"] <= summary.metadata["aberration_fit"][
        "start_misfit"]
    assert {"Cs", "C12", "C21"} <= set(summary.fit_values)
    assert "defocus_mean" not in summary.fit_values


def test_traditional_without_defocus_leaves_it_to_the_estimator(monkeypatch):
    from estimate_stand_in import install_no_estimator, install_stand_in

    s = ReconstructionSession()
    series = _series()
    series.defocus = None
    install_no_estimator(monkeypatch)
    assert "enter 3 defocus values" in s.check(series, "gs").text()
    install_stand_in(monkeypatch)
    chk = s.check(series, "gs")
    assert chk.ok and "from the estimator stand-in" in chk.text()
    (job,) = s.jobs("gs", defocus=None, Cs_um=0.0, focal_spread=20.0)
    assert job["defocus"] is None and job["Cs"] is None and job["focal_spread"] == 20.0
