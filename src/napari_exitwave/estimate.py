"""Microscope parameters read from the focal series itself: the aberration-estimator network.

A small convolutional network, separate from the exit-wave U-Nets, takes the same focal series
and predicts the parameters of the image model that made it (:mod:`napari_exitwave.physics`
conventions: lengths in A, abTEM's ``defocus = -C10``, Cs in um on output, angles in rad):

==================  ======  ==============================================================
value               unit    meaning
==================  ======  ==============================================================
``defocus_mean``    A       mean defocus of the series (defocus of image i: mean + (i - (n-1)/2) step)
``defocus_step``    A       defocus step between consecutive images
``Cs``              um      spherical aberration C30
``C12``, ``phi12``  A, rad  two-fold astigmatism: amplitude and angle (mod pi)
``C21``, ``phi21``  A, rad  axial coma: amplitude and angle (mod 2 pi)
``focal_spread``    A       abTEM focal spread (temporal incoherence)
``blur``            px      standard deviation of the Gaussian image blur, pixels of the grid
``dose``            e/A^2   electron dose per image
==================  ======  ==============================================================

The network predicts each value scaled to about [-1, 1] by its training range
(:func:`encode_parameters` / :func:`decode_parameters`); astigmatism and coma as vector components
(``C12 cos 2 phi12, C12 sin 2 phi12``; ``C21 cos phi21, C21 sin phi21``) so the angles do not
wrap, and the dose as log10. Its input (:func:`estimator_features`) is, per image, the normalised
image and its standardised log power spectrum (Hann window, centred), ``input_size`` px square at
the card's pixel size: the spectrum carries the CTF's rings, the blur and the noise floor; the
images, the contrast reversal through the series. A frame larger than the input is cut into
tiles whose predictions are averaged.

A card of an estimator says ``"kind": "aberrations"``; :func:`napari_exitwave.model_cards.list_models`
lists exit-wave networks unless asked for this kind.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import numpy as np

from . import physics
from .errors import ModelError
from .model_cards import ModelCard, find_model, list_models

__all__ = [
    "ESTIMATOR_KIND",
    "OUTPUTS",
    "AberrationEstimate",
    "AberrationEstimator",
    "card_errors",
    "DETERMINED_FRACTION",
    "default_estimator",
    "estimate_aberrations",
    "estimator_features",
    "encode_parameters",
    "decode_parameters",
    "training_ranges",
]

ESTIMATOR_KIND = "aberrations"
"""``kind`` of an estimator's model card."""

OUTPUTS = ("defocus_mean", "defocus_step", "Cs", "C12_a", "C12_b", "C21_a", "C21_b",
           "focal_spread", "blur", "log10_dose")
"""The network's outputs, in order (each scaled to about [-1, 1], see :func:`encode_parameters`)."""

UNITS = {"defocus_mean": "A", "defocus_step": "A", "Cs": "um", "C12": "A", "phi12": "rad",
         "C21": "A", "phi21": "rad", "focal_spread": "A", "blur": "px", "dose": "e/A^2"}
"""Units of the values of an :class:`AberrationEstimate`."""


def _centre_half(lo_hi: Sequence[float]) -> tuple[float, float]:
    lo, hi = map(float, lo_hi)
    return (lo + hi) / 2, max((hi - lo) / 2, 1e-12)


def _scales(ranges: physics.ParameterRanges, n_images: int) -> dict[str, tuple[float, float]]:
    """(centre, half-width) of every output: ``scaled = (value - centre) / half``."""
    span = ranges.total_defocus_range
    lo, hi = ranges.defocus
    nominal = span / max(n_images - 1, 1)
    return {
        "defocus_mean": _centre_half((lo + span / 2, hi - span / 2)),
        "defocus_step": (nominal, max(ranges.step_jitter, 1e-3)),
        "Cs": _centre_half(ranges.Cs),
        "C12_a": (0.0, float(ranges.astigmatism[1])),
        "C12_b": (0.0, float(ranges.astigmatism[1])),
        "C21_a": (0.0, float(ranges.coma[1])),
        "C21_b": (0.0, float(ranges.coma[1])),
        "focal_spread": _centre_half(ranges.focal_spread),
        "blur": _centre_half(ranges.blur),
        "log10_dose": _centre_half(ranges.log10_dose),
    }


