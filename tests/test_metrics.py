"""Metrics on constructed cases: RMSE, Delta (Eq. A.1), Y-scramble, peak errors in pm."""

import numpy as np
import pytest

from napari_exitwave import metrics


def _atoms(positions_A, shape=(96, 96), sampling=0.1, strength=0.4, sigma=0.3):
    yy, xx = np.mgrid[:shape[0], :shape[1]] * sampling
    phase = np.zeros(shape)
    for y, x in positions_A:
        phase += strength * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * sigma**2))
    return np.exp(1j * phase)


def test_perfect_prediction_gives_zero():
    w = _atoms([(3.0, 4.0), (6.0, 5.5)])
    assert metrics.rmse(w, w) == (0.0, 0.0)
    assert metrics.delta(w, w) == 0.0


def test_rmse_of_a_constant_offset_and_per_sample():
    true = _atoms([(3.0, 4.0)])
    r, i = metrics.rmse(true + 0.1 + 0.2j, true)
    assert r == pytest.approx(0.1) and i == pytest.approx(0.2)
    stack_t = np.stack([true, true])
    stack_p = np.stack([true, true - 0.05j])
    r, i = metrics.rmse(stack_p, stack_t)
    np.testing.assert_allclose(r, [0, 0], atol=1e-12)
    np.testing.assert_allclose(i, [0, 0.05])


def test_delta_known_cases():
    true = _atoms([(3.0, 4.0), (5.0, 6.0)])
    assert metrics.delta(np.ones_like(true), true) == pytest.approx(1.0)  # "vacuum everywhere"
    # pred = true + c: Delta = N |c|^2 / sum |true - 1|^2
    c = 0.01 + 0.02j
    expected = true.size * abs(c) ** 2 / np.sum(np.abs(true - 1) ** 2)
    assert metrics.delta(true + c, true) == pytest.approx(expected)
    # pred - 1 = 2 (true - 1): Delta = 1
    assert metrics.delta(1 + 2 * (true - 1), true) == pytest.approx(1.0)


def test_shape_mismatch_rejected():
    with pytest.raises(ValueError, match="same shape"):
        metrics.rmse(np.ones((4, 4)), np.ones((4, 5)))


def test_y_scramble_never_pairs_a_sample_with_itself():
    waves = [np.full((8, 8), 1 + 0.1j * k) for k in range(5)]
    r, i = metrics.y_scramble(waves, waves, seed=3)
    assert r.shape == i.shape == (5,)
    np.testing.assert_allclose(r, 0, atol=1e-12)
    assert np.all(i >= 0.1 - 1e-12)  # every pair is two different samples
    same = [np.ones((8, 8), complex)] * 3
    assert np.all(metrics.y_scramble(same, same)[1] == 0)
    with pytest.raises(ValueError):
        metrics.y_scramble(waves[:1], waves[:1])


@pytest.mark.parametrize("shift_A", [(0.0, 0.0), (0.05, 0.0), (0.03, -0.04)])
def test_peak_position_error_of_a_shifted_prediction(shift_A):
    cols = np.array([(2.5, 2.5), (2.5, 5.7), (5.6, 4.0), (6.6, 7.1), (4.1, 6.3)])
    pred = _atoms(cols + np.array(shift_A))
    err = metrics.peak_position_error(pred, cols, sampling=0.1)
    assert len(err) == len(cols)
    expected_pm = 100 * np.hypot(*shift_A)
    np.testing.assert_allclose(err, expected_pm, atol=1.0)  # sub-pixel: within 1 pm of 1 px = 10 pm


def test_peak_matching_reports_missed_columns():
    cols = np.array([(2.5, 2.5), (6.0, 6.0)])
    pred = _atoms(cols[:1])  # second column missing in the prediction
    err, true_m, pred_m, missed = metrics.peak_position_error(pred, cols, 0.1,
                                                              return_matches=True)
    assert len(err) == 1 and missed == 1
    np.testing.assert_allclose(true_m, cols[:1])


def test_peak_values_bilinear():
    w = np.zeros((4, 4), complex)
    w[1, 1], w[1, 2] = 1 + 1j, 3 - 1j
    v = metrics.peak_values(w, [(1, 1), (1, 1.5)])
    np.testing.assert_allclose(v, [1 + 1j, 2 + 0j])


def test_summarize_medians():
    s = metrics.summarize({"rmse_real": np.array([1.0, 2.0, 3.0, np.nan])})
    assert s["rmse_real_median"] == 2.0
