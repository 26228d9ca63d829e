"""Tests of the traditional focal-series reconstructions (Wiener filter, Gerchberg-Saxton).

Synthetic objects: Gaussian "atoms" as a phase object (vacuum 1), imaged with the shared model
(physics.simulate_focal_series: CTF with Cs and the focal-spread envelope, no MTF, infinite
dose), so the reconstructions are checked against a known truth and the physics' conventions.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_exitwave import _array, physics, traditional
from napari_exitwave.errors import ExitWaveError, ReconstructionCancelled, SeriesMismatchError

SAMPLING = 0.1  # A/px
CS = -10e4  # -10 um, in A
FOCAL_SPREAD = 10.0  # A
DEFOCUS = np.linspace(-50.0, 50.0, 11)  # 11 images, 1 nm steps (Larsen et al. Sec. 6)


def atoms_wave(n: int = 96, n_atoms: int = 30, strength: float = 0.3, sigma: float = 0.3,
               seed: int = 0, band_limit: float | None = None) -> np.ndarray:
    """A pure phase object: Gaussian "atoms" of peak phase ``strength`` rad (periodic)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:n, :n] * SAMPLING
    extent = n * SAMPLING
    phase = np.zeros((n, n))
    for cy, cx in rng.uniform(0, extent, (n_atoms, 2)):
        dy = (y - cy + extent / 2) % extent - extent / 2
        dx = (x - cx + extent / 2) % extent - extent / 2
        phase += strength * np.exp(-(dx**2 + dy**2) / (2 * sigma**2))
    wave = np.exp(1j * phase)
    if band_limit is not None:
        ky, kx = physics.spatial_frequencies(wave.shape, SAMPLING)
        wave = np.fft.ifft2(np.fft.fft2(wave) * (np.hypot(ky, kx) < band_limit))
    return wave


def series(wave, defocus=DEFOCUS, Cs=CS, focal_spread=FOCAL_SPREAD):
    params = [physics.MicroscopeParameters(defocus=float(d), Cs=Cs, focal_spread=focal_spread)
              for d in defocus]
    return physics.simulate_focal_series(wave, SAMPLING, params)


def highpass(wave, sigma_px: float = 8.0):
    """Remove the long wavelengths as Larsen et al. Sec. 6 do (Gaussian of 8 px), vacuum 1."""
    return wave - physics.gaussian_blur(wave, SAMPLING, sigma_px * SAMPLING) + 1


def rms(a) -> float:
    return float(np.sqrt(np.mean(np.abs(a) ** 2)))


def envelope_mask(shape, cutoff=traditional.DEFAULT_ENVELOPE_CUTOFF):
    env = physics.temporal_envelope(shape, SAMPLING, FOCAL_SPREAD)
    return env > cutoff


def test_transfer_functions_are_the_physics_ctf():
    ab = {"astigmatism": 12.0, "astigmatism_angle": 0.4, "coma": 300.0, "coma_angle": 1.0}
    h = traditional.transfer_functions((32, 48), SAMPLING, DEFOCUS, Cs=CS,
                                       focal_spread=FOCAL_SPREAD, aberrations=ab)
    for d, hn in zip(DEFOCUS, h):
        p = physics.MicroscopeParameters(defocus=d, Cs=CS, focal_spread=FOCAL_SPREAD, **ab)
        np.testing.assert_allclose(hn, physics.ctf((32, 48), SAMPLING, p), atol=1e-9)


# ------------------------------------------------------------------------------------------
# Wiener filter: exact inverse of the linear imaging model
@pytest.mark.parametrize("eps, tol, detector", [
    (0.0, 1e-9, {}), (1e-9, 1e-6, {}),
    (0.0, 1e-9, {"blur": 0.3, "mtf": (0.1, 0.15, 1.2)})])
