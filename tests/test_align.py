"""Alignment: known sub-pixel shifts are recovered, also across focus with noise."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from napari_exitwave import physics
from napari_exitwave.align import align_series, estimate_shifts, shift_image


def _field(n=96, seed=0, margin=24):
    """A smooth random texture, larger than the frames cut from it."""
    rng = np.random.default_rng(seed)
    return ndimage.gaussian_filter(rng.normal(size=(n + 2 * margin, n + 2 * margin)), 2.0)


def _crop_shifted(big, shift, n=96, margin=24):
    """Frame of ``big`` whose content is moved by ``shift`` (dy, dx) px: non-periodic edges."""
    moved = np.fft.ifft2(ndimage.fourier_shift(np.fft.fft2(big), shift)).real
    return moved[margin:margin + n, margin:margin + n]


def test_recovers_known_subpixel_shifts():
    big = _field()
    true = np.array([[1.3, -2.7], [0.0, 0.0], [-3.45, 0.6]])  # drift of each image
    series = np.stack([_crop_shifted(big, s) for s in true])
    aligned, shifts = align_series(series, upsample=20)
    # the shift applied undoes the drift, relative to the middle image
    np.testing.assert_allclose(shifts, -true, atol=0.06)
    assert shifts[1].tolist() == [0.0, 0.0]
    # the aligned frames agree with the reference away from the edges
    inner = (slice(8, -8), slice(8, -8))
    for i in (0, 2):
        err = np.abs(aligned[i][inner] - series[1][inner]).max()
        assert err < 0.02 * np.ptp(series[1])


def test_integer_shift_equals_roll_inside():
    im = _field(64)[:64, :64]
    out = shift_image(im, (3, -2))
    np.testing.assert_allclose(out[3:, :-2], im[:-3, 2:], atol=1e-10)


def test_aligns_a_simulated_focal_series_across_focus():
    """Images differ in contrast (defocus -50, 0, 50 A) and carry shot noise."""
    rng = np.random.default_rng(3)
    n, s = 128, 0.2
    yy, xx = np.mgrid[:n, :n] * s
    phase = np.zeros((n, n))
    for y0, x0 in rng.uniform(0, n * s, (150, 2)):
        phase += 0.3 * np.exp(-((yy - y0) ** 2 + (xx - x0) ** 2) / (2 * 0.3 ** 2))
    wave = np.exp(1j * phase)
    params = [physics.MicroscopeParameters(defocus=d, Cs=-10e4, focal_spread=10, blur=0.5, blur_unit="A",
                                           dose=1e5) for d in (-50, 0, 50)]
    ims = physics.simulate_focal_series(wave, s, params, rng=rng)
    drift = np.array([[2.4, -1.2], [0, 0], [-1.7, 2.9]])
    series = np.stack([shift_image(im, d) for im, d in zip(ims, drift)])
    _, shifts = align_series(series)
    np.testing.assert_allclose(shifts, -drift, atol=0.35)


def test_reference_and_input_checks():
    big = _field()
    series = np.stack([_crop_shifted(big, (0.5 * i, 0)) for i in range(4)])
    shifts = estimate_shifts(series, reference=0, upsample=20)
    np.testing.assert_allclose(shifts[:, 0], [0, -0.5, -1.0, -1.5], atol=0.06)
    aligned, shifts = align_series(series[:1])
    assert aligned.shape == (1, 96, 96) and not shifts.any()
    with pytest.raises(ValueError, match=r"\(n, ny, nx\)"):
        align_series(series[0])
    with pytest.raises(ValueError, match="reference"):
        estimate_shifts(series, reference=7)


def test_unreliable_estimates_are_not_applied():
    """Unrelated (or hopelessly noisy) images give pairwise shifts that do not close."""
    from napari_exitwave.align import AlignmentWarning

    rng = np.random.default_rng(5)
    series = np.stack([ndimage.gaussian_filter(rng.normal(size=(96, 96)), 2) for _ in range(3)])
    shifts, info = estimate_shifts(series, return_info=True)
    assert not info["reliable"]
    with pytest.warns(AlignmentWarning, match="left unaligned"):
        aligned, applied = align_series(series)
    assert not applied.any()
    np.testing.assert_array_equal(aligned, series.astype(np.float32))
    with pytest.warns(AlignmentWarning, match="applied anyway"):
        _, applied = align_series(series, on_unreliable="apply")
    np.testing.assert_allclose(applied, shifts)
    with pytest.raises(ValueError, match="alignment"):
        align_series(series, on_unreliable="raise")
    # two images: judged by their correlation
    with pytest.warns(AlignmentWarning, match="correlate poorly"):
        _, applied = align_series(series[:2])
    assert not applied.any()
    big = _field()
    pair = np.stack([_crop_shifted(big, (1.2, -0.7)), _crop_shifted(big, (0, 0))])
    _, applied = align_series(pair, upsample=20)
    np.testing.assert_allclose(applied[0], [-1.2, 0.7], atol=0.06)


def test_bundled_sample_is_left_unaligned():
    """The simulated MoS2 sample has no drift, but its images cannot be correlated across focus
    (a monolayer at 50 keV, 1e4 e/A^2): a naive estimate is off by pixels; we do not apply it."""
    from napari_exitwave import data
    from napari_exitwave.align import AlignmentWarning

    if not (data.DATA_DIR / data.SAMPLE_SERIES).is_file():
        pytest.skip("sample data not generated")
    series = data.load_sample_series()
    with pytest.warns(AlignmentWarning):
        _, shifts = align_series(series.images)
    assert not shifts.any()
