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
from napari_exitwave.data import (SAMPLES, load_sample_exit_wave, load_sample_series,
                                  sample_for_sampling)
from napari_exitwave.inference import ModelCard, OnnxReconstructor
from napari_exitwave.reconstruct import reconstruct_series

MODELS_DIR = Path(__file__).resolve().parents[1] / "models"
CARDS = sorted(p for p in MODELS_DIR.glob("*.json")
               if json.loads(p.read_text()).get("kind", "exit-wave") == "exit-wave")
"""The exit-wave networks' cards (the aberration estimators: tests/test_estimator.py)."""

# Stated RMSE (real, imaginary) on the bundled sample series, with the vacuum prediction
# (psi = 1) for scale; measured by benchmarks/evaluate_models.py (docs/models.md).
SAMPLE_RMSE_BOUND = {
    # on the MoS2 sample (0.105 A/px, blur 1 px; vacuum: 0.0188 / 0.1017), measured 2026-12-03
    "mos2": (0.008, 0.015),  # 0.0046 / 0.0091 (retrained on the px blur; was 0.0070 / 0.0262)
    # the same sample imaged again with 2 / 4 images over its 10 nm (sample_with_n_images)
    "mos2-2img": (0.008, 0.015),  # 0.0043 / 0.0084
    "mos2-4img": (0.008, 0.015),  # 0.0044 / 0.0080
    "2d": (0.009, 0.021),  # 0.0062 / 0.0156 (finetuned from mos2; was 0.0122 / 0.0287)
    # on the MoS2-on-film sample (0.105 A/px; vacuum: 0.0262 / 0.1156), measured 2026-12-03; on
    # the unsupported sample they put a support where there is none (real 0.026 / 0.028)
    "mos2-graphene-a": (0.011, 0.024),  # 0.0087 / 0.0183 (+60 epochs on 12-04; was 0.0101 / 0.0244)
    "mos2-graphene-b": (0.015, 0.045),  # 0.0116 / 0.0342 (+14 cosine epochs; was 0.0163 / 0.0488)
    # on the MoS2/graphene sample at 0.22 A/px (vacuum 0.0217 / 0.0936), measured 2026-12-03
    "mos2-graphene-022": (0.014, 0.030),  # 0.0098 / 0.0209 (finetuned from mos2; was 0.0101 / 0.0244)
}
SAMPLE_OF = {"mos2-graphene-a": "mos2-film", "mos2-graphene-b": "mos2-film"}
"""The sample of a network's own kind, where it is not the one of its pixel size."""
MAX_ONNX_BYTES = 40 * 1024**2


# The networks a user needs (issue 5): MoS2, two independent MoS2-on-graphene networks (for the
# uncertainty layer), 2D materials, and MoS2 on graphene at the paper's experimental 0.22 A/px.
REQUIRED = {"mos2": 0.105, "mos2-graphene-a": 0.105, "mos2-graphene-b": 0.105, "2d": 0.105,
            "mos2-graphene-022": 0.22}


def test_the_demo_model_is_shipped():
    assert (MODELS_DIR / "mos2.json").is_file(), "README's demo needs models/mos2.json"


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_required_network_is_shipped(name):
    card = ModelCard.load(MODELS_DIR / f"{name}.json")
    assert card.sampling == pytest.approx(REQUIRED[name], rel=0.05)
    assert card.n_images == 3


def test_graphene_networks_are_independent():
    """Two files with their own weights and training seeds, which disagree somewhere."""
    a, b = (ModelCard.load(MODELS_DIR / f"mos2-graphene-{k}.json") for k in "ab")
    assert a.sha256 != b.sha256
    assert a.training["seed"] != b.training["seed"]
    series = load_sample_series()
    wa, wb = (reconstruct_series(series, OnnxReconstructor(c, providers="cpu"), align=False)
              .exit_wave for c in (a, b))
    assert np.abs(wa - wb).max() > 1e-3


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


def sample_with_n_images(sample: str, n: int):
    """The bundled sample imaged again with ``n`` images over the same defocus span (its first
    to its last image's defocus), every other parameter as the sample's, fixed noise seed:
    the sample series for a 2- or 4-image network."""
    import dataclasses

    from napari_exitwave import physics
    from napari_exitwave.data import load_sample_parameters
    from napari_exitwave.io import FocalSeries

    wave, sampling, _ = load_sample_exit_wave(sample)
    given = [physics.MicroscopeParameters.from_dict(p)
             for p in load_sample_parameters(sample)["microscope"]]
    defoci = np.linspace(given[0].defocus, given[-1].defocus, n)
    params = [dataclasses.replace(given[0], defocus=float(d)) for d in defoci]
    images = physics.simulate_focal_series(wave, sampling, params, None,
                                           np.random.default_rng(2026))
    return FocalSeries(images=np.asarray(images, np.float32), sampling=sampling, units="Å",
                       defocus=[float(d) for d in defoci], source=f"sample:{sample} ({n} images)")


@pytest.mark.parametrize("card_path", CARDS, ids=[p.stem for p in CARDS])
def test_reconstructs_sample_below_stated_rmse(card_path):
    card = ModelCard.load(card_path)
    assert card.name in SAMPLE_RMSE_BOUND, f"state the sample RMSE of {card.name} here"
    bound_real, bound_imag = SAMPLE_RMSE_BOUND[card.name]
    sample = SAMPLE_OF.get(card.name) or sample_for_sampling(card.sampling)
    assert SAMPLES[sample]["sampling"] == pytest.approx(card.sampling, rel=0.05), \
        f"no bundled sample at {card.name}'s {card.sampling} A/px"
    series = load_sample_series(sample)
    truth, sampling, _ = load_sample_exit_wave(sample)
    if len(series.images) != card.n_images:
        series = sample_with_n_images(sample, card.n_images)
    rec = reconstruct_series(series, OnnxReconstructor(card, providers="cpu"), align=False)
    assert rec.exit_wave.shape == truth.shape and np.isclose(rec.sampling, sampling, rtol=1e-3)
    r_real, r_imag = metrics.rmse(rec.exit_wave, truth)
    v_real, v_imag = metrics.rmse(np.ones_like(truth), truth)
    assert r_real < bound_real and r_imag < bound_imag, (r_real, r_imag)
    # and clearly better than knowing nothing (vacuum everywhere); the MoS2/graphene networks
    # meet unsupported MoS2 here, outside their training distribution
    assert r_imag < 0.75 * v_imag
