"""The array module a computation runs on: NumPy, or CuPy on a GPU (used by :mod:`.traditional`).

Every function takes the module ``xp`` first, so the same code runs on both; results go back to
NumPy with :func:`to_numpy`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import ExitWaveError

__all__ = ["get_array_module", "device_name", "fft2", "ifft2", "to_numpy"]


def _cupy_if_usable():
    try:
        import cupy  # noqa: F401
    except Exception:  # ImportError, or a broken CUDA install
        return None
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return None
    except Exception:
        return None
    return cupy


def get_array_module(xp: Any = None):
    """The array module to compute with: NumPy, or CuPy on a GPU.

    ``xp`` is ``None``/``"auto"`` (CuPy when importable with a GPU, else NumPy), ``"numpy"``,
    ``"cupy"`` (an error when unusable) or a module.
    """
    if xp is None or (isinstance(xp, str) and xp.lower() == "auto"):
        cp = _cupy_if_usable()
        return np if cp is None else cp
    if isinstance(xp, str):
        name = xp.lower()
        if name == "numpy":
            return np
        if name == "cupy":
            cp = _cupy_if_usable()
            if cp is None:
                raise ExitWaveError("xp='cupy' was asked for but CuPy is not installed or sees "
                                    "no GPU; use xp='numpy' (or leave xp unset)")
            return cp
        raise ExitWaveError(f"unknown array module {xp!r}; use 'numpy', 'cupy' or 'auto'")
    if not hasattr(xp, "fft") or not hasattr(xp, "asarray"):
        raise ExitWaveError(f"xp must be an array module such as numpy or cupy, got {xp!r}")
    return xp


def device_name(xp) -> str:
    """``"CPU"`` for NumPy, ``"CUDA"`` otherwise."""
    return "CPU" if xp is np else "CUDA"


def fft2(xp, a):
    """2-D FFT of the last two axes (SciPy's multithreaded one for NumPy)."""
    if xp is np:
        from scipy import fft

        return fft.fft2(a, workers=-1, overwrite_x=False)
    return xp.fft.fft2(a)


def ifft2(xp, a):
    """Inverse of :func:`fft2`."""
    if xp is np:
        from scipy import fft

        return fft.ifft2(a, workers=-1, overwrite_x=False)
    return xp.fft.ifft2(a)


def synchronize(xp) -> None:
    """Wait for the GPU (timings per iteration); nothing for NumPy."""
    if xp is not np:
        xp.cuda.Device().synchronize()


def to_numpy(a) -> np.ndarray:
    """A NumPy array from a NumPy or CuPy one."""
    if isinstance(a, np.ndarray):
        return a
    get = getattr(a, "get", None)
    return np.asarray(get() if get is not None else a)