def encode_parameters(params: Sequence[physics.MicroscopeParameters],
                      ranges: physics.ParameterRanges | None = None) -> np.ndarray:
    """The network's target (float32, ``len(OUTPUTS)``) for the parameters of one series."""
    ranges = ranges or physics.ParameterRanges()
    n = len(params)
    p = params[0]
    d = np.array([q.defocus for q in params], float)
    step = float(np.mean(np.diff(d))) if n > 1 else 0.0
    raw = {
        "defocus_mean": float(d.mean()), "defocus_step": step, "Cs": p.Cs,
        "C12_a": p.astigmatism * math.cos(2 * p.astigmatism_angle),
        "C12_b": p.astigmatism * math.sin(2 * p.astigmatism_angle),
        "C21_a": p.coma * math.cos(p.coma_angle), "C21_b": p.coma * math.sin(p.coma_angle),
        "focal_spread": p.focal_spread, "blur": p.blur,
        "log10_dose": math.log10(p.dose) if math.isfinite(p.dose) else ranges.log10_dose[1],
    }
    s = _scales(ranges, n)
    return np.array([(raw[k] - s[k][0]) / s[k][1] for k in OUTPUTS], np.float32)


def decode_parameters(vector: Sequence[float], n_images: int,
                      ranges: physics.ParameterRanges | None = None) -> dict[str, float]:
    """Physical values (:data:`UNITS`) from one output vector of the network."""
    ranges = ranges or physics.ParameterRanges()
    s = _scales(ranges, n_images)
    v = {k: float(x) * s[k][1] + s[k][0] for k, x in zip(OUTPUTS, np.asarray(vector, float))}
    return {
        "defocus_mean": v["defocus_mean"], "defocus_step": v["defocus_step"],
        "Cs": v["Cs"] / 1e4,
        "C12": math.hypot(v["C12_a"], v["C12_b"]),
        "phi12": (math.atan2(v["C12_b"], v["C12_a"]) / 2) % math.pi,
        "C21": math.hypot(v["C21_a"], v["C21_b"]),
        "phi21": math.atan2(v["C21_b"], v["C21_a"]) % (2 * math.pi),
        "focal_spread": v["focal_spread"], "blur": v["blur"], "dose": 10 ** v["log10_dose"],
    }


def training_ranges(ranges: physics.ParameterRanges | None = None,
                    n_images: int = 3) -> dict[str, tuple[float, float]]:
    """The range of every value of an estimate that the training data covered (:data:`UNITS`)."""
    r = ranges or physics.ParameterRanges()
    span = r.total_defocus_range
    nominal = span / max(n_images - 1, 1)
    return {
        "defocus_mean": (r.defocus[0] + span / 2, r.defocus[1] - span / 2),
        "defocus_step": (nominal - r.step_jitter, nominal + r.step_jitter),
        "Cs": (r.Cs[0] / 1e4, r.Cs[1] / 1e4),
        "C12": tuple(map(float, r.astigmatism)),
        "C21": tuple(map(float, r.coma)),
        "focal_spread": tuple(map(float, r.focal_spread)),
        "blur": tuple(map(float, r.blur)),
        "dose": (10 ** r.log10_dose[0], 10 ** r.log10_dose[1]),
    }


def estimator_features(normalised: np.ndarray) -> np.ndarray:
    """Network input ``(H, W, 2 n)`` float32 from a normalised series ``(n, H, W)``.

    Channels ``0..n-1``: the images; ``n..2n-1``: their log power spectra (Hann window,
    ``fftshift``-centred), each standardised to zero mean and unit deviation.
    """
    x = np.asarray(normalised, np.float64)
    if x.ndim != 3:
        raise ValueError(f"expected a series (n, H, W), got shape {x.shape}")
    h, w = x.shape[-2:]
    window = np.outer(np.hanning(h), np.hanning(w))
    spec = np.abs(np.fft.fftshift(np.fft.fft2(x * window), axes=(-2, -1))) ** 2
    spec = np.log(spec + 1e-3 * spec.mean(axis=(-2, -1), keepdims=True) + 1e-12)
    spec = physics.normalize_series(spec)
    return np.concatenate([x.astype(np.float32), spec], axis=0).transpose(1, 2, 0).astype(
        np.float32)


