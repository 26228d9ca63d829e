"""``exitwave-train``: simulate data sets, train, export and evaluate networks.

Pipeline order: ``simulate`` -> ``train`` (evaluates the best checkpoint when a run finishes)
-> ``export`` -> ``evaluate``; ``finetune`` starts a run from a shipped network's weights and
``ship`` copies a run's checkpoint beside its ONNX file in models/ so that a later session (or a
user) continues it with ``train --init-from models/checkpoints/<name>.keras``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


# --- simulate -----------------------------------------------------------------------------
def _add_simulate(subparsers) -> None:
    p = subparsers.add_parser(
        "simulate", help="simulate a training/validation data set (Zarr, resumable)",
        description="Make N samples (structure -> abTEM exit wave -> focal series) into a Zarr "
                    "data set. Re-running the same command resumes an interrupted run; finished "
                    "samples are kept. See docs/simulation.md.")
    p.add_argument("--dataset", default="mos2",
                   help="structure family: mos2, mos2-graphene or 2d (default: mos2)")
    p.add_argument("--n", type=int, default=1000, help="number of samples (default: 1000)")
    p.add_argument("--out", required=True, help="output Zarr folder, e.g. data/mos2.zarr")
    p.add_argument("--size", type=int, default=256,
                   help="side of every array in px at --sampling (default: 256; flakes need a "
                        "field of view of >~ 20 A)")
    p.add_argument("--sampling", type=float, default=0.105,
                   help="pixel size of waves and images in A (default: 0.105)")
    p.add_argument("--n-images", type=int, default=3, help="images per focal series (default: 3)")
    p.add_argument("--seed", type=int, default=0, help="data-set seed (default: 0)")
    p.add_argument("--energy", type=float, default=50e3, help="electron energy in eV (default: 50e3)")
    p.add_argument("--multislice-sampling", type=float, default=0.05,
                   help="largest multislice pixel size in A (default: 0.05)")
    p.add_argument("--slice-thickness", type=float, default=0.2,
                   help="multislice slice thickness in A (default: 0.2)")
    p.add_argument("--db", help="ASE database of 2D materials for --dataset 2d "
                                "(default: the built-in prototypes)")
    p.add_argument("--split", choices=["train", "validation", "all"], default="train",
                   help="part of the database for --dataset 2d, split 2:1 by element set")
    p.add_argument("--workers", type=int, default=2,
                   help="worker processes of the local Dask cluster (default: 2)")
    p.add_argument("--scheduler", default="local",
                   help="'local' (a LocalCluster, default), 'serial' (no Dask), or the address "
                        "of an existing dask.distributed scheduler, e.g. tcp://host:8786")
    p.add_argument("--device", choices=["auto", "cpu", "gpu"], default="auto",
                   help="multislice device; auto uses the GPU when CuPy finds one")
    _add_blur_unit(p)
    p.add_argument("--overwrite", action="store_true", help="replace an existing data set")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_simulate)


def _add_blur_unit(p, default: str | None = "px", what: str = "") -> None:
    p.add_argument("--blur-unit", choices=["px", "A"], default=default,
                   help="unit of Table 1's image blur 0.5-1.5: 'px' (pixels of the image grid, "
                        "DESIGN.md) or 'A' (the literal reading, 10x stronger); default: "
                        + (what or default))


def _sigterm_as_interrupt() -> None:
    """Stop on SIGTERM (batch schedulers, ``kill``) as on Ctrl-C: finished samples stay, the
    Dask cluster is shut down, and the same command resumes."""
    import signal

    def handler(signum, frame):
        raise KeyboardInterrupt

    try:
        signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        pass


def _run_simulate(args) -> int:
    from napari_exitwave.physics import ParameterRanges

    from .dataset import DatasetConfig, generate_dataset
    from .exitwave import ExitWaveConfig
    from .structures import DATASETS, StructureConfig

    if args.dataset not in DATASETS:
        print(f"exitwave-train simulate: unknown data set {args.dataset!r}; choose one of "
              f"{', '.join(DATASETS)}", file=sys.stderr)
        return 2
    try:
        config = DatasetConfig(
            n=args.n, seed=args.seed, n_images=args.n_images,
            structure=StructureConfig(dataset=args.dataset, size=args.size, sampling=args.sampling,
                                      database=os.path.abspath(args.db) if args.db else None,
                                      split=args.split),
            exitwave=ExitWaveConfig(energy=args.energy, sampling=args.multislice_sampling,
                                    slice_thickness=args.slice_thickness, device=args.device),
            ranges=ParameterRanges(blur_unit=args.blur_unit))
        _sigterm_as_interrupt()
        summary = generate_dataset(args.out, config, scheduler=args.scheduler,
                                   workers=args.workers, overwrite=args.overwrite,
                                   progress=not args.no_progress)
    except (ValueError, OSError) as exc:
        print(f"exitwave-train simulate: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted; finished samples are kept - run the same command to resume",
              file=sys.stderr)
        return 130
    print(f"{summary['path']}: {summary['done']}/{summary['n']} samples complete, "
          f"{summary['generated']} made in {summary['seconds']:.1f} s "
          f"({summary['samples_per_second']:.2f} samples/s)")
    return 0


# --- train --------------------------------------------------------------------------------
def _add_train(subparsers) -> None:
    from .presets import PRESETS

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
    _add_recipe(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mixed-precision", action="store_true", help="float16 compute (GPU)")
    p.add_argument("--jit-compile", action="store_true", help="XLA-compile the training step")
    p.add_argument("--init-from", help="continue a shipped checkpoint (models/checkpoints/"
                                       "<name>.keras + .state.json) in an empty --out, exactly")
    p.add_argument("--snapshot-every", type=int, metavar="N",
                   help="keep the weights of every N-th epoch in <out>/snapshots (learning curve)")
    p.add_argument("--train-samples", type=int, help="use only the first N training samples")
    p.add_argument("--val-samples", type=int, help="use only the first N validation samples")
    p.add_argument("--max-minutes", type=float, help="stop before an epoch that would not "
                                                     "finish in this time; resume later")
    p.add_argument("--restart", action="store_true", help="ignore an existing checkpoint")
    p.add_argument("--set-lr", type=float, metavar="LR",
                   help="continue the run (or --init-from checkpoint) at this constant learning "
                        "rate, keeping the optimizer's state: a learning-rate drop")
    _add_blur_unit(p, None, "the training data set's")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_run_train)


def _add_recipe(p) -> None:
    """Optimizer, schedule, loss and feed options shared by ``train`` and ``finetune``."""
    from .presets import LOSSES, OPTIMIZERS, SCHEDULES

    p.add_argument("--optimizer", choices=OPTIMIZERS, default="rmsprop")
    p.add_argument("--lr", type=float, default=5e-4, help="(peak) learning rate")
    p.add_argument("--schedule", choices=SCHEDULES, default="constant",
                   help="constant, or cosine: linear warm-up then cosine decay over all epochs")
    p.add_argument("--warmup", type=float, default=0.05,
                   help="cosine: fraction of the updates spent warming up (default: 0.05)")
    p.add_argument("--weight-decay", type=float, default=1e-4, help="AdamW weight decay")
    p.add_argument("--loss", choices=LOSSES, default="mse",
                   help="mse (paper), l1, charbonnier, column_mse (extra weight on columns)")
    p.add_argument("--column-weight", type=float, default=4.0,
                   help="column_mse: weight 1 + W * |target - 1| / 0.1 (default: 4; the budget "
                        "study's row F found 4 pulls the values off the vacuum)")
    # 2 feed threads beside TensorFlow's own train 1.41x the samples/s of 1 on 2 cores
    # (benchmarks/train_speed.py --fit, docs/training.md)
    p.add_argument("--workers", type=int, default=2,
                   help="threads simulating focal series (default 2)")
    p.add_argument("--drift", type=float, default=0.0,
                   help="largest random drift between the images of a training series, px")
    p.add_argument("--sampling-jitter", type=float, nargs=2, metavar=("LO", "HI"),
                   help="draw each training series' true pixel size from LO..HI A "
                        "(e.g. 0.215 0.235 for a 0.22 A/px network)")
    p.add_argument("--crops-per-series", type=int, default=1,
                   help="training crops cut from each simulated focal series (default: 1)")


def _recipe_kwargs(args) -> dict:
    return dict(optimizer=args.optimizer, learning_rate=args.lr, schedule=args.schedule,
                warmup=args.warmup, weight_decay=args.weight_decay, loss=args.loss,
                column_weight=args.column_weight, drift=args.drift,
                sampling_range=args.sampling_jitter,
                crops_per_series=args.crops_per_series)


def _report_run(args, cfg, state, evaluate: bool = True) -> int:
    from .train import EXIT_UNFINISHED

    if state["finished"] and evaluate and cfg.val and not state.get("metrics"):
        from .evaluate import evaluate_run

        state["metrics"] = evaluate_run(args.out)
    h = state["history"]
    print(f"{args.out}: epoch {state['epoch']}/{cfg.epochs}, loss {h['loss'][-1]:.3g}"
          + (f", val_loss {h['val_loss'][-1]:.3g}" if h.get("val_loss") else ""))
    if state.get("metrics"):
        print(json.dumps(state["metrics"], indent=2))
    return 0 if state["finished"] else EXIT_UNFINISHED


def _run_train(args) -> int:
    from .presets import PRESETS
    from .train import TrainConfig, train

    net = dict(PRESETS[args.preset], n_images=args.n_images)
    if args.depth:
        net["depth"] = args.depth
    if args.filters:
        net["base_filters"] = args.filters
    try:
        cfg = TrainConfig(train=args.train, val=args.val, network=net, epochs=args.epochs,
                          batch_size=args.batch_size, crop=args.crop or None, seed=args.seed,
                          mixed_precision=args.mixed_precision, workers=args.workers,
                          steps_per_epoch=args.steps_per_epoch, train_samples=args.train_samples,
                          val_samples=args.val_samples, jit_compile=args.jit_compile,
                          ranges={"blur_unit": args.blur_unit} if args.blur_unit else {},
                          **_recipe_kwargs(args))
        state = train(cfg, args.out, resume=not args.restart, max_minutes=args.max_minutes,
                      verbose=0 if args.quiet else 1, init_from=args.init_from,
                      snapshot_every=args.snapshot_every, set_learning_rate=args.set_lr)
    except (ValueError, FileNotFoundError) as exc:
        print(f"exitwave-train train: {exc}", file=sys.stderr)
        return 2
    return _report_run(args, cfg, state)


# --- finetune ------------------------------------------------------------------------------
def _add_finetune(subparsers) -> None:
    p = subparsers.add_parser(
        "finetune", help="train a shipped network further on your own data set",
        description="Start a new run from the weights of a shipped network (models/checkpoints/) "
                    "or any checkpoint, on your data set (e.g. your material class); fresh "
                    "optimizer, lower learning rate by default. Resumes like train.")
    p.add_argument("--from", dest="source", required=True,
                   help="shipped network name (mos2, ...: models/checkpoints/<name>.keras), "
                        "a .keras file or a run directory")
    p.add_argument("--train", required=True, help="training data set (Zarr)")
    p.add_argument("--val", help="validation data set (Zarr)")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--crop", type=int, default=128, help="crop side in px (0: full size)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-minutes", type=float)
    p.add_argument("--n-images", type=int,
                   help="images per series of the new network (default: the source's); e.g. a "
                        "2- or 4-image network from a 3-image one (first layer interpolated)")
    p.add_argument("--quiet", action="store_true")
    _add_recipe(p)
    p.set_defaults(func=_run_finetune, lr=2e-4, optimizer="adam")


CHECKPOINTS = "checkpoints"
"""Folder beside the shipped ONNX files that holds their training checkpoints (not in the wheel)."""


def shipped_checkpoint(source: str):
    """``models/checkpoints/<name>.keras`` of a shipped network name, else ``source`` as a path."""
    from pathlib import Path

    if Path(source).exists():
        return Path(source)
    from napari_exitwave.inference import find_model

    try:
        card = find_model(source)
    except Exception as exc:  # noqa: BLE001
        raise FileNotFoundError(f"no network or checkpoint {source!r}: {exc}") from exc
    path = card.onnx_path.parent / CHECKPOINTS / f"{card.name}.keras"
    if not path.exists():
        raise FileNotFoundError(f"network {source!r} ships no Keras weights ({path.name}); "
                                "fine-tune from a run directory instead")
    return path


def _run_finetune(args) -> int:
    from .train import TrainConfig, train

    try:
        source = shipped_checkpoint(args.source)
        cfg = TrainConfig(train=args.train, val=args.val, epochs=args.epochs,
                          batch_size=args.batch_size, crop=args.crop or None, seed=args.seed,
                          workers=args.workers, **_recipe_kwargs(args))
        if args.n_images is not None and args.n_images < 1:
            raise ValueError(f"--n-images must be >= 1, got {args.n_images}")
        state = train(cfg, args.out, max_minutes=args.max_minutes,
                      verbose=0 if args.quiet else 1, finetune_from=source,
                      finetune_n_images=args.n_images)
    except (ValueError, FileNotFoundError) as exc:
        print(f"exitwave-train finetune: {exc}", file=sys.stderr)
        return 2
    return _report_run(args, cfg, state)


# --- ship ----------------------------------------------------------------------------------
def _add_ship(subparsers) -> None:
    p = subparsers.add_parser(
        "ship", help="copy a run's checkpoint to models/checkpoints/<name>.keras to resume it",
        description="Write <out>/<name>.keras (weights and optimizer state of the run's last "
                    "epoch) and <out>/<name>.state.json, so that `exitwave-train train "
                    "--init-from <out>/<name>.keras` continues the run and `finetune --from "
                    "<name>` starts from it. The plugin's wheel does not carry them.")
    p.add_argument("run", help="run directory")
    p.add_argument("--name", required=True)
    p.add_argument("--out", default="models/checkpoints")
    p.add_argument("--max-mb", type=float, default=40.0, help="refuse larger files (default: 40)")
    p.set_defaults(func=_run_ship)


def _run_ship(args) -> int:
    from .checkpoint import ship_checkpoint

    try:
        path = ship_checkpoint(args.run, args.out, args.name, max_mb=args.max_mb)
    except (ValueError, FileNotFoundError) as exc:
        print(f"exitwave-train ship: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB) and {path.with_suffix('.state.json').name}")
    return 0


def _add_recover(subparsers) -> None:
    p = subparsers.add_parser(
        "recover", help="rebuild a run directory from a shipped network's card and ONNX file",
        description="When a network's Keras checkpoint is lost (a fresh machine before it was "
                    "shipped), rebuild a run directory from models/<name>.json and its ONNX "
                    "file: the same weights exactly, a fresh optimizer with the card's settings. "
                    "`train` continues it (not bit for bit: the optimizer's moments are gone) "
                    "and `ship` ships it.")
    p.add_argument("card", help="the network's card, e.g. models/mos2.json")
    p.add_argument("--out", required=True, help="run directory to write")
    p.set_defaults(func=_run_recover)


def _run_recover(args) -> int:
    from .checkpoint import recover_run

    try:
        run = recover_run(args.card, args.out)
    except (ValueError, FileNotFoundError, KeyError) as exc:
        print(f"exitwave-train recover: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {run}/last.keras, best.keras and state.json (weights from the ONNX file; "
          "optimizer state fresh)")
    return 0


# --- export -------------------------------------------------------------------------------
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
        from .evaluate import evaluate, headline

        # plots and summary go next to the checkpoint, not into the models folder
        summary = evaluate(src, args.evaluate, src.parent / f"evaluation_{args.name}",
                           max_samples=args.max_samples)
        metrics = headline(summary)
    card = export_checkpoint(src, args.out, args.name, description=args.description,
                             float16=args.float16, metrics=metrics)
    print(f"wrote {Path(args.out) / card['onnx_file']} and {args.name}.json "
          f"(parity {card['training']['onnx_parity_max_abs']:.2e}, sha256 {card['sha256'][:12]})")
    return 0


# --- evaluate -----------------------------------------------------------------------------
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
    from .evaluate import evaluate, headline

    s = evaluate(args.model, args.data, args.out, max_samples=args.max_samples, seed=args.seed)
    print(json.dumps(headline(s), indent=2))
    return 0


# --- estimator ----------------------------------------------------------------------------
def _add_estimator(subparsers) -> None:
    p = subparsers.add_parser(
        "estimator", help="train (and export) the aberration estimator",
        description="Train the small CNN that reads defocus, Cs, C12, C21, focal spread, blur "
                    "and dose off a focal series (napari_exitwave.estimate), on exit waves of "
                    "one or more data sets imaged on the fly; continues OUT when it holds a "
                    "run. With --export NAME, writes <models>/NAME.onnx and its card (kind: "
                    "aberrations) with the per-parameter errors on the validation series.")
    p.add_argument("--train", nargs="+", required=True, help="training data sets (Zarr)")
    p.add_argument("--val", nargs="+", required=True, help="validation data sets (Zarr)")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--max-minutes", type=float, default=20.0)
    p.add_argument("--epochs", type=int, default=1000, help="epochs of --steps batches")
    p.add_argument("--steps", type=int, default=50, help="batches per epoch (default: 50)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--max-val-waves", type=int, default=60,
                   help="validation series per validation data set (default: 60)")
    p.add_argument("--export", metavar="NAME", help="export the best checkpoint as NAME")
    p.add_argument("--models", default="models", help="folder for --export (default: models)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_run_estimator)


def _run_estimator(args) -> int:
    from .estimator import export_estimator, train_estimator

    try:
        state = train_estimator(args.train, args.val, args.out, batch_size=args.batch_size,
                                steps_per_epoch=args.steps, epochs=args.epochs, lr=args.lr,
                                max_minutes=args.max_minutes, seed=args.seed,
                                workers=args.workers, max_val_waves=args.max_val_waves,
                                verbose=0 if args.quiet else 1)
    except (ValueError, FileNotFoundError) as exc:
        print(f"exitwave-train estimator: {exc}", file=sys.stderr)
        return 2
    print(f"{state['epoch']} epochs, best validation loss {state['best_val_loss']:.4f} "
          f"(epoch {state.get('best_epoch')})")
    if args.export:
        path = export_estimator(args.out, args.models, args.export)
        card = json.loads(path.with_suffix(".json").read_text())
        print(f"wrote {path} and {path.with_suffix('.json').name}")
        for k, e in card["metrics"].get("errors", {}).items():
            print(f"  {k:<13} median |error| {e['median_abs_error']:.3g} {e['unit']} "
                  f"(trivial {e['trivial_median_abs_error']:.3g})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="exitwave-train", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_simulate, _add_train, _add_finetune, _add_export, _add_evaluate, _add_ship,
                _add_recover, _add_estimator):
        add(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
