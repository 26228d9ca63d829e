"""The aberration fit with the exit wave held fixed (napari_exitwave.aberration_fit): it must
recover the bundled sample's aberrations from a start that lacks them, leave what it is not
asked to fit alone, stay inside the training ranges, and refuse input it cannot use."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from estimate_stand_in import true_parameters

from napari_exitwave import physics
from napari_exitwave.aberration_fit import (FIT_PARAMETERS, MTF_PARAMETERS, fit_aberrations,
                                            hold_noise_variance, table_values)
from napari_exitwave.data import load_sample_exit_wave, load_sample_series
from napari_exitwave.residual import noise_variance_factor


@pytest.fixture(scope="module")
def sample():
    series = load_sample_series("mos2")
    wave, s, _ = load_sample_exit_wave("mos2")
    return wave, s, np.asarray(series.images, np.float64), true_parameters()


def _start(true, ddf=0.0):
    """What the estimator gives: defocus off by ``ddf``, no C12 or C21, Cs 2 um off."""
    return [dataclasses.replace(p, defocus=p.defocus + ddf, astigmatism=0.0, coma=0.0,
                                Cs=p.Cs + 2e4) for p in true]


def test_recovers_the_sample_aberrations_with_the_true_wave(sample):
    wave, s, images, true = sample
    t = true[0]
    assert t.astigmatism > 3 and t.coma > 100  # the sample has both: the test can fail
    fit = fit_aberrations(wave, s, images, _start(true, ddf=20.0))
    p = fit.params[0]
    assert fit.misfit < 0.7 * fit.start_misfit
    # defocus: the shared offset found, the step kept exactly
    assert p.defocus == pytest.approx(t.defocus, abs=6.0)
    steps = np.diff([q.defocus for q in fit.params])
    assert steps == pytest.approx(np.diff([q.defocus for q in true]), abs=1e-9)
    # C12 as a vector (the angle is only meaningful with the amplitude)
    c12 = lambda q: q.astigmatism * np.exp(2j * q.astigmatism_angle)  # noqa: E731
    c21 = lambda q: q.coma * np.exp(1j * q.coma_angle)  # noqa: E731
    assert abs(c12(p) - c12(t)) < 1.5  # A, of 6 A
    assert abs(c21(p) - c21(t)) < 40  # A, of 150 A
    assert p.Cs == pytest.approx(t.Cs, abs=1e4)  # 1 um, from 2 um off
    # what is not fitted, and the doses, stay the start's
    assert p.focal_spread == t.focal_spread
    assert [q.dose for q in fit.params] == [q.dose for q in true]
    d = fit.to_dict()
    assert set(d["changes"]) == set(FIT_PARAMETERS) and d["evaluations"] == fit.evaluations
    assert "C12" in fit.summary() and "misfit" in fit.summary()
    # the widget's "fitted" column: by the estimate table's row names, with units
    values = table_values(d)
    assert set(values) == {"defocus_mean", "defocus_step", "Cs", "C12", "phi12", "C21", "phi21"}
    assert values["defocus_step"] == "50.0 A" and values["Cs"].endswith(" um")
    assert values["C12"] == f"{p.astigmatism:.1f} A"


def test_coarse_to_fine_leaves_a_wrong_valley(sample):
    """A start 16 um off in Cs and 40 A in defocus: one Nelder-Mead search from it stops in a
    wrong valley of the misfit (Cs +13.5 um, misfit 0.073 on this sample); the grid search on a
    quarter of the band finds the right one."""
    wave, s, images, true = sample
    start = [dataclasses.replace(p, defocus=p.defocus - 40, Cs=p.Cs + 16e4, astigmatism=0.0,
                                 coma=0.0) for p in true]
    local = fit_aberrations(wave, s, images, start, coarse=False)
    found = fit_aberrations(wave, s, images, start)
    assert found.params[0].Cs == pytest.approx(true[0].Cs, abs=1e4)
    assert found.params[0].defocus == pytest.approx(true[0].defocus, abs=6.0)
    assert found.misfit < 0.6 * local.misfit


def test_fitting_nothing_returns_the_start(sample):
    wave, s, images, true = sample
    start = _start(true, ddf=20.0)
    fit = fit_aberrations(wave, s, images, start, fit=())
    assert fit.misfit == fit.start_misfit and fit.evaluations == 1 and fit.changes == {}
    for a, b in zip(fit.params, start):
        assert a.defocus == b.defocus and a.Cs == b.Cs and a.dose == b.dose
        assert a.blur_sigma(s) == pytest.approx(b.blur_sigma(s))


def test_only_the_named_parameters_move(sample):
    wave, s, images, true = sample
    start = _start(true, ddf=20.0)
    fit = fit_aberrations(wave, s, images, start, fit=("defocus",), max_evaluations=60)
    assert set(fit.changes) == {"defocus"}
    assert set(table_values(fit.to_dict())) == {"defocus_mean", "defocus_step"}
    assert fit.params[0].Cs == start[0].Cs and fit.params[0].astigmatism == 0.0
    assert abs(fit.changes["defocus"]) <= 50.0 + 1e-9  # max_defocus_change


def test_fitted_values_stay_in_the_training_ranges(sample):
    """A wrong wave (shifted columns) pulls the fit toward whatever hides the error; the
    amplitudes must still stay within Table 1 and a margin of 10%."""
    wave, s, images, true = sample
    r = physics.ParameterRanges()
    fit = fit_aberrations(np.roll(wave, (3, 2), axis=(0, 1)), s, images, _start(true),
                          max_evaluations=150)
    p = fit.params[0]
    assert p.astigmatism <= 1.1 * r.astigmatism[1] + 1e-9
    assert p.coma <= 1.1 * r.coma[1] + 1e-9
    span = r.Cs[1] - r.Cs[0]
    assert r.Cs[0] - 0.1 * span - 1e-6 <= p.Cs <= r.Cs[1] + 0.1 * span + 1e-6
    assert math.isfinite(fit.misfit) and fit.misfit <= fit.start_misfit


def test_bad_input_is_refused(sample):
    wave, s, images, true = sample
    with pytest.raises(ValueError, match="cannot fit"):
        fit_aberrations(wave, s, images, true, fit=("defocus", "pixel_size"))
    with pytest.raises(ValueError, match="one parameter set per image"):
        fit_aberrations(wave, s, images[:2], true)
    with pytest.raises(ValueError, match="shaped like the wave"):
        fit_aberrations(wave[:-4], s, images, true)
    with pytest.raises(ValueError, match="not zero-mean"):
        fit_aberrations(wave, s, physics.normalize_series(images), true)


# the noise-spectrum MTF of the bundled sample (the demo): c2 at its bound, the level traded
# against the dose (true: c1 0.1, c2 0.15, c3 1.2, dose 1e4)
SPECTRUM_MTF = dict(mtf_c1=0.03, mtf_c2=0.10, mtf_c3=0.91, dose=6200.0)


def test_mtf_fit_in_the_signal_band_holds_the_noise_variance(sample):
    """With the noise spectrum's MTF the sample's wave does not explain its images; fitting
    the MTF in the signal band (after the aberrations) does, within the training ranges, and
    the dose moves so that the pixel noise variance stays the spectrum's."""
    wave, s, images, true = sample
    start = [dataclasses.replace(p, **SPECTRUM_MTF) for p in true]
    plain = fit_aberrations(wave, s, images, start, fit=("defocus",), max_evaluations=60)
    fit = fit_aberrations(wave, s, images, start, fit=("defocus",) + MTF_PARAMETERS,
                          max_evaluations=60)
    p = fit.params[0]
    assert set(MTF_PARAMETERS) <= set(fit.changes)
    assert fit.misfit < 0.85 * plain.misfit  # 0.035 -> 0.025 on this sample
    # the MTF at the sample's strongest fringes (q ~ 0.2 Nyquist) moves up, toward the truth
    # and past it: the bundled wave is the training target, folded with a 15 pm Gaussian,
    # which the MTF makes up for
    q = 0.2
    mtf = lambda c: physics.mtf(q, c.mtf_c1, c.mtf_c2, c.mtf_c3)  # noqa: E731
    assert mtf(p) > mtf(true[0]) > mtf(start[0])
    r = physics.ParameterRanges()
    for n, (lo, hi) in zip(MTF_PARAMETERS, (r.mtf_c1, r.mtf_c2, r.mtf_c3)):
        assert lo - 1e-9 <= getattr(p, n) <= hi + 1e-9
    # noise variance held: dose * mean(MTF^2) as the start's, for every image
    for a, b in zip(fit.params, start):
        assert noise_variance_factor(wave.shape, a) / a.dose == pytest.approx(
            noise_variance_factor(wave.shape, b) / b.dose, rel=1e-9)
    assert p.dose > start[0].dose  # a higher MTF passes more noise: it took fewer electrons
    assert "MTF c1" in fit.summary()
    values = table_values(fit.to_dict())
    assert values["detector MTF"] == f"c1 {p.mtf_c1:.2f}, c2 {p.mtf_c2:.3f}, c3 {p.mtf_c3:.2f}"
    assert values["dose"].endswith("e/A^2")