@dataclasses.dataclass
class AberrationEstimate:
    """Microscope parameters estimated from one focal series.

    Attributes
    ----------
    params : list of MicroscopeParameters
        One per image (blur in px of the series' grid, finite dose): ready for
        :func:`napari_exitwave.residual.physics_residual` and the traditional methods. The
        detector MTF and the dose of each image come from the noise power spectrum beyond the
        information limit (:mod:`napari_exitwave.detector`, in :attr:`detector`), the rest
        from the network. When the spectrum cannot be fitted (normalised images, a frame
        under 32 px) the dose is the network's and no MTF is assumed.
    values : dict
        The estimated values in :attr:`units` (``defocus_mean`` ... ``dose``, see the module doc).
    units : dict
    ranges : dict
        The training range of every value; outside it the estimate (and the exit-wave network)
        extrapolates.
    warnings : list of str
        One per value outside its training range.
    model : str
        The estimator's name.
    spread : dict
        Standard deviation of each value over the tiles the frame was cut into (0 for one tile).
    """

    params: list
    values: dict
    units: dict
    ranges: dict
    warnings: list
    model: str
    spread: dict = dataclasses.field(default_factory=dict)
    detector: Any = None
    """The :class:`~napari_exitwave.detector.NoiseSpectrumFit` of the series (MTF and doses),
    or ``None`` when it could not be made."""
    errors: dict = dataclasses.field(default_factory=dict)
    """Typical error of each value (``name -> (median |error|, trivial's median |error|)``, in
    :attr:`units`; ``dose`` in log10 units) on the estimator's validation series, from its
    card; empty when the card has none."""

    def determined(self, name: str) -> bool | None:
        """Whether the series determines ``name``: the estimator's median error on its
        validation series is below :data:`DETERMINED_FRACTION` of the trivial estimator's
        (the middle of the range). ``None`` when the card carries no errors."""
        err = self.errors.get(name)
        if not err:
            return None
        return bool(err[0] < DETERMINED_FRACTION * err[1])

    @property
    def defocus(self) -> list[float]:
        """Defocus of each image, A (abTEM convention)."""
        return [float(p.defocus) for p in self.params]

    def rows(self) -> list[tuple[str, str, str]]:
        """``(name, "value unit", "training range")`` for a table."""
        out = []
        for name in ("defocus_mean", "defocus_step", "Cs", "C12", "phi12", "C21", "phi21",
                     "focal_spread", "blur", "dose"):
            v, unit = self.values[name], self.units[name]
            if unit == "rad":
                text, rng = f"{math.degrees(v):.0f} deg", ""
                if self.determined(name.replace("phi", "C")) is False:
                    text += " (not determined)"
            else:
                text = f"{v:.3g} {unit}" if name == "dose" else f"{v:.1f} {unit}"
                lo, hi = self.ranges.get(name, (None, None))
                rng = "" if lo is None else (f"{lo:.3g}-{hi:.3g}" if name == "dose"
                                             else f"{lo:g} to {hi:g}")
                err = self.errors.get(name)
                if self.determined(name) is False:
                    text += " (not determined)"
                elif err:
                    text += (f" (x/÷ {10 ** err[0]:.2g})" if name == "dose"
                             else f" ± {err[0]:.2g}")
            if name == "dose" and self.detector is not None:
                text = f"{v:.3g} {unit} (noise spectrum)"
            out.append((name, text, rng))
        if self.detector is not None:
            c1, c2, c3 = self.detector.mtf
            note = "" if self.detector.consistent else " (spectrum off the noise model)"
            out.append(("detector MTF", f"c1 {c1:.2f}, c2 {c2:.3f}, c3 {c3:.2f}{note}", ""))
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "values": dict(self.values), "units": dict(self.units),
                "training_ranges": {k: list(v) for k, v in self.ranges.items()},
                "defocus": self.defocus, "spread": dict(self.spread),
                "typical_errors": {k: list(v) for k, v in self.errors.items()},
                "not_determined": sorted(k for k in self.errors if self.determined(k) is False),
                "detector": None if self.detector is None else self.detector.to_dict(),
                "warnings": list(self.warnings)}

    def summary(self) -> str:
        """A few lines for a terminal."""
        lines = [f"microscope estimate ({self.model}):"]
        lines += [f"  {n:<13} {v:>14}   training range {r}" if r else f"  {n:<13} {v:>14}"
                  for n, v, r in self.rows()]
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)


DETERMINED_FRACTION = 0.8
"""A value counts as determined by the series when the estimator's median validation error is
below this fraction of the trivial estimator's (docs/estimator.md)."""

_ERROR_KEYS = {"defocus_mean": "defocus", "Cs": "Cs", "C12": "C12",
               "C21": "C21", "focal_spread": "focal_spread", "blur": "blur",
               "dose": "log10_dose"}


