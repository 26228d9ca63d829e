"""Microscope parameters of the image model and the Table 1 ranges they are drawn from.

Part of :mod:`napari_exitwave.physics` (which re-exports every name here and documents the
conventions once): lengths in A, angles in rad, dose in e/A^2, abTEM's ``defocus = -C10``; the
image blur in pixels of the image grid by default (``blur_unit``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

DEFAULT_ENERGY = 50e3
"""Default acceleration voltage, eV (the paper's 50 keV)."""

BLUR_UNITS = ("px", "A")
"""Units of :attr:`MicroscopeParameters.blur`: pixels of the image grid (default) or A."""


@dataclasses.dataclass
class MicroscopeParameters:
    """Microscope parameters of one image (lengths in A, angles in rad).

    ``defocus`` follows abTEM (``defocus = -C10``). ``Cs`` is C30 in A (1 um = 1e4 A).
    ``astigmatism`` / ``astigmatism_angle`` are C12 / phi12, ``coma`` / ``coma_angle`` are
    C21 / phi21. ``focal_spread`` is the abTEM focal spread (A), ``blur`` the standard
    deviation of the Gaussian image blur in ``blur_unit`` (``"px"``: pixels of the image
    grid, the default; ``"A"``: Angstrom; :meth:`blur_sigma` gives it in A), ``dose`` in
    e/A^2 (``inf`` means noise-free), ``mtf_c1..c3`` the detector MTF (``mtf_c1 = 1`` is a
    perfect detector).
    """

    defocus: float = 0.0
    Cs: float = 0.0
    astigmatism: float = 0.0
    astigmatism_angle: float = 0.0
    coma: float = 0.0
    coma_angle: float = 0.0
    focal_spread: float = 0.0
    blur: float = 0.0
    dose: float = math.inf
    mtf_c1: float = 1.0
    mtf_c2: float = 0.15
    mtf_c3: float = 1.0
    energy: float = DEFAULT_ENERGY
    blur_unit: str = "px"

    def __post_init__(self):
        if self.blur_unit not in BLUR_UNITS:
            raise ValueError(f"blur_unit must be one of {BLUR_UNITS}, got {self.blur_unit!r}")

    def blur_sigma(self, sampling: float) -> float:
        """Standard deviation of the image blur in A on an image grid of ``sampling`` A/px."""
        return float(self.blur) * (float(sampling) if self.blur_unit == "px" else 1.0)

    def on_grid(self, from_sampling: float, to_sampling: float) -> "MicroscopeParameters":
        """The same microscope for images on a grid of ``to_sampling`` A/px, when the blur (px)
        and the detector MTF (frequencies in units of the Nyquist frequency) refer to a grid of
        ``from_sampling``: the blur in A, the MTF's ``c2`` times ``to / from`` (the same MTF of
        the physical frequency; exact for images Fourier-resampled from the detector grid).

        >>> p = MicroscopeParameters(blur=1.0, mtf_c1=0.1, mtf_c2=0.15).on_grid(0.1, 0.2)
        >>> round(p.blur, 3), p.blur_unit, round(p.mtf_c2, 3)
        (0.1, 'A', 0.3)
        """
        return dataclasses.replace(self, blur=self.blur_sigma(from_sampling), blur_unit="A",
                                   mtf_c2=self.mtf_c2 * float(to_sampling) / float(from_sampling))

    def to_dict(self) -> dict[str, Any]:
        return {k: (v if k == "blur_unit" else float(v))
                for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "MicroscopeParameters":
        """The inverse of :meth:`to_dict`. A dict without ``blur_unit`` is in pixels."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown microscope parameters: {sorted(unknown)}")
        return cls(**{k: (str(v) if k == "blur_unit" else float(v)) for k, v in d.items()})


@dataclasses.dataclass
class ParameterRanges:
    """Ranges of the microscope parameters (Table 1 of the paper; lengths in A).

    Every parameter is drawn uniformly except the dose (uniform in log10). ``blur`` is in
    ``blur_unit``: pixels of the image grid by default (Table 1's row, see the module doc),
    ``"A"`` for the old reading. The defoci of a series are ``d0 + i * step`` with ``step = total_defocus_range / (n - 1) +- step_jitter``
    and ``d0`` chosen so that every image lies inside ``defocus``.
    """

    defocus: tuple[float, float] = (-150.0, 150.0)
    Cs: tuple[float, float] = (-15e4, 15e4)  # -15..15 um
    astigmatism: tuple[float, float] = (0.0, 25.0)
    coma: tuple[float, float] = (0.0, 600.0)
    focal_spread: tuple[float, float] = (5.0, 20.0)
    blur: tuple[float, float] = (0.5, 1.5)  # in blur_unit (pixels of the image grid)
    log10_dose: tuple[float, float] = (2.5, 5.0)
    mtf_c1: tuple[float, float] = (-0.6, 0.2)
    mtf_c2: tuple[float, float] = (0.1, 0.2)
    mtf_c3: tuple[float, float] = (0.6, 1.8)
    total_defocus_range: float = 100.0  # 10 nm spanned by the series
    step_jitter: float = 1.0  # +-0.1 nm on each step
    energy: float = DEFAULT_ENERGY
    blur_unit: str = "px"

    def __post_init__(self):
        if self.blur_unit not in BLUR_UNITS:
            raise ValueError(f"blur_unit must be one of {BLUR_UNITS}, got {self.blur_unit!r}")

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v)
                for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ParameterRanges":
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()})


def sample_parameters(rng: np.random.Generator, n_images: int = 3,
                      ranges: ParameterRanges | None = None) -> list[MicroscopeParameters]:
    """Draw the microscope parameters of one focal series (shared by all its images but defocus).

    Returns a list of ``n_images`` :class:`MicroscopeParameters` with increasing defocus.
    """
    if n_images < 1:
        raise ValueError(f"n_images must be >= 1, got {n_images}")
    r = ParameterRanges() if ranges is None else ranges

    def u(lo_hi):
        return float(rng.uniform(*lo_hi))

    if n_images == 1:
        steps = np.zeros(0)
    else:
        nominal = r.total_defocus_range / (n_images - 1)
        steps = nominal + rng.uniform(-r.step_jitter, r.step_jitter, size=n_images - 1)
    offsets = np.concatenate([[0.0], np.cumsum(steps)])
    lo, hi = r.defocus
    if offsets[-1] > hi - lo:
        raise ValueError("the focal series spans more defocus than the allowed range")
    d0 = rng.uniform(lo, hi - offsets[-1])
    shared = dict(
        Cs=u(r.Cs),
        astigmatism=u(r.astigmatism), astigmatism_angle=float(rng.uniform(0, 2 * np.pi)),
        coma=u(r.coma), coma_angle=float(rng.uniform(0, 2 * np.pi)),
        focal_spread=u(r.focal_spread), blur=u(r.blur),
        dose=float(10 ** u(r.log10_dose)),
        mtf_c1=u(r.mtf_c1), mtf_c2=u(r.mtf_c2), mtf_c3=u(r.mtf_c3),
        energy=float(r.energy), blur_unit=r.blur_unit,
    )
    return [MicroscopeParameters(defocus=float(d0 + o), **shared) for o in offsets]
