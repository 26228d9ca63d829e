"""Latency of the whole reconstruction path and of its parts, for one 3-image focal series.

    .venv/bin/python benchmarks/inference.py                      # untrained "paper" network
    .venv/bin/python benchmarks/inference.py --model mos2         # a shipped model (name/path)
    .venv/bin/python benchmarks/inference.py --sizes 512 1024 --preset medium --repeat 3

For each frame size (px, square) it writes a synthetic 3-image series as a TIFF, then times

- the end-to-end path the CLI/widget/live mode run: ``io.read_series`` ->
  ``reconstruct.reconstruct_series`` (align, resample, normalise, tiled ONNX inference) ->
  ``peaks.find_peaks`` on ``|psi - 1|``;
- each part alone: read, align, resample, normalise, infer, peaks;
- Keras ``model.predict`` on the same normalised (padded) input, as the anchor, and the ONNX
  session on the same whole frame (with the max |ONNX - Keras| difference as a parity check);

on ONNX Runtime's CPU provider (and CUDA when this onnxruntime has it). The peak resident memory
of the end-to-end path at the largest size is measured in a fresh subprocess (``VmHWM``).

Timing does not depend on the weights, so without ``--model`` (or when the shipped model is not
there yet) an untrained network of the same architecture is built and exported with the training
package's own export code; the report says which was used.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------ input data
def synthetic_series(size: int, n_images: int = 3, seed: int = 0) -> np.ndarray:
    """A hexagonal lattice (~3.2 A period at 0.1 A/px) with noise, drifting between images."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    k = 2 * np.pi / 27.0  # px period of the lattice fringes
    images = []
    for i in range(n_images):
        dy, dx = rng.uniform(-3, 3, 2)
        phase = sum(np.cos(k * ((xx + dx) * np.cos(a) + (yy + dy) * np.sin(a)))
                    for a in (0, np.pi / 3, 2 * np.pi / 3))
        im = 1.0 + (0.05 + 0.02 * i) * phase + rng.normal(0, 0.05, (size, size))
        images.append(im.astype(np.float32))
    return np.stack(images)


# ------------------------------------------------------------------------------ the model
def system_info() -> dict:
    import onnxruntime as ort

    cpu = platform.processor() or ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "host": platform.node(), "cpu": cpu, "cores": os.cpu_count(),
            "python": platform.python_version(), "onnxruntime": ort.__version__,
            "providers": ort.get_available_providers(), "numpy": np.__version__}


def prepare_model(args, workdir: Path) -> dict:
    """The ONNX model (card path) and a Keras network of the same architecture.

    Returns ``{"card": path, "keras": model or None, "note": str, "config": dict}``.
    """
    from exitwave_training.network import PRESETS, NetworkConfig, build_network

    if args.model:
        from napari_exitwave.inference import find_model

        try:
            card = find_model(args.model)
        except Exception as exc:  # noqa: BLE001
            print(f"!! model {args.model!r} not usable ({exc}); falling back to an untrained "
                  f"{args.preset!r} network", file=sys.stderr)
        else:
            net = dict((card.training or {}).get("network") or {})
            cfg = NetworkConfig.from_dict(net) if net else None
            keras_model, how = None, "no Keras anchor (architecture unknown)"
            if args.keras and Path(args.keras).exists():
                from exitwave_training.train import load_checkpoint

                # a run directory: the best checkpoint, the one `exitwave-train export` ships
                # (comparing against last.keras measures two different networks, not the export)
                anchor = Path(args.keras)
                if anchor.is_dir():
                    anchor = anchor / "best.keras"
                keras_model, _ = load_checkpoint(anchor)
                how = f"Keras anchor: checkpoint {anchor}"
            elif cfg is not None:
                keras_model = build_network(cfg)
                how = f"Keras anchor: untrained network of the same architecture {cfg.to_dict()}"
            return {"card": str(card.path if hasattr(card, "path") and card.path else args.model),
                    "model_arg": args.model, "keras": keras_model,
                    "note": f"model {card.name!r} ({card.onnx_path.name}, sha256 "
                            f"{card.sha256[:12]}); {how}",
                    "config": cfg.to_dict() if cfg else net, "trained": True}
    from exitwave_training.export import export_onnx, write_model_card

    cfg = NetworkConfig(n_images=3, **PRESETS[args.preset])
    model = build_network(cfg)
    onnx_path = export_onnx(model, workdir / f"bench_{args.preset}.onnx")
    json_path = write_model_card(onnx_path, workdir / f"bench_{args.preset}.json",
                                 name=f"bench_{args.preset}", sampling=args.network_sampling,
                                 n_images=3, defocus_step=50.0, size_multiple=2 ** cfg.depth,
                                 description="untrained, for timing only")
    return {"card": str(json_path), "model_arg": str(json_path), "keras": model,
            "note": f"untrained {args.preset!r} network {cfg.to_dict()} built and exported with "
                    "exitwave_training (weights do not change the timing); Keras anchor: the "
                    "same in-memory network", "config": cfg.to_dict(), "trained": False}


