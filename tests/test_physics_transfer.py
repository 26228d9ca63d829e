"""physics' transfer kernels (``*_transfer``): analytic values, and the filters built on them."""

from __future__ import annotations

import numpy as np
import pytest

from napari_exitwave import physics, traditional


def test_gaussian_transfer_is_the_fourier_transform_of_a_gaussian_of_sigma_angstrom():
    shape, sampling, sigma = (64, 96), 0.1, 0.35
    g = physics.gaussian_transfer(shape, sampling, sigma)
    assert g.shape == shape and g[0, 0] == 1.0
    # its kernel in real space: unit sum, centred, second moment sigma^2 along each axis
    kernel = np.fft.fftshift(np.fft.ifft2(g).real)
    assert kernel.sum() == pytest.approx(1.0, rel=1e-12)
    y = (np.arange(shape[0]) - shape[0] // 2) * sampling
    x = (np.arange(shape[1]) - shape[1] // 2) * sampling
    assert np.sum(kernel * y[:, None] ** 2) == pytest.approx(sigma**2, rel=1e-6)
    assert np.sum(kernel * x[None, :] ** 2) == pytest.approx(sigma**2, rel=1e-6)
    np.testing.assert_array_equal(physics.gaussian_transfer(shape, sampling, 0.0), 1.0)
    with pytest.raises(ValueError, match="sigma must be >= 0"):
        physics.gaussian_transfer(shape, sampling, -1.0)


def test_mtf_transfer_is_in_units_of_nyquist_and_needs_no_pixel_size():
    c1, c2, c3 = 0.1, 0.15, 1.2
    m = physics.mtf_transfer((32, 48), c1, c2, c3)
    assert m[0, 0] == 1.0
    assert m[16, 0] == pytest.approx(physics.mtf(1.0, c1, c2, c3))  # Nyquist along y
    assert m[0, 24] == pytest.approx(physics.mtf(1.0, c1, c2, c3))  # and along x
    assert m[8, 0] == pytest.approx(physics.mtf(0.5, c1, c2, c3))


def test_blur_and_mtf_filters_apply_the_kernels():
    rng = np.random.default_rng(0)
    img = rng.random((32, 40))
    ft = np.fft.fft2(img)
    np.testing.assert_allclose(
        physics.gaussian_blur(img, 0.1, 0.2),
        np.fft.ifft2(ft * physics.gaussian_transfer(img.shape, 0.1, 0.2)).real, atol=1e-14)
    np.testing.assert_allclose(
        physics.apply_mtf(img, 0.0, 0.1, 1.5),
        np.fft.ifft2(ft * physics.mtf_transfer(img.shape, 0.0, 0.1, 1.5)).real, atol=1e-14)
    # the traditional reconstructions' intensity transfer is the same product (blur in A)
    both = traditional.intensity_transfer(img.shape, 0.1, 0.2, (0.0, 0.1, 1.5))
    np.testing.assert_allclose(both, physics.gaussian_transfer(img.shape, 0.1, 0.2)
                               * physics.mtf_transfer(img.shape, 0.0, 0.1, 1.5), rtol=1e-12)
    assert traditional.intensity_transfer(img.shape, 0.1) is None
