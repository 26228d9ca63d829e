"""The physics check of a reconstruction: the microscope estimate and the physics residual.

Qt-free glue between :mod:`napari_exitwave.reconstruct`, the aberration estimator
(:mod:`napari_exitwave.estimate`, optional: the package works without it or its model) and
:func:`napari_exitwave.residual.physics_residual`:

- :func:`estimate_or_none` runs the installed estimator, or says why it could not;
- :func:`microscope_parameters` combines what the user gave (defocus, Cs, focal spread, dose,
  full per-image parameters) with the estimate: the user's values win;
- :func:`check_residual` re-images the exit wave and compares it with the images it came from;
- :func:`verdict` / :func:`residual_line` put the reduced chi-square into words.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from . import physics

__all__ = ["CHECK_MODES", "CONSISTENT_CHI2", "FITTED_MISFIT_ALARM", "NOT_CONTRADICTED",
           "estimator_available", "estimate_or_none", "microscope_parameters", "params_on_grid",
           "fit_estimated", "check_residual", "verdict", "residual_line", "residual_metadata"]

CHECK_MODES = (False, True, "auto")
"""``physics_check`` of :func:`~napari_exitwave.reconstruct.iter_reconstruct`: off, on, or
"auto" (on when an estimator is installed or the user gave the parameters, else a note)."""

CONSISTENT_CHI2 = 1.5
"""Reduced chi-square up to which the exit wave explains the images ("consistent")."""

MARGINAL_CHI2 = 3.0
"""Up to this: "marginal" (small parameter errors, a slightly wrong noise model)."""

MISFIT_ALARM = 0.016
"""Misfit beyond the shot noise (rms, vacuum intensity = 1) above which the exit wave does not
explain the images, whatever the chi-square: the 95th percentile of good ``mos2``
reconstructions in benchmarks/residual_study.py (docs/residual.md: 5-7% false alarms, 92-100%
of the failure cases above it). The chi-square alone misses most failures at low dose."""


def estimator_available(estimator=None) -> str | None:
    """The estimator that would run (``estimator`` or the installed default), or None when
    :mod:`napari_exitwave.estimate` or its model is absent."""
    if estimator is not None:
        return str(getattr(estimator, "name", estimator))
    try:
        from .estimate import default_estimator
    except ImportError:
        return None
    try:
        return default_estimator()
    except Exception:  # noqa: BLE001 - a broken model folder must not stop a reconstruction
        return None


def estimate_or_none(images: np.ndarray, sampling: float | None, estimator=None,
                     providers="auto") -> tuple[Any, str | None]:
    """``(AberrationEstimate, None)``, or ``(None, why not)`` in plain words."""
    if sampling is None:
        return None, "the pixel size is unknown, so the microscope cannot be estimated"
    name = estimator_available(estimator)
    if name is None:
        return None, "no aberration estimator is installed"
    from .estimate import estimate_aberrations

    try:
        return estimate_aberrations(np.asarray(images), float(sampling), model=estimator,
                                    providers=providers), None
    except Exception as e:  # noqa: BLE001 - reported as a warning, the exit wave stands
        return None, f"the aberration estimator {name!r} failed: {e}"


def microscope_parameters(n_images: int, estimate=None, *, defocus: Sequence[float] | None = None,
                          Cs: float | None = None, focal_spread: float | None = None,
                          dose: float | None = None,
                          microscope: Sequence[physics.MicroscopeParameters] | None = None,
                          energy: float | None = None
                          ) -> list[physics.MicroscopeParameters] | None:
    """One :class:`~napari_exitwave.physics.MicroscopeParameters` per image, or None when
    nothing is known (no estimate, no parameters, no defocus).

    The base is ``microscope`` (full per-image parameters), else the estimate's, else the
    defaults (no aberrations, no blur, perfect detector); ``defocus`` (A, one per image), ``Cs``
    (A), ``focal_spread`` (A), ``dose`` (e/A^2) and ``energy`` (eV) given by the user replace
    the base's. Blur stays in the base's unit.
    """
    if microscope is not None:
        base = list(microscope)
    elif estimate is not None:
        base = list(estimate.params)
    elif defocus is not None:
        base = [physics.MicroscopeParameters() for _ in range(n_images)]
    else:
        return None
    if len(base) != n_images:
        raise ValueError(f"{len(base)} microscope parameter sets for {n_images} images")
    if defocus is not None and len(defocus) != n_images:
        raise ValueError(f"{len(defocus)} defocus values for {n_images} images")
    out = []
    for i, p in enumerate(base):
        change: dict[str, Any] = {}
        if defocus is not None:
            change["defocus"] = float(defocus[i])
        for key, v in (("Cs", Cs), ("focal_spread", focal_spread), ("dose", dose),
                       ("energy", energy)):
            if v is not None:
                change[key] = float(v)
        out.append(dataclasses.replace(p, **change))
    return out


def params_on_grid(params: Sequence[physics.MicroscopeParameters], params_sampling: float,
                   sampling: float) -> list[physics.MicroscopeParameters]:
    """``params`` whose blur (px) and detector MTF (frequencies in units of the Nyquist
    frequency) refer to a grid of ``params_sampling`` A/px, expressed for a grid of ``sampling``
    A/px: the blur in A, the MTF's ``c2`` scaled by ``sampling / params_sampling`` (the same MTF
    of the physical frequency; exact for images Fourier-resampled from the detector grid)."""
    return [p.on_grid(params_sampling, sampling) for p in params]


def fit_estimated(wave: np.ndarray, sampling: float, images: np.ndarray,
                  params: Sequence[physics.MicroscopeParameters], *, user_defocus: bool = False,
                  user_Cs: bool = False, user_dose: bool = False):
    """Estimated ``params`` (on the wave's grid) with defocus, C12, C21, Cs and the detector
    MTF fitted to ``images`` with ``wave`` held fixed
    (:func:`napari_exitwave.aberration_fit.fit_aberrations`; a value the user gave is kept; the
    MTF only when the noise spectrum gave one, its noise variance held, and not when the user
    gave the dose, which then fixes the noise). Returns ``(params,
    AberrationFit)``, or ``(params, why not)`` unchanged when the fit cannot run."""
    from .aberration_fit import FIT_PARAMETERS, MTF_PARAMETERS, fit_aberrations

    wave = np.asarray(wave)
    images = np.asarray(images, float)
    ny, nx = (min(a, b) for a, b in zip(images.shape[1:], wave.shape))
    names = [n for n in FIT_PARAMETERS
             if not (n == "defocus" and user_defocus) and not (n == "Cs" and user_Cs)]
    if not user_dose:
        names += MTF_PARAMETERS
    try:
        res = fit_aberrations(wave[:ny, :nx], sampling, images[:, :ny, :nx], params, fit=names)
    except ValueError as e:
        return list(params), str(e)
    return res.params, res


def check_residual(exit_wave: np.ndarray, sampling: float, images: np.ndarray,
                   params: Sequence[physics.MicroscopeParameters], params_sampling: float,
                   border: int = 8):
    """:func:`~napari_exitwave.residual.physics_residual` of ``images`` (the grid of the exit
    wave, ``sampling`` A/px) with ``params`` whose blur in px refers to a grid of
    ``params_sampling`` A/px (the blur is converted to A, so the two grids may differ).

    Returns ``(Residual, None)`` or ``(None, why not)``.
    """
    from .residual import physics_residual

    wave = np.asarray(exit_wave)
    images = np.asarray(images)
    if images.shape[1:] != wave.shape:  # e.g. a network that crops; compare the common part
        ny, nx = (min(a, b) for a, b in zip(images.shape[1:], wave.shape))
        images, wave = images[:, :ny, :nx], wave[:ny, :nx]
    if not all(np.isfinite(p.dose) and p.dose > 0 for p in params):
        return None, ("the dose is unknown (no estimate of it, none given), so the residual "
                      "cannot be put in noise units; give it (--dose, e/A^2)")
    params = params_on_grid(params, params_sampling, sampling)
    b = min(border, max(0, (min(wave.shape) - 1) // 2 - 1))
    try:
        return physics_residual(wave, float(sampling), images, params, border=b), None
    except ValueError as e:
        return None, str(e)


_DOES_NOT_EXPLAIN = ("the exit wave does not explain the images: wrong microscope parameters, "
                     "a specimen outside the network's training, images in the wrong order or "
                     "a wrong pixel size")

INCONCLUSIVE = ("not conclusive: the microscope parameters are estimated (not fitted), and "
                "with estimated parameters the residual does not tell a good reconstruction from "
                "a failed one (the estimator does not determine C12 or C21; docs/residual.md); "
                "give the microscope's parameters for a verdict")
"""The verdict when the parameters come from the estimator and were not fitted
(``fit_aberrations=False``): benchmarks/residual_study.py with ``--params estimated`` (the
noise-spectrum MTF and doses included) found 4-45% of the failure cases above the good cases'
95th percentile, with 12% false alarms held out (docs/residual.md)."""


FITTED_MISFIT_ALARM = 0.0226
"""Misfit above which the exit wave does not explain the images when the parameters are
estimated and then fitted with the exit wave held fixed (source ``"... + fit"``): the 95th
percentile of good ``mos2`` reconstructions in ``benchmarks/residual_study.py --params fitted``
with the detector MTF fitted too (docs/residual.md, 2026-12-04: 2% false alarms held out;
67-100% of the failure cases above it)."""

NOT_CONTRADICTED = ("no alarm with the fitted parameters: the check flagged 67-100% of failed "
                    "reconstructions at 2-5% false alarms (docs/residual.md); the microscope's "
                    "own parameters make it stronger")
"""The verdict below :data:`FITTED_MISFIT_ALARM` with fitted parameters."""


def verdict(reduced_chi2: float, misfit: float | None = None, source: str | None = None) -> str:
    """The reduced chi-square (and the misfit, when given) in words. With estimated parameters
    (``source`` starts with ``"estimate"``): :data:`INCONCLUSIVE`, or when they were fitted
    (``source`` ends with ``"+ fit"``) an alarm above :data:`FITTED_MISFIT_ALARM` and
    :data:`NOT_CONTRADICTED` below it."""
    if not np.isfinite(reduced_chi2):
        return "not finite: the check failed"
    if source and source.startswith("estimate") and source.endswith("+ fit"):
        if misfit is not None and np.isfinite(misfit) and misfit > FITTED_MISFIT_ALARM:
            # 2-5% of good reconstructions alarm too (docs/residual.md)
            return (_DOES_NOT_EXPLAIN + ", or (with estimated parameters, 2-5% of good "
                    "reconstructions) a microscope the fit did not find; give the "
                    "microscope's parameters to tell")
        return NOT_CONTRADICTED
    if source and source.startswith("estimate"):
        return INCONCLUSIVE
    if reduced_chi2 > MARGINAL_CHI2 or (misfit is not None and np.isfinite(misfit)
                                        and misfit > MISFIT_ALARM):
        return _DOES_NOT_EXPLAIN
    if reduced_chi2 <= CONSISTENT_CHI2:
        return "consistent"
    return "marginal: small parameter errors or a slightly different noise model"



def residual_line(reduced_chi2: float, source: str | None = None,
                  misfit: float | None = None) -> str:
    """``physics residual: reduced chi-square 1.08, misfit 0.004 (consistent)``.

    ``source``: where the parameters came from (``"given"``, ``"estimate"``,
    ``"estimate + given"``); with estimated parameters the figures are printed but the verdict
    is :data:`INCONCLUSIVE`.
    """
    m = "" if misfit is None or not np.isfinite(misfit) else f", misfit {misfit:.3g}"
    return (f"physics residual: reduced chi-square {reduced_chi2:.3g}{m} "
            f"({verdict(reduced_chi2, misfit, source)})")


def residual_metadata(residual, params: Sequence[physics.MicroscopeParameters] | None,
                      source: str) -> dict[str, Any]:
    """The residual's summary for ``Reconstruction.to_metadata()`` (JSON-friendly)."""
    return {"reduced_chi2": float(residual.reduced_chi2),
            "chi2": [float(c) for c in residual.chi2],
            "misfit": [float(m) for m in residual.misfit],
            "misfit_rms": float(residual.misfit_rms),
            "gain": [float(g) for g in residual.gain],
            "offset": [float(o) for o in residual.offset],
            "verdict": verdict(residual.reduced_chi2, residual.misfit_rms, source),
            "parameters_from": source,
            "microscope": [p.to_dict() for p in params] if params is not None else None}
