"""From a focal series to an exit wave: the one pipeline the widget, CLI, live and batch modes use.

Network path (``method="network"``)::

    validate -> align (phase correlation on the middle image) -> resample to exactly the
    network's pixel size (cubic spline, resample_series) -> normalise (physics.normalize_series)
    -> ONNX inference (padded / tiled) -> exit wave at the network's pixel size

Traditional path (``method="gs"`` or ``"wiener"``): align, then
:func:`napari_exitwave.traditional.iter_reconstruct` at the series' own pixel size, which needs
the defocus of every image (A, abTEM convention ``defocus = -C10``) and, optionally, Cs and the
focal spread.

Two forms of the one pipeline: :func:`iter_reconstruct`, a generator that yields progress
``(fraction, message)`` and returns the :class:`Reconstruction` (what the widget runs in a napari
``thread_worker``: ``worker.quit()`` stops it at the next item), and :func:`reconstruct_series`,
the blocking call on top of it (CLI, live, batch).
"""

from __future__ import annotations

import dataclasses
import time
import warnings as _warnings
from typing import Any, Callable, Generator, Sequence

import numpy as np

from . import physics
from ._progress import drive, rescaled
from .errors import ExitWaveError, SeriesMismatchError

__all__ = ["Reconstruction", "iter_reconstruct", "reconstruct_series", "resample_series",
           "METHODS"]

METHODS = ("network", "gs", "wiener")


@dataclasses.dataclass
class Reconstruction:
    """An exit wave with what is needed to trust and reuse it.

    Attributes
    ----------
    exit_wave : complex64 (ny, nx)
        Vacuum = 1 + 0j.
    sampling : float or None
        Pixel size of ``exit_wave`` in A/px (the network's for ``method="network"``).
    method : str
        ``"network"``, ``"gs"`` or ``"wiener"``.
    model_name : str or None
    device : str
        ``"CUDA"`` or ``"CPU"`` (what actually ran).
    timings : dict of str -> float
        Seconds per stage (``align``, ``resample``, ``normalize``, ``inference`` or
        ``reconstruct``, ``total``).
    warnings : list of str
        Plain-language caveats (pixel size resampled > 2x, unknown, defocus step...).
    shifts : float array (n, 2)
        Alignment shifts (dy, dx) applied to each image, in pixels of the input series.
    metadata : dict
        Source, defoci, input sampling, providers... (JSON-friendly; written with the result).
        With the physics check: ``"estimate"`` (the estimate's values, units, training ranges
        and warnings) and ``"physics_residual"`` (``reduced_chi2``, per-image ``chi2``, gain,
        offset, verdict, the parameters used and where they came from) or
        ``{"skipped": why}``.
    estimate : AberrationEstimate or None
        The microscope estimated from the series (:mod:`napari_exitwave.estimate`).
    residual : Residual or None
        :func:`napari_exitwave.residual.physics_residual` of the images the exit wave came from
        (aligned; at the network's pixel size for ``method="network"``, i.e. on the grid of
        ``exit_wave``), in units of the expected shot noise.
    """

    exit_wave: np.ndarray
    sampling: float | None
    method: str
    model_name: str | None = None
    device: str = "CPU"
    timings: dict[str, float] = dataclasses.field(default_factory=dict)
    warnings: list[str] = dataclasses.field(default_factory=list)
    shifts: np.ndarray | None = None
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)
    estimate: Any = None
    residual: Any = None

    @property
    def reduced_chi2(self) -> float | None:
        """The physics residual's reduced chi-square (None without the check)."""
        return None if self.residual is None else float(self.residual.reduced_chi2)

    def to_metadata(self) -> dict[str, Any]:
        """JSON-friendly description (for the TIFF/Zarr writers)."""
        d = {"method": self.method, "model": self.model_name, "device": self.device,
             "sampling": self.sampling,
             "timings": {k: round(float(v), 4) for k, v in self.timings.items()},
             "warnings": list(self.warnings),
             "shifts_px": None if self.shifts is None else np.asarray(self.shifts).tolist()}
        d.update(self.metadata)
        return d


