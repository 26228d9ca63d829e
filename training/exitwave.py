"""Exit waves by multislice (abTEM 1.0) and the network's target.

:func:`simulate_exit_wave` runs abTEM's multislice on an ASE structure (plane wave, 50 keV,
0.05 A lateral sampling, 0.2 A slices) and returns

- ``wave``: the exit wave Fourier-resampled (band-limited, :func:`physics.fourier_resample`) to
  the network's sampling (0.105 A/px by default), vacuum = 1 + 0j;
- ``target``: ``wave`` folded with a Gaussian of standard deviation 0.15 A (15 pm,
  :func:`physics.gaussian_blur`) on the same grid - what the network learns to output.

Debye-Waller smearing
---------------------
The paper smears the potential of every atom with a Gaussian of mean-square width ``<u^2>``
(Eq. (1), :func:`physics.debye_waller_u2`: 0.0030 A^2 for MoS2 at 300 K) instead of running
frozen phonons. abTEM 1.0 supports exactly this in its *infinite* projection: a
parametrization's ``sigmas`` (standard deviation per element, A) multiply each element's
projected scattering factor by ``exp(-2 pi^2 sigma^2 k^2)`` (abtem/integrals.py,
``ScatteringFactorProjectionIntegrals._calculate_scattering_factor``), i.e. a 2-D Gaussian
convolution of the projected potential with ``sigma^2 = <u^2>`` per direction. (abTEM's
``FrozenPhonons(num_configs=1, sigmas=...)`` would instead *displace* the atoms randomly once,
which is a single snapshot, not the smeared average.) We therefore build
``Potential(atoms, parametrization=LobatoParametrization(sigmas=sqrt(<u^2>)),
projection="infinite")``. The smearing along the beam (0.055 A) is below the slice thickness
and ignored, as the infinite projection puts each atom into one slice.

Exit plane
----------
The beam enters at ``z = 0`` and the wave is taken at the bottom of the cell, which
:mod:`exitwave_training.structures` puts ``exit_distance`` (2 A by default) below the lowest
atom. The lateral cell must be a whole number of output pixels (the wave is periodic over it);
the multislice grid is the smallest FFT-friendly one whose sampling is at most the requested
0.05 A, so its field of view is exactly that of the output.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from napari_exitwave import physics

__all__ = ["ExitWaveConfig", "ExitWave", "simulate_exit_wave", "resolve_device",
           "fft_friendly", "multislice_gpts"]


@dataclasses.dataclass
class ExitWaveConfig:
    """Multislice settings (lengths in A, energy in eV).

    ``sampling`` is the largest allowed multislice pixel size (the grid is refined to an
    FFT-friendly size that tiles the cell exactly). ``u2`` is the Debye-Waller <u^2> in A^2
    (``None``: Eq. (1) with the mass of S, 580 K, 300 K); ``0`` switches smearing off.
    ``target_sigma`` is the standard deviation (A) of the Gaussian folded into the target.
    ``device``: ``"auto"`` (GPU with CuPy if present), ``"cpu"`` or ``"gpu"``.
    ``skip_vacuum``: run the multislice only over the slices from the first to the last atom
    and propagate the rest of the way to the exit plane in one Fresnel step (the same result,
    fewer slices; see ``_trim_vacuum_slices``).
    """

    energy: float = physics.DEFAULT_ENERGY
    sampling: float = 0.05
    slice_thickness: float = 0.2
    u2: float | None = None
    parametrization: str = "lobato"
    target_sigma: float = 0.15
    device: str = "auto"
    skip_vacuum: bool = True

    def __post_init__(self):
        if not self.energy > 0:
            raise ValueError(f"energy must be positive (eV), got {self.energy}")
        if not self.sampling > 0:
            raise ValueError(f"multislice sampling must be positive (A), got {self.sampling}")
        if not self.slice_thickness > 0:
            raise ValueError(f"slice_thickness must be positive (A), got {self.slice_thickness}")
        if self.u2 is not None and self.u2 < 0:
            raise ValueError(f"u2 must be >= 0 (A^2), got {self.u2}")
        if self.target_sigma < 0:
            raise ValueError(f"target_sigma must be >= 0 (A), got {self.target_sigma}")
        if self.parametrization not in ("lobato", "kirkland"):
            raise ValueError(f"parametrization must be 'lobato' or 'kirkland', got {self.parametrization!r}")
        if self.device not in ("auto", "cpu", "gpu"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'gpu', got {self.device!r}")

    @property
    def debye_waller_u2(self) -> float:
        return physics.debye_waller_u2() if self.u2 is None else float(self.u2)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["u2_used"] = self.debye_waller_u2
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ExitWaveConfig":
        d = {k: v for k, v in d.items() if k != "u2_used"}
        return cls(**d)


@dataclasses.dataclass
class ExitWave:
    """An exit wave at the network's sampling and its target (both complex64, vacuum 1)."""

    wave: np.ndarray
    target: np.ndarray
    sampling: float
    multislice_sampling: float
    multislice_gpts: tuple[int, int]
    device: str


