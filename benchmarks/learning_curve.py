"""Learning curve of a training run: validation RMSE against training samples seen (log-log).

Scores every weight snapshot of a run (``exitwave-train train --snapshot-every N`` keeps them in
``RUN/snapshots/``) on the same validation series with the project's evaluation, fits a power
law ``rmse = a * samples^-b`` to the later half of the points and says how many samples that
law would need to reach a target (the paper's 0.0062 for MoS2 by default). A power law fitted to
a short CPU run is an optimistic guide, not a promise: curves flatten.

    python benchmarks/learning_curve.py data/runs/mos2 data/mos2-val.zarr --max-samples 100 \\
        --png docs/images/learning_curve_mos2.png --json docs/models/learning_curve_mos2.json

A shipped network trained across sessions keeps no snapshots, but git keeps every shipped
version: ``--revisions`` scores ``models/NAME.onnx`` as committed at each revision (oldest first,
one lineage: each run started from the previous one's shipped checkpoint, its last epoch) and
counts the training samples along that lineage up to each exported (best) epoch, from the
committed ``models/checkpoints/NAME.state.json``::

    python benchmarks/learning_curve.py mos2-graphene-a data/mosg-val.zarr --max-samples 150 \\
        --revisions 3537c52 7d3b0f9 HEAD --target 0.0122
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np


def score_snapshots(run: Path, val: str, max_samples: int | None) -> list[dict]:
    from exitwave_training.checkpoint import keras_predictor, load_checkpoint
    from exitwave_training.evaluate import evaluate_arrays
    from exitwave_training.feed import load_waves
    from exitwave_training.network import size_multiple

    model, state = load_checkpoint(run, "last")
    cfg = state["config"]
    data = load_waves(val, max_samples)
    points = []
    for snap in state.get("snapshots", []):
        model.load_weights(run / snap["file"])
        with tempfile.TemporaryDirectory() as tmp:
            s = evaluate_arrays(keras_predictor(model), data, n_images=cfg["network"]["n_images"],
                                multiple=size_multiple(int(cfg["network"]["depth"])),
                                out_dir=tmp, argand_samples=0)
        points.append(_point(s, epoch=snap["epoch"], samples_seen=snap["samples_seen"]))
    return points


def _point(summary: dict, **where) -> dict:
    """One learning-curve point from an evaluation summary, printed as it comes."""
    missed = summary.get("missed_columns_fraction")
    point = dict(where, rmse_imag=summary["rmse_imag"], rmse_real=summary["rmse_real"],
                 peak_error_pm=summary["peak_error_pm"],
                 recall=None if missed is None else 1 - missed)
    print(json.dumps(point), flush=True)
    return point


ROOT = Path(__file__).resolve().parents[1]


def _git_show(rev: str, path: str) -> bytes:
    return subprocess.run(["git", "show", f"{rev}:{path}"], cwd=ROOT, check=True,
                          capture_output=True).stdout


def score_revisions(name: str, revisions: list[str], val: str,
                    max_samples: int | None) -> list[dict]:
    """One point per committed version of ``models/NAME.onnx``; ``samples_seen`` counts, along
    the lineage, every earlier run's samples and this run's up to its best (exported) epoch."""
    from exitwave_training.evaluate import evaluate_arrays, load_predictor
    from exitwave_training.feed import load_waves

    data = load_waves(val, max_samples)
    points, before = [], 0
    for rev in revisions:
        state = json.loads(_git_show(rev, f"models/checkpoints/{name}.state.json"))
        # the ONNX file holds the best epoch's weights; the next run continued the shipped
        # checkpoint, the last epoch's (exitwave-train ship)
        seen = before + state["samples_seen"] * state["best_epoch"] / state["epoch"]
        before += state["samples_seen"]
        with tempfile.TemporaryDirectory() as tmp:
            for suffix in (".json", ".onnx"):
                Path(tmp, name + suffix).write_bytes(_git_show(rev, f"models/{name}{suffix}"))
            predict, info = load_predictor(Path(tmp, name + ".onnx"))
            s = evaluate_arrays(predict, data, n_images=info["n_images"],
                                multiple=info["size_multiple"], out_dir=tmp, argand_samples=0)
        points.append(_point(s, revision=rev, epoch=state["best_epoch"],
                             samples_seen=int(seen)))
    return points


def fit_power_law(points: list[dict], key: str = "rmse_imag") -> tuple[float, float]:
    """``(a, b)`` of ``key = a * samples^-b``, least squares in log-log on the later half."""
    pts = sorted(points, key=lambda p: p["samples_seen"])
    pts = pts[len(pts) // 2:] if len(pts) >= 4 else pts
    x = np.log([p["samples_seen"] for p in pts])
    y = np.log([p[key] for p in pts])
    slope, intercept = np.polyfit(x, y, 1)
    return float(math.exp(intercept)), float(-slope)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path,
                   help="a run directory (its snapshots), or with --revisions a network's name")
    p.add_argument("val")
    p.add_argument("--max-samples", type=int, default=100)
    p.add_argument("--target", type=float, default=0.0062, help="imag RMSE to extrapolate to")
    p.add_argument("--png", type=Path)
    p.add_argument("--json", type=Path)
    p.add_argument("--revisions", nargs="+",
                   help="git revisions of models/RUN.onnx to score instead of snapshots")
    args = p.parse_args(argv)
    if args.revisions:
        points = score_revisions(str(args.run), args.revisions, args.val, args.max_samples)
    else:
        points = score_snapshots(args.run, args.val, args.max_samples)
    if len(points) < 2:
        print("fewer than 2 revisions given" if args.revisions else
              "fewer than 2 snapshots: train with --snapshot-every", file=sys.stderr)
        return 2
    a, b = fit_power_law(points)
    need = (a / args.target) ** (1 / b) if b > 0 else math.inf
    result = dict(run=str(args.run), val=args.val, n_val=args.max_samples, points=points,
                  power_law=dict(a=a, b=b, key="rmse_imag"), target=args.target,
                  samples_for_target=need)
    print(f"imag RMSE ~ {a:.3g} * samples^-{b:.3f}; {args.target} would need ~{need:.3g} "
          "training samples on this curve")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if args.png:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib.figure import Figure

        fig = Figure(figsize=(5, 3.6), dpi=120)
        ax = fig.add_subplot()
        xs = np.array([q["samples_seen"] for q in points], float)
        for key, label in (("rmse_imag", "imaginary"), ("rmse_real", "real")):
            ax.loglog(xs, [q[key] for q in points], "o-", ms=3, label=f"median RMSE, {label}")
        grid = np.geomspace(xs.min(), max(xs.max(), min(need, 1e9)), 50)
        ax.loglog(grid, a * grid ** -b, "--", color="0.4", label=f"fit: samples^-{b:.2f}")
        ax.axhline(args.target, color="C3", lw=0.8, label=f"paper {args.target}")
        ax.set_xlabel("training samples seen")
        ax.set_ylabel("median RMSE (validation)")
        ax.legend(fontsize=7)
        ax.set_title(args.run.name, fontsize=9)
        fig.tight_layout()
        args.png.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
