"""Refine estimated aberrations against the images, with the exit wave held fixed.

The estimator network (:mod:`napari_exitwave.estimate`) reads defocus to about 13 A and does not
determine two-fold astigmatism C12 or coma C21 from a 27 A field of mostly crystalline MoS2.
With a reconstructed exit wave in hand they are a small fit: image the wave again with the image
model (:mod:`napari_exitwave.physics`) and move the parameters until the model images match the
measured ones. :func:`fit_aberrations` does that by Nelder-Mead on the dose-free misfit (rms of
``measured / gain - model``, the gain from the image means as in
:func:`napari_exitwave.residual.physics_residual`), over

- a defocus offset shared by the series (the step of the estimate kept: the images' order is
  what the residual checks, the fit must not be able to undo it),
- C12 and C21 as vector components (``C12 cos 2 phi12, C12 sin 2 phi12``; ``C21 cos phi21,
  C21 sin phi21``; no angle wraps), and Cs.

The misfit has many valleys: defocus and Cs move the CTF's rings faster the higher the
frequency, so a start 20 A or a few um off (the estimator's typical errors) lies in another
valley of the full-band misfit, where a local search stays (the 7 worst-fitted of 60 true
waves of the residual study ended 10-43 A and 8-20 um off that way). The fit therefore goes
coarse to fine: a grid search over the defocus offset, Cs and the direction of C12 on a quarter
of the frequency band, where the valleys are wide, then Nelder-Mead on half the band from the
best few, then on the fit's own band from the best of those (the same 2-6 s in all).

The images and the wave are Fourier-cropped to half the frequency range first (``downsample``):
beyond half the Nyquist frequency of the 0.105 A/px grid the images hold noise only (the
information limit, :mod:`napari_exitwave.detector`), and each model evaluation costs a quarter.

The detector MTF can be fitted too (:data:`MTF_PARAMETERS`, on the fit's band once the aberrations
are in their valley, then the aberrations once more). The noise spectrum
(:mod:`napari_exitwave.detector`) sees the MTF only beyond the information limit, where its level
trades against the dose (on the bundled sample it read c1 0.03, c2 0.10, c3 0.91 for the true 0.1,
0.15, 1.2, and the good reconstruction raised a false alarm, misfit 0.0253 > 0.024; with the MTF
fitted 0.0080, docs/residual.md); the signal band pins the MTF where the images carry contrast. The
noise variance the spectrum measured is held: the dose moves with the MTF so that ``mean(MTF^2) /
dose`` stays (:func:`hold_noise_variance`). The fitted MTF is the one that makes *this exit wave*
explain the images: a network's wave is its training target, folded with a 15 pm Gaussian, and the
MTF makes up for that smoothing too (on the bundled sample's target it goes to the top of the
Table-1 range, c1 0.2, c2 0.2), so it is not a measurement of the camera.

The fit moves the parameters toward those that explain the images *with this exit wave*: with a
wrong wave it finds the parameters that hide the error best, which is why only a few parameters
are fitted, none of which can reorder the images or rescale the pixel size, and the MTF stays
inside the training ranges.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Sequence

import numpy as np

from . import physics

__all__ = ["AberrationFit", "fit_aberrations", "FIT_PARAMETERS", "MTF_PARAMETERS",
           "hold_noise_variance", "table_values"]

FIT_PARAMETERS = ("defocus", "C12_a", "C12_b", "C21_a", "C21_b", "Cs")
"""The aberrations :func:`fit_aberrations` can fit (defocus offset in A, C12 and C21
components in A, Cs in A), and the first step of each in the search (:data:`_STEPS`)."""

MTF_PARAMETERS = ("mtf_c1", "mtf_c2", "mtf_c3")
"""The detector MTF's parameters (:func:`napari_exitwave.physics.mtf`), which
:func:`fit_aberrations` can fit too, in the signal band, after the aberrations."""

_STEPS = {"defocus": 10.0, "C12_a": 5.0, "C12_b": 5.0, "C21_a": 100.0, "C21_b": 100.0,
          "Cs": 2e4, "mtf_c1": 0.1, "mtf_c2": 0.02, "mtf_c3": 0.2}


@dataclasses.dataclass
class AberrationFit:
    """The result of :func:`fit_aberrations`.

    Attributes
    ----------
    params : list of MicroscopeParameters
        The start's parameters with the fitted values.
    start_misfit, misfit : float
        Rms misfit of the series (vacuum-intensity units, noise included) before and after.
    changes : dict
        Fitted change of every parameter from the start (A).
    evaluations : int
    seconds : float
    """

    params: list
    start_misfit: float
    misfit: float
    changes: dict
    evaluations: int
    seconds: float

    def summary(self) -> str:
        """One line for a terminal: the fitted values (abTEM conventions, A and um)."""
        p = self.params[0]
        d = ", ".join(f"{q.defocus:.0f}" for q in self.params)
        mtf = (f", MTF c1 {p.mtf_c1:.2f}, c2 {p.mtf_c2:.3f}, c3 {p.mtf_c3:.2f}"
               if set(MTF_PARAMETERS) & set(self.changes) else "")
        return (f"aberration fit (exit wave held fixed): defocus {d} A, Cs {p.Cs / 1e4:.2f} um, "
                f"C12 {p.astigmatism:.1f} A at {math.degrees(p.astigmatism_angle):.0f} deg, "
                f"C21 {p.coma:.0f} A at {math.degrees(p.coma_angle):.0f} deg{mtf}; misfit "
                f"{self.start_misfit:.3g} -> {self.misfit:.3g} ({self.evaluations} evaluations, "
                f"{self.seconds:.1f} s)")

    def to_dict(self) -> dict:
        return {"summary": self.summary(), "start_misfit": self.start_misfit, "misfit": self.misfit,
                "changes": dict(self.changes), "evaluations": self.evaluations,
                "seconds": self.seconds,
                "defocus": [float(p.defocus) for p in self.params],
                "Cs": float(self.params[0].Cs), "C12": float(self.params[0].astigmatism),
                "phi12": float(self.params[0].astigmatism_angle),
                "C21": float(self.params[0].coma), "phi21": float(self.params[0].coma_angle),
                "mtf": [float(self.params[0].mtf_c1), float(self.params[0].mtf_c2),
                        float(self.params[0].mtf_c3)],
                "dose": [float(p.dose) for p in self.params]}


def table_values(fit: dict) -> dict[str, str]:
    """The fitted values of :meth:`AberrationFit.to_dict` by the estimate table's row names
    (``defocus_mean``, ``defocus_step``, ``Cs``, ``C12``, ``phi12``, ``C21``, ``phi21``,
    ``detector MTF`` and ``dose`` when the MTF was fitted;
    :meth:`napari_exitwave.estimate.AberrationEstimate.rows`), as text with units; only what
    was fitted (a defocus the user gave is not)."""
    fitted = set(fit.get("changes") or ())
    d = list(fit.get("defocus") or [])
    out = {}
    if d and "defocus" in fitted:
        out["defocus_mean"] = f"{np.mean(d):.1f} A"
        if len(d) > 1:  # the fit keeps the step: shown so the column reads as a whole
            out["defocus_step"] = f"{(d[-1] - d[0]) / (len(d) - 1):.1f} A"
    if "Cs" in fit and "Cs" in fitted:
        out["Cs"] = f"{fit['Cs'] / 1e4:.2f} um"
    for amp, ang in (("C12", "phi12"), ("C21", "phi21")):
        if amp in fit and {amp + "_a", amp + "_b"} & fitted:
            out[amp] = f"{fit[amp]:.1f} A"
            out[ang] = f"{math.degrees(fit[ang]):.0f} deg"
    if "mtf" in fit and set(MTF_PARAMETERS) & fitted:
        c1, c2, c3 = fit["mtf"]
        out["detector MTF"] = f"c1 {c1:.2f}, c2 {c2:.3f}, c3 {c3:.2f}"
        if fit.get("dose"):  # the noise variance held: a new MTF, a new dose
            out["dose"] = f"{np.mean(fit['dose']):.3g} e/A^2"
    return out


def _vector(p: physics.MicroscopeParameters) -> dict[str, float]:
    return {"C12_a": p.astigmatism * math.cos(2 * p.astigmatism_angle),
            "C12_b": p.astigmatism * math.sin(2 * p.astigmatism_angle),
            "C21_a": p.coma * math.cos(p.coma_angle), "C21_b": p.coma * math.sin(p.coma_angle)}


def _apply(start: Sequence[physics.MicroscopeParameters], names, x,
           mtf_scale: float = 1.0) -> list:
    """``start`` with the changes ``x`` of ``names``; the MTF's ``c2`` (after its change) times
    ``mtf_scale`` (the same MTF on a grid ``mtf_scale`` times coarser; the blur is in A here)."""
    v = dict(zip(names, x))
    base = _vector(start[0])
    a12 = base["C12_a"] + v.get("C12_a", 0.0)
    b12 = base["C12_b"] + v.get("C12_b", 0.0)
    a21 = base["C21_a"] + v.get("C21_a", 0.0)
    b21 = base["C21_b"] + v.get("C21_b", 0.0)
    shared = dict(astigmatism=math.hypot(a12, b12),
                  astigmatism_angle=(math.atan2(b12, a12) / 2) % math.pi,
                  coma=math.hypot(a21, b21), coma_angle=math.atan2(b21, a21) % (2 * math.pi),
                  Cs=start[0].Cs + v.get("Cs", 0.0))
    out = []
    for p in start:
        q = dataclasses.replace(p, defocus=p.defocus + v.get("defocus", 0.0),
                                mtf_c1=p.mtf_c1 + v.get("mtf_c1", 0.0),
                                mtf_c2=p.mtf_c2 + v.get("mtf_c2", 0.0),
                                mtf_c3=p.mtf_c3 + v.get("mtf_c3", 0.0), **shared)
        out.append(q.on_grid(1.0, mtf_scale) if mtf_scale != 1.0 else q)
    return out


def hold_noise_variance(shape: Sequence[int], old: physics.MicroscopeParameters,
                        new: physics.MicroscopeParameters) -> float:
    """The dose of ``new`` at which its pixel noise variance on a grid of ``shape`` equals that of
    ``old`` (``dose * mean(MTF^2)`` held; :func:`napari_exitwave.residual.noise_variance_factor`).

    The noise spectrum (:mod:`napari_exitwave.detector`) measures the noise level; a different
    MTF fitted to the signal must not change it. Infinite doses stay infinite."""
    from .residual import noise_variance_factor

    if not math.isfinite(old.dose):
        return old.dose
    return float(old.dose * noise_variance_factor(shape, new)
                 / noise_variance_factor(shape, old))


def fit_aberrations(exit_wave: np.ndarray, sampling: float, images: np.ndarray,
                    start: Sequence[physics.MicroscopeParameters],
                    fit: Sequence[str] = FIT_PARAMETERS, *, downsample: int = 2,
                    border: int = 8, max_evaluations: int = 400, offset: float = 0.0,
                    max_defocus_change: float = 50.0, max_size: int | None = 256,
                    ranges: physics.ParameterRanges | None = None, coarse: bool = True,
                    n_starts: int = 3) -> AberrationFit:
    """Fit ``fit`` (of :data:`FIT_PARAMETERS`) so the exit wave imaged with the parameters
    matches ``images``; the other parameters stay at ``start``'s.

    Parameters
    ----------
    exit_wave : complex (ny, nx)
        Vacuum = 1 + 0j, on the images' grid (``sampling`` A/px).
    images : float (n, ny, nx)
        The measured intensities (counts, any gain, or vacuum = 1; not normalised).
    start : one MicroscopeParameters per image
        Blur in A or px of this grid; the MTF in units of this grid's Nyquist frequency.
    downsample : int
        Fourier-crop factor for the fit (1: full grid).
    max_evaluations : int
        Budget of model evaluations (one evaluation images the whole series once).
    max_defocus_change : float
        Largest defocus offset searched, A (the estimator's median error is 13 A).
    ranges : ParameterRanges
        The training ranges the fitted values stay in (with a 10% margin); default Table 1's.
    coarse : bool
        Start with a grid search over the defocus offset (10 A steps), Cs (2.5 um) and the
        direction of C12 on a quarter of the frequency band, refine the ``n_starts`` best on
        half the band, then the best of them on the fit's own band; without it, one
        Nelder-Mead search from ``start`` (which finds the nearest valley only).
    max_size : int or None
        Fit on the central ``max_size`` px square of a larger frame (the cost grows with the
        area; 256 px: about 2-3 s on 2 cores).
    """
    from scipy.optimize import minimize

    t0 = time.perf_counter()
    unknown = [f for f in fit if f not in FIT_PARAMETERS + MTF_PARAMETERS]
    if unknown:
        raise ValueError(f"cannot fit {unknown}; choose from {FIT_PARAMETERS + MTF_PARAMETERS}")
    wave = np.asarray(exit_wave)
    images = np.asarray(images, np.float64)
    if images.ndim != 3 or images.shape[1:] != wave.shape or len(start) != len(images):
        raise ValueError(f"need one parameter set per image and images shaped like the wave "
                         f"{wave.shape}, got {images.shape} and {len(start)} sets")
    if max_size and max(wave.shape) > max_size:  # the parameters are global: the centre will do
        y0, x0 = ((n - min(n, max_size)) // 2 for n in wave.shape)
        cut = (slice(y0, y0 + min(wave.shape[0], max_size)),
               slice(x0, x0 + min(wave.shape[1], max_size)))
        wave, images = wave[cut], images[:, cut[0], cut[1]]
    doses = [p.dose for p in start]
    start = [dataclasses.replace(p, blur=p.blur_sigma(sampling), blur_unit="A", dose=math.inf)
             for p in start]
    k = max(1, int(downsample))
    levels = {}  # downsample factor -> (misfit function, evaluation counter)

    def level(f: int):
        """The misfit on the grid Fourier-cropped by ``f`` (cached)."""
        if f in levels:
            return levels[f]
        ny, nx = wave.shape
        small = (max(16, ny // f), max(16, nx // f))
        if small != (ny, nx):
            s_small = sampling * ny / small[0]
            wave_s, _ = physics.fourier_resample(wave, sampling, s_small)
            imgs_s, _ = physics.fourier_resample(images - offset, sampling, s_small)
            # the detector MTF is in units of the grid's Nyquist frequency: same MTF, new grid
            scale = s_small / sampling
            b = max(1, border * small[0] // ny)
        else:
            s_small, wave_s, imgs_s, scale, b = sampling, wave, images - offset, 1.0, border
        inner = (slice(b, small[0] - b), slice(b, small[1] - b))
        meas = imgs_s[:, inner[0], inner[1]]
        means = meas.mean(axis=(1, 2))
        if not np.all(means > 0):
            raise ValueError("the images need intensities (counts or vacuum = 1), not zero-mean "
                             "normalised images")
        count = [0]

        def rms(model) -> float:
            model = model[:, inner[0], inner[1]]
            gain = means / model.mean(axis=(1, 2))
            return float(np.sqrt(np.mean((meas / gain[:, None, None] - model) ** 2)))

        def misfit(x) -> float:
            count[0] += 1
            ps = _apply(start, names, x, scale)
            # the bounds hold the vector components; the amplitudes keep to the ranges too
            excess = max(ps[0].astigmatism - c12, 0.0) / c12 + max(ps[0].coma - c21, 0.0) / c21
            if excess > 0:
                return 1.0 + excess
            return rms(physics.simulate_focal_series(wave_s, s_small, ps))

        def mtf_misfit(x):
            """The misfit as a function of the MTF's changes only, the other parameters at
            ``x``: the images before the MTF are made once (the MTF is the last step)."""
            ps = _apply(start, names, x, scale)
            bare = physics.simulate_focal_series(
                wave_s, s_small, [dataclasses.replace(p, mtf_c1=1.0) for p in ps])
            spec = np.fft.rfft2(bare)

            def fn(m) -> float:
                count[0] += 1
                y = np.array(x, float)
                y[mtf] = m
                p0 = _apply(start[:1], names, y, scale)[0]
                t = physics.mtf_transfer(bare.shape[1:], p0.mtf_c1, p0.mtf_c2, p0.mtf_c3,
                                         half=True)
                return rms(np.fft.irfft2(spec * t, s=bare.shape[1:]))

            return fn

        levels[f] = (misfit, count, mtf_misfit)
        return levels[f]

    names = list(fit)
    # the search stays where the networks were trained (Table 1 ranges and a margin of 10%):
    # a fit that leaves them explains the images with a microscope no network has seen
    r = physics.ParameterRanges() if ranges is None else ranges
    margin = lambda lo, hi: (lo - 0.1 * (hi - lo), hi + 0.1 * (hi - lo))  # noqa: E731
    d_lo, d_hi = margin(*r.defocus)
    d = [p.defocus for p in start]
    vec = _vector(start[0])
    c12, c21 = margin(0.0, r.astigmatism[1])[1], margin(0.0, r.coma[1])[1]
    cs_lo, cs_hi = margin(*r.Cs)
    lims = {"defocus": (max(d_lo - min(d), -max_defocus_change),
                        min(d_hi - max(d), max_defocus_change)),
            "Cs": (cs_lo - start[0].Cs, cs_hi - start[0].Cs),
            "C12_a": (-c12 - vec["C12_a"], c12 - vec["C12_a"]),
            "C12_b": (-c12 - vec["C12_b"], c12 - vec["C12_b"]),
            "C21_a": (-c21 - vec["C21_a"], c21 - vec["C21_a"]),
            "C21_b": (-c21 - vec["C21_b"], c21 - vec["C21_b"])}
    if start[0].mtf_c1 != 1.0:  # the MTF stays in the training ranges (the noise fit's bounds)
        for n, (lo, hi) in zip(MTF_PARAMETERS, (r.mtf_c1, r.mtf_c2, r.mtf_c3)):
            v0 = getattr(start[0], n)
            lims[n] = (lo - v0, hi - v0)
    else:  # no MTF to start from (a perfect detector, or none measured): none fitted
        names = [n for n in names if n not in MTF_PARAMETERS]
    mtf = [i for i, n in enumerate(names) if n in MTF_PARAMETERS]
    aberr = [i for i, n in enumerate(names) if n not in MTF_PARAMETERS]
    bounds = [tuple(sorted((min(lims[n][0], 0.0), max(lims[n][1], 0.0)))) for n in names]
    x0 = np.zeros(len(names))
    fine = level(k)[0]
    first = fine(x0)

    def search(f, x_start, budget):
        """Nelder-Mead over the aberrations, the MTF held at ``x_start``'s values."""
        fn = level(f)[0]
        x_start = np.asarray(x_start, float)

        def sub(z):
            y = x_start.copy()
            y[aberr] = z
            return fn(y)

        z0 = x_start[aberr]
        bnd = [bounds[i] for i in aberr]
        simplex = np.vstack([z0] + [z0 + np.eye(len(aberr))[j] * _STEPS[names[i]]
                                    for j, i in enumerate(aberr)])
        simplex = np.clip(simplex, [b_[0] for b_ in bnd], [b_[1] for b_ in bnd])
        res = minimize(sub, z0, method="Nelder-Mead", bounds=bnd,
                       options=dict(initial_simplex=simplex, maxfev=int(budget),
                                    xatol=0.5, fatol=1e-6))
        y = x_start.copy()
        y[aberr] = res.x
        return y, float(res.fun)

    def search_mtf(x_start, budget):
        """The MTF alone on the fit's band, the aberrations at ``x_start`` (fast: the images
        before the MTF are made once)."""
        fn = level(k)[2](x_start)
        z0 = np.asarray(x_start, float)[mtf]
        bnd = [bounds[i] for i in mtf]
        steps = np.array([_STEPS[names[i]] for i in mtf])
        simplex = np.vstack([z0] + [z0 + np.eye(len(mtf))[j] * steps[j] * (1 if z0[j] + steps[j]
                                    <= bnd[j][1] else -1) for j in range(len(mtf))])
        res = minimize(fn, z0, method="Nelder-Mead", bounds=bnd,
                       options=dict(initial_simplex=simplex, maxfev=int(budget),
                                    xatol=1e-3, fatol=1e-7))
        y = np.asarray(x_start, float).copy()
        y[mtf] = res.x
        return y, float(res.fun)

    x, best = x0, first
    f1 = first
    x1 = x0
    if aberr and coarse:
        # coarse to fine: defocus and Cs shift the CTF's rings fastest with the frequency, so
        # a start more than ~20 A or a few um off sits in another valley of the full-band
        # misfit; on a grid cropped to a quarter of the frequencies the valleys are wide. A grid
        # search there over (defocus offset, Cs, C12 direction), the best few refined on half
        # the band, the best of those on the fit's own band.
        kc, km = 4 * k, 2 * k
        coarse_fn = level(kc)[0]
        axes = {"defocus": np.arange(bounds[names.index("defocus")][0],
                                     bounds[names.index("defocus")][1] + 1e-9, 10.0)
                if "defocus" in names else [0.0],
                "Cs": (np.arange(cs_lo, cs_hi + 1e-9, 2.5e4) - start[0].Cs)
                if "Cs" in names else [0.0]}
        c12_grid = [(0.0, 0.0)]  # changes of (C12_a, C12_b): the start's C12 ...
        if "C12_a" in names and "C12_b" in names:  # ... and half the range in 4 directions
            a = 0.5 * r.astigmatism[1]
            c12_grid += [(ca - vec["C12_a"], cb - vec["C12_b"])
                         for ca, cb in ((a, 0.0), (-a, 0.0), (0.0, a), (0.0, -a))]
        candidates = [x0.copy()]
        for dd in axes["defocus"]:
            for cs in axes["Cs"]:
                for ca, cb in c12_grid:
                    y = x0.copy()
                    for n, v in (("defocus", dd), ("Cs", cs), ("C12_a", ca), ("C12_b", cb)):
                        if n in names:
                            y[names.index(n)] = v
                    candidates.append(y)
        scored = sorted(((coarse_fn(y), i) for i, y in enumerate(candidates)))
        picks = [candidates[i] for _, i in scored[:n_starts]]
        if not any(np.array_equal(p_, x0) for p_ in picks):
            picks.append(x0)
        refined = [search(km, y, max(60, max_evaluations // (2 * len(picks))))
                   for y in picks]
        y_best = min(refined, key=lambda t: t[1])[0]
        x1, f1 = search(k, y_best, max_evaluations // 2)
    elif aberr:
        x1, f1 = search(k, x0, max_evaluations)
    if mtf:
        # the MTF in the signal band once the aberrations are in their valley (the noise
        # spectrum measures it beyond the information limit only, where its level trades
        # against the dose), then the aberrations once more with it
        x2, f2 = search_mtf(x1, 200)
        if aberr and f2 < f1:
            x2, f2 = search(k, x2, max_evaluations // 4)
        if f2 < f1:
            x1, f1 = x2, f2
    if names and f1 < best:
        x, best = x1, f1
    evaluations = sum(c[1][0] for c in levels.values())
    # the start's doses back (the blur stays in A, which holds on any grid); with a fitted MTF
    # the dose that keeps the noise variance the noise spectrum measured
    old = [dataclasses.replace(q, dose=d) for q, d in zip(start, doses)]
    params = [dataclasses.replace(q, dose=hold_noise_variance(wave.shape, o, q))
              for q, o in zip(_apply(old, names, x), old)]
    return AberrationFit(params=params, start_misfit=first, misfit=best,
                         changes={n: float(v) for n, v in zip(names, x)},
                         evaluations=evaluations, seconds=time.perf_counter() - t0)

