"""Which estimated parameters spoil the physics refinement: aberrations or detector?

On the first ``--n`` exit waves of a data set, each imaged as an 11-image series like
benchmarks/compare_traditional.py (same seeding), the ``mos2`` network's wave is refined
(:func:`napari_exitwave.refine.refine_exit_wave`) with the parameters

- ``true``: those that made the series;
- ``fit``: estimated, then fitted with the wave held fixed (``_check.fit_estimated``, the
  pipeline's path, detector MTF included);
- ``fit, true detector``: the fitted aberrations with the true MTF, dose, focal spread and blur;
- ``true aberrations, est. detector``: the true aberrations with the estimate's detector;
- ``fit, strength S`` (``--strengths``): the fitted parameters at other regularisation strengths;
- ``fit, alternated`` (``--alternate``): refine, fit the parameters again with the *refined*
  wave held fixed (from the first fit), then refine the network's wave with those.

and each result scored against the training target (complex RMSE). Usage::

    python benchmarks/refine_parameters.py --n 4 --data data/mos2-val.zarr
    python benchmarks/refine_parameters.py --n 12 --cases fit --strengths 3 10 --alternate
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CASES = ("true", "fit", "fit, true detector", "true aberrations, est. detector")
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
    ap.add_argument("--first", type=int, default=0, help="first sample of the data set")
    ap.add_argument("--model", default="mos2")
    ap.add_argument("--cases", nargs="*", default=list(CASES), choices=CASES,
                    help="parameter sets refined with at strength 1 (default: all)")
    ap.add_argument("--strengths", nargs="*", type=float, default=[],
                    help="further strengths for the fitted parameters")
    ap.add_argument("--alternate", action="store_true",
                    help="also refine -> fit again with the refined wave -> refine")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from compare_traditional import _estimated_parameters, from_dataset

    from napari_exitwave import physics
    from napari_exitwave._check import fit_estimated
    from napari_exitwave.inference import get_reconstructor
    from napari_exitwave.metrics import rmse
    from napari_exitwave.refine import refine_exit_wave

    sampling, samples = from_dataset(args.data, args.n, args.seed, print, args.first)
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

        def score(params, strength=1.0):
            w = refine_exit_wave(net, sampling, s["images"], params, strength=strength).exit_wave
            return w, float(np.hypot(*rmse(w, s["target"])))

        refined = {}
        for name in args.cases:
            refined[name], row[name] = score(cases[name])
        for strength in args.strengths:
            row[f"fit, strength {strength:g}"] = score(fitted, strength)[1]
        if args.alternate:
            first = refined["fit"] if "fit" in refined else score(fitted)[0]
            again, _ = fit_estimated(first, sampling, s["images"], fitted)
            row["fit, alternated"] = score(again)[1]
            c21 = lambda r: r.coma * np.exp(1j * r.coma_angle)  # noqa: E731
            row["C21 error fit (A)"] = float(abs(c21(fitted[0]) - c21(true[0])))
            row["C21 error refit (A)"] = float(abs(c21(again[0]) - c21(true[0])))
        print(s["index"], {k: round(v, 4) for k, v in row.items()}, flush=True)
        rows.append(row)
    print(f"median over {len(rows)} series:",
          {k: round(float(np.median([r[k] for r in rows])), 4) for k in rows[0]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
