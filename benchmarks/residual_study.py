"""Does the physics residual separate good reconstructions from bad ones? (issue 14, section 2)

Rerun (from the repository root, about 4 min on 2 shared CPU cores with ``--n 60``)::

    python benchmarks/residual_study.py --n 60 \\
        --two-d data/2d-val-small.zarr --out docs/residual_study.json \\
        --plot docs/images/residual_histogram.png

``data/2d-val-small.zarr`` is made with
``exitwave-train simulate --dataset 2d --split validation --n 24 --seed 1
--out data/2d-val-small.zarr`` (15 s).

For every validation exit wave a focal series is drawn with known microscope parameters and a
finite dose (:func:`exitwave_training.dataset.random_training_example`, Table 1 ranges, fixed
seeds), reconstructed with the shipped network through the user's path
(:func:`napari_exitwave.reconstruct.reconstruct_series`, raw images in, the pipeline resamples
and normalises), and the network's exit wave is imaged again with the parameters *the user
claims* (:func:`napari_exitwave.residual.physics_residual`, with a gain per image fitted).
The residual only knows what the user knows: in the "reversed" case it pairs the images as given
with the increasing defoci the user believes they have; in the "pixel size" case it uses the
claimed pixel size.

Cases (rows of the table):

- ``truth``: the exit wave that made the images, the true parameters: the noise floor (~1).
- ``target``: the network's training target (the wave folded with a 15 pm Gaussian): what a
  perfect network returns.
- ``good``: MoS2 validation series (``--good``) through the network; sets the threshold.
- ``good-holdout``: the next ``--n`` series of the same set: the out-of-sample false alarms.
- ``supported``: MoS2 on graphene/film (``--supported``) through the unsupported-MoS2 network.
- ``other-2d``: 2D materials the network never saw (``--two-d``).
- ``reversed``: a good series handed over in reversed order.
- ``pixel-2x``: a good series with the pixel size claimed twice the true one.

The alarm threshold is the ``--quantile`` (95th) percentile of the ``good`` case, so the
``good`` case's false-alarm rate is ~5% by construction (in-sample); the other cases' fraction
above it is their detection rate; ``good-holdout`` gives the honest false-alarm rate.

The reduced chi-square grows with the dose for the same misfit (``1 + misfit^2 / sigma^2``),
so a second table gives the dose-free misfit beyond the shot noise (:func:`mismatch_rms`, rms
in units of the vacuum intensity) with its own threshold.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

PARAMS_MODES = ("true", "estimated", "fitted")
CASES = ("truth", "target", "good", "good-holdout", "supported", "other-2d", "reversed",
         "pixel-2x")
# which data set each case draws from
CASE_DATA = {"truth": "good", "target": "good", "good": "good", "good-holdout": "good",
             "supported": "supported", "other-2d": "two_d", "reversed": "good",
             "pixel-2x": "good"}
REFERENCE_CASES = ("truth", "target")  # not reconstructions: left out of the detection rates
HOLDOUT_CASES = ("good-holdout",)  # good reconstructions not used for the threshold


# --------------------------------------------------------------------------- pure functions

def percentiles(values, qs=(10, 50, 90)) -> list[float]:
    """Percentiles of ``values`` that may contain ``+inf`` (a series the residual refused).

    ``numpy.percentile`` interpolates ``inf - inf`` to NaN; here an interpolation that touches
    an infinite value is infinite.
    """
    v = np.sort(np.asarray(values, dtype=float))
    if v.size == 0:
        return [float("nan")] * len(qs)
    if np.any(np.isnan(v)):
        raise ValueError("values contain NaN; use +inf for a refused series")
    finite = v[np.isfinite(v)]
    if finite.size == 0:
        return [float("inf")] * len(qs)
    top = finite.max()
    out = np.percentile(np.where(np.isfinite(v), v, 2 * abs(top) + 1), qs)
    return [float("inf") if o > top else float(o) for o in out]


def alarm_threshold(good, quantile: float = 95.0) -> float:
    """The residual above which a reconstruction is flagged: a percentile of the good case."""
    good = np.asarray(good, dtype=float)
    if good.size == 0 or not np.all(np.isfinite(good)):
        raise ValueError("the good case needs finite residuals to set a threshold")
    if not 0 < quantile < 100:
        raise ValueError(f"quantile is a percentile in (0, 100), got {quantile}")
    return float(np.percentile(good, quantile))


def summarize(results: dict[str, list[float]], reference: str = "good",
              quantile: float = 95.0) -> dict:
    """Table of the study: per case the 10th/50th/90th percentile and the fraction flagged.

    Parameters
    ----------
    results : dict case -> reduced chi-square of each series (+inf: refused by the residual)
    reference : the case of good reconstructions the threshold is taken from
    quantile : percentile of ``reference`` used as the threshold

    Returns
    -------
    dict with ``threshold``, ``quantile``, ``reference``, ``false_alarm_rate`` (fraction of the
    reference above the threshold) and ``cases``: case -> ``n``, ``p10``, ``median``, ``p90``,
    ``fraction_above`` (the detection rate of a failure case), ``n_refused``.
    """
    if reference not in results:
        raise KeyError(f"the reference case {reference!r} is not among {sorted(results)}")
    thr = alarm_threshold(results[reference], quantile)
    cases = {}
    for name, vals in results.items():
        v = np.asarray(vals, dtype=float)
        p10, p50, p90 = percentiles(v)
        cases[name] = {"n": int(v.size), "p10": p10, "median": p50, "p90": p90,
                       "fraction_above": float(np.mean(v > thr)) if v.size else float("nan"),
                       "n_refused": int(np.sum(np.isinf(v)))}
    return {"reference": reference, "quantile": float(quantile), "threshold": thr,
            "false_alarm_rate": cases[reference]["fraction_above"], "cases": cases}


def markdown_table(summary: dict, labels: dict[str, str] | None = None) -> str:
    """The summary as a Markdown table (reference rows' flagged fraction in brackets)."""
    labels = labels or {}

    def f(x):
        return "refused" if np.isinf(x) else (f"{x:.3g}" if x < 1e4 else f"{x:.2e}")

    rows = ["| case | n | median | 10th pct | 90th pct | above threshold |",
            "|---|---:|---:|---:|---:|---:|"]
    for name, c in summary["cases"].items():
        frac = f"{100 * c['fraction_above']:.0f}%"
        if name == summary["reference"]:
            frac += " (false alarms, in-sample)"
        elif name in HOLDOUT_CASES:
            frac += " (false alarms)"
        elif name in REFERENCE_CASES:
            frac = f"({frac})"
        else:
            frac += " (detected)"
        rows.append(f"| {labels.get(name, name)} | {c['n']} | {f(c['median'])} | {f(c['p10'])} | "
                    f"{f(c['p90'])} | {frac} |")
    rows.append(f"\nThreshold: {summary['threshold']:.3g} (the {summary['quantile']:.0f}th "
                f"percentile of '{summary['reference']}').")
    return "\n".join(rows)


def error_correlation(rows: dict[str, list[dict]], keys=("chi2", "mismatch")) -> dict:
    """Spearman rank correlation of each residual measure with the true error of the wave.

    The true error is ``hypot(rmse_real, rmse_imag)`` against the training target (vacuum
    units), known here and never to a user: does the residual rank reconstructions like it?
    Per case with that error, and pooled over them.
    """
    from scipy.stats import spearmanr

    out, pooled = {}, {k: [] for k in keys + ("error",)}
    for case, rs in rows.items():
        rs = [r for r in rs if "rmse_real" in r and np.isfinite(r["chi2"])]
        if len(rs) < 3:
            continue
        err = [float(np.hypot(r["rmse_real"], r["rmse_imag"])) for r in rs]
        out[case] = {"n": len(rs), "median_error": float(np.median(err))}
        for k in keys:
            out[case][k] = float(spearmanr([r[k] for r in rs], err)[0])
            pooled[k] += [r[k] for r in rs]
        pooled["error"] += err
    if len(pooled["error"]) >= 3:
        out["pooled"] = {"n": len(pooled["error"]),
                         **{k: float(spearmanr(pooled[k], pooled["error"])[0]) for k in keys}}
    return out


def to_grid(wave: np.ndarray, wave_sampling: float, sampling: float,
            shape: tuple[int, int]) -> np.ndarray:
    """Bring a reconstructed exit wave back onto the input grid (``sampling`` A/px, ``shape``).

    The inverse of the pipeline's :func:`~napari_exitwave.reconstruct.resample_series` (pixel 0
    stays put), then cropped or padded with vacuum (1 + 0j) at the far edges.
    """
    from napari_exitwave.reconstruct import resample_series

    wave = np.asarray(wave)
    if not np.isclose(wave_sampling, sampling, rtol=1e-9):
        parts = resample_series(np.stack([wave.real, wave.imag]), wave_sampling, sampling)
        wave = parts[0] + 1j * parts[1]
    out = np.ones(tuple(shape), dtype=np.complex64)
    ny, nx = min(shape[0], wave.shape[0]), min(shape[1], wave.shape[1])
    out[:ny, :nx] = wave[:ny, :nx]
    return out


# --------------------------------------------------------------------------- the study

def claimed_parameters(mode: str, images: np.ndarray, sampling: float, true_params: list,
                       wave: np.ndarray | None = None):
    """The microscope parameters the residual is computed with (what the user would claim).

    ``"true"``: the parameters the series was simulated with (the upper bound of what an
    estimate can do). ``"estimated"``: the aberration estimator
    from the images alone (``napari_exitwave.estimate.estimate_aberrations(images, sampling)``,
    whose ``.params`` is one MicroscopeParameters per image, the detector MTF and the doses
    from the noise spectrum), called on the images as given at the claimed pixel size.
    ``"fitted"``: those, with defocus, C12, C21, Cs and the detector MTF then fitted to the
    images with the exit wave under test held fixed (``napari_exitwave._check.fit_estimated``,
    the pipeline's own call when the user gives no parameters).
    """
    if mode == "true":
        return list(true_params)
    if mode not in PARAMS_MODES:
        raise ValueError(f"--params must be one of {PARAMS_MODES}, got {mode!r}")
    try:
        from napari_exitwave.estimate import estimate_aberrations
    except ImportError as e:
        raise SystemExit(f"--params {mode} needs napari_exitwave.estimate "
                         "(issue 14 section 1), which is not installed yet") from e
    est = estimate_aberrations(images, sampling)
    if mode == "estimated":
        return list(est.params)
    from napari_exitwave import _check

    return list(_check.fit_estimated(wave, sampling, images, est.params)[0])


def draw_series(data: dict, i: int, seed: int, data_id: int):
    """Focal series ``i`` of a data set: fixed seed per (data set, index), finite dose."""
    from exitwave_training.dataset import random_training_example

    rng = np.random.default_rng([seed, data_id, i])
    images, target, params, used = random_training_example(
        data["wave"][i], data["target"][i], data["sampling"], rng, n_images=3)
    if not all(np.isfinite(p.dose) for p in params):
        raise RuntimeError("the parameter ranges gave an infinite dose; the residual needs one")
    return images, params, used


def mismatch_rms(res, images: np.ndarray, sampling: float, params, border: int) -> np.ndarray:
    """Dose-free size of the misfit: rms of ``(measured - model)`` beyond the shot noise.

    ``sqrt(max(mean(((y - g m - o) / g)^2) - mean(sigma^2), 0))`` per image, in units of the
    vacuum intensity (the images are relative to vacuum after dividing by the fitted gain).
    The reduced chi-square is ``1 + mismatch^2 / sigma^2`` and so grows with the dose for the
    same misfit; this does not.
    """
    from napari_exitwave.residual import noise_variance_factor

    inner = (slice(border, images.shape[1] - border), slice(border, images.shape[2] - border))
    out = []
    for i, p in enumerate(params):
        var = (np.clip(res.model[i], 1e-6, None) / (p.dose * sampling**2)
               * noise_variance_factor(images.shape[1:], p))[inner]
        diff = (images[i] - res.gain[i] * res.model[i] - res.offset[i])[inner] / res.gain[i]
        out.append(np.sqrt(max(float(np.mean(diff**2) - np.mean(var)), 0.0)))
    return np.array(out)


def run_one(case: str, data: dict, i: int, rec, args) -> dict:
    """One series of one case: reconstruct (unless a reference case) and take the residual."""
    from napari_exitwave.reconstruct import reconstruct_series
    from napari_exitwave.residual import physics_residual

    data_id = {"good": 0, "supported": 1, "two_d": 2}[CASE_DATA[case]]
    images, params, s_true = draw_series(data, i, args.seed, data_id)
    s_claim = s_true
    given = images
    if case == "reversed":
        given = images[::-1].copy()  # the user believes they are in increasing defocus
    elif case == "pixel-2x":
        s_claim = 2.0 * s_true
    row = {"index": int(data["indices"][i]), "dose": float(params[0].dose),
           "defocus": [round(p.defocus, 2) for p in params]}
    t = time.perf_counter()
    if case == "truth":
        wave = data["wave"][i]
    elif case == "target":
        wave = data["target"][i]
    else:
        # the user's path: raw images, claimed pixel size; no defocus given (increasing order
        # assumed, so the pipeline does not reorder); no drift in these series, so no alignment
        out = reconstruct_series(given, rec, sampling=s_claim, align=False)
        wave = to_grid(out.exit_wave, out.sampling, s_claim, given.shape[1:])
        truth_grid = data["target"][i]
        if case != "pixel-2x":
            d = wave - truth_grid
            row["rmse_real"] = float(np.sqrt(np.mean(d.real**2)))
            row["rmse_imag"] = float(np.sqrt(np.mean(d.imag**2)))
        row["warnings"] = list(out.warnings)
    claim = claimed_parameters(args.params, given, s_claim, params, wave)
    try:
        r = physics_residual(wave, s_claim, given, claim, fit_gain=True, border=args.border)
        row["chi2"] = r.reduced_chi2
        row["chi2_per_image"] = [float(c) for c in r.chi2]
        row["gain"] = [float(g) for g in r.gain]
        row["offset"] = [float(o) for o in r.offset]
        row["mismatch"] = float(np.mean(mismatch_rms(r, given, s_claim, claim, args.border)))
    except ValueError as e:  # the residual refuses the pairing (a non-positive gain)
        row["chi2"] = row["mismatch"] = float("inf")
        row["refused"] = str(e)
    row["seconds"] = time.perf_counter() - t
    return row


def plot_histogram(panels, path: Path, labels: dict[str, str], title: str = "",
                   dose: dict[str, list[float]] | None = None) -> None:
    """One log-x step histogram per panel ``(results, summary, xlabel)``; refused series are
    drawn in the last bin, zeros in the first. With ``dose`` (case -> e/A^2 of each series), a
    last panel plots the first panel's values against the dose."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_ax = len(panels) + (dose is not None)
    fig, axes = plt.subplots(n_ax, 1, figsize=(8, 4 * n_ax), dpi=110, squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (results, summary, xlabel) in zip(axes[:, 0], panels):
        finite = np.concatenate([np.asarray(v, float)[np.isfinite(v)] for v in results.values()])
        finite = finite[finite > 0]
        lo, hi = max(finite.min() * 0.8, 1e-4), finite.max() * 1.25
        bins = np.geomspace(lo, hi, 50)
        for k, (name, vals) in enumerate(results.items()):
            v = np.clip(np.asarray(vals, float), lo, bins[-1] * 0.999)  # refused -> last bin
            c = summary["cases"][name]
            ref = name in REFERENCE_CASES
            ax.hist(v, bins=bins, histtype="step", lw=1.2 if ref else 1.8,
                    ls=":" if ref else "-", color=colors[k % len(colors)],
                    label=f"{labels.get(name, name)}: median {c['median']:.3g}, "
                          f"{100 * c['fraction_above']:.0f}% above")
        ax.axvline(summary["threshold"], color="k", ls="--", lw=1,
                   label=f"threshold {summary['threshold']:.3g} "
                         f"({summary['quantile']:.0f}th pct of good)")
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("series")
        ax.legend(fontsize=6.5, loc="upper right")
    if dose is not None:
        ax = axes[-1, 0]
        results, summary, xlabel = panels[0]
        for k, (name, vals) in enumerate(results.items()):
            v = np.asarray(vals, float)
            ax.scatter(dose[name], np.where(np.isfinite(v), v, np.nan), s=10,
                       marker="o" if name not in REFERENCE_CASES else ".",
                       color=colors[k % len(colors)], label=labels.get(name, name))
        ax.axhline(summary["threshold"], color="k", ls="--", lw=1)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("dose of the series, e/A^2")
        ax.set_ylabel(xlabel.split(" (")[0])
        ax.legend(fontsize=6.5, loc="upper left", ncol=2)
    axes[0, 0].set_title(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


LABELS = {"truth": "true wave (noise floor)", "target": "training target (perfect network)",
          "good": "MoS2 validation (good)", "good-holdout": "MoS2 validation, held out",
          "supported": "MoS2 on graphene/film",
          "other-2d": "other 2D materials", "reversed": "images in reversed order",
          "pixel-2x": "pixel size claimed 2x"}


def _plot(rows, summary, summary_mismatch, path: Path, model: str, params: str) -> None:
    chi2 = {c: [r["chi2"] for r in rs] for c, rs in rows.items()}
    mismatch = {c: [r["mismatch"] for r in rs] for c, rs in rows.items()}
    dose = {c: [r["dose"] for r in rs] for c, rs in rows.items()}
    plot_histogram([(chi2, summary, "reduced chi-square of the physics residual "
                     "(1 = shot noise)"),
                    (mismatch, summary_mismatch, "misfit beyond the shot noise, rms "
                     "(vacuum intensity = 1)")], path, LABELS,
                   title=f"Physics residual of the {model!r} network's exit waves, {params} "
                         "parameters (refused: last bin; 0: first bin)", dose=dose)


def _cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or platform.machine()


def _code_version() -> dict:
    """The commit of the napari_exitwave that ran (the residual's definition changes)."""
    import napari_exitwave

    src = Path(napari_exitwave.__file__).resolve().parent
    out = {"napari_exitwave": str(src)}
    try:
        out["commit"] = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"],
                                       capture_output=True, text=True, timeout=10).stdout.strip()
        out["dirty"] = bool(subprocess.run(["git", "-C", str(src), "status", "--porcelain", "."],
                                           capture_output=True, text=True,
                                           timeout=10).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=60,
                    help="series per case (default: 60; the good set needs 2n for the hold-out)")
    ap.add_argument("--good", default="data/mos2-val.zarr", help="in-distribution validation set")
    ap.add_argument("--supported", default="data/mosg-val.zarr",
                    help="MoS2 on graphene/film validation set")
    ap.add_argument("--two-d", default="data/2d-val-small.zarr",
                    help="2D materials outside the network's training")
    ap.add_argument("--model", default="mos2", help="network (name or card path)")
    ap.add_argument("--params", choices=PARAMS_MODES, default="true",
                    help="microscope parameters for the residual: the true ones, or estimated "
                         "from the images (napari_exitwave.estimate; needs an installed "
                         "estimator)")
    ap.add_argument("--cases", nargs="*", default=list(CASES), choices=CASES)
    ap.add_argument("--border", type=int, default=8, help="px left out at each edge")
    ap.add_argument("--quantile", type=float, default=95.0,
                    help="percentile of the good case used as the alarm threshold")
    ap.add_argument("--seed", type=int, default=14)
    ap.add_argument("--out", default="docs/residual_study.json")
    ap.add_argument("--plot", default="docs/images/residual_histogram.png")
    ap.add_argument("--replot", metavar="JSON",
                    help="only redraw --plot from the series of an earlier --out")
    args = ap.parse_args(argv)
    if args.n < 2 and not args.replot:
        ap.error("--n must be at least 2")
    if "good" not in args.cases:
        ap.error("the 'good' case sets the threshold; keep it in --cases")

    if args.replot:
        doc = json.loads(Path(args.replot).read_text())
        _plot(doc["series"], doc["summary"], doc["summary_mismatch"], Path(args.plot),
              doc["model"]["name"], doc["params"])
        print(f"wrote {args.plot}")
        return 0
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from exitwave_training.feed import load_waves
    from napari_exitwave.inference import OnnxReconstructor

    rec = OnnxReconstructor(args.model, providers="cpu")
    paths = {"good": args.good, "supported": args.supported, "two_d": args.two_d}
    needed = {CASE_DATA[c] for c in args.cases}
    # the good set also feeds the hold-out case (its series n .. 2n - 1)
    data = {k: load_waves(paths[k], max_samples=2 * args.n if k == "good" else args.n)
            for k in sorted(needed)}
    t_all = time.perf_counter()
    rows: dict[str, list[dict]] = {}
    for case in args.cases:
        d = data[CASE_DATA[case]]
        first = args.n if case in HOLDOUT_CASES else 0
        todo = range(first, min(first + args.n, len(d["wave"])))
        n = len(todo)
        t = time.perf_counter()
        rows[case] = [run_one(case, d, i, rec, args) for i in todo]
        chi = np.array([r["chi2"] for r in rows[case]])
        print(f"{case:>10}: {n} series from {paths[CASE_DATA[case]]} in "
              f"{time.perf_counter() - t:.0f} s, median chi2 {np.median(chi):.3g}", flush=True)
    results = {c: [r["chi2"] for r in rows[c]] for c in rows}
    summary = summarize(results, "good", args.quantile)
    table = markdown_table(summary, LABELS)
    print(table)
    mismatch = {c: [r["mismatch"] for r in rows[c]] for c in rows}
    summary_mismatch = summarize(mismatch, "good", args.quantile)
    table_mismatch = markdown_table(summary_mismatch, LABELS)
    print("\nmisfit beyond the shot noise (rms, vacuum intensity units):\n" + table_mismatch)
    correlation = error_correlation(rows)
    print("Spearman rank correlation with the true error:",
          {c: {k: round(v, 2) for k, v in d.items() if k in ("chi2", "mismatch")}
           for c, d in correlation.items()})
    card = rec.card
    doc = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": "python benchmarks/residual_study.py " + " ".join(
            sys.argv[1:] if argv is None else argv),
        "machine": {"cpu": _cpu_model(), "cores": os.cpu_count(), "device": rec.device},
        "code": _code_version(),
        "model": {"name": card.name, "sha256": card.sha256, "sampling": card.sampling,
                  "description": card.description},
        "params": args.params, "seed": args.seed, "border": args.border,
        "data": {k: {"path": paths[k], "sampling": data[k]["sampling"],
                     "n_loaded": int(len(data[k]["wave"]))} for k in data},
        "seconds": time.perf_counter() - t_all,
        "summary": summary, "summary_mismatch": summary_mismatch,
        "error_correlation": correlation, "labels": LABELS,
        "table_markdown": table, "table_mismatch_markdown": table_mismatch, "series": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1, default=float, allow_nan=True))
    if args.plot:
        _plot(rows, summary, summary_mismatch, Path(args.plot), card.name, args.params)
    print(f"wrote {out}" + (f" and {args.plot}" if args.plot else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
