"""The latency benchmark runs end to end (tiny network, tiny frame) and reports every part."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
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


def test_train_speed_times_updates_in_own_processes_and_writes_the_doc_block(tmp_path):
    """benchmarks/train_speed.py: a TensorFlow row, a row whose backend is missing, a fit row."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _toy_data import make_toy_dataset

    import train_speed

    toy = make_toy_dataset(tmp_path / "toy.zarr", n=8, size=64, seed=0)
    doc = tmp_path / "training.md"
    doc.write_text("# Training\n\ntext\n")
    assert train_speed.main(["--train", str(toy), "--out", str(tmp_path / "out"), "--preset",
                             "tiny", "--batch-size", "2", "--crop", "32", "--steps", "2",
                             "--warmup", "1", "--only", "tf", "torch", "--fit", "fit-tf1",
                             "--fit-epochs", "2", "--fit-steps", "2", "--doc", str(doc)]) == 0
    res = json.loads((tmp_path / "out" / "speed.json").read_text())
    tf_row, torch_row = res["rows"]
    assert tf_row["backend"] == "tensorflow" and tf_row["seconds_per_step"] > 0
    assert tf_row["samples_per_second"] == pytest.approx(2 / tf_row["seconds_per_step"])
    assert np.isfinite(tf_row["loss"]) and tf_row["loss"] > 0   # the tiny net trained on MSE
    assert torch_row["skipped"] == "no --backend-python given"
    assert res["feed_seconds_per_batch"] > 0
    (fit,) = res["fit_rows"]      # a real 2-epoch run, its thread setting in its environment
    assert fit["env"] == {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"}
    assert len(fit["epoch_seconds"]) == 1 and fit["first_epoch_seconds"] > 0
    assert fit["samples_per_second"] == pytest.approx(2 * 2 / fit["epoch_seconds"][0])
    state = json.loads((tmp_path / "out" / "fit" / "fit-tf1" / "state.json").read_text())
    assert state["epoch"] == 2 and state["samples_seen"] == 8
    text = doc.read_text()
    assert text.startswith("# Training\n\ntext\n")
    assert "<!-- train_speed -->" in text and "| tf | TensorFlow" in text and "1.00x" in text
    assert "| torch | PyTorch" in text and "no --backend-python given" in text
    assert "| fit-tf1 | TensorFlow in 1 thread" in text and "TF_NUM_INTRAOP_THREADS=1" in text