def make_reconstructor(model_arg: str, provider: str, threads: int | None):
    """An OnnxReconstructor, its session rebuilt with explicit thread settings if asked."""
    import onnxruntime as ort

    from napari_exitwave.inference import OnnxReconstructor

    rec = OnnxReconstructor(model_arg, providers=provider, verify=False)
    if threads:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        rec.session = ort.InferenceSession(str(rec.card.onnx_path), sess_options=opts,
                                           providers=rec.session.get_providers())
    return rec


# ------------------------------------------------------------------------------ timing
_MIN: dict[str, float] = {}


def _timeit(fn, repeat: int, key: str | None = None):
    """Median wall time of ``repeat`` runs (the minimum goes to ``_MIN[key]``)."""
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    if key:
        _MIN[key] = min(times)
    return statistics.median(times), out


def bench_size(size: int, rec, args, workdir: Path, keras_model=None) -> dict:
    from napari_exitwave import physics
    from napari_exitwave.align import align_series
    from napari_exitwave.io import read_series, write_series_tiff
    from napari_exitwave.peaks import find_peaks
    from napari_exitwave.reconstruct import reconstruct_series

    from napari_exitwave.inference import auto_tile

    card = rec.card
    tile = args.tile or auto_tile((size, size), args.input_sampling, card.sampling,
                                  card.size_multiple)
    path = workdir / f"series_{size}.tif"
    write_series_tiff(path, synthetic_series(size), sampling=args.input_sampling,
                      defocus=[-50.0, 0.0, 50.0])
    # large frames: one timed run each, no warm-up (minutes per run on a small CPU)
    r = args.repeat if size <= args.repeat_max else 1
    row: dict = {"size": size, "device": rec.device, "runs": r, "tile": tile}

    def end_to_end():
        s = read_series(path)
        w = reconstruct_series(s, rec, tile=tile, overlap=args.overlap)
        p = find_peaks(np.abs(w.exit_wave - 1), sampling=w.sampling, min_distance=1.0)
        return w, p

    if size <= args.repeat_max:
        end_to_end()  # warm-up: first-run allocations, ORT kernel selection
    cpu0 = time.process_time()
    row["total"], (wave, peaks) = _timeit(end_to_end, r, "total")
    row["total_min"] = _MIN["total"]
    row["total_cpu"] = (time.process_time() - cpu0) / r  # CPU s per run, all threads
    row["load_avg_1min"] = os.getloadavg()[0]
    row["n_peaks"] = len(peaks)
    row["recon_timings"] = {k: round(v, 4) for k, v in wave.timings.items()}

    row["read"], series = _timeit(lambda: read_series(path), r)
    row["align"], (aligned, _) = _timeit(lambda: align_series(series.images), r)
    row["resample"], res = _timeit(
        lambda: physics.resample(aligned, series.sampling, card.sampling).astype(np.float32), r)
    row["normalise"], norm = _timeit(lambda: physics.normalize_series(res), r)
    row["infer"], _ = _timeit(lambda: rec.predict(norm, tile=tile, overlap=args.overlap), r)
    row["peaks"], _ = _timeit(lambda: find_peaks(np.abs(wave.exit_wave - 1), sampling=wave.sampling,
                                                 min_distance=1.0), r)
    row["net_px"] = int(norm.shape[-1])

    # the whole (padded) frame in one session call, and Keras predict on the same input
    m = int(card.size_multiple)
    ny, nx = norm.shape[-2:]
    x = np.pad(np.moveaxis(norm, 0, -1), ((0, (-ny) % m), (0, (-nx) % m), (0, 0)),
               mode="reflect")[None].astype(np.float32)
    if size <= args.whole_max:
        run = lambda: rec.session.run([rec.output_name], {rec.input_name: x})[0]  # noqa: E731
        run()
        row["onnx_whole"], onnx_out = _timeit(run, r)
        if keras_model is not None and size <= args.keras_max:
            keras_model.predict(x, verbose=0)  # trace once
            row["keras_predict"], keras_out = _timeit(lambda: keras_model.predict(x, verbose=0), r)
            row["parity_max_abs"] = float(np.max(np.abs(onnx_out - keras_out)))
            row["parity_rel"] = row["parity_max_abs"] / float(np.max(np.abs(keras_out)))
    return row


_PROBE = """
import json, sys
import numpy as np
from napari_exitwave.inference import OnnxReconstructor
from napari_exitwave.io import read_series
from napari_exitwave.peaks import find_peaks
from napari_exitwave.reconstruct import reconstruct_series

def mib():
    d = dict(line.split(":", 1) for line in open("/proc/self/status"))
    return {k: int(d[k].split()[0]) / 1024 for k in ("VmRSS", "VmHWM")}

path, model, tile, overlap = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
rec = OnnxReconstructor(model, providers="cpu", verify=False)
before = mib()
w = reconstruct_series(read_series(path), rec, tile=tile, overlap=overlap)
pk = find_peaks(np.abs(w.exit_wave - 1), sampling=w.sampling, min_distance=1.0)
after = mib()
print(json.dumps({"rss_after_imports_and_model_MiB": round(before["VmRSS"]),
                  "peak_rss_MiB": round(after["VmHWM"]),
                  "peak_above_baseline_MiB": round(after["VmHWM"] - before["VmRSS"]),
                  "n_peaks": len(pk)}))
"""


