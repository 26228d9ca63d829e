"""physics.resample on a stack: image by image, identical to one zoom over the whole stack."""

import numpy as np
import pytest
from scipy import ndimage

from napari_exitwave import physics


@pytest.mark.parametrize("shape", [(3, 40, 36), (2, 3, 24, 24)])
@pytest.mark.parametrize("new_sampling", [0.105, 0.05, 0.3])
def test_stack_resample_equals_the_definition(shape, new_sampling):
    rng = np.random.default_rng(1)
    x = rng.normal(size=shape).astype(np.float32)
    zoom = [1.0] * (len(shape) - 2) + [0.1 / new_sampling] * 2
    # the definition: one spline zoom over the whole array, factor 1 on the leading axes
    ref = ndimage.zoom(x, zoom, order=3, mode="nearest")
    got = physics.resample(x, 0.1, new_sampling)
    assert got.shape == ref.shape and got.dtype == ref.dtype
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5)
    z = physics.resample(x + 1j * x[..., ::-1], 0.1, new_sampling)
    np.testing.assert_allclose(z.real, ref, atol=1e-5)