def test_wiener_is_the_exact_inverse_of_linear_images(eps, tol, detector):
    wave = atoms_wave(64, strength=0.2, seed=1)
    images = traditional.linear_images(wave, SAMPLING, DEFOCUS[::5], Cs=CS,
                                       focal_spread=FOCAL_SPREAD, **detector)
    est = traditional.wiener_reconstruction(images, SAMPLING, DEFOCUS[::5], Cs=CS,
                                            focal_spread=FOCAL_SPREAD, wiener_eps=eps,
                                            normalize=False, xp="numpy", **detector)
    true_s, est_s = np.fft.fft2(wave - 1), np.fft.fft2(est - 1)
    # where the series transfers the frequency: the envelope is not negligible and the two
    # unknowns S(k), S*(-k) are separable (not at k = 0, where sin(chi) = 0 for every image)
    h = traditional.transfer_functions(wave.shape, SAMPLING, DEFOCUS[::5], Cs=CS,
                                       focal_spread=FOCAL_SPREAD)
    g = np.conj(np.roll(np.flip(h, (-2, -1)), (1, 1), (-2, -1)))
    a11, a22 = (np.abs(h) ** 2).sum(0), (np.abs(g) ** 2).sum(0)
    cond = (a11 * a22 - np.abs((np.conj(h) * g).sum(0)) ** 2) / np.maximum(a11 * a22, 1e-300)
    transfer = physics.temporal_envelope(wave.shape, SAMPLING, FOCAL_SPREAD)
    if detector:
        transfer = transfer * np.abs(traditional.intensity_transfer(wave.shape, SAMPLING,
                                                                    **detector))
    ok = (transfer > 1e-2) & (cond > 1e-3)
    assert ok.sum() > 150  # the check covers the transferred part of the spectrum
    err = np.abs(est_s - true_s)[ok].max() / np.abs(true_s).max()
    assert err < tol


def test_wiener_leaves_untransferred_low_frequency_phase_out():
    """k = 0: the mean phase is not transferred (sin chi(0) = 0): the estimate has none."""
    wave = atoms_wave(64, seed=2)
    est = traditional.wiener_reconstruction(series(wave), SAMPLING, DEFOCUS, Cs=CS,
                                            focal_spread=FOCAL_SPREAD, normalize=False)
    assert abs(np.mean(np.angle(wave))) > 0.02
    assert abs(np.mean(est.imag)) < 1e-3


def test_wiener_regularisation_damps_noise():
    wave = atoms_wave(64, seed=3)
    clean = series(wave)
    noisy = clean + np.random.default_rng(0).normal(0, 0.05, clean.shape)
    kw = dict(Cs=CS, focal_spread=FOCAL_SPREAD, normalize=False)
    loose = traditional.wiener_reconstruction(noisy, SAMPLING, DEFOCUS, wiener_eps=1e-6, **kw)
    tight = traditional.wiener_reconstruction(noisy, SAMPLING, DEFOCUS, wiener_eps=0.1, **kw)
    assert rms(highpass(tight) - highpass(wave)) < 0.5 * rms(highpass(loose) - highpass(wave))


def test_auto_eps_follows_the_dose_and_is_near_the_best_fixed_one():
    wave = atoms_wave(128, strength=0.4, seed=3)
    truth = highpass(np.fft.ifft2(np.fft.fft2(wave) * envelope_mask(wave.shape, 0.05)))
    kw = dict(Cs=CS, focal_spread=FOCAL_SPREAD, normalize=False)
    chosen = []
    for dose in (np.inf, 1e5, 1e3):
        params = [physics.MicroscopeParameters(defocus=float(d), Cs=CS, dose=dose,
                                               focal_spread=FOCAL_SPREAD) for d in DEFOCUS]
        images = physics.simulate_focal_series(wave, SAMPLING, params,
                                               rng=np.random.default_rng(0))
        res = traditional.reconstruct(images, SAMPLING, DEFOCUS, method="wiener",
                                      wiener_eps="auto", full_output=True, **kw)
        auto = res.exit_wave
        np.testing.assert_array_equal(auto, traditional.wiener_reconstruction(
            images, SAMPLING, DEFOCUS, wiener_eps="auto", **kw))
        chosen.append(res.wiener_eps)
        best = min(rms(highpass(traditional.wiener_reconstruction(
            images, SAMPLING, DEFOCUS, wiener_eps=e, **kw)) - truth)
            for e in (1e-4, 1e-3, 1e-2, 1e-1, 1.0))
        assert rms(highpass(auto) - truth) < 1.3 * best, dose
    assert chosen[0] == traditional._AUTO_EPS_FLOOR  # no shot noise: only the floor
    assert chosen[0] < chosen[1] < chosen[2]
    with pytest.raises(ExitWaveError, match="'auto'"):
        traditional.wiener_reconstruction(images, SAMPLING, DEFOCUS, wiener_eps="guess", **kw)


