"""The traditional-EWR benchmark scripts run end to end on tiny inputs (no multislice)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from napari_exitwave import physics

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(BENCH))  # as when a script runs: compare_traditional imports traditional


def _load(name):
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _fake_samples(n, seed, size, sampling, log, dataset="mos2-graphene"):
    """Stand-in for the multislice: Gaussian-atom phase objects, 11 images 1 nm apart."""
    rng = np.random.default_rng(seed)
    ranges = physics.ParameterRanges(total_defocus_range=100.0, step_jitter=0.0,
                                     log10_dose=(4.0, 5.0))
    out = []
    y, x = np.mgrid[:size, :size] * sampling
    for i in range(n):
        phase = np.zeros((size, size))
        for cy, cx in rng.uniform(2, size * sampling - 2, (6 + 3 * i, 2)):
            phase += 0.4 * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * 0.3**2))
        wave = np.exp(1j * phase)
        params = physics.sample_parameters(rng, 11, ranges)
        images = physics.simulate_focal_series(wave, sampling, params, None, rng)
        out.append({"index": i, "wave": wave, "params": params, "images": images,
                    "target": physics.gaussian_blur(wave, sampling, 0.15), "info": {}})
    return None, out


def test_highpass_and_percentile_pick():
    cmp = _load("compare_traditional")
    wave = np.exp(0.3j) * np.ones((32, 32))  # a constant phase: all long wavelength
    np.testing.assert_allclose(cmp.highpass(wave, 0.1), np.ones((32, 32)), atol=1e-12)
    deltas = np.array([0.9, 0.1, 0.5, 0.3, 0.7])  # lower is better
    assert cmp.percentile_pick(deltas, 0) == 0      # the worst
    assert cmp.percentile_pick(deltas, 100) == 1    # the best
    assert cmp.percentile_pick(deltas, 50) == 2


def test_compare_traditional_end_to_end(tmp_path, monkeypatch, capsys):
    from onnx_helpers import make_conv_model

    cmp = _load("compare_traditional")
    monkeypatch.setattr(cmp, "simulate", _fake_samples)
    model, _ = make_conv_model(tmp_path / "tiny.onnx", sampling=0.105)
    doc = tmp_path / "docs" / "traditional.md"
    doc.parent.mkdir()
    doc.write_text("# intro\n\n<!-- compare_traditional:start -->\nold\n"
                   "<!-- compare_traditional:end -->\n\ntail\n")
    assert cmp.main(["--model", str(model), "--n", "4", "--size", "64", "--n-iter", "3",
                     "--doc", str(doc)]) == 0
    text = doc.read_text()
    assert text.startswith("# intro") and text.rstrip().endswith("tail") and "old" not in text
    for row in ("| network | 3 |", "| Gerchberg-Saxton | 11 |", "| Wiener (GS start) | 11 |",
                "GS, all parameters known", "baseline: vacuum", "What limits GS"):
        assert row in text, row
    for pc in (25, 50, 75):
        assert (doc.parent / "images" / f"traditional_p{pc}.png").stat().st_size > 1000
    res = json.loads((doc.parent / "traditional_results.json").read_text())
    assert len(res["results"]) == 4 and set(res["picks"]) == {"25", "50", "75"}
    r = res["results"][0]
    assert len(r["gs_errors"]) == 4 and np.all(np.diff(r["gs_errors"]) <= 1e-12)
    assert r["vacuum"]["delta"] == pytest.approx(1.0)


def test_compare_without_network_says_so(tmp_path, monkeypatch, capsys):
    cmp = _load("compare_traditional")
    monkeypatch.setattr(cmp, "simulate", _fake_samples)
    assert cmp.main(["--model", str(tmp_path / "missing.onnx"), "--n", "2", "--size", "48",
                     "--n-iter", "2", "--no-write"]) == 0
    out = capsys.readouterr().out
    assert "network part skipped" in out and "| network |" not in out
    assert "Percentiles picked by the GS (no network available)" in out


def test_timing_benchmark(tmp_path):
    bench = _load("traditional")
    out = tmp_path / "t.json"
    assert bench.main(["--sizes", "32", "--iterations", "2", "--n-images", "3",
                       "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert {r["dtype"] for r in res["rows"]} == {"complex128", "complex64"}
    assert all(r["s_per_iteration"] > 0 and r["device"] == "CPU" for r in res["rows"])
