"""Peaks of |psi - 1|: sub-pixel positions, min_distance, threshold, values, CSV round trip."""

import numpy as np
import pytest

from napari_exitwave.peaks import (
    PEAK_COLUMNS, find_peaks, peak_table, read_peaks_csv, write_peaks_csv,
)


def gaussian_lattice(shape=(96, 96), spacing=12.0, sigma=1.8, seed=0, heights=None):
    """Gaussian blobs on a jittered square lattice; returns (image, true positions)."""
    rng = np.random.default_rng(seed)
    ys = np.arange(spacing / 2 + 2, shape[0] - spacing / 2, spacing)
    xs = np.arange(spacing / 2 + 2, shape[1] - spacing / 2, spacing)
    pos = np.array([(y, x) for y in ys for x in xs], float)
    pos += rng.uniform(-0.5, 0.5, pos.shape)  # true sub-pixel offsets
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    img = np.zeros(shape)
    h = np.ones(len(pos)) if heights is None else heights
    for (y, x), a in zip(pos, h):
        img += a * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * sigma**2))
    return img, pos


def match(found, true):
    d = np.linalg.norm(found[:, None, :] - true[None, :, :], axis=-1)
    return d.min(axis=0)


def test_lattice_recovered_subpixel():
    img, true = gaussian_lattice()
    found = find_peaks(img, sampling=0.1, min_distance=0.5, threshold=0.1)
    assert len(found) == len(true)
    err = match(found, true)
    assert err.max() < 0.05, err.max()
    # without refinement the error is the rounding error, up to ~0.7 px
    raw = find_peaks(img, sampling=0.1, min_distance=0.5, threshold=0.1, refine=False)
    assert np.allclose(raw, np.round(raw))
    assert match(raw, true).max() > 0.2


def test_min_distance_in_angstrom():
    # two blobs 6 px apart = 0.6 A at 0.1 A/px
    yy, xx = np.mgrid[:40, :40]
    img = (np.exp(-((yy - 20) ** 2 + (xx - 17) ** 2) / 2.0)
           + 0.8 * np.exp(-((yy - 20) ** 2 + (xx - 23) ** 2) / 2.0))
    assert len(find_peaks(img, sampling=0.1, min_distance=0.4)) == 2
    one = find_peaks(img, sampling=0.1, min_distance=0.8)
    assert len(one) == 1
    assert abs(one[0, 1] - 17) < 0.1  # the higher one is kept
    # the same separation at a coarser sampling counts in A, not px
    assert len(find_peaks(img, sampling=0.2, min_distance=0.8)) == 2


def test_threshold_relative_to_max():
    img, true = gaussian_lattice(seed=1, heights=np.tile([1.0, 0.3], 100)[:49])
    n_all = len(find_peaks(img, sampling=0.1, min_distance=0.5, threshold=0.1))
    n_high = len(find_peaks(img, sampling=0.1, min_distance=0.5, threshold=0.5))
    assert n_all == 49
    assert n_high == 25
    # scaling the image does not change a relative threshold
    assert len(find_peaks(7.0 * img, sampling=0.1, min_distance=0.5, threshold=0.5)) == 25


def test_sorted_by_height_and_nan_tolerant():
    img, _ = gaussian_lattice(seed=2, heights=np.linspace(1, 0.5, 49))
    img[0, 0] = np.nan
    found = find_peaks(img, sampling=0.1, min_distance=0.5)
    h = img[np.round(found[:, 0]).astype(int), np.round(found[:, 1]).astype(int)]
    assert np.all(np.diff(h) <= 1e-12)


def test_empty_and_invalid():
    assert find_peaks(np.zeros((10, 10))).shape == (0, 2)
    with pytest.raises(ValueError, match="2-D"):
        find_peaks(np.zeros((2, 10, 10)))
    with pytest.raises(ValueError, match="real"):
        find_peaks(np.zeros((10, 10), complex))
    with pytest.raises(ValueError, match="threshold"):
        find_peaks(np.ones((10, 10)), threshold=2)


