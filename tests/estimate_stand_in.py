"""A stand-in for the lead's :mod:`napari_exitwave.estimate` (not in this branch): a module put
into ``sys.modules`` whose estimator returns the true parameters of the mos2 sample, with the
API the pipeline uses (``default_estimator``, ``estimate_aberrations`` and an estimate with
``params``, ``values``, ``units``, ``ranges``, ``warnings``, ``model``, ``rows()``,
``to_dict()``)."""

from __future__ import annotations

import dataclasses
import json
import sys
import types

import numpy as np

from napari_exitwave import physics
from napari_exitwave.data import _path


def true_parameters(sample="mos2"):
    with open(_path("parameters.json", sample)) as f:
        return [physics.MicroscopeParameters.from_dict(d) for d in json.load(f)["microscope"]]


@dataclasses.dataclass
class FakeEstimate:
    """What the lead's ``AberrationEstimate`` offers (params, values, units, ranges,
    warnings, model, rows(), to_dict())."""

    params: list
    values: dict
    units: dict
    ranges: dict
    warnings: list
    model: str = "stand-in"

    def rows(self):
        return [(k, f"{v:.1f} {self.units[k]}", "{:g} to {:g}".format(*self.ranges[k]))
                for k, v in self.values.items()]

    def to_dict(self):
        return {"model": self.model, "values": dict(self.values), "units": dict(self.units),
                "training_ranges": {k: list(v) for k, v in self.ranges.items()},
                "warnings": list(self.warnings)}


def install_stand_in(monkeypatch):
    """Install a stand-in ``napari_exitwave.estimate`` that returns the true parameters of
    the mos2 sample; ``calls`` records (n, shape, sampling) of every call."""
    true = true_parameters()
    calls = []

    def estimate_aberrations(images, sampling, model=None, providers="auto"):
        calls.append((np.shape(images), float(sampling)))
        p = true[0]
        values = {"defocus_mean": float(np.mean([q.defocus for q in true])),
                  "defocus_step": true[1].defocus - true[0].defocus, "Cs": p.Cs / 1e4,
                  "focal_spread": p.focal_spread, "blur": p.blur, "dose": p.dose}
        units = {"defocus_mean": "A", "defocus_step": "A", "Cs": "um", "focal_spread": "A",
                 "blur": "px", "dose": "e/A^2"}
        ranges = {k: (-1e5, 1e5) for k in values}
        return FakeEstimate(list(true), values, units, ranges, ["Cs = -8 um is outside"])

    mod = types.ModuleType("napari_exitwave.estimate")
    mod.default_estimator = lambda models_dir=None: "stand-in"
    mod.estimate_aberrations = estimate_aberrations
    monkeypatch.setitem(sys.modules, "napari_exitwave.estimate", mod)
    return calls


def install_no_estimator(monkeypatch):
    mod = types.ModuleType("napari_exitwave.estimate")
    mod.default_estimator = lambda models_dir=None: None
    monkeypatch.setitem(sys.modules, "napari_exitwave.estimate", mod)
