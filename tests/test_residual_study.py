"""The residual study's summary (percentiles, threshold, detection rate) and its command line."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "residual_study.py"


@pytest.fixture(scope="module")
def study():
    spec = importlib.util.spec_from_file_location("residual_study", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_threshold_false_alarms_and_detection_rate(study):
    good = np.arange(1.0, 101.0)  # 1..100: the 95th percentile is 95.05
    bad = np.concatenate([np.full(30, 50.0), np.full(70, 1e3)])
    s = study.summarize({"good": good, "good-holdout": good + 5, "bad": bad,
                         "truth": np.ones(10)}, "good", 95)
    assert s["threshold"] == pytest.approx(95.05)
    assert s["false_alarm_rate"] == pytest.approx(0.05)  # 96..100 lie above
    assert s["cases"]["bad"]["fraction_above"] == pytest.approx(0.70)
    assert s["cases"]["truth"]["fraction_above"] == 0.0
    assert s["cases"]["good-holdout"]["fraction_above"] == pytest.approx(0.10)  # 96..105
    g = s["cases"]["good"]
    assert (g["p10"], g["median"], g["p90"]) == pytest.approx((10.9, 50.5, 90.1))
    assert s["cases"]["bad"]["median"] == pytest.approx(1e3)
    table = study.markdown_table(s)
    assert "| bad | 100 |" in table and "70% (detected)" in table
    assert "5% (false alarms, in-sample)" in table
    assert "10% (false alarms) |" in table
    assert "| truth | 10 | 1 | 1 | 1 | (0%) |" in table


def test_refused_series_count_as_detected_and_stay_infinite(study):
    vals = [2.0, 3.0, np.inf, np.inf]
    p10, p50, p90 = study.percentiles(vals)
    assert p10 == pytest.approx(2.3)
    assert np.isinf(p50) and np.isinf(p90)  # an interpolation touching inf is inf, not NaN
    s = study.summarize({"good": [1.0, 1.1, 1.2, 1.3], "bad": vals})
    assert s["cases"]["bad"]["fraction_above"] == 1.0
    assert s["cases"]["bad"]["n_refused"] == 2
    assert "refused" in study.markdown_table(s)
    with pytest.raises(ValueError, match="finite"):
        study.alarm_threshold([1.0, np.inf])
    with pytest.raises(ValueError, match="NaN"):
        study.percentiles([1.0, np.nan])


def test_to_grid_inverts_the_pipeline_resampling(study):
    from napari_exitwave.reconstruct import resample_series

    yy, xx = np.mgrid[:64, :64]
    wave = np.exp(1j * 0.3 * np.sin(2 * np.pi * xx / 32) * np.cos(2 * np.pi * yy / 16))
    up = resample_series(np.stack([wave.real, wave.imag]), 0.2, 0.1)  # what the pipeline does
    back = study.to_grid(up[0] + 1j * up[1], 0.1, 0.2, wave.shape)
    assert back.shape == wave.shape
    np.testing.assert_allclose(back[:-1, :-1], wave[:-1, :-1], atol=2e-3)
    same = study.to_grid(wave[:60, :60], 0.2, 0.2, (64, 64))  # missing edge -> vacuum
    assert same[62, 10] == 1 and same[10, 10] == pytest.approx(wave[10, 10])


def test_estimated_parameters_hook_and_true_parameters(study):
    params = ["p0", "p1"]
    assert study.claimed_parameters("true", None, 0.1, params) == params
    with pytest.raises(ValueError, match="--params"):
        study.claimed_parameters("guessed", None, 0.1, params)


def test_help_runs():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True,
                         env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "--params" in out.stdout and "--n" in out.stdout and "estimated" in out.stdout


def test_error_correlation_ranks_like_the_true_error(study):
    rows = {"good": [{"chi2": c, "mismatch": m, "rmse_real": e, "rmse_imag": 0.0}
                     for c, m, e in [(1, 0.1, 0.01), (2, 0.3, 0.02), (3, 0.2, 0.03),
                                     (4, 0.4, 0.04)]],
            "truth": [{"chi2": 1.0, "mismatch": 0.0}] * 4}
    c = study.error_correlation(rows)
    assert "truth" not in c  # no error known for the reference rows
    assert c["good"]["chi2"] == pytest.approx(1.0) and c["good"]["mismatch"] == pytest.approx(0.8)
    assert c["pooled"]["n"] == 4


def test_replot_draws_the_figure_from_a_json(study, tmp_path):
    import json

    rng = np.random.default_rng(0)
    series = {c: [{"chi2": float(x), "mismatch": float(x) / 100, "dose": float(d)}
                  for x, d in zip(rng.uniform(1, k + 2, 8), rng.uniform(300, 1e5, 8))]
              for k, c in enumerate(["truth", "good", "supported"])}
    series["supported"][0].update(chi2=float("inf"), mismatch=float("inf"))  # a refused one
    chi2 = {c: [r["chi2"] for r in rs] for c, rs in series.items()}
    mism = {c: [r["mismatch"] for r in rs] for c, rs in series.items()}
    doc = {"series": series, "summary": study.summarize(chi2), "params": "true",
           "summary_mismatch": study.summarize(mism), "model": {"name": "toy"}}
    (tmp_path / "r.json").write_text(json.dumps(doc))
    png = tmp_path / "h.png"
    assert study.main(["--replot", str(tmp_path / "r.json"), "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_estimated_parameters_come_from_the_estimator(study, monkeypatch):
    import types

    calls = []

    def estimate_aberrations(images, sampling):
        calls.append((np.shape(images), sampling))
        return types.SimpleNamespace(params=["e0", "e1", "e2"])

    fake = types.ModuleType("napari_exitwave.estimate")
    fake.estimate_aberrations = estimate_aberrations
    monkeypatch.setitem(sys.modules, "napari_exitwave.estimate", fake)
    images = np.ones((3, 16, 16))
    assert study.claimed_parameters("estimated", images, 0.21, ["t0", "t1", "t2"]) == [
        "e0", "e1", "e2"]
    assert calls == [((3, 16, 16), 0.21)]  # the images as given, at the claimed pixel size