def resample_series(images: np.ndarray, sampling: float, new_sampling: float, order: int = 3
                    ) -> np.ndarray:
    """Resample a series (n, ny, nx) to exactly ``new_sampling`` A/px by spline interpolation.

    Output pixel ``i`` sits at input position ``i * new_sampling / sampling`` (pixel 0 stays
    put), and the output covers the input field of view up to the last whole new pixel, so the
    pixel size is exactly the network's (:func:`napari_exitwave.physics.resample` keeps the
    field of view instead, which leaves the pixel size a fraction of a percent off).
    """
    from scipy import ndimage

    if not (sampling > 0 and new_sampling > 0):
        raise ValueError("sampling and new_sampling must be positive (A/px)")
    images = np.asarray(images)
    if np.isclose(sampling, new_sampling, rtol=1e-9):
        return images.astype(np.float32)
    step = new_sampling / sampling
    ny, nx = images.shape[-2:]
    out_shape = tuple(int(np.floor((n - 1) / step + 1e-9)) + 1 for n in (ny, nx))
    out = np.empty(images.shape[:-2] + out_shape, dtype=np.float32)
    for idx in np.ndindex(images.shape[:-2]):
        out[idx] = ndimage.affine_transform(np.asarray(images[idx], dtype=np.float64),
                                            [step, step], output_shape=out_shape, order=order,
                                            mode="nearest")
    return out


def _as_series(series):
    from .io import FocalSeries

    if isinstance(series, FocalSeries):
        return series
    if isinstance(series, np.ndarray):
        return FocalSeries(images=series, source="array")
    raise TypeError(f"series must be a FocalSeries or an (n, ny, nx) array, got {type(series)}")


