"""The shared image model (napari_exitwave.physics): analytic cases and parity with abTEM."""

from __future__ import annotations

import math

import numpy as np
import pytest

from napari_exitwave import physics
from napari_exitwave.physics import MicroscopeParameters


def _radial_grid(shape, sampling):
    ky, kx = physics.spatial_frequencies(shape, sampling)
    return np.sqrt(kx**2 + ky**2) * np.ones(shape)


def test_wavelength_and_debye_waller_values():
    assert physics.energy2wavelength(50e3) == pytest.approx(0.05357, abs=2e-5)
    assert physics.energy2wavelength(300e3) == pytest.approx(0.01969, abs=2e-5)
    # Eq. (1): mass of S, 580 K, 300 K -> 0.0030 A^2 (paper); heavier atoms vibrate less
    assert physics.debye_waller_u2() == pytest.approx(0.0030, abs=1e-4)
    assert physics.debye_waller_u2(mass_amu=95.95) < physics.debye_waller_u2()


def test_ctf_at_scherzer_matches_analytic_chi():
    energy = 50e3
    lam = physics.energy2wavelength(energy)
    cs = 10e4  # 10 um
    defocus = 1.2 * math.sqrt(cs * lam)  # Scherzer underfocus, abTEM: defocus = -C10 > 0
    shape, sampling = (64, 96), 0.1
    p = MicroscopeParameters(defocus=defocus, Cs=cs, energy=energy)
    k = _radial_grid(shape, sampling)
    chi = np.pi * lam * k**2 * (-defocus) + 0.5 * np.pi * cs * lam**3 * k**4
    np.testing.assert_allclose(physics.aberration_phase(shape, sampling, p), chi, atol=1e-9)
    np.testing.assert_allclose(physics.ctf(shape, sampling, p), np.exp(-1j * chi), atol=1e-12)
    # Scherzer: sin(chi) keeps one sign over the passband up to the first zero
    k_zero = 1.51 / (cs**0.25 * lam**0.75)
    band = (k > 0.05 * k_zero) & (k < 0.9 * k_zero)
    assert np.all(np.sin(chi[band]) < 0) or np.all(np.sin(chi[band]) > 0)


@pytest.mark.parametrize("params", [
    dict(defocus=80.0, Cs=-5e4),
    dict(defocus=-40.0, Cs=12e4, astigmatism=20.0, astigmatism_angle=0.7, coma=400.0,
         coma_angle=2.1),
    dict(defocus=30.0, Cs=2e4, focal_spread=15.0),
])
def test_ctf_matches_abtem_including_sign_convention(params):
    abtem = pytest.importorskip("abtem")
    energy, sampling, shape = 50e3, 0.1, (48, 64)  # non-square: catches x/y mix-ups
    rng = np.random.default_rng(0)
    wave = np.exp(1j * 0.3 * rng.standard_normal(shape)) * (1 + 0.1 * rng.standard_normal(shape))
    p = MicroscopeParameters(energy=energy, **params)
    ours = physics.apply_ctf(wave, sampling, p)
    ctf = abtem.CTF(energy=energy, defocus=p.defocus, Cs=p.Cs, C12=p.astigmatism,
                    phi12=p.astigmatism_angle, C21=p.coma, phi21=p.coma_angle,
                    focal_spread=p.focal_spread)
    # abTEM arrays are (x, y): transpose in and out; float64, since chi reaches 1e4 rad
    with abtem.config.set({"precision": "float64"}):
        waves = abtem.Waves(wave.T.astype(np.complex128), energy=energy, sampling=sampling)
        theirs = np.asarray(waves.apply_ctf(ctf).compute().array).T
    # (abTEM's physical constants differ by 5e-9 in lambda: ~1e-4 rad at chi ~ 3e4 rad)
    np.testing.assert_allclose(ours, theirs, atol=5e-4)
    # and not the opposite sign convention (defocus = +C10)
    flipped = MicroscopeParameters(**{**p.to_dict(), "defocus": -p.defocus})
    assert np.abs(physics.apply_ctf(wave, sampling, flipped) - theirs).max() > 1e-2