# ------------------------------------------------------------------------------------------
# Gerchberg-Saxton
def test_gs_recovers_the_exit_wave_of_a_noise_free_series():
    wave = atoms_wave(96, strength=0.5, seed=4)
    images = series(wave)
    kw = dict(Cs=CS, focal_spread=FOCAL_SPREAD, normalize=False, xp="numpy")
    res = traditional.gerchberg_saxton(images, SAMPLING, DEFOCUS, n_iter=40,
                                       envelope_cutoff=0.05, **kw)
    est, errors = res
    assert est.shape == wave.shape and np.iscomplexobj(est)
    assert errors.shape == (41,) and len(res.times) == 40
    # the error falls monotonically (majorise-minimise step) and a lot
    assert np.all(np.diff(errors) <= 1e-12 * errors[0])
    assert np.all(np.diff(errors[:6]) < 0)
    assert errors[-1] < 0.3 * errors[0]
    # the truth within the information limit, long wavelengths removed as in the paper
    truth = np.fft.ifft2(np.fft.fft2(wave) * envelope_mask(wave.shape, 0.05))
    err_gs = rms(highpass(est) - highpass(truth))
    wiener = traditional.wiener_reconstruction(images, SAMPLING, DEFOCUS, **kw)
    err_w = rms(highpass(wiener) - highpass(truth))
    assert err_gs < 0.015  # stated accuracy: 0.5 rad atoms, 0.0121 measured (Wiener: 0.021)
    assert err_gs < 0.8 * err_w  # better than its linear starting point on a 0.5 rad object
    # the phase has the right sign (abTEM convention): atoms advance the phase
    peak = np.unravel_index(np.argmax(np.angle(wave)), wave.shape)
    assert np.angle(est[peak]) > 0.2


def test_known_blur_and_mtf_are_deconvolved():
    """Images with the physics model's blur and MTF: telling the methods about them helps, and
    the phase object is recovered nearly as well as from sharp images."""
    wave = atoms_wave(96, strength=0.5, seed=11)
    params = [physics.MicroscopeParameters(defocus=float(d), Cs=CS, focal_spread=FOCAL_SPREAD,
                                           blur=0.3, blur_unit="A", mtf_c1=0.1, mtf_c2=0.15,
                                           mtf_c3=1.2)
              for d in DEFOCUS]
    images = physics.simulate_focal_series(wave, SAMPLING, params)
    truth = highpass(np.fft.ifft2(np.fft.fft2(wave) * envelope_mask(wave.shape, 0.05)))
    kw = dict(Cs=CS, focal_spread=FOCAL_SPREAD, normalize=False, n_iter=40,
              envelope_cutoff=0.05, wiener_eps=1e-4)
    known = traditional.gerchberg_saxton(images, SAMPLING, DEFOCUS, blur=0.3,
                                         mtf=(0.1, 0.15, 1.2), **kw)
    unknown = traditional.gerchberg_saxton(images, SAMPLING, DEFOCUS, **kw)
    assert rms(highpass(known.exit_wave) - truth) < 0.02
    assert rms(highpass(known.exit_wave) - truth) < 0.5 * rms(highpass(unknown.exit_wave) - truth)
    assert known.errors[-1] < 0.3 * known.errors[0]


def test_gs_exact_wave_is_a_fixed_point():
    """A band-limited wave that the images were made from has zero consistency error."""
    k_max = 0.5 / SAMPLING
    wave = atoms_wave(64, strength=0.8, seed=5, band_limit=0.4 * k_max)
    images = series(wave)
    res = traditional.gerchberg_saxton(images, SAMPLING, DEFOCUS, Cs=CS,
                                       focal_spread=FOCAL_SPREAD, n_iter=3, initial=wave,
                                       normalize=False)
    assert res.errors.max() < 1e-10
    assert np.abs(res.exit_wave - wave).max() < 1e-8


def test_gs_error_is_the_consistency_with_the_images():
    wave = atoms_wave(64, seed=6)
    images = series(wave, defocus=DEFOCUS[::5])
    res = traditional.gerchberg_saxton(images, SAMPLING, DEFOCUS[::5], Cs=CS,
                                       focal_spread=FOCAL_SPREAD, n_iter=5, normalize=False)
    # recompute the last error from the returned wave
    h = traditional.transfer_functions(wave.shape, SAMPLING, DEFOCUS[::5], Cs=CS,
                                       focal_spread=FOCAL_SPREAD)
    psi_n = np.fft.ifft2(np.fft.fft2(res.exit_wave)[None] * h)
    expected = np.sqrt(np.sum((np.abs(psi_n) - np.sqrt(images)) ** 2) / np.sum(images))
    assert res.errors[-1] == pytest.approx(expected, rel=1e-9)


