"""The detector MTF and the dose from the noise power spectrum (napari_exitwave.detector)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from napari_exitwave import physics
from napari_exitwave.detector import fit_noise_spectrum, noise_spectrum
from napari_exitwave.residual import noise_variance_factor

S = 0.105


def _noise_images(rng, dose, c, shape=(256, 256), n=3):
    """Flat illumination (vacuum = 1): Poisson counts through the MTF, nothing else."""
    out = []
    for _ in range(n):
        counts = rng.poisson(dose * S**2, size=shape) / (dose * S**2)
        out.append(physics.apply_mtf(counts, *c))
    return np.stack(out)


@pytest.mark.parametrize("c, dose", [((-0.5, 0.15, 1.2), 3e3), ((0.1, 0.12, 0.8), 3e4),
                                     ((-0.2, 0.18, 1.6), 600.0)])
def test_pure_noise_gives_back_the_mtf_and_the_dose(c, dose):
    """Analytic case: white shot noise through a known MTF. The spectrum is MTF^2 / (D s^2)
    at every frequency, so fitted from q = 0.02 on, the fit recovers the MTF over the whole
    band and the dose. (From the default q_min = 0.45 on, as images with signal need, the
    tail leaves the MTF's level and the dose partly traded: the next test.)"""
    rng = np.random.default_rng(0)
    fit = fit_noise_spectrum(_noise_images(rng, dose, c), S, q_min=0.02)
    q = np.linspace(0, 1, 41)
    assert np.max(np.abs(fit.mtf_at(q) - physics.mtf(q, *c))) < 0.06
    assert np.all(np.abs(np.log10(fit.dose / dose)) < 0.06)
    assert fit.consistent


def test_spectrum_of_a_flat_noise_image_is_its_variance():
    rng = np.random.default_rng(1)
    img = 1.0 + 0.1 * rng.standard_normal((128, 128))
    q, p, count = noise_spectrum(img, q_min=0.2)
    assert np.all(q >= 0.2) and count.sum() > 0.8 * 128 * 128 * (1 - np.pi * 0.04 / 4)
    assert np.average(p, weights=count) == pytest.approx(0.01, rel=0.03)


def test_simulated_series_noise_level_is_measured():
    """On real image-model series (signal below the information limit, noise above it) the
    fitted pixel noise variance, what the residual's chi-square divides by, is within 15% of
    the truth, and the spectrum is consistent with the noise model."""
    from napari_exitwave.data import load_sample_exit_wave

    wave, sampling, _ = load_sample_exit_wave("mos2")
    rng = np.random.default_rng(3)
    errs = []
    for _ in range(6):
        ps = physics.sample_parameters(rng, 3)
        images = physics.simulate_focal_series(wave, sampling, ps, rng=rng)
        fit = fit_noise_spectrum(images, sampling)
        p = ps[0]
        got = dataclasses.replace(p, mtf_c1=fit.mtf[0], mtf_c2=fit.mtf[1], mtf_c3=fit.mtf[2])
        true_var = noise_variance_factor(wave.shape, p) / p.dose
        fit_var = noise_variance_factor(wave.shape, got) / fit.dose[0]
        errs.append(abs(np.log(fit_var / true_var)))
        assert fit.consistent
    assert np.median(errs) < np.log(1.15)


def test_gain_does_not_matter_and_normalised_images_are_refused():
    rng = np.random.default_rng(4)
    images = _noise_images(rng, 5e3, (-0.3, 0.15, 1.0), shape=(96, 96), n=2)
    a = fit_noise_spectrum(images, S)
    b = fit_noise_spectrum(37.0 * images, S)
    assert np.allclose(a.dose, b.dose, rtol=1e-6) and np.allclose(a.mtf, b.mtf, atol=1e-6)
    with pytest.raises(ValueError, match="normalised"):
        fit_noise_spectrum(physics.normalize_series(images), S)
    with pytest.raises(ValueError, match="32"):
        fit_noise_spectrum(images[:, :16, :16], S)


def test_params_on_grid_keeps_the_mtf_of_the_physical_frequency():
    from napari_exitwave._check import params_on_grid

    p = physics.MicroscopeParameters(mtf_c1=-0.3, mtf_c2=0.15, mtf_c3=1.2, blur=1.0)
    (q,) = params_on_grid([p], 0.05, 0.105)  # detector grid 0.05 A/px, images at 0.105
    k = np.linspace(0, 4.7, 30)  # 1/A, inside both grids' Nyquist frequencies
    on_detector = physics.mtf(2 * 0.05 * k, p.mtf_c1, p.mtf_c2, p.mtf_c3)
    on_images = physics.mtf(2 * 0.105 * k, q.mtf_c1, q.mtf_c2, q.mtf_c3)
    np.testing.assert_allclose(on_images, on_detector, atol=1e-12)
    assert q.blur_unit == "A" and q.blur == pytest.approx(0.05)
