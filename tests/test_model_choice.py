"""Which network runs when the user names none: the one for the series' number of images."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnx")

from onnx_helpers import make_conv_model  # noqa: E402

from napari_exitwave.cli import main  # noqa: E402
from napari_exitwave.io import write_series_tiff  # noqa: E402
from napari_exitwave.model_cards import ModelCard, default_model_for  # noqa: E402


def _cards(**n_images):
    return {name: ModelCard(name=name, onnx_file=f"{name}.onnx", sampling=0.105, n_images=n)
            for name, n in n_images.items()}


def test_default_model_for_a_series_length():
    cards = _cards(**{"mos2": 3, "2d": 3, "mos2-4img": 4, "graphene-2img": 2, "mos2-2img": 2})
    assert default_model_for(3, cards=cards) == "mos2"  # the default, when it fits
    assert default_model_for(None, cards=cards) == "mos2"
    assert default_model_for(4, cards=cards) == "mos2-4img"
    assert default_model_for(2, cards=cards) == "mos2-2img"  # the default's family first
    assert default_model_for(5, cards=cards) is None
    assert default_model_for(3, cards=_cards(b=3, a=3)) == "a"  # else by name


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("choice")
    models = d / "models"
    models.mkdir()
    make_conv_model(models / "mos2.onnx", n_images=3, sampling=0.1, name="mos2")
    # 5 and 6 images: no shipped network takes them (the checkout's models/ is searched too,
    # and ships 2-, 3- and 4-image MoS2 networks)
    make_conv_model(models / "five.onnx", n_images=5, sampling=0.1, seed=1, name="five")
    rng = np.random.default_rng(0)
    for n in (3, 5, 6):
        ims = 1 + 0.05 * rng.normal(size=(n, 64, 64))
        write_series_tiff(d / f"s{n}.tif", ims.astype(np.float32), 0.1,
                          list(np.linspace(-50, 50, n)))
    return d


@pytest.mark.parametrize("n, model", [(3, "mos2"), (5, "five")])
def test_cli_runs_the_network_for_the_series_length(folder, tmp_path, monkeypatch, capsys, n,
                                                   model):
    monkeypatch.setenv("NAPARI_EXITWAVE_MODELS", str(folder / "models"))
    out = tmp_path / "out"
    assert main(["reconstruct", str(folder / f"s{n}.tif"), "--out", str(out), "--no-peaks"]) == 0
    import json

    record = json.loads((out / f"s{n}.json").read_text())
    assert record["model"] == model


def test_cli_names_what_is_installed_when_no_network_fits(folder, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NAPARI_EXITWAVE_MODELS", str(folder / "models"))
    code = main(["reconstruct", str(folder / "s6.tif"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2
    assert "no installed network takes 6 images" in err and "five (5 images)" in err
    assert not (tmp_path / "o").exists()  # nothing left behind


def test_session_ticks_the_network_for_a_new_series():
    from napari_exitwave._session import ReconstructionSession

    s = ReconstructionSession()
    for card in _cards(mos2=3, four=4).values():
        s.add_model(card, tick=False)
    s.tick("mos2")
    assert s.tick_for_series(3) is None and s.ticked == ["mos2"]  # it already fits
    assert s.tick_for_series(4) == "four" and s.ticked == ["four"]
    assert s.tick_for_series(2) is None and s.ticked == ["four"]  # nothing fits: unchanged
