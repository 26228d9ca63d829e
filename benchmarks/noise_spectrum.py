"""How well does the noise power spectrum give the detector MTF and the dose? (issue 14)

Rerun (from the repository root; about 1 min for ``--n 60`` per data set on 2 cores)::

    python benchmarks/noise_spectrum.py data/mos2-val.zarr data/mosg-val.zarr --n 60 \\
        --out docs/noise_spectrum.json

For each validation exit wave a focal series is drawn with Table 1 parameters (blur in px, MTF,
shot noise; :func:`exitwave_training.dataset.random_training_example`, seed 11 + wave index) and
:func:`napari_exitwave.detector.fit_noise_spectrum` fits the MTF and the doses. Against the
parameters that made the series:

- ``mtf_max_error``: the largest ``|MTF_fit(q) - MTF(q)|`` for ``q`` in 0-0.45 Nyquist (the band
  that carries the signal, where the MTF shapes the model images of the physics residual);
- ``log10_dose_error``: of every image;
- ``noise_variance_error``: ``|log10|`` of the ratio of the pixel noise variance the fit implies
  (``mean(MTF^2) / (D s^2)``, what the residual's chi-square divides by) to the true one;
- the same for the dose of the aberration-estimator network (``--network``) and for the
  *trivial* detector (the middle of the training MTF ranges, the network's dose), for comparison.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np


def mtf_max_error(fit_c, true_c, q_max: float = 0.45) -> float:
    from napari_exitwave import physics

    q = np.linspace(0, q_max, 46)
    return float(np.max(np.abs(physics.mtf(q, *fit_c) - physics.mtf(q, *true_c))))


def variance_error(shape, p_true, c_fit, dose_fit) -> float:
    from napari_exitwave.residual import noise_variance_factor

    got = dataclasses.replace(p_true, mtf_c1=c_fit[0], mtf_c2=c_fit[1], mtf_c3=c_fit[2])
    return float(abs(np.log10((noise_variance_factor(shape, got) / dose_fit)
                              / (noise_variance_factor(shape, p_true) / p_true.dose))))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", nargs="+", help="validation data sets (Zarr)")
    ap.add_argument("--n", type=int, default=60, help="exit waves per data set")
    ap.add_argument("--out", type=Path, help="JSON results")
    ap.add_argument("--no-network", dest="network", action="store_false",
                    help="skip the estimator network's dose")
    args = ap.parse_args(argv)

    from exitwave_training.dataset import random_training_example
    from exitwave_training.feed import load_waves

    from napari_exitwave import physics
    from napari_exitwave.detector import fit_noise_spectrum

    estimator = None
    if args.network:
        from napari_exitwave.estimate import AberrationEstimator

        estimator = AberrationEstimator()
    r = physics.ParameterRanges()
    trivial_c = tuple(float(np.mean(v)) for v in (r.mtf_c1, r.mtf_c2, r.mtf_c3))
    rows = []
    t0 = time.perf_counter()
    for path in args.data:
        data = load_waves(path, max_samples=args.n)
        for i in range(len(data["wave"])):
            rng = np.random.default_rng(11 + i)
            images, _, params, s = random_training_example(data["wave"][i], data["target"][i],
                                                           data["sampling"], rng)
            p = params[0]
            true_c = (p.mtf_c1, p.mtf_c2, p.mtf_c3)
            t = time.perf_counter()
            fit = fit_noise_spectrum(images, s)
            dt = time.perf_counter() - t
            row = dict(data=Path(path).name, index=i, seconds=dt, true_mtf=true_c, fit_mtf=fit.mtf,
                       consistent=fit.consistent,
                       mtf_max_error=mtf_max_error(fit.mtf, true_c),
                       trivial_mtf_max_error=mtf_max_error(trivial_c, true_c),
                       log10_dose_error=float(np.max(np.abs(np.log10(fit.dose / p.dose)))),
                       noise_variance_error=variance_error(images.shape[1:], p, fit.mtf,
                                                           fit.dose[0]))
            if estimator is not None:
                est_dose = estimator.estimate(images, s).values.get("dose_network")
                row["network_log10_dose_error"] = float(abs(np.log10(est_dose / p.dose)))
                row["trivial_noise_variance_error"] = variance_error(
                    images.shape[1:], p, trivial_c, est_dose)
            rows.append(row)
    keys = [k for k in rows[0] if k.endswith("error")]
    summary = {k: {"median": float(np.median([r[k] for r in rows])),
                   "p90": float(np.percentile([r[k] for r in rows], 90))} for k in keys}
    summary["consistent_fraction"] = float(np.mean([r["consistent"] for r in rows]))
    summary["median_seconds"] = float(np.median([r["seconds"] for r in rows]))
    out = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "machine": f"{platform.node()} ({platform.processor() or platform.machine()})",
           "command": " ".join([Path(sys.argv[0]).name] + (argv or sys.argv[1:])),
           "n": len(rows), "summary": summary, "rows": rows,
           "wall_seconds": time.perf_counter() - t0}
    print(f"{len(rows)} series")
    for k in keys:
        print(f"  {k:<32} median {summary[k]['median']:.4f}  p90 {summary[k]['p90']:.4f}")
    print(f"  consistent {summary['consistent_fraction']:.2f}, {summary['median_seconds']:.2f} s "
          "per series")
    if args.out:
        args.out.write_text(json.dumps(out, indent=1, default=float) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
