"""The physics residual: noise level for the true exit wave, clearly above it for wrong ones."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from napari_exitwave import physics
from napari_exitwave.residual import physics_residual

SAMPLING = 0.1


def _wave(seed: int, n: int = 96) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:n, :n] * SAMPLING
    phase = np.zeros((n, n))
    for y0, x0 in rng.uniform(1, n * SAMPLING - 1, (40, 2)):
        phase += 0.4 * np.exp(-((yy - y0) ** 2 + (xx - x0) ** 2) / (2 * 0.25**2))
    return np.exp(1j * phase) * (1 - 0.05 * phase)


def _params(dose=3e3, mtf=True):
    p = physics.sample_parameters(np.random.default_rng(4), 3)
    return [dataclasses.replace(q, dose=dose, **({} if mtf else {"mtf_c1": 1.0})) for q in p]


@pytest.mark.parametrize("mtf", [False, True])
def test_true_wave_and_parameters_give_noise_level(mtf):
    wave, params = _wave(0), _params(mtf=mtf)
    images = physics.simulate_focal_series(wave, SAMPLING, params,
                                           rng=np.random.default_rng(1))
    r = physics_residual(wave, SAMPLING, images, params)
    assert r.reduced_chi2 == pytest.approx(1.0, abs=0.12), r.chi2
    np.testing.assert_allclose(r.gain, 1.0, atol=0.02)
    # a camera's gain, and a known offset (dark level), do not change it
    scaled = physics_residual(wave, SAMPLING, 250 * images + 30, params, offset=30)
    assert scaled.reduced_chi2 == pytest.approx(r.reduced_chi2, rel=1e-6)
    np.testing.assert_allclose(scaled.gain, 250 * r.gain, rtol=1e-6)
    with pytest.raises(ValueError, match="not zero-mean normalised"):
        physics_residual(wave, SAMPLING, physics.normalize_series(images), params)


def test_wrong_wave_order_or_parameters_raise_the_residual():
    wave, params = _wave(0), _params()
    images = physics.simulate_focal_series(wave, SAMPLING, params,
                                           rng=np.random.default_rng(1))
    good = physics_residual(wave, SAMPLING, images, params).reduced_chi2
    other = physics_residual(_wave(7), SAMPLING, images, params).reduced_chi2
    vacuum = physics_residual(np.ones_like(wave), SAMPLING, images, params).reduced_chi2
    # too little contrast (a network's typical error) must not lower the figure: the gain
    # comes from the means, not from a fit that would scale a weak wave up
    weak = physics_residual(np.exp(0.5j * np.angle(wave)) * np.abs(wave), SAMPLING, images,
                            params).reduced_chi2
    reversed_order = physics_residual(wave, SAMPLING, images[::-1], params).reduced_chi2
    wrong_defocus = [dataclasses.replace(p, defocus=p.defocus + 30) for p in params]
    defocus_off = physics_residual(wave, SAMPLING, images, wrong_defocus).reduced_chi2
    for bad in (other, vacuum, weak, reversed_order, defocus_off):
        assert bad > 3 * good, (good, other, vacuum, weak, reversed_order, defocus_off)


def test_bad_inputs_are_clear_errors():
    wave, params = _wave(0, 48), _params()
    images = physics.simulate_focal_series(wave, SAMPLING, params)
    with pytest.raises(ValueError, match="dose"):
        physics_residual(wave, SAMPLING, images, [dataclasses.replace(p, dose=np.inf)
                                                  for p in params])
    with pytest.raises(ValueError, match="parameter sets"):
        physics_residual(wave, SAMPLING, images, params[:2])
    with pytest.raises(ValueError, match="like the exit wave"):
        physics_residual(wave, SAMPLING, images[:, :40], params)
    with pytest.raises(ValueError, match="border"):
        physics_residual(wave, SAMPLING, images, params, border=30)


def test_misfit_is_dose_free_and_zero_for_the_truth():
    wave = _wave(0)
    weak = np.exp(0.5j * np.angle(wave)) * np.abs(wave)
    out = {}
    for dose in (1e3, 1e4):
        params = _params(dose=dose)
        images = physics.simulate_focal_series(wave, SAMPLING, params,
                                               rng=np.random.default_rng(1))
        true = physics_residual(wave, SAMPLING, images, params)
        bad = physics_residual(weak, SAMPLING, images, params)
        assert true.misfit_rms < 0.3 * bad.misfit_rms
        out[dose] = bad
    # ten times the dose: the chi-square of the same wrong wave grows, its misfit stays
    assert out[1e4].reduced_chi2 > 3 * out[1e3].reduced_chi2
    assert out[1e4].misfit_rms == pytest.approx(out[1e3].misfit_rms, rel=0.25)