def test_mtf_limits():
    assert physics.mtf(0.0, -0.3, 0.15, 1.2) == pytest.approx(1.0)
    for c1 in (-0.6, 0.0, 0.2):
        assert physics.mtf(1e9, c1, 0.1, 1.8) == pytest.approx(c1, abs=1e-6)
    q = np.linspace(0, 1, 50)
    m = physics.mtf(q, 0.1, 0.15, 1.0)
    assert np.all(np.diff(m) < 0)  # monotonic decay for c1 < 1
    # at q = 2 c2 the MTF is halfway between 1 and c1
    assert physics.mtf(0.3, 0.2, 0.15, 1.5) == pytest.approx(0.5 * (1 + 0.2))
    with pytest.raises(ValueError):
        physics.mtf(q, 0.1, 0.0, 1.0)


def test_apply_mtf_keeps_the_mean_and_damps_nyquist():
    rng = np.random.default_rng(1)
    img = 1 + rng.standard_normal((64, 64))
    out = physics.apply_mtf(img, c1=0.0, c2=0.1, c3=1.5)
    assert out.mean() == pytest.approx(img.mean(), rel=1e-12)
    assert out.std() < 0.6 * img.std()
    checker = np.indices((8, 8)).sum(0) % 2 * 2.0 - 1  # a Nyquist pattern
    expected = physics.mtf(math.sqrt(2), 0.0, 0.1, 1.5)  # at the corner of the grid
    assert physics.apply_mtf(checker, 0.0, 0.1, 1.5)[0, 0] == pytest.approx(
        expected * checker[0, 0], rel=1e-9)


def test_poisson_noise_has_the_requested_dose():
    rng = np.random.default_rng(2)
    dose, sampling = 400.0, 0.1  # 4 electrons per pixel
    img = physics.apply_dose(np.ones((256, 256)), sampling, dose, rng)
    counts = img * dose * sampling**2
    assert np.allclose(counts, np.round(counts))  # whole electrons
    assert counts.mean() == pytest.approx(4.0, rel=0.01)
    assert counts.var() == pytest.approx(4.0, rel=0.05)  # Poisson: variance = mean
    half = physics.apply_dose(0.5 * np.ones((256, 256)), sampling, dose, rng)
    assert half.mean() == pytest.approx(0.5, rel=0.02)
    assert np.array_equal(physics.apply_dose(np.ones((4, 4)), sampling, math.inf), np.ones((4, 4)))
    with pytest.raises(ValueError):
        physics.apply_dose(np.ones((4, 4)), sampling, -1.0)


def test_weak_phase_object_without_aberrations_has_no_contrast():
    rng = np.random.default_rng(3)
    phase = 0.05 * physics.gaussian_blur(rng.standard_normal((64, 64)), 0.1, 0.3)
    wave = np.exp(1j * phase)
    img = physics.simulate_image(wave, 0.1, MicroscopeParameters())
    assert np.abs(img - 1).max() < 1e-6
    # with defocus the same object shows contrast
    img = physics.simulate_image(wave, 0.1, MicroscopeParameters(defocus=100.0))
    assert img.std() > 1e-3


def test_vacuum_image_is_flat_and_has_unit_mean():
    wave = np.ones((32, 32), complex)
    p = MicroscopeParameters(defocus=50.0, Cs=1e4, focal_spread=10.0, blur=1.0, mtf_c1=0.1)
    img = physics.simulate_image(wave, 0.1, p, new_sampling=0.2)
    assert img.shape == (16, 16)
    np.testing.assert_allclose(img, 1.0, atol=1e-9)


def test_fourier_resample_keeps_mean_and_band_limited_content():
    y, x = np.mgrid[0:64, 0:64]
    wave = np.exp(1j * 0.2 * np.cos(2 * np.pi * 3 * x / 64))  # band-limited
    out, s = physics.fourier_resample(wave, 0.05, 0.1)
    assert out.shape == (32, 32) and s == pytest.approx(0.1)
    assert out.mean() == pytest.approx(wave.mean())
    np.testing.assert_allclose(out, wave[::2, ::2], atol=1e-3)


def test_sample_parameters_spans_ten_nanometres():
    rng = np.random.default_rng(4)
    for _ in range(20):
        ps = physics.sample_parameters(rng, 3)
        d = np.array([p.defocus for p in ps])
        assert np.all(np.abs(np.diff(d) - 50.0) <= 1.0)
        assert d.min() >= -150 and d.max() <= 150
        assert len({p.Cs for p in ps}) == 1
        assert 10**2.5 <= ps[0].dose <= 1e5
    d5 = [p.defocus for p in physics.sample_parameters(rng, 5)]
    assert d5[-1] - d5[0] == pytest.approx(100.0, abs=4.0)


