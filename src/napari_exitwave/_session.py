"""The reconstruction dock's state without Qt: the model list, the ticked networks, the last run.

As in napari-animation, the logic lives apart from the widgets: :class:`ReconstructionSession`
holds what the user chose and what came back, :func:`run_jobs` is the generator a napari
``thread_worker`` runs, and the widgets in :mod:`napari_exitwave._qt` are thin views that read
and write a session (so all of this is tested without a viewer).

    >>> from napari_exitwave._session import ReconstructionSession
    >>> s = ReconstructionSession()
    >>> s.load_models()                                    # doctest: +SKIP
    >>> s.check(series, "network").ok                      # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Callable, Generator

import numpy as np
from psygnal import Signal

from ._layers import FitCheck, check_fit, ensemble
from ._progress import rescaled

__all__ = ["METHODS", "RunResult", "RunSummary", "ReconstructionSession", "run_jobs"]

METHODS = {"network": "Neural network", "gs": "Gerchberg-Saxton", "wiener": "Wiener (linear)"}
"""Method key -> the name shown to the user."""


@dataclasses.dataclass
class RunResult:
    """What a run hands back to the GUI thread (never raises across threads)."""

    reconstructions: list = dataclasses.field(default_factory=list)
    error: str | None = None
    cancelled: bool = False
    seconds: float = 0.0


def run_jobs(series, jobs: list[dict], cancel: Callable[[], bool] | None = None
             ) -> Generator[tuple[float, str], None, RunResult]:
    """Run :func:`~napari_exitwave.reconstruct.iter_reconstruct` once per job, in turn.

    Yields ``(fraction, message)`` over all jobs; returns a :class:`RunResult`. Errors are
    caught and returned as messages (an :class:`~napari_exitwave.errors.ExitWaveError` as its
    own text, anything else with its type), so a failed run never takes napari down. Stopping
    early is not asking for the next item (``worker.quit()``); ``cancel`` is passed on to be
    polled inside a stage (between inference tiles).
    """
    from . import reconstruct
    from .errors import ExitWaveError, ReconstructionCancelled

    result = RunResult()
    t0 = time.perf_counter()
    yield 0.0, "starting"
    try:
        for k, job in enumerate(jobs):
            gen = reconstruct.iter_reconstruct(series, cancel=cancel, **job)
            rec = yield from rescaled(gen, k / len(jobs), (k + 1) / len(jobs))
            result.reconstructions.append(rec)
    except ReconstructionCancelled:
        result.cancelled = True
    except ExitWaveError as e:
        result.error = str(e)
    except MemoryError:
        result.error = "out of memory: crop the images or use a smaller tile size"
    except Exception as e:  # noqa: BLE001 - shown to the user, never raised into Qt
        result.error = f"{type(e).__name__}: {e}"
    result.seconds = time.perf_counter() - t0
    return result


@dataclasses.dataclass
class RunSummary:
    """A finished run made ready for the viewer: the (mean) exit wave and what to say."""

    exit_wave: np.ndarray
    uncertainty: np.ndarray | None
    sampling: float | None
    name: str
    metadata: dict[str, Any]
    status: str
    warnings: list[str]
    estimate_rows: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)
    estimate_model: str | None = None
    # the aberration fit's values by estimate row name (napari_exitwave.aberration_fit)
    fit_values: dict[str, str] = dataclasses.field(default_factory=dict)
    reduced_chi2: float | None = None
    check_text: str = ""
    residual: np.ndarray | None = None  # float32 (n, ny, nx), noise units, the exit wave's grid
    residual_name: str = ""

    def residual_layer(self) -> tuple[np.ndarray, dict[str, Any]] | None:
        """``(data, add_image kwargs)`` of the residual images (None without the check):
        a diverging colormap, contrast limits at +-5 sigma."""
        if self.residual is None:
            return None
        s = self.sampling
        return self.residual, {
            "name": self.residual_name, "scale": (1.0, s or 1.0, s or 1.0),
            "units": ("pixel",) + (("angstrom",) * 2 if s else ("pixel",) * 2),
            "colormap": "coolwarm", "contrast_limits": (-5.0, 5.0),
            "metadata": {"exitwave": {"part": "residual", "sampling": s,
                                      "reduced_chi2": self.reduced_chi2}}}


class ReconstructionSession:
    """Models known and ticked, and the last result, of one reconstruction dock.

    Signals (psygnal): ``models_changed()`` when a model is added or (un)ticked,
    ``finished(RunResult)`` when a run has been handed back by :meth:`finish`.
    """

    models_changed = Signal()
    finished = Signal(object)

    def __init__(self):
        self.cards: dict[str, Any] = {}
        self.ticked: list[str] = []
        self.last_result: RunResult | None = None
        self.exit_wave: np.ndarray | None = None
        self.sampling: float | None = None
        self.output_name = "exit wave"

    # -- models ---------------------------------------------------------------------------
    def load_models(self, models_dir=None) -> None:
        """Add the shipped models (:func:`~napari_exitwave.inference.list_models`); tick the
        default one when none is ticked."""
        from .inference import DEFAULT_MODEL, list_models

        for card in list_models(models_dir).values():
            self.add_model(card, tick=False)
        if self.cards and not self.ticked:
            self.tick(DEFAULT_MODEL if DEFAULT_MODEL in self.cards else next(iter(self.cards)))

    def tick_for_series(self, n_images: int) -> str | None:
        """Tick the network for a series of ``n_images`` images when no ticked one takes
        that many (:func:`~napari_exitwave.model_cards.default_model_for`); returns the name
        ticked, or None when the ticks stay as they are."""
        from .model_cards import default_model_for

        if any(self.cards[n].n_images == n_images for n in self.ticked):
            return None
        name = default_model_for(n_images, cards=self.cards)
        if name is not None:
            self.tick(name)
        return name

    def add_model(self, model, tick: bool = True) -> str:
        """Add a model (card, name or .onnx/.json path); returns the name it is listed under.

        A user's file is loaded at once, so a file that is not a usable network (missing,
        corrupt ONNX, card mismatch) raises :class:`~napari_exitwave.errors.ExitWaveError`
        here and not at the first run.
        """
        from .inference import find_model, get_reconstructor

        card = find_model(model)
        if not isinstance(model, type(card)):
            get_reconstructor(card)
        name = card.name
        if name in self.cards and self.cards[name].onnx_path != card.onnx_path:
            name = f"{card.name} ({Path(card.onnx_path).name})"
        self.cards[name] = card
        if tick:
            self.tick(name)
        else:
            self.models_changed.emit()
        return name

    @staticmethod
    def compatible(a, b) -> bool:
        """Two networks can be ensembled: the same image count and pixel size."""
        return a.n_images == b.n_images and (a.sampling or 0) == (b.sampling or 0)

    def tick(self, name: str, ticked: bool = True, exclusive: bool = True) -> None:
        """(Un)tick a model; ticking one unticks the incompatible ones when ``exclusive``."""
        if name not in self.cards:
            raise KeyError(f"no model {name!r}; known: {', '.join(self.cards)}")
        if ticked:
            if exclusive:
                self.ticked = [n for n in self.ticked
                               if self.compatible(self.cards[n], self.cards[name])]
            if name not in self.ticked:
                self.ticked.append(name)
        elif name in self.ticked:
            self.ticked.remove(name)
        self.models_changed.emit()

    def set_ticked(self, names) -> None:
        """Tick exactly ``names`` (in the order of the list), incompatible or not."""
        self.ticked = [n for n in self.cards if n in set(names)]
        self.models_changed.emit()

    def selected_cards(self) -> list:
        return [self.cards[n] for n in self.cards if n in self.ticked]

    # -- checks and jobs ------------------------------------------------------------------
    def check(self, series, method: str, defocus=None) -> FitCheck:
        """Whether ``series`` (or None) fits the ticked networks or the traditional method.

        For ``gs``/``wiener`` without defocus values, an installed aberration estimator
        provides them (an info line instead of the error)."""
        if series is None:
            return FitCheck(errors=["no image layer: open a focal series"])
        if method != "network" and defocus is None and series.defocus is None:
            from ._check import estimator_available

            chk = check_fit(series, None, method, defocus=defocus)
            name = estimator_available()
            missing = [e for e in chk.errors if e.startswith("enter ")]
            if name is not None and missing and series.n_images > 1:
                chk.errors = [e for e in chk.errors if e not in missing]
                chk.info.append(f"defocus, Cs and focal spread (where 0) from the estimator "
                                f"{name}")
            return chk
        if method == "network":
            cards = self.selected_cards()
            if len({(c.n_images, c.sampling) for c in cards}) > 1:
                return FitCheck(errors=["the ticked models differ in image count or pixel size; "
                                        "tick models of one kind"])
            return check_fit(series, cards[0] if cards else None, "network")
        return check_fit(series, None, method, defocus=defocus)

    def jobs(self, method: str, *, align: bool = True, providers: str = "auto", defocus=None,
             Cs_um: float = 0.0, focal_spread: float = 0.0,
             physics_check: bool | str = "auto") -> list[dict]:
        """The keyword arguments of one :func:`iter_reconstruct` per ticked network (or one
        for a traditional method; ``Cs_um`` in um, ``focal_spread`` in A).

        ``physics_check`` (default "auto": when an estimator is installed or the defocus is
        known) adds the microscope estimate and the physics residual. A traditional job
        without defocus leaves the defocus, and a Cs or focal spread of 0, to the estimate."""
        if method == "network":
            return [dict(model=c, method="network", align=align, providers=providers,
                         physics_check=physics_check)
                    for c in self.selected_cards()]
        Cs = float(Cs_um) * 1e4
        fs = float(focal_spread)
        if defocus is None:  # nothing typed: what is 0 is "not given"
            Cs, fs = (Cs or None), (fs or None)
        return [dict(model=None, method=method, align=align, defocus=defocus, Cs=Cs,
                     focal_spread=fs, physics_check=physics_check)]

    # -- results --------------------------------------------------------------------------
    def finish(self, result: RunResult, series_name: str) -> RunSummary | None:
        """Keep a run's result; for a successful one, the exit wave and text to show."""
        self.last_result = result
        self.finished.emit(result)
        if result.cancelled or result.error or not result.reconstructions:
            return None
        recs = result.reconstructions
        mean, std = ensemble([r.exit_wave for r in recs])
        rec = recs[0]
        name = f"{series_name} exit wave"
        self.exit_wave, self.sampling, self.output_name = mean, rec.sampling, name
        meta = {"method": rec.method, "model": [r.model_name for r in recs],
                "device": rec.device, "timings": dict(rec.timings), "source": series_name}
        total = sum(r.timings.get("total", 0.0) for r in recs) or result.seconds
        models = ", ".join(m for m in meta["model"] if m) or METHODS.get(rec.method, rec.method)
        status = (f"✔ {models} on {rec.device} in {total:.2f} s"
                  + (f" ({len(recs)} models; uncertainty layer)" if len(recs) > 1 else ""))
        warnings = list(dict.fromkeys(w for r in recs for w in r.warnings))
        summary = RunSummary(mean, std, rec.sampling, name, meta, status, warnings)
        self._add_check(summary, recs, series_name)
        return summary

    @staticmethod
    def _add_check(summary: RunSummary, recs: list, series_name: str) -> None:
        """The first reconstruction's estimate and residual (of the first network when
        several are ensembled: each has its own) into ``summary``."""
        from ._check import residual_line

        rec = recs[0]
        est, res = getattr(rec, "estimate", None), getattr(rec, "residual", None)
        if est is not None:
            summary.estimate_rows = list(est.rows())
            summary.estimate_model = est.model
            summary.metadata["estimate"] = est.to_dict()
        fit = rec.metadata.get("aberration_fit")
        if fit:
            from .aberration_fit import table_values

            summary.fit_values = table_values(fit)
            summary.metadata["aberration_fit"] = fit
        if res is not None:
            summary.reduced_chi2 = float(res.reduced_chi2)
            src = (rec.metadata.get("physics_residual") or {}).get("parameters_from")
            summary.check_text = residual_line(res.reduced_chi2, src, res.misfit_rms) + (
                f" — of {rec.model_name}" if len(recs) > 1 and rec.model_name else "")
            summary.residual = res.images
            summary.residual_name = f"{series_name} residual"
            summary.metadata["physics_residual"] = rec.metadata.get("physics_residual")
        else:
            why = (rec.metadata.get("physics_residual") or {})
            summary.check_text = ("physics residual " + ("failed: " + why["failed"]
                                                         if "failed" in why else
                                                         "skipped: " + why["skipped"])
                                  if why else "")
