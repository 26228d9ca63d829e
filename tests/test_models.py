"""Every network shipped in models/: its card matches its file, and it reconstructs the sample.

The bounds below are the stated quality on the bundled sample series (docs/models.md); a model
without a stated bound fails here, so nothing is shipped unmeasured.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from napari_exitwave import metrics
from napari_exitwave.data import load_sample_exit_wave, load_sample_series
from napari_exitwave.inference import ModelCard, OnnxReconstructor
from napari_exitwave.reconstruct import reconstruct_series

MODELS_DIR = Path(__file__).resolve().parents[1] / "models"
CARDS = sorted(MODELS_DIR.glob("*.json"))

# Stated RMSE (real, imaginary) on the bundled sample series, with the vacuum prediction
# (psi = 1) for scale; measured by benchmarks/evaluate_models.py (docs/models.md).
SAMPLE_RMSE_BOUND = {
    "mos2": (0.012, 0.035),  # measured 0.0079 / 0.0248 (vacuum: 0.0188 / 0.1017), 2026-11-24
}
MAX_ONNX_BYTES = 40 * 1024**2


def test_the_demo_model_is_shipped():
    assert (MODELS_DIR / "mos2.json").is_file(), "README's demo needs models/mos2.json"


@pytest.mark.parametrize("card_path", CARDS, ids=[p.stem for p in CARDS])
def test_card_matches_file(card_path):
    card = ModelCard.load(card_path)
    card.verify()  # sha256 of the ONNX file
    assert card.onnx_path.stat().st_size <= MAX_ONNX_BYTES
    assert 0.09 <= card.sampling <= 0.25
    assert 1 <= card.n_images <= 4
    assert card.size_multiple >= 1 and card.size_multiple & (card.size_multiple - 1) == 0
    for key in ("rmse_real", "rmse_imag", "delta", "yscramble_rmse_imag"):
        assert key in card.metrics, f"card lacks validation metric {key}"

    import onnx

    graph = onnx.load(card.onnx_path).graph
    (inp,), (out,) = graph.input, graph.output
    assert inp.name == "images" and out.name == "exit_wave"
    in_dims = inp.type.tensor_type.shape.dim
    assert in_dims[3].dim_value == card.n_images
    assert not in_dims[1].dim_value and not in_dims[2].dim_value, "height/width must be dynamic"
    assert out.type.tensor_type.shape.dim[3].dim_value == 2
    # the card on disk is valid JSON with the documented fields
    raw = json.loads(card_path.read_text())
    assert raw["onnx_file"] and raw["sha256"] == card.sha256


@pytest.mark.parametrize("card_path", CARDS, ids=[p.stem for p in CARDS])
def test_reconstructs_sample_below_stated_rmse(card_path):
    card = ModelCard.load(card_path)
    assert card.name in SAMPLE_RMSE_BOUND, f"state the sample RMSE of {card.name} here"
    bound_real, bound_imag = SAMPLE_RMSE_BOUND[card.name]
    series = load_sample_series()
    if len(series.images) != card.n_images:
        pytest.skip(f"{card.name} takes {card.n_images} images; the sample has "
                    f"{len(series.images)}")
    truth, sampling, _ = load_sample_exit_wave()
    rec = reconstruct_series(series, OnnxReconstructor(card, providers="cpu"), align=False)
    assert rec.exit_wave.shape == truth.shape and np.isclose(rec.sampling, sampling, rtol=1e-3)
    r_real, r_imag = metrics.rmse(rec.exit_wave, truth)
    v_real, v_imag = metrics.rmse(np.ones_like(truth), truth)
    assert r_real < bound_real and r_imag < bound_imag, (r_real, r_imag)
    # and clearly better than knowing nothing (vacuum everywhere)
    assert r_imag < 0.5 * v_imag
