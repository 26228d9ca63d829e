"""``napari-exitwave``: exit-wave reconstruction without a GUI.

Each subcommand is added by an ``_add_<name>(subparsers)`` function (listed in
:func:`build_parser`) that sets ``func(args) -> int``. Every command writes its results with
:func:`napari_exitwave.results.write_result`, so ``reconstruct``, ``watch`` and ``batch`` write
the same files.

Options and the output folder are checked before anything is computed. Bad input (a bad option,
an unusable ``--out``, a 2-D image, the wrong number of images, NaNs, a pixel size 2x off, a
truncated DM file, a corrupt ONNX file, CUDA asked for but missing, an earlier result without
``--overwrite``...) prints one line ``napari-exitwave: error: ...`` and exits with status 2;
``--debug`` shows the traceback. Exit statuses: docs/headless.md.

Units of everything typed here: defocus in A (abTEM convention, ``defocus = -C10``, positive =
underfocus), ``--sampling`` and ``--min-distance`` in A, ``--Cs`` in um, ``--focal-spread`` in A.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ._cli_checks import check_options

EXIT_BAD_INPUT = 2
EXIT_UNEXPECTED = 1


def _subcommand(subparsers, name: str, func, help: str) -> argparse.ArgumentParser:
    """A subcommand whose description is the docstring of its function."""
    import inspect

    return subparsers.add_parser(name, help=help, description=inspect.cleandoc(func.__doc__))


def _common(parser: argparse.ArgumentParser, func, quiet: str | None = None) -> None:
    """Options every subcommand has (``-q`` with ``quiet``'s help), and its function."""
    if quiet:
        parser.add_argument("-q", "--quiet", action="store_true", help=quiet)
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the full traceback on errors")
    parser.set_defaults(func=func)


def _progress_printer(quiet: bool):
    if quiet:
        return None
    state = {"last": -1}

    def progress(fraction: float, message: str) -> None:
        pct = int(100 * fraction)
        if pct >= state["last"] + 10 or fraction >= 1.0:
            state["last"] = pct
            print(f"  [{pct:3d}%] {message}", file=sys.stderr, flush=True)

    return progress


def _check_out(out: str) -> bool:
    """Check (create) the output folder; True when this call created it."""
    from .results import check_output_folder

    created = not Path(out).exists()
    check_output_folder(out)
    return created


# --- reconstruct ---------------------------------------------------------------------------
def _add_reconstruct(subparsers) -> None:
    p = _subcommand(subparsers, "reconstruct", _cmd_reconstruct,
                    "reconstruct the exit wave of one focal series")
    p.add_argument("series", help="DM3/DM4/TIFF stack, folder of single images, or the word "
                                  "'sample' for the bundled simulated MoS2 series ("
                                  "'sample:mos2-graphene-022' for the 0.22 A/px one)")
    p.add_argument("--model", help="network name (see `napari-exitwave models`) or .onnx/.json "
                                   "path; default: mos2 when installed")
    p.add_argument("--out", default="out", help="output folder (default: ./out)")
    p.add_argument("--method", choices=("network", "gs", "wiener"), default="network")
    p.add_argument("--defocus", type=float, nargs="+", metavar="A",
                   help="defocus of each image in A (abTEM: defocus = -C10, positive = "
                        "underfocus), overriding the file's; needed by gs/wiener")
    p.add_argument("--sampling", type=float, metavar="A/px",
                   help="pixel size of the series in A/px, overriding the file's calibration")
    p.add_argument("--Cs", type=float, default=None, metavar="um",
                   help="spherical aberration in um for gs/wiener (default 0)")
    p.add_argument("--focal-spread", type=float, default=None, metavar="A",
                   help="focal spread in A for gs/wiener (default 0)")
    p.add_argument("--tile", type=int, default=None,
                   help="inference tile size in px (default: the whole frame in one pass up "
                        "to 1024 px, else 512 px tiles)")
    p.add_argument("--overlap", type=int, default=64, help="tile overlap in px (64)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="ONNX Runtime device: auto (CUDA if it works, else CPU), cpu, or cuda "
                        "(error if CUDA is unavailable)")
    p.add_argument("--no-align", action="store_true", help="do not align the images")
    p.add_argument("--min-distance", type=float, default=1.0, metavar="A",
                   help="smallest distance between two atomic columns in A (1.0)")
    p.add_argument("--threshold", type=float, default=0.1,
                   help="peak threshold relative to the maximum of |psi - 1| (0.1)")
    p.add_argument("--no-peaks", action="store_true", help="skip peaks CSV and Argand plot")
    p.add_argument("--force", action="store_true",
                   help="run even when the pixel size is 2x or more from the network's or "
                        "unknown (by default that is an error)")
    p.add_argument("--name", help="stem of the output files (default: the input's name)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier result of the same name (by default an error)")
    _check_options(p)
    p.add_argument("--residual-images", action="store_true",
                   help="also write <name>_residual.tif: the physics residual of every image "
                        "(float32 (n, ny, nx), in units of the expected shot noise)")
    _common(p, _cmd_reconstruct, "no progress messages")


def _check_options(p) -> None:
    p.add_argument("--no-check", action="store_true",
                   help="skip the physics check (the microscope estimate and the residual of "
                        "the exit wave against the images)")
    p.add_argument("--dose", type=float, default=None, metavar="e/A^2",
                   help="electron dose per image in e/A^2 for the physics residual's noise "
                        "model (default: the estimator's)")
    p.add_argument("--refine", action="store_true",
                   help="refine the exit wave against every image with the physics check's "
                        "microscope parameters (napari_exitwave.refine; off by default, "
                        "seconds per 256 px frame)")
    p.add_argument("--no-aberration-fit", action="store_true",
                   help="use the estimated aberrations as they are: do not fit the defocus, "
                        "C12, C21, Cs and detector MTF to the images with the exit wave held "
                        "fixed (saves 2-6 s per series; the check's verdict is then "
                        "'not conclusive')")


def _print_check(rec) -> None:
    """The microscope estimate as a short table and the physics residual in one line."""
    from ._check import residual_line

    est = rec.estimate
    if est is not None:
        print(f"microscope estimate ({est.model}):")
        for name, value, rng in est.rows():
            print(f"  {name:<13} {value:>14}" + (f"   (trained on {rng})" if rng else ""))
    fit = rec.metadata.get("aberration_fit")
    if fit:
        print(fit["summary"])
    ref = rec.metadata.get("refinement") or {}
    if "strength" in ref:
        n = ref["iterations"]
        print(f"refined against every image ({ref['parameters_from']} parameters, strength "
              f"{ref['strength']:g}, {n} iteration{'' if n == 1 else 's'}): chi-square per "
              f"pixel {ref['chi2_start']:.3g} -> {ref['chi2_end']:.3g}")
    if rec.residual is not None:
        src = (rec.metadata.get("physics_residual") or {}).get("parameters_from")
        print(residual_line(rec.residual.reduced_chi2, src, rec.residual.misfit_rms))


def _load_series(spec: str, sampling):
    from .io import read_series

    if (spec == "sample" or spec.startswith("sample:")) and not Path(spec).exists():
        from .data import load_sample_series
        from .errors import ExitWaveError

        try:
            series = load_sample_series(spec.partition(":")[2] or "mos2")
        except ValueError as e:
            raise ExitWaveError(str(e)) from None
    else:
        series = read_series(spec)
    if sampling is not None:
        series.sampling = float(sampling)
        series.units = "Å"
    return series


def _default_model(model, n_images: int | None = None):
    """``model``, else the installed network for a series of ``n_images`` images."""
    from .errors import ModelError
    from .model_cards import DEFAULT_MODEL, default_model_for, list_models

    if model:
        return model
    models = list_models()
    name = default_model_for(n_images, cards=models)
    if name is not None:
        return name
    installed = ", ".join(f"{n} ({c.n_images} images)" for n, c in sorted(models.items()))
    if n_images is not None and models:
        raise ModelError(f"no --model given and no installed network takes {n_images} images "
                         f"(installed: {installed}); give a focal series of that length or "
                         "--model NAME|PATH of a network for it")
    raise ModelError(f"no --model given and no default '{DEFAULT_MODEL}' model is installed "
                     f"(installed: {installed or 'none'}); give --model NAME|PATH")


def _cmd_reconstruct(args) -> int:
    """Align, resample and normalise a focal series, run a network (or the Gerchberg-Saxton /
    Wiener baseline), and write the exit wave (TIFF, NumPy, Zarr), its JSON, the atomic-column
    peaks (CSV) and an Argand plot (PNG). An earlier result is kept unless --overwrite."""
    created = _check_out(args.out)
    try:
        return _reconstruct(args)
    except BaseException:
        if created:  # leave nothing behind on an error
            try:
                Path(args.out).rmdir()
            except OSError:
                pass
        raise


def _reconstruct(args) -> int:
    from .reconstruct import reconstruct_series
    from .results import OutputExistsError, existing_outputs, write_result

    series = _load_series(args.series, args.sampling)
    bundled = series.source == "sample" or series.source.startswith("sample:")
    stem = args.name or (series.source.replace(":", "_") if bundled else Path(series.source).stem)
    peaks = not args.no_peaks
    if not args.overwrite and (found := existing_outputs(args.out, stem, peaks,
                                                         args.residual_images)):
        raise OutputExistsError(f"{found[0]} exists (an earlier result); pass --overwrite to "
                                "replace it, or choose another --out or --name")
    model = (_default_model(args.model, series.n_images) if args.method == "network"
             else args.model)
    Cs = None if args.Cs is None else args.Cs * 1e4  # um -> A
    progress = _progress_printer(args.quiet)
    rec = reconstruct_series(series, model, method=args.method, align=not args.no_align,
                             defocus=args.defocus, Cs=Cs, focal_spread=args.focal_spread,
                             tile=args.tile or "auto", overlap=args.overlap,
                             providers=args.device,
                             strict=not args.force, progress=progress,
                             physics_check=False if args.no_check else "auto", dose=args.dose,
                             refine=args.refine,
                             fit_aberrations=not args.no_aberration_fit)
    written = write_result(rec, args.out, stem, peaks=peaks, min_distance=args.min_distance,
                           threshold=args.threshold, extra={"source": series.source},
                           overwrite=args.overwrite, residual_images=args.residual_images)
    s = f"{rec.sampling:.4g} A/px" if rec.sampling else "unknown sampling"
    print(f"series:  {series.source} ({series.n_images} x {series.shape[0]} x {series.shape[1]}"
          f", {series.sampling:.4g} A/px)" if series.sampling else
          f"series:  {series.source} ({series.n_images} x {series.shape[0]} x {series.shape[1]}, "
          "pixel size unknown)")
    print(f"method:  {rec.method}" + (f" ({rec.model_name})" if rec.model_name else ""))
    print(f"device:  {rec.device}" + (f" ({', '.join(rec.metadata.get('providers', []))})"
                                      if rec.metadata.get("providers") else ""))
    print(f"result:  {rec.exit_wave.shape[0]} x {rec.exit_wave.shape[1]} px at {s}")
    print("timings: " + ", ".join(f"{k} {v:.3f} s" for k, v in rec.timings.items()))
    _print_check(rec)
    for w in rec.warnings:
        print(f"warning: {w}")
    if args.residual_images and rec.residual is None:
        print("warning: no residual images written: the physics residual was not computed")
    for kind, path in written.items():
        print(f"wrote:   {path}")
    return 0


# --- models --------------------------------------------------------------------------------
def _add_models(subparsers) -> None:
    p = _subcommand(subparsers, "models", _cmd_models,
                    "list installed networks and their model cards")
    p.add_argument("--dir", action="append", help="model folder(s) to list instead")
    p.add_argument("--verify", action="store_true",
                   help="check the sha256 of every file each network loads (a card without "
                        "one: unverified)")
    p.add_argument("--json", action="store_true", help="print the cards as JSON")
    _common(p, _cmd_models)


def _cmd_models(args) -> int:
    """List the networks found in the model folders (NAPARI_EXITWAVE_MODELS, the repository's
    models/, the package's models/)."""
    from .errors import ModelError
    from .inference import list_models, models_dirs

    models = list_models(args.dir, kind=None)  # exit-wave networks and estimators
    if args.json:
        print(json.dumps({n: c.to_dict() for n, c in models.items()}, indent=2, default=str))
        return 0
    if not models:
        dirs = ", ".join(str(d) for d in models_dirs(args.dir)) or "none found"
        print(f"no models installed (searched: {dirs})")
        return 0
    bad = 0
    for name, card in sorted(models.items()):
        status = ""
        if args.verify:
            try:
                status = f"  [{card.verify()}]"
            except ModelError as e:
                status = f"  [BROKEN: {e}]"
                bad += 1
        print(card.summary() + status)
        print(f"    {card.onnx_path}")
    return EXIT_BAD_INPUT if bad else 0


# --- watch ---------------------------------------------------------------------------------
def _network_options(p) -> None:
    p.add_argument("--model", help="network name (see `napari-exitwave models`) or .onnx/.json "
                                   "path; default: mos2 when installed")
    p.add_argument("--out", required=True, help="output folder (results, ledger, errors)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="ONNX Runtime device (auto: CUDA if it works, else CPU)")
    p.add_argument("--tile", type=int, default=None,
                   help="inference tile size in px (default: the whole frame in one pass up "
                        "to 1024 px, else 512 px tiles; see docs/performance.md)")
    p.add_argument("--overlap", type=int, default=64, help="tile overlap in px (64)")
    p.add_argument("--no-align", action="store_true", help="do not align the images")
    p.add_argument("--no-peaks", action="store_true",
                   help="do not write <name>_peaks.csv and <name>_argand.png")
    p.add_argument("--min-distance", type=float, default=1.0, metavar="A",
                   help="smallest distance between two atomic columns in A (1.0)")
    p.add_argument("--threshold", type=float, default=0.1,
                   help="peak threshold relative to the maximum of |psi - 1| (0.1)")
    p.add_argument("--force", action="store_true",
                   help="reconstruct even when the pixel size is 2x or more from the "
                        "network's or unknown (by default such a series fails)")
    _check_options(p)


def _chi2_text(rec) -> str:
    """``", reduced chi-square 1.08"`` of a checked reconstruction, else ``""``."""
    r = getattr(rec, "residual", None)
    return "" if r is None else f", reduced chi-square {r.reduced_chi2:.3g}"


def _model_fn(args):
    from .batch import ModelReconstructor

    return ModelReconstructor(_default_model(args.model), align=not args.no_align,
                              tile=args.tile or "auto", overlap=args.overlap,
                              providers=args.device, strict=not args.force,
                              physics_check=False if args.no_check else "auto", dose=args.dose,
                              refine=args.refine,
                              fit_aberrations=not args.no_aberration_fit)


def _add_watch(subparsers) -> None:
    p = _subcommand(subparsers, "watch", _cmd_watch,
                    "reconstruct focal series live as the microscope writes them")
    p.add_argument("folder", help="the folder the acquisition software writes into")
    _network_options(p)
    p.add_argument("--group-by", choices=("count", "pattern", "defocus"), default="count",
                   help="count: every --n-images images; pattern: the 'series' group of "
                        "--pattern in the file name; defocus: a new series when the defocus "
                        "in the metadata goes back (default: count)")
    p.add_argument("--n-images", type=int, default=None,
                   help="images per series (default: the model's, else 3; with --group-by "
                        "defocus an optional maximum)")
    p.add_argument("--pattern", help=r"regular expression on file names, e.g. "
                                     r"'(?P<series>.+)_(?P<index>\d+)\.tif$'")
    p.add_argument("--timeout", type=float, default=None, metavar="S",
                   help="--group-by defocus: close a series after S s without a new image")
    p.add_argument("--poll", type=float, default=1.0, metavar="S", help="poll interval (1 s)")
    p.add_argument("--idle-exit", type=float, default=None, metavar="S",
                   help="stop once nothing arrived for S s and nothing is pending")
    _common(p, _cmd_watch, "no per-series messages")


def _cmd_watch(args) -> int:
    """Watch FOLDER (polling; works on network shares), read each new image once it is
    completely written, group the images into focal series and reconstruct each series into
    --out. Stop with Ctrl-C; run it again with the same --out to resume (finished series are not
    redone). Errors go to <out>/errors.jsonl and the watch goes on, also when --out is full or
    read-only for a while (results are kept and written later)."""
    import threading

    from .live import FolderWatcher, Grouping

    _check_out(args.out)
    fn = _model_fn(args)
    n = args.n_images
    if n is None and args.group_by != "defocus":
        try:
            from .inference import find_model

            n = find_model(fn.model).n_images
        except Exception:  # noqa: BLE001 - the model error shows at the first series
            n = 3
    grouping = Grouping(args.group_by, n_images=n, pattern=args.pattern,
                        timeout=args.timeout if args.timeout is not None
                        else (max(10.0, 5 * args.poll) if args.group_by == "defocus" else None))
    watcher = FolderWatcher(args.folder, args.out, grouping, fn, poll_interval=args.poll,
                            peaks=not args.no_peaks, min_distance=args.min_distance,
                            threshold=args.threshold)
    if not args.quiet:
        watcher.series_done.connect(lambda r: print(
            f"done:    {r.series_id} ({', '.join(r.files)}) in {r.elapsed:.2f} s on "
            f"{getattr(r.reconstruction, 'device', '?')}{_chi2_text(r.reconstruction)} -> "
            f"{r.outputs[0]}", flush=True))
        watcher.series_failed.connect(lambda r: print(
            f"FAILED:  {r.series_id} ({', '.join(r.files)}): {r.error}", flush=True))
        watcher.file_error.connect(lambda name, msg: print(f"skipped: {name}: {msg}",
                                                           flush=True))
        watcher.error.connect(lambda msg: print(f"warning: {msg}", flush=True))
    print(f"watching {args.folder} -> {args.out} (group by {args.group_by}"
          f"{f', {n} images' if n else ''}; Ctrl-C to stop)", flush=True)
    stop = threading.Event()
    try:
        watcher.run(stop, idle_exit=args.idle_exit)
    except KeyboardInterrupt:
        stop.set()
    print(f"stopped: {watcher.n_done} series done, {watcher.n_failed} failed"
          + (f" (see {watcher.errors_path})" if watcher.n_failed else ""), flush=True)
    return 0


# --- batch ---------------------------------------------------------------------------------
def _add_batch(subparsers) -> None:
    p = _subcommand(subparsers, "batch", _cmd_batch,
                    "reconstruct many focal series (a folder or a glob), in parallel")
    p.add_argument("inputs", nargs="+", help="folder(s), file(s) or quoted glob pattern(s)")
    _network_options(p)
    p.add_argument("--workers", type=int, default=1, help="parallel workers on this machine")
    p.add_argument("--overwrite", action="store_true",
                   help="replace earlier results of the same name (by default such a series "
                        "fails and its files are kept)")
    p.add_argument("--scheduler", metavar="ADDRESS", help="address of a running Dask scheduler")
    p.add_argument("--backend", choices=("auto", "serial", "processes", "dask"), default="auto",
                   help="auto: dask with --scheduler, processes with --workers > 1, else serial")
    _common(p, _cmd_batch, "no per-series messages")


def _cmd_batch(args) -> int:
    """Reconstruct every focal series in INPUTS (a folder: each stack file or sub-folder of
    single images is one series; or a quoted glob such as 'data/**/*.dm4'), on this machine in
    parallel (--workers) or on an existing Dask cluster (--scheduler tcp://host:8786; inputs and
    --out must then be on a file system the workers share). A failed series never stops the
    others; the summary table is printed and written to <out>/summary.csv. Exit status 2 when any
    series failed."""
    from .batch import run_batch, summary_table

    _check_out(args.out)

    def progress(r, k, n):
        if not args.quiet:
            print(f"[{k}/{n}] {r.status:6s} {r.file} ({r.time:.2f} s)"
                  + (f": {r.error}" if r.error else ""), file=sys.stderr, flush=True)

    results = run_batch(args.inputs if len(args.inputs) > 1 else args.inputs[0], args.out,
                        reconstruct_fn=_model_fn(args), workers=args.workers,
                        backend=args.backend, scheduler=args.scheduler,
                        peaks=not args.no_peaks, overwrite=args.overwrite,
                        min_distance=args.min_distance, threshold=args.threshold,
                        progress=progress)
    if not results:
        print(f"no focal series found in {' '.join(args.inputs)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(summary_table(results))
    print(f"summary: {Path(args.out) / 'summary.csv'}")
    return EXIT_BAD_INPUT if any(r.status != "done" for r in results) else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="napari-exitwave",
        description="Exit-wave reconstruction from HRTEM focal series (headless).")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    from . import __version__

    parser.add_argument("--version", action="version", version=f"napari-exitwave {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_reconstruct, _add_models, _add_watch, _add_batch):
        add(sub)
    return parser


def main(argv=None) -> int:
    """Entry point; returns the exit status (0 ok, 2 bad input, 1 unexpected, 130 interrupt)."""
    from .errors import ExitWaveError

    parser = build_parser()
    args = parser.parse_args(argv)
    debug = bool(getattr(args, "debug", False))
    try:
        check_options(args)  # before anything is read or computed
        return int(args.func(args) or 0)
    except (ExitWaveError, FileNotFoundError) as e:
        if debug:
            raise
        print(f"napari-exitwave: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("napari-exitwave: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # an unexpected failure: one line, the details with --debug
        if debug:
            raise
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        print(f"napari-exitwave: unexpected error: {type(e).__name__}: {msg} "
              "(rerun with --debug for the traceback)", file=sys.stderr)
        return EXIT_UNEXPECTED


if __name__ == "__main__":
    sys.exit(main())