def test_gs_progress_and_cancel():
    wave = atoms_wave(32, seed=7)
    images = series(wave, defocus=DEFOCUS[::5])
    seen = []
    traditional.reconstruct(images, SAMPLING, DEFOCUS[::5], n_iter=4,
                            progress=lambda f, m: seen.append((f, m)))
    assert [f for f, _ in seen] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert "iteration 4/4" in seen[-1][1]
    calls = []

    def cancel():
        calls.append(1)
        return len(calls) > 2

    with pytest.raises(ReconstructionCancelled):
        traditional.reconstruct(images, SAMPLING, DEFOCUS[::5], n_iter=10, cancel=cancel)
    with pytest.raises(ReconstructionCancelled):
        traditional.reconstruct(images, SAMPLING, DEFOCUS[::5], method="wiener",
                                cancel=lambda: True)


def test_reconstruct_dispatches_and_normalises():
    wave = atoms_wave(48, seed=8)
    images = series(wave, defocus=DEFOCUS[::2])
    d = DEFOCUS[::2]
    kw = dict(Cs=CS, focal_spread=FOCAL_SPREAD)
    w = traditional.reconstruct(images, SAMPLING, d, method="wiener", wiener_eps=0.01, **kw)
    np.testing.assert_allclose(w, traditional.wiener_reconstruction(images, SAMPLING, d,
                                                                    wiener_eps=0.01, **kw))
    g = traditional.reconstruct(images, SAMPLING, d, method="GS", n_iter=3, **kw)
    np.testing.assert_allclose(g, traditional.gerchberg_saxton(images, SAMPLING, list(d),
                                                               n_iter=3, **kw).exit_wave)
    # counts instead of relative intensities: the same result after the mean normalisation
    np.testing.assert_allclose(
        traditional.reconstruct(images * 437.0, SAMPLING, d, n_iter=3, **kw), g, atol=1e-12)
    full = traditional.reconstruct(images, SAMPLING, d, method="GS", n_iter=3, full_output=True,
                                   **kw)
    assert full.device == "CPU" and full.method == "gs" and full.wiener_eps == traditional.DEFAULT_WIENER_EPS
    np.testing.assert_array_equal(full.exit_wave, g)
    assert full.errors.shape == (4,) and full.times.shape == (3,)
    # no module state: nothing is left behind for another thread to read
    assert not hasattr(traditional, "last_device") and not hasattr(traditional, "last_wiener_eps")


def test_align_option_uses_align_series(monkeypatch):
    """align=True hands the images to napari_exitwave.align.align_series and uses its output."""
    from napari_exitwave import align

    wave = atoms_wave(48, strength=0.5, seed=9)
    d = DEFOCUS[::5]
    images = series(wave, defocus=d)
    drifted = np.stack([np.roll(images[0], (3, -2), (0, 1)), images[1], images[2]])
    calls = []

    def fake_align(imgs, upsample=10, progress=None, smooth=1.0):
        calls.append(np.array(imgs))
        return np.stack([np.roll(imgs[0], (-3, 2), (0, 1)), imgs[1], imgs[2]]), np.zeros((3, 2))

    monkeypatch.setattr(align, "align_series", fake_align)
    kw = dict(Cs=CS, focal_spread=FOCAL_SPREAD, n_iter=5)
    ref = traditional.reconstruct(images, SAMPLING, d, **kw)
    fixed = traditional.reconstruct(drifted, SAMPLING, d, align=True, **kw)
    assert len(calls) == 1 and np.array_equal(calls[0], drifted)
    np.testing.assert_allclose(fixed, ref, atol=1e-12)
    assert rms(traditional.reconstruct(drifted, SAMPLING, d, **kw) - ref) > 1e-3


# ------------------------------------------------------------------------------------------
# errors
@pytest.mark.parametrize("images, defocus, match", [
    (np.ones((3, 16, 16)), [0.0, 50.0], "2 defocus values were given for 3 images"),
    (np.ones((16, 16)), [0.0], "focal series"),
    (np.ones((2, 16, 16)) + 0j, [0.0, 1.0], "real intensities"),
    (np.full((2, 16, 16), np.nan), [0.0, 1.0], "NaN"),
    (np.ones((2, 16, 16)), None, "defocus of every image"),
    (np.ones((2, 16, 16)), [0.0, np.inf], "finite"),
    (-np.ones((2, 16, 16)), [0.0, 1.0], "mean intensity"),
])
def test_bad_series_raise_clear_errors(images, defocus, match):
    with pytest.raises(SeriesMismatchError, match=match):
        traditional.reconstruct(images, SAMPLING, defocus)


