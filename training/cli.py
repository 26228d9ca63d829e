"""``exitwave-train``: simulate data sets, train, export and evaluate networks.

Each subcommand is registered by its own ``_add_<name>(subparsers)`` function (one owner each).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


# --- simulate (owner: simulation) --------------------------------------------------------
# _add_simulate(subparsers) is registered here by the simulation module's owner.


# --- train (owner: network/training) -----------------------------------------------------
def _add_train(subparsers) -> None:
    from .network import PRESETS

    p = subparsers.add_parser(
        "train", help="train a network on a simulated data set (resumable)",
        description="Train the U-Net on a Zarr data set; fresh microscope parameters every "
                    "epoch. Re-running the same command continues a stopped run exactly "
                    f"(exit status 75 means --max-minutes stopped it before the last epoch).")
    p.add_argument("--train", required=True, help="training data set (Zarr)")
    p.add_argument("--val", help="validation data set (Zarr)")
    p.add_argument("--out", required=True, help="run directory (checkpoints, state, curves)")
    p.add_argument("--preset", choices=sorted(PRESETS), default="paper",
                   help="network size (depth, base filters); default: paper")
    p.add_argument("--depth", type=int, help="MaxPool steps (overrides the preset)")
    p.add_argument("--filters", type=int, help="channels of the first block (overrides the preset)")
    p.add_argument("--n-images", type=int, default=3, help="images per focal series")
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--crop", type=int, default=256,
                   help="side of the random crops in px (multiple of 2**depth; 0: full size)")
    p.add_argument("--steps-per-epoch", type=int, help="default: one pass over the data set")
    p.add_argument("--optimizer", choices=["rmsprop", "adam", "amsgrad"], default="rmsprop")
    p.add_argument("--lr", type=float, default=5e-4, help="learning rate")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=1, help="threads simulating focal series")
    p.add_argument("--mixed-precision", action="store_true", help="float16 compute (GPU)")
    p.add_argument("--train-samples", type=int, help="use only the first N training samples")
    p.add_argument("--val-samples", type=int, help="use only the first N validation samples")
    p.add_argument("--max-minutes", type=float, help="stop before an epoch that would not "
                                                     "finish in this time; resume later")
    p.add_argument("--restart", action="store_true", help="ignore an existing checkpoint")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_run_train)


def _run_train(args) -> int:
    from .network import PRESETS
    from .train import EXIT_UNFINISHED, TrainConfig, train

    net = dict(PRESETS[args.preset], n_images=args.n_images)
    if args.depth:
        net["depth"] = args.depth
    if args.filters:
        net["base_filters"] = args.filters
    cfg = TrainConfig(train=args.train, val=args.val, network=net, epochs=args.epochs,
                      batch_size=args.batch_size, crop=args.crop or None,
                      optimizer=args.optimizer, learning_rate=args.lr, seed=args.seed,
                      mixed_precision=args.mixed_precision, workers=args.workers,
                      steps_per_epoch=args.steps_per_epoch, train_samples=args.train_samples,
                      val_samples=args.val_samples)
    state = train(cfg, args.out, resume=not args.restart, max_minutes=args.max_minutes,
                  verbose=0 if args.quiet else 1)
    h = state["history"]
    print(f"{args.out}: epoch {state['epoch']}/{cfg.epochs}, loss {h['loss'][-1]:.3g}"
          + (f", val_loss {h['val_loss'][-1]:.3g}" if h.get("val_loss") else ""))
    if state.get("metrics"):
        print(json.dumps(state["metrics"], indent=2))
    return 0 if state["finished"] else EXIT_UNFINISHED


# --- export (owner: network/training) ----------------------------------------------------
def _add_export(subparsers) -> None:
    p = subparsers.add_parser(
        "export", help="export a trained run to ONNX + JSON model card",
        description="Write <out>/<name>.onnx (dynamic height and width) and <out>/<name>.json, "
                    "checking ONNX/Keras parity on two image sizes.")
    p.add_argument("run", help="run directory (or a .keras checkpoint)")
    p.add_argument("--name", required=True, help="model name, e.g. mos2")
    p.add_argument("--out", default="models", help="output folder (default: models)")
    p.add_argument("--description", default="")
    p.add_argument("--which", choices=["best", "last"], default="best",
                   help="checkpoint of a run directory (default: best validation loss)")
    p.add_argument("--float16", action="store_true", help="also write <name>_fp16.onnx")
    p.add_argument("--evaluate", help="data set to evaluate on for the card's metrics "
                                      "(default: the metrics stored by training)")
    p.add_argument("--max-samples", type=int, help="evaluate on at most N samples")
    p.set_defaults(func=_run_export)


def _run_export(args) -> int:
    from pathlib import Path

    from .export import export_checkpoint

    src = Path(args.run)
    if src.is_dir():
        src = src / f"{args.which}.keras"
    metrics = None
    if args.evaluate:
        from .evaluate import evaluate

        summary = evaluate(src, args.evaluate, Path(args.out) / f"{args.name}_evaluation",
                           max_samples=args.max_samples)
        metrics = {k: summary.get(k) for k in ("rmse_real", "rmse_imag", "delta",
                                               "peak_error_pm", "yscramble_rmse_real",
                                               "yscramble_rmse_imag", "n_samples")}
    card = export_checkpoint(src, args.out, args.name, description=args.description,
                             float16=args.float16, metrics=metrics)
    print(f"wrote {Path(args.out) / card['onnx_file']} and {args.name}.json "
          f"(parity {card['training']['onnx_parity_max_abs']:.2e}, sha256 {card['sha256'][:12]})")
    return 0


# --- evaluate (owner: network/training) --------------------------------------------------
def _add_evaluate(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate", help="RMSE, Delta, Y-scramble, peak errors and plots of a model",
        description="Evaluate an ONNX model (models/<name>.onnx) or a Keras checkpoint / run "
                    "directory on a simulated data set; writes summary.json, histograms.png, "
                    "argand.png.")
    p.add_argument("model", help=".onnx file, .keras file or run directory")
    p.add_argument("data", help="data set (Zarr)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--max-samples", type=int)
    p.add_argument("--seed", type=int, default=7919)
    p.set_defaults(func=_run_evaluate)


def _run_evaluate(args) -> int:
    from .evaluate import evaluate

    s = evaluate(args.model, args.data, args.out, max_samples=args.max_samples, seed=args.seed)
    keys = ("n_samples", "rmse_real", "rmse_imag", "delta", "yscramble_rmse_real",
            "yscramble_rmse_imag", "peak_error_pm", "missed_columns_fraction")
    print(json.dumps({k: s.get(k) for k in keys}, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="exitwave-train", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("_add_simulate", "_add_train", "_add_export", "_add_evaluate"):
        add = globals().get(name)
        if add is not None:
            add(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