def iter_reconstruct(series, model=None, *, method: str = "network", align: bool = True,
                     defocus: Sequence[float] | None = None, Cs: float | None = None,
                     focal_spread: float | None = None, sampling: float | None = None,
                     tile: int | str = "auto", overlap: int = 64, providers="auto",
                     strict: bool = False, energy: float | None = None,
                     cancel: Callable[[], bool] | None = None,
                     physics_check: bool | str = False, dose: float | None = None,
                     microscope: Sequence[physics.MicroscopeParameters] | None = None,
                     estimator=None, refine: bool = False,
                     refine_strength: float | None = None, fit_aberrations: bool = True,
                     **traditional_kwargs) -> Generator[tuple[float, str], None, Reconstruction]:
    """:func:`reconstruct_series` as a generator: yields ``(fraction, message)``, returns the
    :class:`Reconstruction` (``StopIteration.value``; ``rec = yield from iter_reconstruct(...)``).

    It yields at the start of every stage (loading, aligning, resampling, normalising,
    inference or the traditional reconstruction), after every Gerchberg-Saxton iteration, and
    ``(1.0, "done")`` last. Nothing runs between two items: a consumer that stops asking (a
    napari ``thread_worker`` after ``worker.quit()``) stops the reconstruction at the next
    item. ``cancel`` (optional) is also polled inside a stage, between inference tiles.
    The parameters are those of :func:`reconstruct_series`.

    Examples
    --------
    >>> gen = iter_reconstruct(series, "mos2")                         # doctest: +SKIP
    >>> for fraction, message in gen: ...                              # doctest: +SKIP
    """
    t_start = time.perf_counter()
    series = _as_series(series)
    method = str(method).lower()
    if method not in METHODS:
        raise ExitWaveError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    d = list(defocus) if defocus is not None else series.defocus
    if d is not None and len(d) != series.n_images:
        raise SeriesMismatchError(f"{len(d)} defocus values were given for "
                                  f"{series.n_images} images")
    if physics_check not in (False, True, "auto"):
        raise ExitWaveError(f"physics_check must be False, True or 'auto', got "
                            f"{physics_check!r}")
    if microscope is not None and len(microscope) != series.n_images:
        raise SeriesMismatchError(f"{len(microscope)} microscope parameter sets were given for "
                                  f"{series.n_images} images")
    s_in = float(sampling) if sampling is not None else series.sampling
    timings: dict[str, float] = {}
    warnings: list[str] = []
    meta: dict[str, Any] = {"source": series.source, "input_sampling": s_in,
                            "input_shape": list(series.images.shape),
                            "defocus": d, "aligned": bool(align)}

    rec = card = None
    if method == "network":
        if model is None:
            raise ExitWaveError("method 'network' needs a model (name or path); see "
                                "`napari-exitwave models`")
        from .inference import get_reconstructor
        from .validate import validate_series

        yield 0.0, "loading the network"
        t = time.perf_counter()
        rec = get_reconstructor(model, providers=providers)
        card = rec.card
        timings["load_model"] = time.perf_counter() - t
        warnings += validate_series(series, card, defocus=d, sampling=s_in, strict=strict)
        warnings += [n for n in rec.notes if n not in warnings]
    elif model is not None:
        from .inference import find_model

        card = model.card if hasattr(model, "card") else find_model(model)

    if series.n_images < 2 and method != "network":
        raise SeriesMismatchError(f"method {method!r} needs at least 2 images, the series has "
                                  f"{series.n_images}")
    images = series.images
    if not np.all(np.isfinite(images)):
        raise SeriesMismatchError("the series contains NaN or infinite pixels; replace them "
                                  "first")
    if method == "network" and d is not None and np.any(np.diff(d) < 0):
        # The networks take their images in increasing defocus (the order they were trained on);
        # GS and Wiener pair each image with its own defocus and need no reordering.
        # (validate_series has said so in the warnings)
        order = np.argsort(d, kind="stable")
        images = images[order]
        d = [d[i] for i in order]
        meta["defocus"] = d
        if microscope is not None:
            microscope = [microscope[i] for i in order]

    shifts = np.zeros((series.n_images, 2))
    if align and series.n_images > 1:
        yield 0.02, "aligning"
        images, shifts = _align(images, warnings, timings)

    estimate, est_sampling = None, None
    if method == "network":
        wave, out_sampling, seen = yield from _network(rec, images, s_in, warnings, timings,
                                                       tile, overlap, cancel)
        device, model_name = rec.device, card.name
        meta.update({"providers": list(rec.providers), "network_sampling": card.sampling,
                     "model_sha256": card.sha256})
        check_energy = float(energy) if energy is not None else float(card.energy)
    else:
        if energy is None:
            energy = (card.energy if card is not None else
                      series.metadata.get("energy") or physics.DEFAULT_ENERGY)
        from ._check import estimator_available

        if d is None or (physics_check is not False and (Cs is None or focal_spread is None)
                         and estimator_available(estimator) is not None):
            # the traditional methods need the defocus: without it (none given, none in the
            # file) the defocus, and Cs and the focal spread where not given, come from the
            # estimate when an estimator is installed; with the physics check on, so do a
            # missing Cs and focal spread (the check compares with the estimated microscope)
            yield 0.1, "estimating the microscope"
            estimate, est_sampling = yield from _estimate(images, s_in, estimator, providers,
                                                          warnings, timings)
            if estimate is not None:
                d, Cs, focal_spread = _fill_from_estimate(method, estimate, d, Cs,
                                                          focal_spread, warnings, meta)
        res = yield from _traditional(method, images, s_in, d, Cs, focal_spread, float(energy),
                                      timings, cancel, traditional_kwargs)
        wave, out_sampling, device, model_name = res.exit_wave, s_in, res.device, None
        seen = images
        meta.update({"Cs": Cs, "focal_spread": focal_spread, "energy": energy,
                     "wiener_eps": res.wiener_eps})
        check_energy = float(energy)
    residual = None
    if physics_check is not False:
        yield 0.95, "physics check"
        estimate, residual = yield from _physics_check(
            physics_check, wave, out_sampling, seen, estimate, est_sampling, estimator,
            providers, warnings, timings, meta, series_sampling=s_in,
            fit=fit_aberrations and method == "network", defocus=d, Cs=Cs,
            focal_spread=focal_spread, dose=dose, microscope=microscope, energy=check_energy)
    if refine:
        source = (meta.get("physics_residual") or {}).get("parameters_from", "")
        if residual is None:
            warnings.append("refinement skipped: it needs the microscope parameters of the "
                            "physics check (the defocus and dose given, or the full microscope)")
        elif source.startswith("estimate") and not source.endswith("+ fit"):
            # benchmarks/compare_traditional.py --refine (docs/traditional.md): refined with
            # the estimate as it is, waves got worse (median complex RMSE 0.0147 -> 0.0603)
            warnings.append("refinement skipped: the microscope parameters are estimated and "
                            "were not fitted to the images, and refining with them made exit "
                            "waves worse in the benchmark (docs/traditional.md); keep the "
                            "aberration fit on, or give the microscope's parameters "
                            "(microscope=[...], or --defocus, --Cs, --focal-spread, --dose)")
            meta["refinement"] = {"skipped": "estimated parameters, not fitted"}
        else:
            from .refine import ESTIMATED_STRENGTH, GIVEN_STRENGTH

            if refine_strength is None:
                refine_strength = (ESTIMATED_STRENGTH if source.startswith("estimate")
                                   else GIVEN_STRENGTH)
            yield 0.97, "refining against the images"
            wave, residual = _refine(wave, out_sampling, seen, meta, warnings, timings,
                                     refine_strength)
            meta["refinement"]["parameters_from"] = source
    timings["total"] = time.perf_counter() - t_start
    yield 1.0, "done"
    return Reconstruction(exit_wave=np.asarray(wave).astype(np.complex64, copy=False),
                          sampling=out_sampling, method=method, model_name=model_name,
                          device=device, timings=timings, warnings=warnings, shifts=shifts,
                          metadata=meta, estimate=estimate, residual=residual)


