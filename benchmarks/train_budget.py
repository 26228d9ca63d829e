"""Fixed-budget training study: which recipe learns most from the same number of samples?

Every row trains the same network family on one fixed training set for the same budget of
training samples (``--samples``: updates x batch size, so rows compare fairly on a machine
whose load changes; the wall-clock time and samples/s of each row are recorded too), then
scores the *last* checkpoint on one fixed validation set (never trained on) with the
project's evaluation (:mod:`exitwave_training.evaluate`: median imaginary and real RMSE, the
Y-scramble baseline, column error in pm and column recall, ``napari_exitwave.metrics``).

Each row is one ``exitwave-train train`` command (printed, and recorded in the results), so any
row can be rerun by hand. ``--feed-check`` measures whether the trainer waits for the
focal-series generator: the time to make one batch in the feed against one training step.

    python benchmarks/train_budget.py --train data/mos2-train.zarr --val data/mos2-val.zarr \\
        --out data/budget --samples 2400 [--only A B] [--doc docs/training.md]

Results: ``<out>/results.json`` (one record per row) and, with ``--doc``, the table between the
``<!-- train_budget -->`` markers of that Markdown file.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from _doc_block import update_block

# name -> (what it tests, extra `exitwave-train train` options). "A" is the recipe that made the
# shipped networks before this study (scripts/train_models.sh: Adam 1e-3 constant, MSE); the
# other rows change one thing of A (B, N, D: the schedule and optimizer).
BASE = ["--preset", "medium", "--batch-size", "8", "--crop", "128"]
ADAM = ["--optimizer", "adam", "--lr", "1e-3"]
COSINE = ["--schedule", "cosine", "--warmup", "0.05"]
ROWS: dict[str, tuple[str, list[str]]] = {
    "A": ("today's recipe: Adam 1e-3 constant, MSE", ADAM),
    "B": ("Adam, warm-up + cosine, peak 3e-3", ["--optimizer", "adam", "--lr", "3e-3", *COSINE]),
    "N": ("Adam, warm-up + cosine, peak 1e-3", [*ADAM, *COSINE]),
    "C": ("AdamW (wd 1e-4), warm-up + cosine, peak 1e-3",
          ["--optimizer", "adamw", "--lr", "1e-3", *COSINE]),
    "D": ("RMSprop (the paper's), warm-up + cosine, peak 1e-3",
          ["--optimizer", "rmsprop", "--lr", "1e-3", *COSINE]),
    "E": ("A with the Charbonnier (smooth L1) loss", [*ADAM, "--loss", "charbonnier"]),
    "F": ("A with MSE weighted onto the atomic columns", [*ADAM, "--loss", "column_mse"]),
    "G": ("A, wider: 24 base filters (depth 3, 2.7 M parameters)", [*ADAM, "--filters", "24"]),
    "R": ("A, wider and shallower: depth 2, 32 base filters (1.3 M parameters, 4x the "
          "full-resolution channels)", [*ADAM, "--depth", "2", "--filters", "32"]),
    "H": ("A with batch 16 (half the updates), lr 1.4e-3",
          ["--optimizer", "adam", "--lr", "1.4e-3", "--batch-size", "16"]),
    "I": ("A on 250 distinct exit waves (each reused 4x as often, fresh microscope draws)",
          [*ADAM, "--train-samples", "250"]),
    "P": ("A with MSE weighted onto the atomic columns at weight 0.5 (F: 4)",
          [*ADAM, "--loss", "column_mse", "--column-weight", "0.5"]),
    "J": ("A with up to 1 px drift between the images", [*ADAM, "--drift", "1"]),
    "K": ("A at 192 px crops (2.25x the pixels per sample)", [*ADAM, "--crop", "192"]),
    "M": ("A with 2 crops from each simulated series (half the feed's CPU time)",
          [*ADAM, "--crops-per-series", "2"]),
    "L": ("A with XLA (jit_compile)", [*ADAM, "--jit-compile"]),
    "S": ("A with another seed (initial weights, data order, microscope draws): the noise of "
          "one row", [*ADAM, "--seed", "1"]),
}
STEPS_PER_EPOCH = 25


def _opt(args: list[str], name: str, default: str) -> str:
    return args[len(args) - 1 - args[::-1].index(name) + 1] if name in args else default


def command(name: str, train: str, val: str, out: Path, samples: int, seed: int) -> list[str]:
    """The ``exitwave-train train`` command of row ``name`` for a budget of ``samples``."""
    extra = BASE + ROWS[name][1]
    batch = int(_opt(extra, "--batch-size", "8"))
    epochs = max(1, round(samples / (batch * STEPS_PER_EPOCH)))
    return [sys.executable, "-m", "exitwave_training.cli", "train", "--train", train,
            "--val", val, "--out", str(out / name), *extra, "--epochs", str(epochs),
            "--steps-per-epoch", str(STEPS_PER_EPOCH), "--val-samples", "16",
            *([] if "--seed" in extra else ["--seed", str(seed)]), "--workers", "1", "--quiet"]


def run_row(name: str, args) -> dict:
    out = Path(args.out)
    cmd = command(name, args.train, args.val, out, args.samples, args.seed)
    print(">>", " ".join(cmd), flush=True)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONHASHSEED="0")
    t0 = time.time()
    rc = subprocess.run(cmd, env=env).returncode
    wall = time.time() - t0
    if rc not in (0, 75):
        return dict(row=name, error=f"train exited {rc}", command=" ".join(cmd))
    state = json.loads((out / name / "state.json").read_text())
    from exitwave_training.evaluate import evaluate

    t1 = time.time()
    s = evaluate(out / name / "last.keras", args.val, out / name / "evaluation_last",
                 max_samples=args.val_max)
    missed = s.get("missed_columns_fraction")
    return dict(
        row=name, what=ROWS[name][0], command=" ".join(cmd[3:]),
        samples=int(state.get("samples_seen", 0)), epochs=int(state["epoch"]),
        train_seconds=float(state["train_seconds"]), wall_seconds=wall,
        samples_per_second=float(state.get("samples_seen", 0)) / max(state["train_seconds"], 1e-9),
        eval_seconds=time.time() - t1, n_val=s["n_samples"],
        rmse_imag=s["rmse_imag"], rmse_real=s["rmse_real"],
        yscramble_rmse_imag=s["yscramble_rmse_imag"], peak_error_pm=s["peak_error_pm"],
        recall=None if missed is None else 1.0 - missed, final_loss=state["history"]["loss"][-1],
        date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), machine=machine())


def machine() -> str:
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    isa = "AVX-512" if "avx512f" in flags else ("AVX2" if "avx2" in flags else "no AVX2")
    return f"{platform.node()}, {os.cpu_count()} cores, {isa}"


def feed_check(args) -> dict:
    """Seconds to make one batch in the feed (one thread) vs one training step."""
    import numpy as np

    from exitwave_training.feed import FocalSeriesDataset, load_waves
    from exitwave_training.presets import PRESETS
    from exitwave_training.train import TrainConfig, make_model

    d = load_waves(args.train, 64)
    out = {}
    for crop in (128, 192):
        ds = FocalSeriesDataset(d["wave"], d["target"], d["sampling"], 3, 8, crop, 8, seed=0)
        t = time.perf_counter()
        batches = [ds[i] for i in range(4)]
        feed = (time.perf_counter() - t) / 4
        model = make_model(TrainConfig(network=dict(PRESETS["medium"], n_images=3),
                                       optimizer="adam", learning_rate=1e-3))
        model.train_on_batch(*batches[0])
        t = time.perf_counter()
        for x, y in batches + batches:
            model.train_on_batch(x, y)
        step = (time.perf_counter() - t) / 8
        out[crop] = dict(feed_seconds_per_batch=feed, train_seconds_per_batch=step,
                         feed_share=feed / (feed + step))
        print(f"crop {crop}: feed {feed:.3f} s/batch of 8, train step {step:.3f} s "
              f"(the feed is {100 * feed / (feed + step):.0f}% of the CPU time per batch)")
    return dict(feed_check=out, date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                machine=machine(), load=os.getloadavg()[0])


def table(results: list[dict], samples: int) -> str:
    lines = [f"Budget: {samples} training samples per row (updates x batch), medium U-Net, "
             "fixed training set, last checkpoint scored on the fixed validation set.", "",
             "| row | recipe | imag RMSE | real RMSE | column error (pm) | recall | samples/s | "
             "train min | run |", "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['row']} | {r.get('what', '')} | {r['error']} | | | | | | |")
            continue
        pe = "-" if r["peak_error_pm"] is None else f"{r['peak_error_pm']:.1f}"
        rc = "-" if r["recall"] is None else f"{r['recall']:.3f}"
        lines.append(f"| {r['row']} | {r['what']} | {r['rmse_imag']:.4f} | {r['rmse_real']:.4f} "
                     f"| {pe} | {rc} | {r['samples_per_second']:.2f} | "
                     f"{r['train_seconds'] / 60:.1f} | {r.get('date', '')[:10]} |")
    lines.append("")
    lines.append("Commands (from the repository root, each row alone):")
    lines.append("")
    lines.append("```")
    here = os.getcwd() + "/"  # commands as run from the repository root
    lines.extend(f"{r['row']}: exitwave-train {r['command'].replace(here, '')}"
                 for r in results if "command" in r and "error" not in r)
    lines.append("```")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", required=True)
    p.add_argument("--val", required=True)
    p.add_argument("--out", default="data/budget")
    p.add_argument("--samples", type=int, default=2400, help="training samples per row")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-max", type=int, help="score on at most N validation samples")
    p.add_argument("--only", nargs="+", choices=sorted(ROWS), help="rows to run")
    p.add_argument("--feed-check", action="store_true", help="time the feed vs a train step")
    p.add_argument("--doc", help="Markdown file whose train_budget block gets the table")
    p.add_argument("--report", action="store_true",
                   help="run nothing: print (and with --doc write) the table of the results so far")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.feed_check:
        res = feed_check(args)
        (out / "feed_check.json").write_text(json.dumps(res, indent=2) + "\n")
        return 0
    path = out / "results.json"
    results = {r["row"]: r for r in json.loads(path.read_text())} if path.exists() else {}
    for name in [] if args.report else (args.only or sorted(ROWS)):
        results[name] = run_row(name, args)
        path.write_text(json.dumps(sorted(results.values(), key=lambda r: r["row"]), indent=2)
                        + "\n")
        r = results[name]
        print(json.dumps({k: r.get(k) for k in ("row", "rmse_imag", "rmse_real",
                                                "peak_error_pm", "recall",
                                                "samples_per_second")}), flush=True)
    ordered = sorted(results.values(), key=lambda r: r["row"])
    print(table(ordered, args.samples))
    if args.doc:
        update_block(Path(args.doc), table(ordered, args.samples), "<!-- train_budget -->",
                     "<!-- /train_budget -->")
    return 0


if __name__ == "__main__":
    sys.exit(main())
