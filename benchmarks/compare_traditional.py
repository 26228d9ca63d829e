"""Network vs Gerchberg-Saxton on simulated supported-MoS2 series (Larsen et al., Section 6).

    .venv/bin/python benchmarks/compare_traditional.py                     # uses models/mos2
    .venv/bin/python benchmarks/compare_traditional.py --model path/to/net.onnx --n 12
    .venv/bin/python benchmarks/compare_traditional.py --no-write          # print only

What it does, following the paper:

1. Simulates ``--n`` validation samples of MoS2 on graphene with the training package's own
   generator (``exitwave_training.dataset.generate_sample``, seed ``--seed``, kept apart from
   training seeds) with **11 images 1 nm apart** (10 nm in total, as the networks see), every
   other microscope parameter drawn from Table 1 (Cs, astigmatism, coma, focal spread, blur,
   dose, MTF).
2. Reconstructs every sample with the network from 3 of the images (first, middle, last: 5 nm
   steps) and by Gerchberg-Saxton (:func:`napari_exitwave.traditional.gerchberg_saxton`) from
   all 11, given the true defocus values, Cs and focal spread but no astigmatism or coma
   (which are present in the images), as the paper gave MacTempas. The Wiener start is
   reported too, and both again with *every* image-model parameter known (astigmatism, coma,
   blur, detector MTF): the best case for a traditional method.
3. Picks the 25th, 50th and 75th-percentile samples by how well the *network* reconstructed
   them (Delta, Eq. A.1; the p-percentile sample is better than p % of the samples, the
   paper's convention); without a network, by the GS Delta instead (and says so).
4. RMSEs (:func:`napari_exitwave.metrics.rmse`, real and imaginary part, and the complex RMSE
   ``sqrt(rmse_re^2 + rmse_im^2)``) against the ground truth (the network's target: the exit
   wave folded with 15 pm), and, as the paper does for GS, against the truth with its longest
   wavelengths removed: ``hp(w) = w - G_8px * w + 1`` (Gaussian of standard deviation 8 px,
   periodic; vacuum stays 1). The paper's numbers are network-vs-truth (0.013) and
   GS-vs-hp(truth) (0.061); ``hp(reconstruction)`` vs ``hp(truth)`` is given for both as well.
5. Writes ``docs/images/traditional_p{25,50,75}.png`` (the panels of the paper's Fig. 10),
   ``docs/images/traditional_gs_error.png`` and the results block of ``docs/traditional.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from napari_exitwave import physics, traditional
from napari_exitwave.refine import ESTIMATED_STRENGTH, refine_exit_wave
from _doc_block import update_block
from traditional import HEADING  # benchmarks/traditional.py: docs/traditional.md's heading

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "traditional.md"
START, END = "<!-- compare_traditional:start -->", "<!-- compare_traditional:end -->"


# ------------------------------------------------------------------------------------------
def highpass(wave: np.ndarray, sampling: float, sigma_px: float = 8.0) -> np.ndarray:
    """Remove the longest wavelengths (Larsen et al. Sec. 6): ``w - G * w + 1``, G a Gaussian
    of standard deviation ``sigma_px`` pixels (periodic), so vacuum stays 1."""
    return wave - physics.gaussian_blur(wave, sampling, sigma_px * sampling) + 1


def load_network(model: str | None):
    """(reconstructor, note) or (None, why not)."""
    try:
        from napari_exitwave.inference import OnnxReconstructor, find_model

        card = find_model(model or "mos2")
        rec = OnnxReconstructor(card, providers="auto")
    except Exception as e:  # missing model, no onnxruntime, corrupt file...
        return None, f"network part skipped: {type(e).__name__}: {e}"
    return rec, f"network {rec.card.name!r} ({rec.card.onnx_path}) on {rec.device}"


SERIES_RANGES = dict(total_defocus_range=100.0, step_jitter=0.0)  # 11 images, 1 nm apart


def from_dataset(path: str, n: int, seed: int, log, first: int = 0):
    """Exit waves of ``n`` complete samples of a data set (e.g. the network's validation set),
    from its ``first``-th on, each imaged anew as an 11-image series with the data set's
    parameter ranges (seeded per sample)."""
    from exitwave_training.dataset import ExitWaveDataset

    ds = ExitWaveDataset(path)
    ranges = physics.ParameterRanges.from_dict(dict(ds.config.ranges.to_dict(), **SERIES_RANGES))
    out = []
    for i in ds.indices[first:first + n]:
        smp = ds.sample(int(i))
        rng = np.random.default_rng([seed, int(i)])
        params = physics.sample_parameters(rng, 11, ranges)
        images = physics.simulate_focal_series(smp.wave, ds.sampling, params, None, rng)
        out.append({"index": int(i), "target": np.asarray(smp.target), "images": images,
                    "wave": np.asarray(smp.wave),
                    "params": params, "info": dict(smp.info)})
    log(f"{len(out)} samples from {path} ({ds.config.structure.dataset}), "
        f"{ds.sampling} A/px")
    return ds.sampling, out


def simulate(n: int, seed: int, size: int, sampling: float, log, dataset="mos2-graphene"):
    from exitwave_training.dataset import DatasetConfig, generate_sample
    from exitwave_training.structures import StructureConfig

    cfg = DatasetConfig(
        n=n, seed=seed, n_images=11,
        structure=StructureConfig(dataset=dataset, size=size, sampling=sampling),
        ranges=physics.ParameterRanges(**SERIES_RANGES))
    out = []
    for i in range(n):
        t = time.perf_counter()
        s = generate_sample(cfg, i)
        out.append({"index": i, "target": np.asarray(s["target"]),
                    "wave": np.asarray(s["wave"]),
                    "images": np.asarray(s["images"], dtype=np.float64),
                    "params": [physics.MicroscopeParameters.from_dict(p)
                               for p in json.loads(s["params"])],
                    "info": json.loads(s["info"])})
        log(f"sample {i + 1}/{n} simulated in {time.perf_counter() - t:.1f} s")
    return cfg, out


def rmse_all(rmse, pred, truth, sampling):
    r = {}
    for name, (p, t) in {
        "truth": (pred, truth),
        "hp_truth": (pred, highpass(truth, sampling)),
        "hp_both": (highpass(pred, sampling), highpass(truth, sampling)),
    }.items():
        re, im = rmse(p, t)
        r[name] = {"real": float(re), "imag": float(im), "complex": math.hypot(re, im)}
    return r


def percentile_pick(values: np.ndarray, p: float) -> int:
    """Index of the sample better than ``p`` % of the others (lower Delta = better)."""
    order = np.argsort(-values)  # worst first
    return int(order[int(round(p / 100 * (len(values) - 1)))])


def figure(sample, recs, sampling, path, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    truth = sample["target"]
    panels = [("(a) first image", sample["images"][0], "gray"),
              ("(b) last image", sample["images"][-1], "gray"),
              ("(c) network, Im", recs["network"].imag if "network" in recs else None, "viridis"),
              ("(d) truth, Im", truth.imag, "viridis"),
              ("(e) Gerchberg-Saxton, Im", recs["gs"].imag, "viridis"),
              ("(f) truth, long wavelengths removed, Im", highpass(truth, sampling).imag,
               "viridis")]
    fig, axes = plt.subplots(2, 3, figsize=(11, 7.4))
    lim = np.percentile(np.abs(truth.imag), 99.5)
    for ax, (name, img, cmap) in zip(axes.ravel(), panels):
        ax.set_axis_off()
        ax.set_title(name, fontsize=10)
        if img is None:
            ax.text(0.5, 0.5, "no network", ha="center", va="center", transform=ax.transAxes)
            continue
        kw = {} if cmap == "gray" else {"vmin": -lim, "vmax": lim}
        ax.imshow(img, cmap=cmap, **kw)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def error_figure(histories: dict[str, np.ndarray], path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for name, h in histories.items():
        ax.plot(np.arange(len(h)), h / h[0], label=f"{name}, start {h[0]:.3g}")
    ax.set_xlabel("iteration")
    ax.set_ylabel("consistency error / error of the start")
    ax.set_title("Gerchberg-Saxton, 11-image series")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def ablation(sample, sampling, args, rmse) -> str:
    """What limits GS: the 50th-percentile wave re-imaged with parts of the image model off."""
    import dataclasses

    p = sample["params"]
    d = [q.defocus for q in p]
    wave = sample.get("wave")
    if wave is None:
        return ""
    steps = [("as drawn (Table 1)", {}), ("no shot noise", dict(dose=math.inf)),
             ("no noise, blur or MTF", dict(dose=math.inf, blur=0.0, mtf_c1=1.0)),
             ("no noise, blur, MTF, astigmatism or coma",
              dict(dose=math.inf, blur=0.0, mtf_c1=1.0, astigmatism=0.0, coma=0.0))]
    out = ["What limits GS (the 50th-percentile sample's wave imaged again with parts of the "
           "image model switched off; GS given defocus, Cs, focal spread as above; complex "
           "RMSE vs hp(truth)):", "", "| images | GS | Wiener |", "|---|---|---|"]
    truth = highpass(sample["target"], sampling)
    for name, mod in steps:
        params = [dataclasses.replace(q, **mod) for q in p]
        images = physics.simulate_focal_series(wave, sampling, params, None,
                                               np.random.default_rng(args.seed))
        kw = dict(Cs=p[0].Cs, focal_spread=p[0].focal_spread, energy=p[0].energy,
                  normalize=False, wiener_eps=args.wiener_eps, xp="numpy")
        g = traditional.gerchberg_saxton(images, sampling, d, n_iter=args.n_iter,
                                         envelope_cutoff=args.envelope_cutoff, **kw).exit_wave
        w = traditional.wiener_reconstruction(images, sampling, d, **kw)
        out.append(f"| {name} | {math.hypot(*rmse(g, truth)):.4f} | "
                   f"{math.hypot(*rmse(w, truth)):.4f} |")
    return "\n".join(out)


def _estimated_parameters(images, pick, true_defocus, sampling, log):
    """All 11 images' parameters from the estimator run on the network's 3 images: their
    defoci fitted by a line through the estimated ones (the series' nominal 1 nm steps), every
    other value shared; ``None`` when no estimator is installed."""
    try:
        from napari_exitwave.estimate import estimate_aberrations

        est = estimate_aberrations(images[pick], sampling)
    except Exception as e:  # noqa: BLE001 - the comparison runs without an estimator too
        log(f"  no estimate ({type(e).__name__}: {e})")
        return None
    import dataclasses

    slope, icpt = np.polyfit(pick, est.defocus, 1)
    return [dataclasses.replace(est.params[0], defocus=float(icpt + slope * i))
            for i in range(len(images))]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None,
                    help="network name or .onnx/.json path (default: the shipped 'mos2')")
    ap.add_argument("--n", type=int, default=12, help="validation samples to simulate")
    ap.add_argument("--dataset", default="mos2-graphene", choices=["mos2-graphene", "mos2"],
                    help="structure family to simulate (the paper: MoS2 on graphene)")
    ap.add_argument("--data", default=None,
                    help="take the exit waves from this data set (Zarr, e.g. the network's "
                         "validation set) instead of simulating new ones")
    ap.add_argument("--seed", type=int, default=20260, help="seed of the validation samples")
    ap.add_argument("--first", type=int, default=0,
                    help="with --data: start at this sample (e.g. a held-out set)")
    ap.add_argument("--size", type=int, default=256, help="frame size in px")
    ap.add_argument("--sampling", type=float, default=None,
                    help="A/px (default: the network's, else 0.105)")
    ap.add_argument("--n-iter", type=int, default=100, help="GS iterations")
    ap.add_argument("--wiener-eps", type=lambda v: v if v == "auto" else float(v),
                    default=0.1,
                    help="Wiener regularisation, a number or 'auto' (estimated from the "
                         "images); also the GS start. 0.1 did better than 'auto' here, where "
                         "the withheld blur/MTF/coma, not the shot noise, dominate the error")
    ap.add_argument("--envelope-cutoff", type=float, default=0.3,
                    help="GS updates only where the focal-spread envelope exceeds this")
    ap.add_argument("--refine", action="store_true",
                    help="also refine the network's wave against all 11 images "
                         "(napari_exitwave.refine), with the true and the estimated parameters")
    ap.add_argument("--refine-iter", type=int, default=60, help="refinement iterations")
    ap.add_argument("--no-write", action="store_true", help="do not write docs/ files")
    ap.add_argument("--doc", default=str(DOC),
                    help="Markdown file whose results block is rewritten (figures go to "
                         "images/ beside it)")
    args = ap.parse_args(argv)

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    from napari_exitwave.metrics import delta, rmse

    metrics_source = "napari_exitwave.metrics"
    rec, net_note = load_network(args.model)
    log(net_note)
    sampling = args.sampling or (rec.card.sampling if rec is not None and rec.card.sampling
                                 else 0.105)
    t0 = time.perf_counter()
    if args.data:
        data_sampling, samples = from_dataset(args.data, args.n, args.seed, log, args.first)
        if rec is not None and rec.card.sampling and not math.isclose(
                data_sampling, rec.card.sampling, rel_tol=1e-3):
            log(f"warning: the data set's {data_sampling} A/px differs from the network's "
                f"{rec.card.sampling} A/px")
        sampling = data_sampling
        source = f"exit waves from {args.data}"
    else:
        _, samples = simulate(args.n, args.seed, args.size, sampling, log, args.dataset)
        source = f"{args.dataset} samples simulated with seed {args.seed}"
    args.n = len(samples)
    t_sim = time.perf_counter() - t0

    results = []
    histories = {}
    for s in samples:
        p = s["params"]
        d = [q.defocus for q in p]
        kw = dict(Cs=p[0].Cs, focal_spread=p[0].focal_spread, energy=p[0].energy,
                  normalize=False, xp="numpy")
        recs = {}
        t = time.perf_counter()
        recs["wiener"] = traditional.wiener_reconstruction(s["images"], sampling, d,
                                                           wiener_eps=args.wiener_eps, **kw)
        gs = traditional.gerchberg_saxton(s["images"], sampling, d, n_iter=args.n_iter,
                                          wiener_eps=args.wiener_eps,
                                          envelope_cutoff=args.envelope_cutoff, **kw)
        t_gs = time.perf_counter() - t
        recs["gs"] = gs.exit_wave
        # the best a traditional method can do here: every image-model parameter known
        q = p[0]
        full = dict(kw, aberrations={"astigmatism": q.astigmatism,
                                     "astigmatism_angle": q.astigmatism_angle,
                                     "coma": q.coma, "coma_angle": q.coma_angle},
                    blur=q.blur_sigma(sampling), mtf=(q.mtf_c1, q.mtf_c2, q.mtf_c3))
        recs["wiener_all"] = traditional.wiener_reconstruction(
            s["images"], sampling, d, wiener_eps=args.wiener_eps, **full)
        gs_all = traditional.gerchberg_saxton(s["images"], sampling, d, n_iter=args.n_iter,
                                              wiener_eps=args.wiener_eps,
                                              envelope_cutoff=args.envelope_cutoff, **full)
        recs["gs_all"] = gs_all.exit_wave
        if rec is not None:
            # first, middle, last (5 nm apart) for a 3-image network; evenly spread otherwise
            pick = np.round(np.linspace(0, 10, rec.card.n_images)).astype(int)
            recs["network"] = rec.predict(
                physics.normalize_series(s["images"][pick])).astype(complex)
            if args.refine:  # the network's answer refined against all 11 images
                t = time.perf_counter()
                recs["refined_all"] = refine_exit_wave(
                    recs["network"], sampling, s["images"], p,
                    iterations=args.refine_iter).exit_wave.astype(complex)
                r_t = time.perf_counter() - t
                est_p = _estimated_parameters(s["images"], pick, d, sampling, log)
                if est_p is not None:
                    recs["refined_est"] = refine_exit_wave(
                        recs["network"], sampling, s["images"], est_p,
                        iterations=args.refine_iter).exit_wave.astype(complex)
                    # the pipeline's path: the estimate, then defocus, C12, C21, Cs and the
                    # MTF fitted to all 11 images with the network's wave held fixed
                    from napari_exitwave._check import fit_estimated

                    fit_p, fit = fit_estimated(recs["network"], sampling, s["images"], est_p)
                    if isinstance(fit, str):
                        log(f"  no aberration fit ({fit})")
                    else:
                        log(f"  aberration fit: {fit.summary()}")
                    recs["refined_fit"] = refine_exit_wave(
                        recs["network"], sampling, s["images"], fit_p,
                        strength=ESTIMATED_STRENGTH,
                        iterations=args.refine_iter).exit_wave.astype(complex)
                log(f"  refinement {r_t:.1f} s")
        r = {"index": s["index"], "gs_seconds": t_gs, "gs_errors": gs.errors.tolist(),
             "params": p[0].to_dict(), "defocus": d,
             "info": {k: s["info"].get(k) for k in ("material", "n_atoms", "distance",
                                                    "rotation_class", "tilt_deg")}}
        recs["vacuum"] = np.ones_like(s["target"])
        for name, w in recs.items():
            r[name] = rmse_all(rmse, w, s["target"], sampling)
            r[name]["delta"] = float(delta(w, s["target"]))
        results.append(r)
        s["recs"] = recs
        log(f"sample {s['index']}: GS {t_gs:.1f} s, " + ", ".join(
            f"{k} Delta {r[k]['delta']:.3f}" for k in recs))

    by = "network" if rec is not None else "gs"
    deltas = np.array([r[by]["delta"] for r in results])
    picks = {pc: percentile_pick(deltas, pc) for pc in (25, 50, 75)}
    doc = Path(args.doc)
    images_dir = doc.parent / "images"
    if not args.no_write:
        images_dir.mkdir(parents=True, exist_ok=True)
    lines = []
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines.append(f"Run {date} on {platform.node() or 'this machine'} ({os.cpu_count()} CPUs): "
                 f"`benchmarks/compare_traditional.py --n {args.n} --seed {args.seed} --size "
                 f"{args.size} --n-iter {args.n_iter} --wiener-eps {args.wiener_eps} "
                 f"--dataset {args.dataset}{' --data ' + args.data if args.data else ''}"
                 f"{f' --first {args.first}' if args.first else ''} "
                 f"--envelope-cutoff {args.envelope_cutoff}{' --refine' if args.refine else ''}`; {net_note}. Metrics from "
                 f"{metrics_source}. {args.n} {source}, at {sampling:.4g} A/px "
                 f"({samples[0]['target'].shape[-1]} px), made in {t_sim:.0f} s, 11 images "
                 f"1 nm apart each. Percentiles picked by the "
                 f"{'network' if by == 'network' else 'GS (no network available)'} Delta.")
    lines.append("")
    lines.append("RMSE = complex RMSE sqrt(rmse_re^2 + rmse_im^2) (real / imag in brackets); "
                 "hp = long wavelengths removed (w - G_8px * w + 1).")
    lines.append("")
    lines.append("| percentile | sample | method | images | vs truth | vs hp(truth) | "
                 "hp vs hp(truth) | Delta |")
    lines.append("|---|---|---|---|---|---|---|---|")

    def cell(x):
        return f"{x['complex']:.4f} ({x['real']:.4f} / {x['imag']:.4f})"

    n_net = rec.card.n_images if rec is not None else 3
    names = [("network", "network", n_net),
             ("refined_all", "network + refinement, all parameters known", 11),
             ("refined_est", "network + refinement, estimated parameters", 11),
             ("refined_fit", "network + refinement, estimated + fitted parameters "
              f"(strength {ESTIMATED_STRENGTH:g})", 11),
             ("gs", "Gerchberg-Saxton", 11),
             ("wiener", "Wiener (GS start)", 11),
             ("gs_all", "GS, all parameters known", 11),
             ("wiener_all", "Wiener, all parameters known", 11),
             ("vacuum", "baseline: vacuum (psi = 1)", "-")]
    for pc, i in picks.items():
        r = results[i]
        for key, label, n_img in names:
            if key not in r:
                continue
            lines.append(f"| {pc} | {r['index']} | {label} | {n_img} | {cell(r[key]['truth'])} "
                         f"| {cell(r[key]['hp_truth'])} | {cell(r[key]['hp_both'])} | "
                         f"{r[key]['delta']:.3f} |")
        histories[f"p{pc} (sample {r['index']})"] = np.asarray(r["gs_errors"])
        if not args.no_write:
            s = samples[i]
            figure(s, s["recs"], sampling, images_dir / f"traditional_p{pc}.png",
                   f"{pc}th percentile (sample {r['index']}): Cs {r['params']['Cs'] / 1e4:.1f} um, "
                   f"C12 {r['params']['astigmatism']:.0f} A, C21 {r['params']['coma']:.0f} A, "
                   f"focal spread {r['params']['focal_spread']:.1f} A,\n"
                   f"blur {r['params']['blur']:.2f} {r['params'].get('blur_unit', 'px')}, MTF c1 {r['params']['mtf_c1']:.2f}, "
                   f"dose {r['params']['dose']:.3g} e/A^2")
    lines.append("")
    med = {k: float(np.median([r[k]["hp_truth"]["complex"] for r in results]))
           for k, _, _ in names if k in results[0]}
    med_t = {k: float(np.median([r[k]["truth"]["complex"] for r in results]))
             for k, _, _ in names if k in results[0]}
    lines.append(f"Medians over all {args.n} samples, complex RMSE vs truth / vs hp(truth): " +
                 "; ".join(f"{k} {med_t[k]:.4f} / {med[k]:.4f}" for k in med) + ". "
                 f"Paper (25th percentile): network 0.013 vs truth, GS 0.061 vs hp(truth).")
    lines += ["", ablation(samples[picks[50]], sampling, args, rmse)]
    if not args.no_write:
        error_figure(histories, images_dir / "traditional_gs_error.png")
        lines.append("")
        for pc in picks:
            lines.append(f"![{pc}th percentile](images/traditional_p{pc}.png)")
        lines.append("![GS error](images/traditional_gs_error.png)")
        update_block(doc, "\n".join(lines), START, END, HEADING)
        doc.with_name("traditional_results.json").write_text(json.dumps(
            {"date": date, "note": net_note, "picks": picks, "results": results}, indent=1))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