@pytest.mark.parametrize("kwargs, match", [
    (dict(method="ptychography"), "unknown traditional method"),
    (dict(n_iter=-1), "n_iter"),
    (dict(wiener_eps=-1.0), "wiener_eps"),
    (dict(focal_spread=-5.0), "focal_spread"),
    (dict(energy=0.0), "energy"),
    (dict(envelope_cutoff=1.5), "envelope_cutoff"),
    (dict(aberrations={"C5": 1.0}), "unknown aberrations"),
    (dict(xp="jax"), "unknown array module"),
    (dict(dtype=np.float32), "dtype"),
    (dict(blur=-1.0), "blur"),
    (dict(mtf=(0.1, 0.2)), "mtf"),
])
def test_bad_parameters_raise_clear_errors(kwargs, match):
    with pytest.raises(ExitWaveError, match=match):
        traditional.reconstruct(np.ones((2, 16, 16)), SAMPLING, [0.0, 50.0], **kwargs)


def test_bad_sampling():
    with pytest.raises(SeriesMismatchError, match="sampling"):
        traditional.reconstruct(np.ones((2, 16, 16)), 0.0, [0.0, 50.0])


def test_cupy_request_without_gpu_is_a_clear_error():
    if _array._cupy_if_usable() is not None:
        pytest.skip("CuPy with a GPU is present: the request is valid here")
    with pytest.raises(ExitWaveError, match="CuPy is not installed or sees no GPU"):
        traditional.reconstruct(np.ones((2, 16, 16)), SAMPLING, [0.0, 50.0], xp="cupy")
    assert traditional.get_array_module(None) is np


# ------------------------------------------------------------------------------------------
# CuPy / NumPy parity (the same code path)
def test_cupy_and_numpy_agree():
    cp = _array._cupy_if_usable()
    if cp is None:
        pytest.skip("CuPy is not installed or sees no GPU (no GPU on this machine)")
    wave = atoms_wave(64, strength=0.5, seed=10)
    images = series(wave, defocus=DEFOCUS[::2])
    kw = dict(Cs=CS, focal_spread=FOCAL_SPREAD, n_iter=10)
    a = traditional.gerchberg_saxton(images, SAMPLING, DEFOCUS[::2], xp=np, **kw)
    b = traditional.gerchberg_saxton(images, SAMPLING, DEFOCUS[::2], xp=cp, **kw)
    assert traditional.last_device == "CUDA"
    assert isinstance(b.exit_wave, np.ndarray)
    np.testing.assert_allclose(b.exit_wave, a.exit_wave, atol=1e-10)
    np.testing.assert_allclose(b.errors, a.errors, rtol=1e-8)
    w_np = traditional.wiener_reconstruction(images, SAMPLING, DEFOCUS[::2], xp=np)
    w_cp = traditional.wiener_reconstruction(images, SAMPLING, DEFOCUS[::2], xp=cp)
    np.testing.assert_allclose(w_cp, w_np, atol=1e-10)


def test_setup_is_a_record_of_the_prepared_series():
    """What Wiener and GS share is one dataclass: arrays on the device, the transfer functions
    of physics, the regularisation resolved ("auto" estimated from the images)."""
    wave = atoms_wave(32, seed=12)
    d = DEFOCUS[::5]
    images = series(wave, defocus=d)
    st = traditional.setup(images, SAMPLING, d, Cs=CS, focal_spread=FOCAL_SPREAD,
                           normalize=False, xp="numpy", blur=0.2, wiener_eps="auto")
    assert isinstance(st, traditional.Setup) and st.device == "CPU" and st.xp is np
    assert st.images.shape == images.shape and st.defocus == list(d)
    np.testing.assert_array_equal(st.transfer, traditional.transfer_functions(
        images.shape, SAMPLING, d, Cs=CS, focal_spread=FOCAL_SPREAD))
    np.testing.assert_array_equal(st.intensity, physics.gaussian_transfer(images.shape,
                                                                          SAMPLING, 0.2))
    assert isinstance(st.wiener_eps, float) and st.wiener_eps >= traditional._AUTO_EPS_FLOOR
    assert traditional.setup(images, SAMPLING, d, xp="numpy").intensity is None