def test_no_mtf_is_fitted_without_one_to_start_from(sample):
    """A start without a detector MTF (``mtf_c1 = 1``: none measured) keeps none."""
    wave, s, images, true = sample
    start = [dataclasses.replace(p, mtf_c1=1.0) for p in true]
    fit = fit_aberrations(wave, s, images, start, fit=("defocus",) + MTF_PARAMETERS,
                          max_evaluations=40)
    assert set(fit.changes) == {"defocus"}
    assert all(q.mtf_c1 == 1.0 and q.dose == p.dose for q, p in zip(fit.params, start))
    assert "detector MTF" not in table_values(fit.to_dict())


def test_held_noise_variance_is_the_measured_one():
    """Vacuum images at the held dose through the new MTF have the pixel noise of the old:
    the shot noise the image model draws, not only the formula."""
    rng = np.random.default_rng(3)
    old = physics.MicroscopeParameters(dose=6200.0, **{k: v for k, v in SPECTRUM_MTF.items()
                                                        if k != "dose"})
    new = dataclasses.replace(old, mtf_c1=0.2, mtf_c2=0.2, mtf_c3=1.4)
    new = dataclasses.replace(new, dose=hold_noise_variance((256, 256), old, new))
    assert new.dose > 2 * old.dose  # the MTFs differ enough for the test to fail

    def noise(p):
        img = physics.simulate_image(np.ones((256, 256), np.complex128), 0.105, p, rng=rng)
        return float(np.var(img))

    assert noise(new) == pytest.approx(noise(old), rel=0.03)
    assert hold_noise_variance((64, 64), old, old) == pytest.approx(old.dose)
    assert hold_noise_variance((64, 64), dataclasses.replace(old, dose=math.inf), new) == math.inf
