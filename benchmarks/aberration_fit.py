"""How well does the aberration fit recover the microscope? (issue 14)

Rerun (from the repository root; about 10 s per series on 2 cores)::

    python benchmarks/aberration_fit.py data/mos2-val.zarr --n 40 --out docs/aberration_fit.json

For each validation exit wave a focal series is drawn with Table 1 parameters (blur in px, MTF,
shot noise; :func:`exitwave_training.dataset.random_training_example`, seed 21 + wave index),
the shipped ``mos2`` network reconstructs it through the user's path (``reconstruct_series``,
raw images, no parameters given) and the aberration estimator reads it
(:func:`napari_exitwave.estimate.estimate_aberrations`). Then
:func:`napari_exitwave.aberration_fit.fit_aberrations` fits defocus offset, C12, C21 and Cs
and the detector MTF (the pipeline's set) from the estimate with the exit wave held fixed: with
the network's wave (what the pipeline does) and with the true wave (the fit's own limit), and
with ``--local`` also the local search only (``coarse=False``, aberrations only) for comparison.
Errors against the parameters that made the series:

- ``defocus``: the largest of the images' |error|, A;
- ``Cs``: |error|, um;
- ``C12``, ``C21``: the length of the vector error (amplitude and angle together), A;
- ``MTF``: the mean |error| of the detector MTF over 0.05-0.3 of the Nyquist frequency (the
  signal band), against the estimate's noise-spectrum MTF.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def errors(params, true) -> dict:
    p, q = params[0], true[0]
    c12 = lambda r: r.astigmatism * np.exp(2j * r.astigmatism_angle)  # noqa: E731
    c21 = lambda r: r.coma * np.exp(1j * r.coma_angle)  # noqa: E731
    return {"defocus": float(max(abs(a.defocus - b.defocus) for a, b in zip(params, true))),
            "Cs": float(abs(p.Cs - q.Cs) / 1e4),
            "C12": float(abs(c12(p) - c12(q))), "C21": float(abs(c21(p) - c21(q))),
            "MTF": float(np.mean(np.abs(mtf(p) - mtf(q))))}


def mtf(p) -> np.ndarray:
    """The MTF on the signal band (0.05-0.3 of Nyquist; 1 for ``mtf_c1 = 1``, none set)."""
    from napari_exitwave import physics

    return physics.mtf(np.linspace(0.05, 0.3, 11), p.mtf_c1, p.mtf_c2, p.mtf_c3)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", help="validation data set (Zarr)")
    ap.add_argument("--n", type=int, default=40, help="exit waves")
    ap.add_argument("--model", default="mos2")
    ap.add_argument("--out", type=Path, help="JSON results")
    ap.add_argument("--local", action="store_true",
                    help="also the local search only (aberrations, no grid search)")
    args = ap.parse_args(argv)

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from residual_study import to_grid

    from exitwave_training.dataset import random_training_example
    from exitwave_training.feed import load_waves

    from napari_exitwave.aberration_fit import FIT_PARAMETERS, MTF_PARAMETERS, fit_aberrations
    from napari_exitwave.estimate import estimate_aberrations
    from napari_exitwave.inference import OnnxReconstructor
    from napari_exitwave.reconstruct import reconstruct_series

    rec = OnnxReconstructor(args.model, providers="cpu")
    data = load_waves(args.data, max_samples=args.n)
    rows = []
    t0 = time.perf_counter()
    for i in range(len(data["wave"])):
        rng = np.random.default_rng(21 + i)
        images, _, true, s = random_training_example(data["wave"][i], data["target"][i],
                                                     data["sampling"], rng)
        out = reconstruct_series(images, rec, sampling=s, align=False, physics_check=False)
        wave = to_grid(out.exit_wave, out.sampling, s, images.shape[1:])
        est = estimate_aberrations(images, s)
        row = {"index": i, "dose": float(true[0].dose), "true": {
            "defocus": [p.defocus for p in true], "Cs_um": true[0].Cs / 1e4,
            "C12": true[0].astigmatism, "C21": true[0].coma},
            "estimate": errors(est.params, true)}
        everything = FIT_PARAMETERS + MTF_PARAMETERS
        runs = [("fit", wave, True, everything), ("fit_true_wave", data["wave"][i], True,
                                                  everything)]
        if args.local:
            runs.append(("local_only", wave, False, FIT_PARAMETERS))
        for name, w, coarse, names in runs:
            t = time.perf_counter()
            fit = fit_aberrations(w, s, images, est.params, fit=names, coarse=coarse)
            row[name] = errors(fit.params, true)
            row[name]["seconds"] = time.perf_counter() - t
            row[name]["misfit"] = fit.misfit
        rows.append(row)
        print(f"{i:3d}  " + "  ".join(
            f"{k}: df {row[k]['defocus']:5.1f} Cs {row[k]['Cs']:4.1f} C12 {row[k]['C12']:4.1f}"
            f" C21 {row[k]['C21']:4.0f} MTF {row[k]['MTF']:.3f}"
            for k in ("estimate", "fit") + (("local_only",) if args.local else ())), flush=True)
    kinds = ("estimate", "fit", "fit_true_wave") + (("local_only",) if args.local else ())
    quantities = ("defocus", "Cs", "C12", "C21", "MTF")
    summary = {k: {q: {"median": float(np.median([r[k][q] for r in rows])),
                       "p90": float(np.percentile([r[k][q] for r in rows], 90))}
                   for q in quantities} for k in kinds}
    for k in kinds[1:]:
        summary[k]["median_seconds"] = float(np.median([r[k]["seconds"] for r in rows]))
    doc = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "machine": f"{platform.node()} ({platform.processor() or platform.machine()}), "
                      f"{__import__('os').cpu_count()} CPUs",
           "command": " ".join(["python benchmarks/aberration_fit.py"] + (argv or sys.argv[1:])),
           "model": args.model, "n": len(rows), "summary": summary, "rows": rows,
           "wall_seconds": time.perf_counter() - t0}
    print(f"\n{len(rows)} series; median (p90) error")
    print("| parameters | defocus (A) | Cs (um) | C12 (A) | C21 (A) | MTF | s per series |")
    print("|---|---|---|---|---|---|---|")
    label = {"estimate": "estimator network", "fit": "fitted, network's wave",
             "fit_true_wave": "fitted, true wave", "local_only": "fitted, local search only"}
    for k in kinds:
        m = summary[k]
        sec = m.get("median_seconds")
        print(f"| {label[k]} | " + " | ".join(
            f"{m[q]['median']:.3g} ({m[q]['p90']:.3g})" for q in quantities)
            + f" | {'' if sec is None else f'{sec:.1f}'} |")
    if args.out:
        args.out.write_text(json.dumps(doc, indent=1, default=float) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
