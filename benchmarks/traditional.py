"""Time per Gerchberg-Saxton iteration (and one Wiener solve) for an 11-image focal series.

    .venv/bin/python benchmarks/traditional.py                    # 512 and 1024 px, CPU (+ GPU)
    .venv/bin/python benchmarks/traditional.py --sizes 512 --iterations 5 --json out.json

Each size gets a synthetic weak-phase object imaged at 11 defoci 1 nm apart (Cs -10 um, 10 A
focal spread, 0.1 A/px), then ``traditional.gerchberg_saxton`` runs ``--iterations`` iterations
per array module (NumPy with SciPy's threaded FFT; CuPy when it sees a GPU) and precision
(complex128, complex64). The time per iteration is the median of the per-iteration times the
function records (after a warm-up run on the GPU). Prints a Markdown table with the date, the
machine and the thread count, for docs/traditional.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from _doc_block import update_block
from napari_exitwave import _array, physics, traditional


def weak_phase_series(size: int, n_images: int = 11, sampling: float = 0.1, seed: int = 0):
    rng = np.random.default_rng(seed)
    ky, kx = physics.spatial_frequencies((size, size), sampling)
    noise = np.fft.ifft2(np.fft.fft2(rng.standard_normal((size, size)))
                         * np.exp(-(kx**2 + ky**2) / (2 * 0.6**2))).real
    wave = np.exp(1j * 0.3 * noise / noise.std())
    defocus = np.linspace(-50, 50, n_images)
    params = [physics.MicroscopeParameters(defocus=d, Cs=-10e4, focal_spread=10.0)
              for d in defocus]
    return physics.simulate_focal_series(wave, sampling, params), sampling, defocus


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


DOC = Path(__file__).resolve().parents[1] / "docs" / "traditional.md"
HEADING = "# Traditional exit-wave reconstruction\n"  # of docs/traditional.md, should it be missing


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    ap.add_argument("--iterations", type=int, default=5)
    ap.add_argument("--n-images", type=int, default=11)
    ap.add_argument("--dtypes", nargs="+", default=["complex128", "complex64"])
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--write", action="store_true",
                    help="put the table into docs/traditional.md (between its markers)")
    args = ap.parse_args(argv)

    modules = [("numpy", np)]
    cp = _array._cupy_if_usable()
    if cp is not None:
        modules.append(("cupy", cp))
    rows = []
    for size in args.sizes:
        images, sampling, defocus = weak_phase_series(size, args.n_images)
        for name, xp in modules:
            for dt in args.dtypes:
                kw = dict(Cs=-10e4, focal_spread=10.0, xp=xp, dtype=np.dtype(dt),
                          normalize=False)
                if xp is not np:  # warm-up: CUDA context, FFT plans
                    traditional.gerchberg_saxton(images, sampling, defocus, n_iter=2, **kw)
                t = time.perf_counter()
                traditional.wiener_reconstruction(images, sampling, defocus, **kw)
                t_wiener = time.perf_counter() - t
                t = time.perf_counter()
                res = traditional.gerchberg_saxton(images, sampling, defocus,
                                                   n_iter=args.iterations, **kw)
                t_total = time.perf_counter() - t
                per_it = statistics.median(res.times)
                rows.append(dict(size=size, n_images=args.n_images, module=name,
                                 device=res.device, dtype=dt,
                                 s_per_iteration=per_it, wiener_s=t_wiener,
                                 gs_total_s=t_total, iterations=args.iterations))
                print(f"{size} px {name} {dt}: {per_it:.3f} s/iteration, Wiener "
                      f"{t_wiener:.3f} s", file=sys.stderr, flush=True)

    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    threads = os.cpu_count()
    machine = f"{cpu_name()}, {threads} logical CPUs visible"
    if cp is not None:
        machine += f"; GPU {cp.cuda.runtime.getDeviceProperties(0)['name'].decode()}"
    lines = [f"Measured {date} on {machine} (numpy {np.__version__}, SciPy FFT with all "
             f"threads), {args.iterations} iterations, median per iteration; the Wiener solve "
             "includes building the 11 transfer functions (physics.aberration_phase). "
             "The machine's 2 "
             "cores were shared with other jobs, so the CPU figures are upper bounds.", "",
             "| frame (px) | images | device | precision | s / GS iteration | Wiener solve (s) |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['size']} | {r['n_images']} | {r['device']} ({r['module']}) | "
                     f"{r['dtype']} | {r['s_per_iteration']:.3f} | {r['wiener_s']:.3f} |")
    print("\n" + "\n".join(lines))
    if args.write:
        update_block(DOC, "\n".join(lines), "<!-- benchmark_traditional:start -->",
                     "<!-- benchmark_traditional:end -->", HEADING)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"date": date, "machine": machine, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
