"""Evaluate every shipped network: on validation data sets and on the bundled sample series.

Rerun to reproduce the figures of docs/models.md::

    python benchmarks/evaluate_models.py --data mos2=data/mos2-val.zarr --out docs/models

For each model card in models/ (or ``--models``) and each ``--data NAME=PATH`` validation set
(a Zarr data set from ``exitwave-train simulate`` with a seed the network never saw), this runs
the project's evaluation (``exitwave_training.evaluate``: per-sample RMSE of the real and
imaginary parts, Delta of Eq. A.1, the Y-scramble baseline, peak-position error in pm,
histograms and an Argand plot) and reconstructs the bundled sample series through the plugin's
own path (``reconstruct_series``), comparing with its true exit wave. Results go to
``OUT/results.json`` and plots to ``OUT/<model>__<data>/``; a Markdown table is printed.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def sample_figures(card) -> dict:
    """The card's network on the bundled sample with its pixel size (data.sample_for_sampling)."""
    from napari_exitwave import metrics
    from napari_exitwave.data import load_sample_exit_wave, load_sample_series, sample_for_sampling
    from napari_exitwave.inference import OnnxReconstructor
    from napari_exitwave.reconstruct import reconstruct_series

    name = sample_for_sampling(card.sampling)
    series = load_sample_series(name)
    if len(series.images) != card.n_images:
        return {"skipped": f"model takes {card.n_images} images, the sample has {len(series.images)}"}
    truth, _, _ = load_sample_exit_wave(name)
    rec = reconstruct_series(series, OnnxReconstructor(card, providers="cpu"), align=False)
    rr, ri = metrics.rmse(rec.exit_wave, truth)
    vr, vi = metrics.rmse(np.ones_like(truth), truth)
    return {"sample": name, "rmse_real": float(rr), "rmse_imag": float(ri), "delta": float(metrics.delta(rec.exit_wave, truth)),
            "vacuum_rmse_real": float(vr), "vacuum_rmse_imag": float(vi),
            "inference_s": float(rec.timings.get("total", np.nan))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="*", help="model cards (default: every models/*.json)")
    ap.add_argument("--data", action="append", default=[], metavar="NAME=PATH",
                    help="a validation data set (repeatable)")
    ap.add_argument("--max-samples", type=int, default=None)
    ap.add_argument("--out", default="docs/models", help="folder for results.json and plots")
    ap.add_argument("--update-cards", action="store_true",
                    help="write the figures into each card: 'evaluation' (every data set at the "
                         "network's pixel size, cross-tests included) and 'sample_metrics'")
    args = ap.parse_args(argv)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from napari_exitwave.inference import ModelCard

    cards = [ModelCard.load(p) for p in (args.models or sorted((ROOT / "models").glob("*.json")))]
    # exit-wave networks only (the aberration estimators are scored by their export)
    cards = [c for c in cards if c.extra.get("kind", "exit-wave") == "exit-wave"]
    if not cards:
        print("no model cards found", file=sys.stderr)
        return 2
    from exitwave_training.dataset import ExitWaveDataset
    from exitwave_training.evaluate import evaluate

    data = []  # (name, path, pixel size in A)
    for item in args.data:
        name, _, path = item.partition("=")
        if not path:
            ap.error(f"--data wants NAME=PATH, got {item!r}")
        data.append((name, path, ExitWaveDataset(path).sampling))

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {"date": datetime.date.today().isoformat(),
               "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}",
               "models": {}}
    for card in cards:
        card.verify()
        entry = {"sample": sample_figures(card), "validation": {}}
        for name, path, sampling in data:
            if abs(sampling - card.sampling) > 0.02 * card.sampling:
                continue  # a network is only tested at its own pixel size
            summary = evaluate(card.onnx_path, path, out / f"{card.name}__{name}",
                               max_samples=args.max_samples)
            entry["validation"][name] = {k: v for k, v in summary.items()
                                         if not isinstance(v, (list, dict))}
            entry["validation"][name]["summary_file"] = str(out / f"{card.name}__{name}" / "summary.json")
        results["models"][card.name] = entry
        if args.update_cards:
            card.extra["sample_metrics"] = entry["sample"]
            card.extra["evaluation"] = {
                "date": results["date"], "machine": results["machine"],
                "command": "python benchmarks/evaluate_models.py " + " ".join(argv or sys.argv[1:]),
                "datasets": {d: {k: v for k, v in m.items() if k != "summary_file"}
                             for d, m in entry["validation"].items()}}
            card.save()
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")

    print("| model | data | RMSE real | RMSE imag | Delta | Y-scramble imag | peak error (pm) |")
    print("|---|---|---|---|---|---|---|")
    for name, entry in results["models"].items():
        s = entry["sample"]
        if "rmse_imag" in s:
            print(f"| {name} | bundled sample `{s['sample']}` | {s['rmse_real']:.4f} | {s['rmse_imag']:.4f} | "
                  f"{s['delta']:.3f} | (vacuum: {s['vacuum_rmse_imag']:.4f}) | |")
        for dname, v in entry["validation"].items():
            pe = v.get("peak_error_pm")
            print(f"| {name} | {dname} (median of {v.get('n_samples', '?')}) | {v['rmse_real']:.4f} | "
                  f"{v['rmse_imag']:.4f} | {v['delta']:.3f} | {v['yscramble_rmse_imag']:.4f} | "
                  f"{'-' if pe is None else f'{pe:.1f}'} |")
    names = [n for n, _, _ in data]
    if len(names) > 1:  # cross-tests: every network on every data set at its pixel size
        print("\nmedian RMSE of the imaginary part (rows: networks, columns: validation sets)\n")
        print("| network | " + " | ".join(names) + " |")
        print("|---|" + "---|" * len(names))
        for name, entry in results["models"].items():
            cells = [f"{entry['validation'][d]['rmse_imag']:.4f}" if d in entry["validation"]
                     else "-" for d in names]
            print(f"| {name} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
