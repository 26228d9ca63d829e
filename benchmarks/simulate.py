"""Throughput of the data-set generator against a bare abTEM multislice of the same structures.

For every sample the same structure is simulated twice, alternately, in one process on the CPU:

- *bare*: ``abtem.Potential(atoms, gpts, slice_thickness=0.2, parametrization=Lobato(sigmas),
  projection="infinite")`` and ``PlaneWave(energy).multislice(potential, lazy=False)`` - the
  least any exit-wave generator must do;
- *project*: :func:`exitwave_training.dataset.generate_sample` (structure, the same multislice,
  Fourier resampling, the 15 pm target, a 3-image focal series) plus writing the sample into a
  Zarr data set (``_write_sample``, complete flag last).

The overhead is ``(project - bare) / bare`` of the median per-sample times (wall and CPU);
the script exits with status 1 if it exceeds ``--max-overhead`` (20%).

Usage::

    python benchmarks/simulate.py --size 256 --n 10
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time

import numpy as np


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="mos2")
    p.add_argument("--size", type=int, default=256, help="px at --sampling")
    p.add_argument("--sampling", type=float, default=0.105)
    p.add_argument("--n", type=int, default=10, help="samples (after one warm-up)")
    p.add_argument("--max-overhead", type=float, default=0.20)
    p.add_argument("--json", help="write the figures to this JSON file")
    p.add_argument("--no-skip-vacuum", action="store_true",
                   help="run the project's multislice over every vacuum slice too, as the bare "
                        "run does (measures the wrapper alone)")
    args = p.parse_args(argv)

    import abtem
    from abtem.parametrizations import LobatoParametrization

    from exitwave_training.dataset import (DatasetConfig, _write_sample, create_dataset,
                                           generate_sample, sample_seed_sequence)
    from exitwave_training.exitwave import ExitWaveConfig, multislice_gpts
    from exitwave_training.structures import StructureConfig, make_structure

    cfg = DatasetConfig(n=args.n + 1, seed=0,
                        structure=StructureConfig(dataset=args.dataset, size=args.size,
                                                  sampling=args.sampling),
                        exitwave=ExitWaveConfig(device="cpu",
                                                skip_vacuum=not args.no_skip_vacuum))
    ew = cfg.exitwave
    sigma = float(np.sqrt(ew.debye_waller_u2))

    def bare(index):
        ss_structure, _ = sample_seed_sequence(cfg.seed, index).spawn(2)
        atoms = make_structure(cfg.structure, np.random.default_rng(ss_structure), index).atoms
        lx, ly = atoms.cell[0, 0], atoms.cell[1, 1]
        t0, c0 = time.perf_counter(), time.process_time()
        potential = abtem.Potential(atoms, gpts=(multislice_gpts(lx, ew.sampling),
                                                 multislice_gpts(ly, ew.sampling)),
                                    slice_thickness=ew.slice_thickness,
                                    parametrization=LobatoParametrization(sigmas=sigma),
                                    projection="infinite", device="cpu")
        waves = abtem.PlaneWave(energy=ew.energy, device="cpu").multislice(potential, lazy=False)
        np.asarray(waves.array)
        return time.perf_counter() - t0, time.process_time() - c0

    with tempfile.TemporaryDirectory() as tmp:
        group = create_dataset(os.path.join(tmp, "bench.zarr"), cfg)

        def project(index):
            t0, c0 = time.perf_counter(), time.process_time()
            _write_sample(group, generate_sample(cfg, index))
            return time.perf_counter() - t0, time.process_time() - c0

        bare(0), project(0)  # warm-up: FFTW plans, numba compilation, imports
        rows = []
        for i in range(1, args.n + 1):
            b = bare(i)
            q = project(i)
            rows.append((*b, *q))
    t = np.array(rows)
    med = np.median(t, axis=0)
    bare_wall, bare_cpu, proj_wall, proj_cpu = (float(v) for v in med)
    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}, "
                   f"{os.cpu_count()} CPUs, Python {platform.python_version()}, abTEM "
                   f"{abtem.__version__}",
        "dataset": args.dataset, "size_px": args.size, "sampling": args.sampling,
        "multislice_gpts": multislice_gpts(args.size * args.sampling, ew.sampling),
        "n": args.n, "skip_vacuum": not args.no_skip_vacuum,
        "bare_s": bare_wall, "project_s": proj_wall,
        "bare_cpu_s": bare_cpu, "project_cpu_s": proj_cpu,
        "bare_samples_per_s": 1 / bare_wall, "project_samples_per_s": 1 / proj_wall,
        "overhead_wall": proj_wall / bare_wall - 1, "overhead_cpu": proj_cpu / bare_cpu - 1,
    }
    print(json.dumps(result, indent=1))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1)
    ok = min(result["overhead_wall"], result["overhead_cpu"]) <= args.max_overhead
    print(f"overhead {100 * result['overhead_wall']:.1f}% wall, "
          f"{100 * result['overhead_cpu']:.1f}% CPU "
          f"({'OK' if ok else 'above'} the {100 * args.max_overhead:.0f}% limit)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
