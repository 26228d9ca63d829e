"""The latency benchmark runs end to end (tiny network, tiny frame) and reports every part."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("tf2onnx")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


def test_benchmark_reports_parts_parity_and_memory(tmp_path, capsys):
    import inference as bench

    out = tmp_path / "bench.json"
    assert bench.main(["--sizes", "64", "--repeat", "1", "--preset", "tiny", "--providers", "cpu",
                       "--memory-size", "64", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    (row,) = res["rows"]
    for key in ("total", "read", "align", "resample", "normalise", "infer", "peaks",
                "onnx_whole", "keras_predict"):
        assert row[key] > 0, key
    assert row["net_px"] == 61 and row["tile"] == 64     # 64 px at 0.1 -> 0.105 A/px, padded
    assert row["parity_rel"] < 1e-4                        # exported ONNX == Keras
    assert res["model"]["trained"] is False and "untrained" in res["model"]["note"]
    assert 0 < res["memory"]["peak_rss_MiB"] < 4096
    assert "| cpu | 64 |" in capsys.readouterr().out