def card_errors(card: ModelCard) -> dict[str, tuple[float, float]]:
    """``value name -> (median |error|, trivial median |error|)`` from an estimator's card."""
    table = (card.metrics or {}).get("errors") or {}
    out = {}
    for name, key in _ERROR_KEYS.items():
        row = table.get(key)
        if row and row.get("median_abs_error") is not None:
            out[name] = (float(row["median_abs_error"]), float(row["trivial_median_abs_error"]))
    return out


def default_estimator(models_dir=None) -> str | None:
    """Name of an installed estimator (the first by name), or ``None``."""
    names = sorted(list_models(models_dir, kind=ESTIMATOR_KIND))
    return names[0] if names else None


class AberrationEstimator:
    """An ONNX Runtime session for one estimator network (card ``kind: aberrations``).

    Parameters
    ----------
    model : name, card or path; ``None``: :func:`default_estimator`.
    providers : as :class:`napari_exitwave.inference.OnnxReconstructor`.
    """

    def __init__(self, model=None, providers="cpu", verify: bool = True, models_dir=None):
        import onnxruntime as ort

        from .inference import _choose_providers

        if model is None:
            model = default_estimator(models_dir)
            if model is None:
                raise ModelError("no aberration estimator is installed (a model card with "
                                 "\"kind\": \"aberrations\" in the model folders); train one "
                                 "with `exitwave-train estimator`")
        self.card: ModelCard = find_model(model, models_dir) if not isinstance(
            model, ModelCard) else model
        if self.card.extra.get("kind") != ESTIMATOR_KIND:
            raise ModelError(f"model {self.card.name!r} is not an aberration estimator (its card "
                             f"says kind {self.card.extra.get('kind', 'exit-wave')!r})")
        if verify:
            self.card.verify()
        try:
            self.session = ort.InferenceSession(str(self.card.onnx_path),
                                                providers=_choose_providers(providers))
        except Exception as e:
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ModelError(f"could not load the estimator {self.card.name!r}: {msg[:300]}; "
                             "re-export or re-copy it") from e
        self.input_name = self.session.get_inputs()[0].name
        self.size = int(self.card.extra.get("input_size", 256))
        self.ranges = physics.ParameterRanges.from_dict(self.card.extra.get("ranges", {}))

    @property
    def name(self) -> str:
        return self.card.name

    def _tiles(self, normalised: np.ndarray, max_tiles: int) -> list[np.ndarray]:
        n, h, w = normalised.shape
        s = self.size
        if h < s or w < s:  # pad with the mean (0 after normalisation): a smaller field
            pad = ((0, 0), (0, max(0, s - h)), (0, max(0, s - w)))
            normalised = np.pad(normalised, pad, mode="reflect")
            h, w = normalised.shape[1:]
        ys = np.linspace(0, h - s, max(1, min(int(math.sqrt(max_tiles)), h // s))).astype(int)
        xs = np.linspace(0, w - s, max(1, min(int(math.sqrt(max_tiles)), w // s))).astype(int)
        return [physics.normalize_series(normalised[:, y:y + s, x:x + s]) for y in ys for x in xs]

    def predict_vector(self, normalised: np.ndarray, max_tiles: int = 9) -> np.ndarray:
        """Raw outputs ``(tiles, len(OUTPUTS))`` for a normalised series at the card's pixel size."""
        feats = np.stack([estimator_features(t) for t in self._tiles(normalised, max_tiles)])
        try:
            return np.asarray(self.session.run(None, {self.input_name: feats})[0], float)
        except Exception as e:
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ModelError(f"the estimator {self.card.name!r} failed on {feats.shape}: "
                             f"{msg[:300]}") from e

    def estimate(self, images: np.ndarray, sampling: float, max_tiles: int = 9
                 ) -> AberrationEstimate:
        """Estimate the parameters of a focal series ``(n, ny, nx)`` at ``sampling`` A/px.

        The series is resampled to the card's pixel size when it differs by more than 2 %.
        The returned blur is in px of the card's grid converted to the series' grid.
        """
        images = np.asarray(images, np.float64)
        n = images.shape[0]
        raw = images
        if images.ndim != 3 or n != self.card.n_images:
            raise ModelError(f"the estimator {self.card.name!r} takes a series of "
                             f"{self.card.n_images} images, got shape {images.shape}")
        net_s = float(self.card.sampling or sampling)
        if abs(sampling / net_s - 1) > 0.02:
            from .reconstruct import resample_series

            images = resample_series(images, sampling, net_s)
        vectors = self.predict_vector(physics.normalize_series(images), max_tiles)
        decoded = [decode_parameters(v, n, self.ranges) for v in vectors]
        values = decode_parameters(vectors.mean(axis=0), n, self.ranges)
        spread = {k: float(np.std([d[k] for d in decoded])) for k in values
                  if not k.startswith("phi")}
        values["blur"] = values["blur"] * net_s / float(sampling)  # px of the series' grid
        ranges = training_ranges(self.ranges, n)
        ranges["blur"] = tuple(b * net_s / float(sampling) for b in ranges["blur"])
        warnings = []
        for k, (lo, hi) in ranges.items():
            v = values[k]
            if k in ("C12", "C21"):  # amplitudes near 0 are inside by construction
                lo = 0.0
            tol = 0.1 * (hi - lo)
            if not lo - tol <= v <= hi + tol:
                warnings.append(f"{k} = {v:.3g} {UNITS[k]} is outside the training range "
                                f"{lo:g} to {hi:g} {UNITS[k]}: the series is out of distribution "
                                "for the networks too")
        detector = _detector(raw, float(sampling), self.ranges, warnings)
        doses = np.full(n, values["dose"]) if detector is None else detector.dose
        if detector is not None:
            values["dose_network"] = values["dose"]
            values["dose"] = float(10 ** detector.log10_dose)
        step, mean = values["defocus_step"], values["defocus_mean"]
        shared = dict(Cs=values["Cs"] * 1e4, astigmatism=values["C12"],
                      astigmatism_angle=values["phi12"], coma=values["C21"],
                      coma_angle=values["phi21"], focal_spread=max(values["focal_spread"], 0.0),
                      blur=max(values["blur"], 0.0), dose=values["dose"],
                      energy=float(self.card.energy), blur_unit="px")
        if detector is not None:
            shared.update(mtf_c1=detector.mtf[0], mtf_c2=detector.mtf[1],
                          mtf_c3=detector.mtf[2])
        params = [physics.MicroscopeParameters(defocus=mean + (i - (n - 1) / 2) * step,
                                               **dict(shared, dose=float(doses[i])))
                  for i in range(n)]
        errors = card_errors(self.card)
        if "blur" in errors:  # px of the card's grid -> px of the series' grid
            errors["blur"] = tuple(e * net_s / float(sampling) for e in errors["blur"])
        if detector is not None:  # the dose is the noise spectrum's, not the network's
            errors.pop("dose", None)
        return AberrationEstimate(params=params, values=values, units=dict(UNITS), ranges=ranges,
                                  warnings=warnings, model=self.card.name, spread=spread,
                                  errors=errors, detector=detector)


def _detector(images: np.ndarray, sampling: float, ranges: physics.ParameterRanges,
              warnings: list):
    """The :class:`~napari_exitwave.detector.NoiseSpectrumFit` of raw ``images`` on their own
    grid, or None (with a warning) when it cannot be made: it needs intensities, not normalised
    images."""
    from .detector import fit_noise_spectrum

    try:
        fit = fit_noise_spectrum(images, sampling, bounds=(tuple(ranges.mtf_c1),
                                                           tuple(ranges.mtf_c2),
                                                           tuple(ranges.mtf_c3)))
    except ValueError as e:
        warnings.append(f"no detector MTF or dose from the noise spectrum ({e}); the dose is "
                        "the network's and no MTF is assumed")
        return None
    if not fit.consistent:
        warnings.append(f"the noise spectrum beyond the information limit does not follow shot "
                        f"noise through an MTF (rms deviation {fit.ratio_rms:.2g}, expected "
                        f"{fit.expected_rms:.2g}): a camera offset, read noise or processed "
                        "images? The MTF and dose are uncertain")
    return fit


_CACHE: dict = {}


def estimate_aberrations(images: np.ndarray, sampling: float, model=None, providers="cpu",
                         models_dir=None) -> AberrationEstimate:
    """Estimate the microscope parameters of a focal series (see :class:`AberrationEstimator`).

    ``images`` ``(n, ny, nx)``, raw or normalised (gain and offset do not matter), at
    ``sampling`` A/px. Sessions are cached by model and providers.
    """
    key = (str(model), str(providers), str(models_dir))
    est = _CACHE.get(key)
    if est is None:
        est = _CACHE[key] = AberrationEstimator(model, providers=providers, models_dir=models_dir)
    return est.estimate(images, sampling)