_GPU_AVAILABLE: bool | None = None


def resolve_device(device: str = "auto") -> str:
    """``"gpu"`` if requested or ``"auto"`` and CuPy sees a CUDA device, else ``"cpu"``."""
    global _GPU_AVAILABLE
    if device == "cpu":
        return "cpu"
    if _GPU_AVAILABLE is None:
        try:
            import cupy

            _GPU_AVAILABLE = cupy.cuda.runtime.getDeviceCount() > 0
        except Exception:  # noqa: BLE001 - no CuPy, no driver, no device
            _GPU_AVAILABLE = False
    if device == "gpu" and not _GPU_AVAILABLE:
        raise ValueError("device='gpu' needs CuPy and a CUDA device; none found (use 'auto' or 'cpu')")
    return "gpu" if _GPU_AVAILABLE else "cpu"


def fft_friendly(n: int) -> int:
    """The smallest integer >= n whose prime factors are 2, 3 and 5 (fast FFTs)."""
    n = max(1, int(n))
    while True:
        m = n
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 1


def multislice_gpts(extent: float, max_sampling: float) -> int:
    """Grid points for a field of view ``extent`` at a pixel size of at most ``max_sampling``."""
    return fft_friendly(math.ceil(extent / max_sampling - 1e-9))


def _check_cell(atoms, sampling: float) -> tuple[int, int]:
    cell = np.asarray(atoms.cell)
    if cell.shape != (3, 3) or np.any(np.abs(cell - np.diag(np.diag(cell))) > 1e-8):
        raise ValueError("the structure's cell must be orthorhombic (diagonal), as made by "
                         "exitwave_training.structures")
    lx, ly, lz = np.diag(cell)
    if lx <= 0 or ly <= 0 or lz <= 0:
        raise ValueError(f"the cell must have positive size in x, y and z, got {lx, ly, lz}")
    shape = []
    for name, length in (("y", ly), ("x", lx)):
        n = length / sampling
        if abs(n - round(n)) > 1e-6 * max(1.0, n) or round(n) < 2:
            raise ValueError(
                f"the output sampling {sampling} A/px does not divide the cell's {name} extent "
                f"{length:.6g} A ({n:.4f} px); make the cell a whole number of pixels "
                f"(extent = size * sampling) or choose another sampling")
        shape.append(int(round(n)))
    return shape[0], shape[1]


def _trim_vacuum_slices(atoms, slice_thickness: float):
    """Drop the vacuum slices above the first and below the last atom, keeping the slicing.

    abTEM cuts a cell of depth ``L`` into ``n = ceil(L / dz)`` slices of ``h = L / n``. A plane
    wave crosses the vacuum slices above the first atom unchanged, and the vacuum slices below
    the last atom only apply the Fresnel propagator, which :func:`_resample_and_target` applies
    in one step. So we shift the atoms up by whole slices, end the cell after the slice of the
    last atom, and return ``(atoms, slice thicknesses, remaining free distance)``; the atoms
    keep their slice assignment and the exit plane stays where it was.
    """
    depth = float(atoms.cell[2, 2])
    n = int(math.ceil(depth / slice_thickness - 1e-9))
    h = depth / n
    if len(atoms) == 0:
        empty = atoms.copy()
        empty.set_cell([atoms.cell[0, 0], atoms.cell[1, 1], h])
        return empty, (h,), depth - h
    z = atoms.positions[:, 2]
    first = int(np.clip(np.floor(z.min() / h), 0, n - 1))
    last = int(np.clip(np.floor(z.max() / h), first, n - 1))
    trimmed = atoms.copy()
    trimmed.positions[:, 2] -= first * h
    n_kept = last - first + 1
    trimmed.set_cell([atoms.cell[0, 0], atoms.cell[1, 1], n_kept * h])
    return trimmed, (h,) * n_kept, (n - 1 - last) * h


