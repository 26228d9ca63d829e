"""Which estimated parameters spoil the physics refinement: aberrations or detector?

On the first ``--n`` exit waves of a data set, each imaged as an 11-image series like
benchmarks/compare_traditional.py (same seeding), the ``mos2`` network's wave is refined
(:func:`napari_exitwave.refine.refine_exit_wave`) with the parameters

- ``true``: those that made the series;
- ``fit``: estimated, then fitted with the wave held fixed (``_check.fit_estimated``, the
  pipeline's path, detector MTF included);
- ``fit, true detector``: the fitted aberrations with the true MTF, dose, focal spread and blur;
- ``true aberrations, est. detector``: the true aberrations with the estimate's detector.

and each result scored against the training target (complex RMSE). Usage::

    python benchmarks/refine_parameters.py --n 4 --data data/mos2-val.zarr
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DETECTOR = ("mtf_c1", "mtf_c2", "mtf_c3", "dose", "focal_spread", "blur", "blur_unit")


def detector_from(params, source):
    """``params`` with the detector-side values (:data:`DETECTOR`) of ``source``."""
    return [dataclasses.replace(a, **{k: getattr(b, k) for k in DETECTOR})
            for a, b in zip(params, source)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="data/mos2-val.zarr")
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--seed", type=int, default=20260)
    ap.add_argument("--model", default="mos2")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from compare_traditional import _estimated_parameters, from_dataset

    from napari_exitwave import physics
    from napari_exitwave._check import fit_estimated
    from napari_exitwave.inference import get_reconstructor
    from napari_exitwave.metrics import rmse
    from napari_exitwave.refine import refine_exit_wave

    sampling, samples = from_dataset(args.data, args.n, args.seed, print)
    rec = get_reconstructor(args.model)
    rows = []
    for s in samples:
        pick = np.round(np.linspace(0, 10, rec.card.n_images)).astype(int)
        net = rec.predict(physics.normalize_series(s["images"][pick])).astype(complex)
        true = s["params"]
        est = _estimated_parameters(s["images"], pick, None, sampling, print)
        if est is None:
            return 1
        fitted, _ = fit_estimated(net, sampling, s["images"], est)
        cases = {"true": true, "fit": fitted,
                 "fit, true detector": detector_from(fitted, true),
                 "true aberrations, est. detector": detector_from(true, est)}
        row = {"network": float(np.hypot(*rmse(net, s["target"])))}
        for name, params in cases.items():
            w = refine_exit_wave(net, sampling, s["images"], params).exit_wave
            row[name] = float(np.hypot(*rmse(w, s["target"])))
        print(s["index"], {k: round(v, 4) for k, v in row.items()}, flush=True)
        rows.append(row)
    print(f"median over {len(rows)} series:",
          {k: round(float(np.median([r[k] for r in rows])), 4) for k in rows[0]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