def test_normalize_series():
    rng = np.random.default_rng(5)
    imgs = 3 + 2 * rng.standard_normal((3, 16, 16))
    out = physics.normalize_series(imgs)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.mean(axis=(1, 2)), 0, atol=1e-6)
    np.testing.assert_allclose(out.std(axis=(1, 2)), 1, atol=1e-5)
    with pytest.raises(ValueError):
        physics.normalize_series(np.full((2, 4, 4), np.nan))


def test_blur_is_in_pixels_of_the_image_grid_by_default():
    """Table 1's blur (0.5-1.5) is in pixels of the image grid (DESIGN.md): the same image as
    a blur of ``sigma * sampling`` A, and the MoS2 {110} fringe (1.58 A) survives it."""
    rng = np.random.default_rng(6)
    wave = np.exp(1j * 0.3 * physics.gaussian_blur(rng.standard_normal((64, 64)), 0.1, 0.2))
    px = MicroscopeParameters(defocus=30.0, blur=1.5)
    angstrom = MicroscopeParameters(defocus=30.0, blur=1.5 * 0.2, blur_unit="A")
    assert px.blur_unit == "px" and px.blur_sigma(0.2) == pytest.approx(0.3)
    np.testing.assert_allclose(physics.simulate_image(wave, 0.1, px, new_sampling=0.2),
                               physics.simulate_image(wave, 0.1, angstrom, new_sampling=0.2),
                               atol=1e-12)
    assert not np.allclose(physics.simulate_image(wave, 0.1, px),
                           physics.simulate_image(wave, 0.1, angstrom))
    draws = [physics.sample_parameters(rng, 3)[0] for _ in range(200)]
    assert {p.blur_unit for p in draws} == {"px"}
    assert 0.5 <= min(p.blur for p in draws) and max(p.blur for p in draws) <= 1.5
    # the largest Table-1 blur at 0.105 A/px keeps 83% of the {110} fringe (it was 4e-4 at 1 A)
    sigma = max(p.blur_sigma(0.105) for p in draws)
    assert math.exp(-2 * math.pi**2 * sigma**2 / 1.58**2) > 0.8
    # the unit survives the JSON round trip; a dict without it (or an unknown unit) is checked
    assert MicroscopeParameters.from_dict(angstrom.to_dict()) == angstrom
    assert MicroscopeParameters.from_dict({"blur": 1.0}).blur_unit == "px"
    with pytest.raises(ValueError, match="blur_unit"):
        MicroscopeParameters(blur=1.0, blur_unit="nm")
    with pytest.raises(ValueError, match="blur_unit"):
        physics.ParameterRanges(blur_unit="um")
    old = physics.ParameterRanges(blur_unit="A")
    assert physics.ParameterRanges.from_dict(old.to_dict()) == old
    assert physics.sample_parameters(rng, 2, old)[0].blur_unit == "A"


@pytest.mark.parametrize("shape, sampling, new_sampling", [
    ((64, 64), 0.1, None), ((63, 65), 0.05, 0.105), ((64, 96), 0.1, 0.2)])
def test_simulate_image_equals_the_image_model_step_by_step(shape, sampling, new_sampling):
    """The fast path (one FFT per series, real FFTs, blur inside the resampling) gives the image
    model of the module doc built from its public steps."""
    rng = np.random.default_rng(8)
    wave = np.exp(1j * 0.4 * physics.gaussian_blur(rng.standard_normal(shape), sampling, 0.2))
    p = MicroscopeParameters(defocus=40.0, Cs=2e4, astigmatism=5.0, coma=100.0,
                             focal_spread=8.0, blur=1.2, mtf_c1=0.1, mtf_c2=0.15, mtf_c3=1.2)
    up, _ = physics.fourier_resample(physics.apply_ctf(wave, sampling, p), sampling, sampling / 2)
    img, actual = physics.fourier_resample(np.abs(up) ** 2, sampling / 2,
                                           new_sampling or sampling)
    img = physics.gaussian_blur(img, actual, p.blur_sigma(actual))
    img = physics.apply_mtf(img, p.mtf_c1, p.mtf_c2, p.mtf_c3)
    fast = physics.simulate_focal_series(wave, sampling, [p], new_sampling)[0]
    assert fast.shape == img.shape
    np.testing.assert_allclose(fast, img, atol=1e-6 * np.abs(img).max())
