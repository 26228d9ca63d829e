"""The reconstruction pipeline and the checks of a series against a model card."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnx")

from onnx_helpers import make_conv_model, reference_output  # noqa: E402

from napari_exitwave import physics  # noqa: E402
from napari_exitwave.errors import (ExitWaveError, ReconstructionCancelled,  # noqa: E402
                                    SeriesMismatchError)
from napari_exitwave.inference import ModelCard  # noqa: E402
from napari_exitwave.io import FocalSeries  # noqa: E402
from napari_exitwave.reconstruct import (Reconstruction, iter_reconstruct,  # noqa: E402
                                         reconstruct_series, resample_series)
from napari_exitwave.validate import validate_series  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    path, kernel = make_conv_model(d / "tiny.onnx", sampling=0.1)
    return d / "tiny.json", kernel


def _series(n=3, shape=(90, 80), sampling=0.12, defocus=(-50.0, 0.0, 50.0), seed=0):
    rng = np.random.default_rng(seed)
    ims = 1 + 0.1 * rng.normal(size=(n,) + shape)
    return FocalSeries(ims.astype(np.float32), sampling=sampling,
                       defocus=None if defocus is None else list(defocus)[:n], source="test")


def test_network_pipeline_equals_its_stages(tiny):
    card_path, kernel = tiny
    series = _series()
    steps = []
    rec = reconstruct_series(series, card_path, align=False,
                             progress=lambda f, m: steps.append((f, m)))
    assert isinstance(rec, Reconstruction) and rec.method == "network"
    assert rec.model_name == "tiny" and rec.device == "CPU"
    # resampled from 0.12 to exactly the network's 0.1 A/px: 90 x 80 -> 107 x 95
    assert rec.exit_wave.shape == (107, 95) and rec.exit_wave.dtype == np.complex64
    assert rec.sampling == 0.1
    expected_in = physics.normalize_series(resample_series(series.images, 0.12, 0.1))
    padded = np.pad(expected_in, ((0, 0), (0, 5), (0, 1)), mode="reflect")  # to 112 x 96
    np.testing.assert_allclose(rec.exit_wave, reference_output(padded, kernel)[:107, :95],
                               atol=2e-5)
    assert set(rec.timings) >= {"resample", "normalize", "inference", "total"}
    assert rec.timings["total"] >= rec.timings["inference"]
    fr = [f for f, _ in steps]
    assert fr == sorted(fr) and fr[-1] == 1.0
    assert rec.warnings == [] and rec.shifts.shape == (3, 2)
    meta = rec.to_metadata()
    assert meta["model"] == "tiny" and meta["input_sampling"] == 0.12


def test_resample_series_has_exactly_the_new_pixel_size():
    """A linear ramp in A is reproduced exactly by the cubic spline at the new pixel centres."""
    y, x = np.mgrid[:60, :50] * 0.13
    ims = np.stack([2 * y + 3 * x, 1 - x])
    out = resample_series(ims, 0.13, 0.1)
    assert out.shape == (2, 77, 64)  # floor(59 * 1.3) + 1, floor(49 * 1.3) + 1
    yn, xn = np.mgrid[:77, :64] * 0.1
    inner = (slice(10, -10), slice(10, -10))  # the spline's edge condition decays within ~8 px
    np.testing.assert_allclose(out[0][inner], (2 * yn + 3 * xn)[inner], atol=1e-4)
    np.testing.assert_allclose(out[1][inner], (1 - xn)[inner], atol=1e-4)
    np.testing.assert_array_equal(resample_series(ims, 0.1, 0.1), ims.astype(np.float32))


def test_alignment_is_applied(tiny):
    card_path, _ = tiny
    rng = np.random.default_rng(0)
    from scipy import ndimage

    big = ndimage.gaussian_filter(rng.normal(size=(140, 140)), 2)
    frames = [big[20:120, 20:120], big[22:122, 19:119], big[20:120, 20:120]]
    series = FocalSeries(np.stack(frames) + 5, sampling=0.1, source="drift")
    rec = reconstruct_series(series, card_path)
    np.testing.assert_allclose(rec.shifts[1], [0, 0])
    # the middle frame starts 2 rows lower and 1 column left: image 0 moves by (-2, +1)
    np.testing.assert_allclose(rec.shifts[0], [-2, 1], atol=0.1)
    np.testing.assert_allclose(rec.shifts[2], [-2, 1], atol=0.1)
    assert "align" in rec.timings


def test_validation_errors_and_warnings(tiny):
    card = ModelCard.load(tiny[0])
    with pytest.raises(SeriesMismatchError, match="model 'tiny' expects 3 images, the stack has 2"):
        validate_series(_series(n=2), card)
    s = _series()
    s.images[0, 1, 1] = np.nan
    with pytest.raises(SeriesMismatchError, match="NaN"):
        validate_series(s, card)
    far = _series(sampling=0.25)
    w = validate_series(far, card)
    assert len(w) == 1 and "2.5x coarser" in w[0] and "resampled up" in w[0]
    with pytest.raises(SeriesMismatchError, match="2.5x coarser"):
        validate_series(far, card, strict=True)
    assert validate_series(_series(sampling=0.19), card, strict=True) == []  # 1.9x: fine
    assert "unknown" in validate_series(_series(sampling=None), card)[0]
    assert "differs from the network's" in validate_series(_series(defocus=(-100, 0, 100)), card)[0]
    assert "decreases" in validate_series(_series(defocus=(50, 0, -50)), card)[0]
    assert "outside" in validate_series(_series(defocus=(100, 150, 200)), card)[0]
    const = _series()
    const.images[1] = 3.0
    with pytest.raises(SeriesMismatchError, match="constant"):
        validate_series(const, card)


def test_warnings_reach_the_reconstruction(tiny):
    rec = reconstruct_series(_series(sampling=None), tiny[0], align=False)
    assert rec.sampling == 0.1 and rec.exit_wave.shape == (90, 80)
    assert any("unknown" in w for w in rec.warnings)
    with pytest.raises(SeriesMismatchError, match="unknown"):
        reconstruct_series(_series(sampling=None), tiny[0], strict=True)


def test_cancel_and_bad_arguments(tiny):
    with pytest.raises(ReconstructionCancelled):
        reconstruct_series(_series(), tiny[0], cancel=lambda: True)
    with pytest.raises(ExitWaveError, match="unknown method"):
        reconstruct_series(_series(), tiny[0], method="magic")
    with pytest.raises(ExitWaveError, match="needs a model"):
        reconstruct_series(_series(), None)
    with pytest.raises(SeriesMismatchError, match="2 defocus values were given for 3 images"):
        reconstruct_series(_series(), tiny[0], defocus=[0, 1])


def test_traditional_needs_defocus_and_sampling(monkeypatch):
    from estimate_stand_in import install_no_estimator

    s = _series(defocus=None)
    install_no_estimator(monkeypatch)  # with an estimator, GS takes its defocus (test_physics_check)
    with pytest.raises(SeriesMismatchError, match="needs the defocus"):
        reconstruct_series(s, method="gs")
    with pytest.raises(SeriesMismatchError, match="needs the pixel size"):
        reconstruct_series(_series(sampling=None), method="wiener")


def test_traditional_path_delegates():
    wave = np.ones((64, 64), np.complex128)
    wave[20:30, 20:30] = np.exp(0.3j)
    params = [physics.MicroscopeParameters(defocus=d) for d in (-50.0, 0.0, 50.0)]
    ims = physics.simulate_focal_series(wave, 0.2, params)
    s = FocalSeries(ims.astype(np.float32), sampling=0.2, defocus=[-50, 0, 50])
    rec = reconstruct_series(s, method="wiener", align=False)
    assert rec.method == "wiener" and rec.exit_wave.shape == (64, 64)
    assert rec.sampling == 0.2 and "reconstruct" in rec.timings


def test_network_gets_its_images_in_increasing_defocus(tiny):
    card, _ = tiny
    s = _series()
    ref = reconstruct_series(s, card, align=False)
    rev = FocalSeries(s.images[::-1].copy(), sampling=s.sampling, defocus=s.defocus[::-1],
                      source="test")
    out = reconstruct_series(rev, card, align=False)
    np.testing.assert_allclose(out.exit_wave, ref.exit_wave, atol=1e-6)
    assert any("defocus decreases" in w for w in out.warnings)
    assert not any("defocus decreases" in w for w in ref.warnings)
    # the network does depend on the order: without defoci the file order is kept
    unknown = FocalSeries(s.images[::-1].copy(), sampling=s.sampling, defocus=None, source="test")
    assert not np.allclose(reconstruct_series(unknown, card, align=False).exit_wave,
                           ref.exit_wave, atol=1e-3)


def _drain(gen):
    items = []
    while True:
        try:
            items.append(next(gen))
        except StopIteration as stop:
            return items, stop.value


def test_iter_reconstruct_yields_the_stages_and_returns_the_reconstruction(tiny):
    items, rec = _drain(iter_reconstruct(_series(), tiny[0]))
    assert isinstance(rec, Reconstruction)
    messages = [m for _, m in items]
    assert messages[0] == "loading the network" and messages[-1] == "done"
    assert {"aligning", "resampling", "normalising", "inference on CPU"} <= set(messages)
    fr = [f for f, _ in items]
    assert fr == sorted(fr) and fr[0] == 0.0 and fr[-1] == 1.0
    # the blocking call is the generator run to its end: the same exit wave, the same progress
    seen = []
    blocking = reconstruct_series(_series(), tiny[0], progress=lambda f, m: seen.append((f, m)))
    np.testing.assert_array_equal(blocking.exit_wave, rec.exit_wave)
    assert seen == items


def test_iter_reconstruct_stops_where_the_consumer_stops(tiny, monkeypatch):
    """Nothing runs between two items: a generator closed after "aligning" never infers."""
    from napari_exitwave import inference

    calls = []
    monkeypatch.setattr(inference.OnnxReconstructor, "predict",
                        lambda self, *a, **k: calls.append(1))
    gen = iter_reconstruct(_series(), tiny[0])
    for _, message in gen:
        if message == "aligning":
            gen.close()
    assert calls == []


def test_iter_reconstruct_yields_every_gs_iteration():
    wave = np.ones((48, 48), np.complex128)
    wave[16:30, 16:30] = np.exp(0.3j)
    params = [physics.MicroscopeParameters(defocus=d) for d in (-50.0, 0.0, 50.0)]
    s = FocalSeries(physics.simulate_focal_series(wave, 0.2, params).astype(np.float32),
                    sampling=0.2, defocus=[-50, 0, 50])
    items, rec = _drain(iter_reconstruct(s, method="gs", align=False, n_iter=5))
    its = [m for _, m in items if m.startswith("Gerchberg-Saxton iteration")]
    assert len(its) == 5 and "5/5" in its[-1]
    assert rec.method == "gs" and rec.device == "CPU"
    assert rec.metadata["wiener_eps"] == pytest.approx(1e-2)
    # cancel is polled between the iterations
    calls = []
    with pytest.raises(ReconstructionCancelled):
        reconstruct_series(s, method="gs", align=False, n_iter=50,
                           cancel=lambda: calls.append(1) or len(calls) > 4)
    assert len(calls) == 5