def _estimate(images, sampling, estimator, providers, warnings: list, timings: dict,
              quiet: bool = False):
    """The microscope estimate of ``images`` at ``sampling`` A/px (generator: returns
    ``(estimate or None, sampling)``; why not goes into ``warnings`` unless ``quiet``)."""
    from ._check import estimate_or_none

    t = time.perf_counter()
    est, why = estimate_or_none(images, sampling, estimator, providers)
    timings["estimate"] = time.perf_counter() - t
    if est is None and not quiet:
        warnings.append(f"no microscope estimate: {why}")
    if est is not None:
        warnings += [f"microscope estimate: {w}" for w in est.warnings]
    return est, sampling
    yield  # a generator like the other stages (nothing to report inside)


def _fill_from_estimate(method, estimate, d, Cs, focal_spread, warnings: list, meta: dict):
    """The estimate's defocus, Cs and focal spread where the user gave none (and say so)."""
    took = []
    if d is None:
        d = [float(p.defocus) for p in estimate.params]
        took.append("defocus " + ", ".join(f"{x:.0f}" for x in d) + " A")
        meta["defocus"] = d
    if Cs is None:
        Cs = float(estimate.params[0].Cs)
        took.append(f"Cs {Cs / 1e4:.3g} um")
    if focal_spread is None:
        focal_spread = float(estimate.params[0].focal_spread)
        took.append(f"focal spread {focal_spread:.1f} A")
    meta["estimate"] = estimate.to_dict()
    if took:
        warnings.append(f"{method} uses the estimated {', '.join(took)} (from {estimate.model}; "
                        "none given)")
        meta["from_estimate"] = [t.split(" ")[0] if not t.startswith("focal") else
                                 "focal_spread" for t in took]
    return d, Cs, focal_spread


