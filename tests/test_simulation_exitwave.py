"""Exit waves by abTEM multislice: vacuum, geometry, Debye-Waller smearing, target, errors."""

from __future__ import annotations

import numpy as np
import pytest

abtem = pytest.importorskip("abtem")

from ase import Atoms  # noqa: E402

from exitwave_training.exitwave import (ExitWaveConfig, fft_friendly, multislice_gpts,  # noqa: E402
                                        resolve_device, simulate_exit_wave)
from napari_exitwave import physics  # noqa: E402

FAST = ExitWaveConfig(sampling=0.1, device="cpu")


def test_vacuum_exit_wave_is_one():
    ew = simulate_exit_wave(Atoms(cell=[6.4, 4.8, 3.0], pbc=True), 0.2, FAST)
    assert ew.wave.shape == (24, 32) and ew.wave.dtype == np.complex64
    np.testing.assert_allclose(ew.wave, 1.0, atol=1e-6)
    np.testing.assert_allclose(ew.target, 1.0, atol=1e-6)


def test_atom_position_orientation_and_vacuum_far_away():
    # non-square cell: row = y / sampling, col = x / sampling
    at = Atoms("Mo", positions=[(2.4, 7.2, 1.0)], cell=[9.6, 14.4, 3.0], pbc=True)
    ew = simulate_exit_wave(at, 0.12, FAST)
    assert ew.wave.shape == (120, 80)
    row, col = np.unravel_index(np.argmax(np.angle(ew.wave)), ew.wave.shape)
    assert (row, col) == (60, 20)
    # an attractive potential advances the phase; far from the atom the wave is vacuum
    assert np.angle(ew.wave[row, col]) > 0.1
    assert abs(ew.wave[0, 60] - 1) < 2e-3


def test_heavier_atoms_shift_the_phase_more():
    def peak(sym):
        at = Atoms(sym, positions=[(3.2, 3.2, 1.0)], cell=[6.4, 6.4, 3.0], pbc=True)
        return np.angle(simulate_exit_wave(at, 0.1, FAST).wave).max()

    assert peak("Mo") > peak("S") > peak("C") > 0


def test_debye_waller_smearing_is_a_gaussian_on_the_projected_potential():
    from abtem.parametrizations import LobatoParametrization

    at = Atoms("MoS2", positions=[(2.0, 2.0, 1.0), (4.5, 3.0, 1.0), (4.5, 3.0, 2.0)],
               cell=[6.4, 6.4, 3.2], pbc=True)
    u2 = physics.debye_waller_u2()
    kw = dict(gpts=64, slice_thickness=0.2, projection="infinite")

    def projected(sigmas):
        pot = abtem.Potential(at, parametrization=LobatoParametrization(sigmas=sigmas), **kw)
        return np.asarray(pot.build(lazy=False).project().array, dtype=float)

    sharp, smeared = projected(None), projected(np.sqrt(u2))
    expected = physics.gaussian_blur(sharp, 0.1, np.sqrt(u2))
    assert np.abs(smeared - expected).max() < 1e-3 * sharp.max()
    assert smeared.max() < sharp.max()
    # and the exit-wave simulation uses it: smearing lowers the column phase
    w0 = simulate_exit_wave(at, 0.1, ExitWaveConfig(sampling=0.1, u2=0.0, device="cpu")).wave
    w1 = simulate_exit_wave(at, 0.1, FAST).wave
    assert np.angle(w1).max() < np.angle(w0).max()
    assert np.angle(w1).sum() == pytest.approx(np.angle(w0).sum(), rel=0.05)


def test_target_is_the_wave_folded_with_15_pm():
    at = Atoms("Mo", positions=[(3.2, 3.2, 1.0)], cell=[6.4, 6.4, 3.0], pbc=True)
    ew = simulate_exit_wave(at, 0.1, FAST)
    np.testing.assert_allclose(ew.target, physics.gaussian_blur(ew.wave, 0.1, 0.15), atol=1e-6)
    assert np.abs(ew.target - 1).max() < np.abs(ew.wave - 1).max()
    assert ew.target.mean() == pytest.approx(ew.wave.mean(), abs=1e-6)


def test_multislice_grid_is_fft_friendly_and_at_most_the_sampling():
    assert fft_friendly(269) == 270 and fft_friendly(7) == 8 and fft_friendly(1) == 1
    n = multislice_gpts(13.44, 0.05)
    assert 13.44 / n <= 0.05 and n == 270
    at = Atoms(cell=[13.44, 13.44, 2.0], pbc=True)
    ew = simulate_exit_wave(at, 0.105, ExitWaveConfig(device="cpu"))
    assert ew.multislice_gpts == (270, 270) and ew.multislice_sampling <= 0.05
    assert ew.wave.shape == (128, 128)


def test_bad_input_is_a_clear_value_error():
    at = Atoms("Mo", positions=[(1, 1, 1)], cell=[10.0, 10.0, 3.0], pbc=True)
    with pytest.raises(ValueError, match="does not divide"):
        simulate_exit_wave(at, 0.3, FAST)  # 10 / 0.3 is not whole
    with pytest.raises(ValueError, match="finer than the multislice"):
        simulate_exit_wave(at, 0.05, FAST)
    skew = Atoms("Mo", positions=[(1, 1, 1)], cell=[[10, 0, 0], [5, 8.66, 0], [0, 0, 3]])
    with pytest.raises(ValueError, match="orthorhombic"):
        simulate_exit_wave(skew, 0.2, FAST)
    with pytest.raises(ValueError, match="positive"):
        simulate_exit_wave(at, -0.1, FAST)
    with pytest.raises(ValueError, match="slice_thickness"):
        ExitWaveConfig(slice_thickness=0)
    with pytest.raises(ValueError, match="device"):
        ExitWaveConfig(device="tpu")
    if resolve_device("auto") == "cpu":
        with pytest.raises(ValueError, match="CuPy"):
            resolve_device("gpu")


def test_single_precision_resampling_matches_the_shared_physics():
    from exitwave_training.exitwave import _resample_and_target

    rng = np.random.default_rng(0)
    fine = np.exp(1j * physics.gaussian_blur(rng.standard_normal((90, 120)), 0.05, 0.1))
    wave, target = _resample_and_target(fine.astype(np.complex64), (42, 56), 0.1125, 0.15)
    ref, _ = physics.fourier_resample(fine, 0.05, 0.1125, shape=(42, 56))
    np.testing.assert_allclose(wave, ref, atol=2e-6)
    np.testing.assert_allclose(target, physics.gaussian_blur(ref, 0.1125, 0.15), atol=2e-6)


def test_skipping_vacuum_slices_gives_the_same_exit_wave():
    from exitwave_training.structures import StructureConfig, make_structure

    cfg = StructureConfig(dataset="mos2-graphene", size=64, sampling=0.2, exit_distance=3.0)
    s = make_structure(cfg, np.random.default_rng(3))
    full = simulate_exit_wave(s.atoms, 0.2, ExitWaveConfig(sampling=0.1, device="cpu",
                                                           skip_vacuum=False))
    fast = simulate_exit_wave(s.atoms, 0.2, FAST)
    assert np.abs(full.wave - 1).max() > 0.1
    np.testing.assert_allclose(fast.wave, full.wave, atol=1e-4)
    np.testing.assert_allclose(fast.target, full.target, atol=1e-4)
    # the exit plane matters: a different distance below the atoms gives a different wave
    deeper = s.atoms.copy()
    deeper.cell[2, 2] += 5.0
    other = simulate_exit_wave(deeper, 0.2, FAST)
    assert np.abs(other.wave - full.wave).max() > 1e-2
