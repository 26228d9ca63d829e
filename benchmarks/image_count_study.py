"""How many images does the network need? The paper's Fig. 6, on one data set.

Trains the same network on the same training set with 1, 2, 3 and 4 input images (the total
defocus range stays 10 nm, as in the paper; one image means no defocus step), each for the same
number of weight updates, then evaluates every network on the same validation exit waves with
focal series drawn from one fixed seed::

    python benchmarks/image_count_study.py --train data/mos2-train.zarr --val data/mos2-val.zarr \
        --work data/study --out docs/models/image_count

Training goes through ``exitwave-train train`` (resumable: rerunning continues unfinished runs and
skips finished ones); figures go to ``OUT/results.json``, ``OUT/image_count.png`` (validation
loss per epoch and median RMSE per number of images) and a Markdown table on stdout.
Fixed epochs x steps (not minutes) keep the budgets equal on a loaded machine.
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

ROOT = Path(__file__).resolve().parents[1]


def train(n_images: int, args) -> Path:
    run = Path(args.work) / f"n{n_images}"
    state = run / "state.json"
    if state.exists() and json.loads(state.read_text()).get("finished"):
        return run
    exe = Path(sys.executable).with_name("exitwave-train")
    cmd = [str(exe) if exe.exists() else "exitwave-train", "train", "--train", args.train,
           "--val", args.val, "--out", str(run), "--preset", args.preset,
           "--n-images", str(n_images), "--epochs", str(args.epochs),
           "--steps-per-epoch", str(args.steps), "--batch-size", str(args.batch_size),
           "--crop", str(args.crop), "--optimizer", "adam", "--lr", str(args.lr),
           "--seed", str(args.seed), "--val-samples", str(args.val_samples),
           "--workers", str(args.workers), "--quiet"]
    print(">>", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    return run


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", required=True, help="training data set (Zarr)")
    ap.add_argument("--val", required=True, help="validation data set (Zarr), unseen seed")
    ap.add_argument("--work", default="data/study", help="run directories n1..n4")
    ap.add_argument("--out", default="docs/models/image_count")
    ap.add_argument("--images", type=int, nargs="+", default=[1, 2, 3, 4])
    ap.add_argument("--preset", default="medium")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--steps", type=int, default=50, help="steps per epoch")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--crop", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--val-samples", type=int, default=24, help="validation during training")
    ap.add_argument("--eval-samples", type=int, default=None, help="final evaluation (all)")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    from exitwave_training.evaluate import evaluate_arrays, load_predictor
    from exitwave_training.train import load_waves

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = load_waves(args.val, args.eval_samples)
    results = {"date": datetime.date.today().isoformat(),
               "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}",
               "train": args.train, "val": args.val, "settings": vars(args), "runs": {}}
    for n in args.images:
        t0 = time.perf_counter()
        run = train(n, args)
        state = json.loads((run / "state.json").read_text())
        predict, info = load_predictor(run / "best.keras")
        # the same exit waves and one seed for every n: series drawn afresh (the stored ones
        # have 3 images), so the comparison is between networks, not between test sets
        summary = evaluate_arrays(predict, data, n_images=n, multiple=info["size_multiple"],
                                  out_dir=out / f"n{n}", title=f"{n} image(s)",
                                  use_stored_images=False)
        results["runs"][n] = {
            "train_seconds": state.get("train_seconds"), "epochs": state.get("epoch"),
            "history": state.get("history"),
            **{k: v for k, v in summary.items() if not isinstance(v, (list, dict))},
        }
        print(f"n={n}: imag {summary['rmse_imag']:.4f} real {summary['rmse_real']:.4f} "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    plot(results, out / "image_count.png")

    print("| images | RMSE real | RMSE imag | Delta | Y-scramble imag | peak error (pm) | training (s) |")
    print("|---|---|---|---|---|---|---|")
    for n, r in results["runs"].items():
        pe = r.get("peak_error_pm")
        print(f"| {n} | {r['rmse_real']:.4f} | {r['rmse_imag']:.4f} | {r['delta']:.3f} | "
              f"{r['yscramble_rmse_imag']:.4f} | {'-' if pe is None else f'{pe:.1f}'} | "
              f"{r['train_seconds']:.0f} |")
    return 0


def plot(results: dict, path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.4), dpi=110)
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    ns = sorted(results["runs"], key=int)
    for n in ns:
        val = (results["runs"][n].get("history") or {}).get("val_loss") or []
        ax1.plot(np.arange(1, len(val) + 1), val, marker="o", ms=3, label=f"{n} image(s)")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("validation loss (MSE)")
    ax1.set_yscale("log")
    ax1.legend(fontsize=8)
    x = np.array([int(n) for n in ns])
    for key, label in (("rmse_imag", "imaginary"), ("rmse_real", "real")):
        ax2.plot(x, [results["runs"][n][key] for n in ns], marker="o", label=label)
    ax2.plot(x, [results["runs"][n]["yscramble_rmse_imag"] for n in ns], ls="--", c="grey",
             label="Y-scramble (imag)")
    ax2.set_xticks(x)
    ax2.set_xlabel("input images")
    ax2.set_ylabel("median RMSE (validation)")
    ax2.legend(fontsize=8)
    fig.suptitle("number of input images (as the paper's Fig. 6)")
    fig.tight_layout()
    fig.savefig(path)


if __name__ == "__main__":
    sys.exit(main())