def _physics_check(mode, wave, sampling, images, estimate, est_sampling, estimator, providers,
                   warnings: list, timings: dict, meta: dict, series_sampling=None,
                   fit: bool = False, **given):
    """Estimate (unless done) and the physics residual; generator returning
    ``(estimate, residual)``; what it could not do goes into ``warnings`` and
    ``meta["physics_residual"] = {"skipped": why}``."""
    from . import _check

    if not sampling:
        why = "the pixel size is unknown"
        meta["physics_residual"] = {"skipped": why}
        warnings.append(f"physics residual skipped: {why}")
        return estimate, None
    if estimate is None and _check.estimator_available(estimator) is not None:
        estimate, est_sampling = yield from _estimate(images, sampling, estimator, providers,
                                                      warnings, timings)
    if estimate is not None:
        meta["estimate"] = estimate.to_dict()
    user = {k: v for k, v in given.items() if k != "energy"}
    if estimate is None and given.get("microscope") is None and given.get("defocus") is None:
        why = ("no aberration estimator is installed and no microscope parameters were "
               "given (defocus, dose)")
        meta["physics_residual"] = {"skipped": why}
        warnings.append(f"physics residual skipped: {why}")
        return estimate, None
    t = time.perf_counter()
    try:
        params = _check.microscope_parameters(len(images), estimate, **given)
    except ValueError as e:
        params, why = None, str(e)
    else:
        why = None
    residual = fitted = None
    if params is not None:
        params_sampling = (est_sampling if given.get("microscope") is None and estimate
                           is not None else series_sampling or sampling)
        # on the exit wave's grid: the blur in A, the MTF in units of this grid's Nyquist
        params = _check.params_on_grid(params, params_sampling, sampling)
        if fit and estimate is not None and given.get("microscope") is None:
            yield 0.96, "fitting the aberrations"
            params, fitted = _check.fit_estimated(wave, sampling, images, params,
                                                  user_defocus=user.get("defocus") is not None,
                                                  user_Cs=user.get("Cs") is not None,
                                                  user_dose=user.get("dose") is not None)
            if isinstance(fitted, str):
                warnings.append(f"aberration fit skipped: {fitted}")
                fitted = None
            else:
                meta["aberration_fit"] = fitted.to_dict()
                timings["aberration_fit"] = fitted.seconds
        residual, why = _check.check_residual(wave, sampling, images, params,
                                              params_sampling=sampling)
    timings["residual"] = time.perf_counter() - t - timings.get("aberration_fit", 0.0)
    if residual is None:
        failed = "does not follow the model" in str(why)  # the check ran and failed
        if failed and estimate is None and given.get("microscope") is None:
            why += (" (no estimate: only the defocus, Cs, focal spread and dose given were "
                    "used; the other aberrations, the blur and the detector MTF taken as none)")
        meta["physics_residual"] = {"failed" if failed else "skipped": why}
        warnings.append(f"physics check {'failed' if failed else 'skipped'}: {why}"
                        if failed else f"physics residual skipped: {why}")
        return estimate, None
    source = "given" if given.get("microscope") is not None or estimate is None else "estimate"
    if source == "estimate" and any(v is not None for v in user.values()):
        source = "estimate + given"
    if source.startswith("estimate") and fitted is not None:
        source += " + fit"
    meta["physics_residual"] = _check.residual_metadata(residual, params, source)
    return estimate, residual


def _refine(wave, sampling, images, meta, warnings: list, timings: dict, strength: float):
    """:func:`napari_exitwave.refine.refine_exit_wave` with the physics check's parameters;
    returns the refined wave and its residual (the start's stays in the metadata)."""
    from . import _check
    from .refine import refine_exit_wave

    t = time.perf_counter()
    check = meta["physics_residual"]
    params = [physics.MicroscopeParameters.from_dict(p) for p in check["microscope"]]
    # the check's blur refers to the grid of its parameters; the images here are at `sampling`
    images = np.asarray(images, float)
    ny, nx = (min(a, b) for a, b in zip(images.shape[1:], wave.shape))
    res = refine_exit_wave(np.asarray(wave)[:ny, :nx], float(sampling), images[:, :ny, :nx],
                           params, strength=strength)
    refined = np.array(wave, dtype=np.complex64, copy=True)
    refined[:ny, :nx] = res.exit_wave
    residual, why = _check.check_residual(refined, sampling, images, params,
                                          params_sampling=sampling)
    timings["refine"] = time.perf_counter() - t
    meta["refinement"] = {"strength": float(strength), "iterations": res.iterations,
                          "chi2_start": res.chi2_start, "chi2_end": res.chi2_end,
                          "residual_before": check.get("reduced_chi2")}
    if residual is None:
        warnings.append(f"refined, but its residual failed: {why}")
        return refined, None
    meta["physics_residual"] = dict(check, **_check.residual_metadata(
        residual, params, check.get("parameters_from", "given")))
    return refined, residual