def test_peak_table_values():
    yy, xx = np.mgrid[:32, :48]
    psi = (1 + 0.01 * yy) + 1j * (0.02 * xx)  # linear: bilinear interpolation is exact
    pos = np.array([[3.25, 10.5], [20.0, 40.75]])
    tab = peak_table(psi.astype(np.complex64), pos, sampling=0.2, order=1)
    assert set(tab) == set(PEAK_COLUMNS)
    np.testing.assert_allclose(tab["real"], 1 + 0.01 * pos[:, 0], atol=1e-6)
    np.testing.assert_allclose(tab["imag"], 0.02 * pos[:, 1], atol=1e-6)
    v = tab["real"] + 1j * tab["imag"]
    np.testing.assert_allclose(tab["amplitude"], np.abs(v))
    np.testing.assert_allclose(tab["phase"], np.angle(v))
    np.testing.assert_allclose(tab["x_A"], pos[:, 1] * 0.2)
    np.testing.assert_allclose(tab["y_A"], pos[:, 0] * 0.2)


def test_peaks_on_exit_wave_give_column_values():
    img, true = gaussian_lattice(sigma=2.0)
    psi = 1 + (0.2 + 0.5j) * img  # a column of "phase object" type at every blob
    found = find_peaks(np.abs(psi - 1), sampling=0.1, min_distance=0.5)
    tab = peak_table(psi, found, sampling=0.1)
    # sub-pixel position + cubic interpolation -> the blob centre value 1 + 0.2 + 0.5j
    np.testing.assert_allclose(tab["real"], 1.2, atol=2e-3)
    np.testing.assert_allclose(tab["imag"], 0.5, atol=2e-3)
    # bilinear interpolation is low at the top of a peak
    lin = peak_table(psi, found, sampling=0.1, order=1)
    assert np.mean(np.abs(lin["imag"] - 0.5)) > 2 * np.mean(np.abs(tab["imag"] - 0.5))
    assert peak_table(psi, np.zeros((0, 2)), 0.1)["real"].shape == (0,)


def test_csv_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    pos = rng.uniform(0, 30, (7, 2))
    psi = rng.normal(size=(32, 32)) + 1j * rng.normal(size=(32, 32))
    tab = peak_table(psi, pos, 0.105)
    labels = ["Mo", "S2", "S2", "", "S", "Mo", "S2"]
    path = write_peaks_csv(tab, tmp_path / "p.csv", labels=labels)
    back = read_peaks_csv(path)
    for c in PEAK_COLUMNS:
        np.testing.assert_array_equal(back[c], tab[c])  # repr(float) is exact
    assert back["label"].tolist() == labels
    # label column inside the table, without labels argument
    tab["label"] = np.array(labels)
    back2 = read_peaks_csv(write_peaks_csv(tab, tmp_path / "q.csv"))
    assert back2["label"].tolist() == labels
    with pytest.raises(ValueError, match="labels"):
        write_peaks_csv(tab, tmp_path / "r.csv", labels=["a"])


def test_one_peak_finder_for_the_widget_the_metrics_and_the_results():
    """find_wave_peaks is find_peaks of |psi - 1| (sub-pixel), and every user calls it."""
    from napari_exitwave import metrics
    from napari_exitwave._layers import peak_features
    from napari_exitwave.peaks import find_wave_peaks

    yy, xx = np.mgrid[:48, :48]
    psi = np.ones((48, 48), complex)
    for y, x, v in ((12.3, 30.6, 0.3j), (33.7, 14.2, 0.2 + 0.1j)):
        psi += v * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * 1.5**2))
    pos = find_wave_peaks(psi, sampling=0.1, min_distance=0.5)
    np.testing.assert_allclose(pos, [[12.3, 30.6], [33.7, 14.2]], atol=0.02)  # sub-pixel
    np.testing.assert_array_equal(pos, find_peaks(np.abs(psi - 1), sampling=0.1,
                                                  min_distance=0.5))
    assert metrics.find_wave_peaks is find_wave_peaks
    np.testing.assert_array_equal(metrics.find_wave_peaks(psi, 0.1, 0.5), pos)
    np.testing.assert_array_equal(peak_features(psi, 0.1, 0.5, 0.1)[0], pos)
    with pytest.raises(ValueError, match="exit_wave must be 2-D"):
        find_wave_peaks(np.ones((2, 4, 4), complex))