def _resample_and_target(array: np.ndarray, shape: tuple[int, int], sampling: float,
                         sigma: float, free_distance: float = 0.0,
                         energy: float = physics.DEFAULT_ENERGY) -> tuple[np.ndarray, np.ndarray]:
    """:func:`physics.fourier_resample` to ``shape`` and :func:`physics.gaussian_blur` of it.

    Both from one forward FFT in single precision (the multislice result is complex64); the
    same spectrum crop as ``physics.fourier_resample`` and the same Gaussian as
    ``physics.gaussian_blur`` (tested against them). ``free_distance`` (A) of free-space
    Fresnel propagation, abTEM's ``exp(-i pi lambda k^2 dz)``, is applied on the way.
    """
    import scipy.fft

    ny0, nx0 = array.shape
    ft = physics._fourier_crop_or_pad(scipy.fft.fft2(np.asarray(array, np.complex64)), shape)
    ft *= np.float32(shape[0] * shape[1] / (ny0 * nx0))
    if free_distance > 0 or sigma > 0:
        ky, kx = physics.spatial_frequencies(shape, sampling)
        k2 = kx**2 + ky**2
    if free_distance > 0:
        lam = physics.energy2wavelength(energy)
        ft *= np.exp(-1j * np.pi * lam * free_distance * k2).astype(np.complex64)
    wave = scipy.fft.ifft2(ft)
    if sigma > 0:
        ft *= np.exp(-2 * np.pi**2 * sigma**2 * k2).astype(np.float32)
    target = scipy.fft.ifft2(ft)
    return wave.astype(np.complex64, copy=False), target.astype(np.complex64, copy=False)


def simulate_exit_wave(atoms, sampling: float = 0.105, config: ExitWaveConfig | None = None
                       ) -> ExitWave:
    """Multislice exit wave of ``atoms`` and its target at the network's ``sampling``.

    Parameters
    ----------
    atoms : ase.Atoms
        Structure in an orthorhombic cell whose ``x`` and ``y`` extents are whole multiples
        of ``sampling``; beam along ``+z``, exit plane at the bottom of the cell.
    sampling : float
        Pixel size of the returned arrays in A (the network's sampling), >= the multislice
        sampling.
    config : ExitWaveConfig, optional

    Returns
    -------
    ExitWave
        ``wave`` and ``target`` complex64 ``(ny, nx)`` with ``ny = Ly / sampling``; array
        axis 0 is ``y``, axis 1 is ``x`` (so ``wave[row, col]`` is at ``(x, y) = (col, row) *
        sampling``).

    Raises
    ------
    ValueError
        For a sampling that does not divide the cell, a sampling finer than the multislice
        grid, or an invalid configuration.
    """
    import abtem
    from abtem.parametrizations import KirklandParametrization, LobatoParametrization

    config = ExitWaveConfig() if config is None else config
    if not sampling > 0:
        raise ValueError(f"sampling must be positive (A/px), got {sampling}")
    if sampling < config.sampling:
        raise ValueError(f"output sampling {sampling} A/px is finer than the multislice sampling "
                         f"{config.sampling} A; lower ExitWaveConfig.sampling")
    ny, nx = _check_cell(atoms, sampling)
    lx, ly, lz = np.diag(np.asarray(atoms.cell))
    gy, gx = multislice_gpts(ly, config.sampling), multislice_gpts(lx, config.sampling)
    device = resolve_device(config.device)
    u2 = config.debye_waller_u2
    sigmas = math.sqrt(u2) if u2 > 0 else None
    param_cls = LobatoParametrization if config.parametrization == "lobato" else KirklandParametrization
    parametrization = param_cls(sigmas=sigmas)
    if config.skip_vacuum:
        atoms, slice_thickness, free_distance = _trim_vacuum_slices(atoms, config.slice_thickness)
    else:
        slice_thickness, free_distance = config.slice_thickness, 0.0
    # abTEM's potential grid is (x, y): array axis 0 is x; we transpose at the end.
    potential = abtem.Potential(atoms, gpts=(gx, gy), slice_thickness=slice_thickness,
                                parametrization=parametrization, projection="infinite",
                                device=device)
    plane_wave = abtem.PlaneWave(energy=config.energy, device=device)
    exit_waves = plane_wave.multislice(potential, lazy=False)
    array = exit_waves.array
    if device == "gpu":
        import cupy

        array = cupy.asnumpy(array)
    ms_sampling = lx / gx
    wave, target = _resample_and_target(np.asarray(array).T, (ny, nx), sampling,
                                        config.target_sigma, free_distance, config.energy)
    return ExitWave(wave=wave, target=target,
                    sampling=float(sampling), multislice_sampling=float(ms_sampling),
                    multislice_gpts=(gy, gx), device=device)