def _align(images, warnings: list, timings: dict):
    from .align import AlignmentWarning, align_series

    t = time.perf_counter()
    with _warnings.catch_warnings(record=True) as caught:
        _warnings.simplefilter("always", AlignmentWarning)
        images, shifts = align_series(images)
    warnings += [str(w.message) for w in caught if issubclass(w.category, AlignmentWarning)]
    timings["align"] = time.perf_counter() - t
    big = np.abs(shifts).max()
    side = min(images.shape[-2:])
    if big > 0.1 * side:
        warnings.append(f"the images drift by up to {big:.0f} px ({100 * big / side:.0f}% of "
                        "the frame): check the alignment")
    return images, shifts


def _network(rec, images, s_in, warnings: list, timings: dict, tile, overlap, cancel):
    """Resample to the network's pixel size, normalise, infer; yields progress, returns
    ``(exit wave, sampling, the images it saw before normalisation)``."""
    card = rec.card
    yield 0.12, "resampling"
    t = time.perf_counter()
    out_sampling = card.sampling
    if card.sampling and s_in:
        images = resample_series(images, s_in, card.sampling)
    elif card.sampling is None:
        out_sampling = s_in
        warnings.append(f"model {card.name!r} has no pixel size in its card; the images are "
                        "used at their own pixel size")
    timings["resample"] = time.perf_counter() - t
    yield 0.16, "normalising"
    t = time.perf_counter()
    normalised = physics.normalize_series(images)
    timings["normalize"] = time.perf_counter() - t
    yield 0.2, f"inference on {rec.device}"
    t = time.perf_counter()
    wave = rec.predict(normalised, tile=tile, overlap=overlap, cancel=cancel)
    timings["inference"] = time.perf_counter() - t
    return wave, out_sampling, images


def _traditional(method, images, s_in, d, Cs, focal_spread, energy, timings: dict, cancel,
                 kwargs):
    """:func:`napari_exitwave.traditional.iter_reconstruct` at the series' own pixel size."""
    from . import traditional

    if d is None:
        raise SeriesMismatchError(
            f"method {method!r} needs the defocus of every image (A, abTEM convention "
            "defocus = -C10): the file holds none and no aberration estimator could read "
            "them from the series; give them (e.g. --defocus -50 0 50)")
    if s_in is None:
        raise SeriesMismatchError(
            f"method {method!r} needs the pixel size of the series: the file holds none, "
            "give it (e.g. --sampling 0.105)")
    yield 0.12, f"{method} reconstruction"
    t = time.perf_counter()
    gen = traditional.iter_reconstruct(images, s_in, d, method=method,
                                       Cs=0.0 if Cs is None else float(Cs),
                                       focal_spread=0.0 if focal_spread is None
                                       else float(focal_spread), energy=energy, **kwargs)
    res = yield from rescaled(gen, 0.12, 1.0, cancel)
    timings["reconstruct"] = time.perf_counter() - t
    return res