def memory_probe(model_arg: str, size: int, args, workdir: Path) -> dict:
    """Peak RSS (``VmHWM``) of read -> reconstruct -> peaks at ``size`` px, in a fresh process
    that imports no TensorFlow (the plugin's footprint, not the benchmark's)."""
    from napari_exitwave.io import write_series_tiff

    from napari_exitwave.inference import find_model
    from napari_exitwave.inference import auto_tile

    card = find_model(model_arg)
    tile = args.tile or auto_tile((size, size), args.input_sampling, card.sampling,
                                  card.size_multiple)
    path = workdir / f"memory_{size}.tif"
    write_series_tiff(path, synthetic_series(size), sampling=args.input_sampling)
    out = subprocess.run([sys.executable, "-c", _PROBE, str(path), model_arg, str(tile),
                          str(args.overlap)], capture_output=True, text=True, timeout=900)
    path.unlink()
    if out.returncode:
        return {"error": out.stderr[-2000:]}
    return dict(json.loads(out.stdout.strip().splitlines()[-1]), tile=tile)


# ------------------------------------------------------------------------------ report
PARTS = ("read", "align", "resample", "normalise", "infer", "peaks")


def markdown(rows: list[dict]) -> str:
    head = ("| provider | size px | net px | tile | total s (median) | total s (min) | CPU s | "
            + " | ".join(PARTS)
            + " | ONNX whole frame s | Keras predict s | max abs ONNX-Keras / max abs Keras "
              "| peaks |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        def f(k, fmt="{:.3f}"):
            return fmt.format(r[k]) if k in r else "-"
        lines.append(f"| {r['provider']} | {r['size']} | {r['net_px']} | {r['tile']} | "
                     f"**{r['total']:.2f}** | {f('total_min', '{:.2f}')} | "
                     f"{f('total_cpu', '{:.1f}')} | "
                     + " | ".join(f(p) for p in PARTS)
                     + f" | {f('onnx_whole', '{:.2f}')} | {f('keras_predict', '{:.2f}')} | "
                       f"{f('parity_rel', '{:.1e}')} | {r['n_peaks']} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="model name or .json/.onnx path (default: an untrained "
                                    "network of --preset)")
    ap.add_argument("--keras", help="a Keras checkpoint (.keras or run dir) of --model, for the "
                                    "anchor (default: the same architecture, untrained)")
    ap.add_argument("--preset", default="paper", help="architecture of the fallback network "
                                                       "(exitwave_training.network.PRESETS)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[512, 1024, 2048, 4096])
    ap.add_argument("--providers", nargs="+", default=None,
                    help="cpu and/or cuda (default: cpu, plus cuda when available)")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per item (median)")
    ap.add_argument("--repeat-max", type=int, default=1024,
                    help="larger sizes get one run and no warm-up")
    ap.add_argument("--tile", type=int, default=None,
                    help="inference tile (px); default: inference.auto_tile, as watch/batch use "
                         "(one pass up to 1024 px, else 512 px tiles)")
    ap.add_argument("--overlap", type=int, default=64)
    ap.add_argument("--threads", type=int, default=None, help="ORT intra-op threads")
    ap.add_argument("--input-sampling", type=float, default=0.1, help="A/px of the series")
    ap.add_argument("--network-sampling", type=float, default=0.105,
                    help="A/px of the fallback network's card")
    ap.add_argument("--keras-max", type=int, default=1024,
                    help="largest size for the Keras anchor (whole frame in memory)")
    ap.add_argument("--whole-max", type=int, default=1024,
                    help="largest size for the whole-frame ONNX call")
    ap.add_argument("--memory-size", type=int, default=None,
                    help="size for the peak-memory probe (default: the largest of --sizes; "
                         "0: skip)")
    ap.add_argument("--json", help="write all results to this JSON file")
    args = ap.parse_args(argv)

    import onnxruntime as ort

    info = system_info()
    providers = args.providers or (["cpu"] + (["cuda"] if "CUDAExecutionProvider"
                                              in ort.get_available_providers() else []))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        model = prepare_model(args, workdir)
        print(f"# {info['date']}, {info['cpu']}, {info['cores']} cores, onnxruntime "
              f"{info['onnxruntime']}\n# {model['note']}", flush=True)
        for prov in providers:
            rec = make_reconstructor(model["model_arg"], prov, args.threads)
            for size in args.sizes:
                row = bench_size(size, rec, args, workdir, keras_model=model["keras"])
                row["provider"] = prov
                rows.append(row)
                print(json.dumps(row), flush=True)
        mem_size = args.memory_size if args.memory_size is not None else max(args.sizes)
        mem = (memory_probe(model["model_arg"], mem_size, args, workdir)
               if mem_size else None)
    table = markdown(rows)
    print(table)
    if mem:
        print(f"\npeak memory, {mem_size} px end to end (CPU): {mem}")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"system": info, "model": {k: v for k, v in model.items() if k != "keras"},
             "args": vars(args), "rows": rows, "memory": mem, "memory_size": mem_size},
            indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
