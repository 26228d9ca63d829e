"""validate_series: what a network cannot take is refused, what it may take badly is said."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnx")  # only to build the tiny test networks

from onnx_helpers import make_conv_model  # noqa: E402

from napari_exitwave import physics  # noqa: E402
from napari_exitwave.errors import SeriesMismatchError  # noqa: E402
from napari_exitwave.io import FocalSeries  # noqa: E402
from napari_exitwave.model_cards import ModelCard  # noqa: E402
from napari_exitwave.validate import (intensity_warnings, resampled_shape,  # noqa: E402
                                      validate_series)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    make_conv_model(d / "three.onnx", name="three", n_images=3)
    make_conv_model(d / "two-a.onnx", name="two-a", n_images=2)
    make_conv_model(d / "two-b.onnx", name="two-b", n_images=2)
    return d


def _series(n=3, shape=(64, 64), sampling=0.1, seed=0):
    rng = np.random.default_rng(seed)
    return FocalSeries(rng.random((n,) + shape) + 5, sampling=sampling)


# ---------------------------------------------------------------------------------------------
# item 8: the advice names networks that exist


def test_count_advice_names_installed_models(models):
    card = ModelCard.load(models / "three.json")
    with pytest.raises(SeriesMismatchError,
                       match=r"choose a model made for 2 images \(two-a, two-b\)$"):
        validate_series(_series(n=2), card, models_dir=models)
    with pytest.raises(SeriesMismatchError, match="no installed model takes 4 images$"):
        validate_series(_series(n=4), card, models_dir=models)


# ---------------------------------------------------------------------------------------------
# item 13: pixel size at exactly 2x, frames below the receptive field, memory


def test_pixel_size_exactly_twice_off_warns_and_is_strict_error(models):
    card = ModelCard.load(models / "three.json")  # 0.1 A/px
    for s, word in ((0.2, "coarser"), (0.05, "finer")):
        w = validate_series(_series(shape=(96, 96), sampling=s), card, models_dir=models)
        assert len(w) == 1 and f"2.0x {word}" in w[0]
        with pytest.raises(SeriesMismatchError, match=f"2.0x {word}"):
            validate_series(_series(shape=(96, 96), sampling=s), card, strict=True)
    assert validate_series(_series(sampling=0.19), card, strict=True) == []  # 1.9x: fine


def test_frames_below_the_receptive_field_are_refused(models):
    card = ModelCard.load(models / "three.json")
    with pytest.raises(SeriesMismatchError, match=r"frames of 2 x 16 px .*smaller than the 32 px"):
        validate_series(_series(shape=(2, 16)), card)
    # 40 px at 0.1 A/px is 20 px at a 0.2 A/px network: too small once resampled
    coarse = ModelCard.load(models / "three.json")
    coarse.sampling = 0.2
    with pytest.raises(SeriesMismatchError, match=r"frames of 20 x 20 px \(at 0.2 A/px\)"):
        validate_series(_series(shape=(40, 40)), coarse)
    assert validate_series(_series(shape=(32, 40)), card) == []


def test_resampling_is_bounded_by_memory(models):
    card = ModelCard.load(models / "three.json")
    # 3 x 2 x 16 px at 100 A/px asked for a 3 x 1001 x 15001 px series at 0.1 A/px
    huge = _series(shape=(2, 16), sampling=100.0)
    assert resampled_shape(huge.images.shape, 100.0, 0.1) == (1001, 15001)
    with pytest.raises(SeriesMismatchError, match=r"3 x 1001 x 15001 px and needs about 2.0 "
                                                  r"GiB, more than the 1.0 GiB"):
        validate_series(huge, card, memory_limit=2**30)
    assert validate_series(huge, card, memory_limit=2**32)[0].startswith("the series' pixel")
    with pytest.raises(SeriesMismatchError, match="more than the .* GiB of memory available"):
        validate_series(_series(shape=(2, 16), sampling=1e5), card)  # the real limit
    with pytest.raises(SeriesMismatchError, match="positive finite"):
        validate_series(_series(shape=(64, 64), sampling=None), card, sampling=float("inf"))


# ---------------------------------------------------------------------------------------------
# item 6: positive intensities


def _hrtem_with_vacuum():
    """A simulated 3-image series of the sample wave beside as much vacuum (high dose)."""
    from napari_exitwave import data

    wave, sampling, _ = data.load_sample_exit_wave()
    big = np.ones((256, 512), np.complex64)
    big[:, :256] = wave
    rng = np.random.default_rng(0)
    params = physics.sample_parameters(rng, 3)  # Table 1 ranges; this draw: 3.5e4 e/A^2
    return physics.simulate_focal_series(big, sampling, params, rng=rng), sampling


def test_intensity_warnings_for_negative_and_inverted_series():
    images, sampling = _hrtem_with_vacuum()
    assert intensity_warnings(images) == []
    inverted = images.max() - images
    w = intensity_warnings(inverted)
    assert len(w) == 1 and "vacuum" in w[0] and "darker than the specimen" in w[0]
    w = intensity_warnings(-images)
    assert len(w) == 1 and "100% of the pixels are negative" in w[0]
    # background subtraction leaves half the pixels negative and the vacuum bright: no warning
    assert intensity_warnings(images - np.median(images)) == []


def test_the_bundled_samples_pass_the_intensity_checks():
    from napari_exitwave import data

    for name in ("mos2", "mos2-graphene-022"):
        assert intensity_warnings(data.load_sample_series(name).images) == []


def test_intensity_warning_reaches_validate(models):
    card = ModelCard.load(models / "three.json")
    images, sampling = _hrtem_with_vacuum()
    series = FocalSeries(-images, sampling=0.1)
    assert any("not a positive intensity" in w for w in validate_series(series, card))


def test_non_square_pixels_are_said(models):
    card = ModelCard.load(models / "three.json")
    s = _series()
    s.metadata["anisotropic_sampling"] = (1.0, 0.1)
    assert any("not square" in w for w in validate_series(s, card))


def test_cli_force_is_bounded_and_tiny_frames_refused(models, tmp_path, capsys):
    from napari_exitwave.cli import main
    from napari_exitwave.io import write_series_tiff

    p = write_series_tiff(tmp_path / "tiny.tif", _series(shape=(2, 16)).images, sampling=0.1)
    out = tmp_path / "out"
    common = ["--model", str(models / "three.json"), "--out", str(out), "-q"]
    assert main(["reconstruct", str(p), "--sampling", "1e5", "--force"] + common) == 2
    assert "of memory available" in capsys.readouterr().err
    assert main(["reconstruct", str(p)] + common) == 2
    assert "frames of 2 x 16 px" in capsys.readouterr().err
    assert not out.exists()