def reconstruct_series(series, model=None, *, method: str = "network", align: bool = True,
                       defocus: Sequence[float] | None = None, Cs: float | None = None,
                       focal_spread: float | None = None,
                       progress: Callable[[float, str], None] | None = None,
                       cancel: Callable[[], bool] | None = None,
                       sampling: float | None = None, tile: int | str = "auto", overlap: int = 64,
                       providers="auto", strict: bool = False, energy: float | None = None,
                       physics_check: bool | str = False, dose: float | None = None,
                       microscope: Sequence[physics.MicroscopeParameters] | None = None,
                       estimator=None, **traditional_kwargs) -> Reconstruction:
    """Reconstruct the exit wave of a focal series (the blocking form of :func:`iter_reconstruct`).

    Parameters
    ----------
    series : FocalSeries or array (n, ny, nx)
    model : str, Path, ModelCard or OnnxReconstructor
        The network (name, card/ONNX path, card, or a ready session). Needed for
        ``method="network"``; for ``"gs"``/``"wiener"`` only its energy is used, if given.
    method : {"network", "gs", "wiener"}
    align : bool
        Align the images on the middle one first.
    defocus : list of float, optional
        Defocus of each image in A (abTEM: ``defocus = -C10``, positive = underfocus);
        overrides the file's. Required by ``gs``/``wiener``; checked against the network's
        defocus step otherwise.
    Cs, focal_spread : float, optional
        Spherical aberration (A; 1 um = 1e4 A) and focal spread (A) for ``gs``/``wiener``
        (default 0; the estimate's when not given and no defocus is given or the physics
        check is on, see ``physics_check``).
    progress : callable(fraction, message), optional
        Called with every item :func:`iter_reconstruct` yields.
    cancel : callable() -> bool, optional
        Polled between stages, iterations and tiles; True raises
        :class:`~napari_exitwave.errors.ReconstructionCancelled`.
    sampling : float, optional
        Pixel size of the series in A/px, overriding the file's calibration.
    tile, overlap : int or "auto", int
        Tiling of the network inference (px at the network's pixel size); the default
        ``tile="auto"`` runs frames up to 1024 px in one pass and larger ones in 512 px tiles.
    providers : "auto", "cpu", "cuda" or list
        ONNX Runtime providers (see :class:`~napari_exitwave.inference.OnnxReconstructor`).
    strict : bool
        Turn the "pixel size more than 2x off / unknown" warnings into errors (the CLI does).
    energy : float, optional
        eV for ``gs``/``wiener`` (default: the model card's, the file's, else 50 keV).
    physics_check : bool or "auto"
        After the reconstruction, estimate the microscope (when an aberration estimator is
        installed, :mod:`napari_exitwave.estimate`) and compute the physics residual of the
        images the exit wave came from (:func:`napari_exitwave.residual.physics_residual`):
        ``rec.estimate``, ``rec.residual`` and their summary in the metadata. ``"auto"`` (the
        CLI's and the widget's choice) and ``True`` run it when an estimator is installed or
        the parameters are given (``defocus``/``microscope``) and say in the warnings why not
        otherwise; ``False`` (default) skips it. The residual needs a dose: the estimate's,
        ``dose`` or ``microscope``'s. ``gs``/``wiener`` use the estimated defocus, Cs and
        focal spread when no defocus is given (none in the file either), whatever
        ``physics_check``; with the check on, also a Cs or focal spread not given; they say
        so in the warnings.
    dose : float, optional
        Electron dose per image, e/A^2, for the residual's noise model (overrides the
        estimate's).
    microscope : list of MicroscopeParameters, optional
        The full parameters of each image (in the input order; blur in px of the series'
        grid) for the residual, instead of the estimate; ``defocus``, ``Cs``, ``focal_spread``
        and ``dose`` given too replace its values.
    estimator : str, optional
        Aberration estimator (name or path); default the installed one.
    fit_aberrations : bool
        With the physics check on estimated parameters (no ``microscope`` given), fit the
        defocus (unless given), C12, C21 and Cs (unless given) to the images with the network's
        exit wave held fixed first (:func:`napari_exitwave.aberration_fit.fit_aberrations`,
        2-6 s on 2 cores); the residual, the verdict and ``metadata["aberration_fit"]`` are
        then the fitted parameters'. Default on; a keyword of :func:`iter_reconstruct`.
    refine, refine_strength : bool, float
        After the physics check, refine the exit wave against every image with the check's
        parameters (:func:`napari_exitwave.refine.refine_exit_wave`, regularised toward the
        start by ``refine_strength``: by default
        :data:`~napari_exitwave.refine.GIVEN_STRENGTH` with the microscope's parameters given,
        :data:`~napari_exitwave.refine.ESTIMATED_STRENGTH` with estimated and fitted ones);
        the residual is then the refined wave's, the start's stays in
        ``metadata["refinement"]``. Off by default; skipped with a warning when the check could
        not run, or its parameters are estimated but not fitted.
    **traditional_kwargs
        For ``gs``/``wiener``: :func:`napari_exitwave.traditional.reconstruct`'s ``n_iter``,
        ``wiener_eps``, ``blur`` (A), ``mtf``...

    Returns
    -------
    Reconstruction
    """
    gen = iter_reconstruct(series, model, method=method, align=align, defocus=defocus, Cs=Cs,
                           focal_spread=focal_spread, sampling=sampling, tile=tile,
                           overlap=overlap, providers=providers, strict=strict, energy=energy,
                           cancel=cancel, physics_check=physics_check, dose=dose,
                           microscope=microscope, estimator=estimator, **traditional_kwargs)
    return drive(gen, progress, cancel)
