"""Write the plugin's sample data: simulated focal series and their truth.

Run from the repository root (needs the ``training`` extra: abTEM, ASE)::

    python scripts/make_sample_data.py                              # the MoS2 sample
    python scripts/make_sample_data.py --sample mos2-graphene-022   # MoS2/graphene, 0.22 A/px

Files written for ``--sample mos2`` (0.105 A/px, 256 x 256 px, a 26.9 A field of view); the
``mos2-graphene-022`` sample (0.22 A/px, 128 x 128 px, 28.2 A, MoS2 on graphene) writes the same
files with the prefix ``sample_mosg22_`` instead of ``sample_``:

- ``sample_series.tif``: 3 float32 images (vacuum ~1), an ImageJ hyperstack. The pixel size is
  the ImageJ calibration (nm, which Fiji shows) and, exactly in A, with the defoci (A, abTEM
  convention ``defocus = -C10``, positive = underfocus) and all microscope parameters in the
  JSON stored under the ImageJ metadata key ``exitwave`` (read back by
  ``napari_exitwave.io.read_series``: ``series.sampling``, ``series.defocus``); every slice is
  also labelled ``defocus=<value> A``.
- ``sample_exit_wave.tif``: the true exit wave folded with the 15 pm Gaussian (the network's
  target), real and imaginary channels (``napari_exitwave.io.read_exit_wave``).
- ``sample_exit_wave.npy``: the same target as a complex64 array ``(256, 256)``.
- ``sample_columns.csv``: the projected atomic columns: ``x_A, y_A, row, col, label``
  (``row = y_A / sampling``, ``col = x_A / sampling``; labels Mo, S2, S).
- ``sample_parameters.json``: the microscope parameters of each image, the structure and the
  simulation settings.

The structure is sample ``SEED`` of the ``mos2`` family (defects, jitter and tilt included), the
microscope parameters are fixed, realistic values inside Table 1 of the paper at a moderate
dose of 1e4 e/A^2.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "src" / "napari_exitwave" / "data"

SEED = 7
SAMPLES = {  # name (napari_exitwave.data.SAMPLES: file prefix, pixel size) -> structure, size (px)
    "mos2": dict(dataset="mos2", size=256,
                 description="simulated MoS2 nanoflake (abTEM multislice, 50 keV), "
                             "3-image focal series"),
    "mos2-graphene-022": dict(dataset="mos2-graphene", size=128,
                              description="simulated MoS2 nanoflake on graphene at 0.22 A/px "
                                          "(abTEM multislice, 50 keV), 3-image focal series"),
    "mos2-film": dict(dataset="mos2-graphene", size=256, structure={"support": {"film": 1.0}},
                      description="simulated MoS2 nanoflake on a continuous graphene film "
                                  "(abTEM multislice, 50 keV), 3-image focal series"),
}
DEFOCI = (-60.0, -10.0, 40.0)  # A, abTEM convention (defocus = -C10), 5 nm steps
MICROSCOPE = dict(
    Cs=-8e4,  # -8 um
    astigmatism=6.0, astigmatism_angle=0.6,  # C12 (A), phi12 (rad)
    coma=150.0, coma_angle=2.0,  # C21 (A), phi21 (rad)
    focal_spread=10.0,  # A
    blur=1.0, blur_unit="px",  # std of the Gaussian image blur: 1 px of the image grid (Table 1)
    dose=1e4,  # e/A^2
    mtf_c1=0.1, mtf_c2=0.15, mtf_c3=1.2,
    energy=50e3,
)


def make(out: Path = OUT, seed: int = SEED, sample: str = "mos2") -> dict:
    from exitwave_training.exitwave import ExitWaveConfig, simulate_exit_wave
    from exitwave_training.structures import StructureConfig, make_structure
    from napari_exitwave import io, physics

    from napari_exitwave.data import SAMPLES as BUNDLED

    spec = SAMPLES[sample]
    sampling, prefix = BUNDLED[sample]["sampling"], BUNDLED[sample]["prefix"]
    structure_config = StructureConfig(dataset=spec["dataset"], size=spec["size"],
                                       sampling=sampling, flake_fraction=(0.85, 1.0),
                                       **spec.get("structure", {}))
    rng = np.random.default_rng(seed)
    structure = make_structure(structure_config, rng)
    exitwave_config = ExitWaveConfig(device="cpu")
    ew = simulate_exit_wave(structure.atoms, sampling, exitwave_config)
    params = [physics.MicroscopeParameters(defocus=d, **MICROSCOPE) for d in DEFOCI]
    images = physics.simulate_focal_series(ew.wave, sampling, params, None,
                                           np.random.default_rng(seed + 1)).astype(np.float32)

    out.mkdir(parents=True, exist_ok=True)
    info = {
        "description": spec["description"],
        "generator": "scripts/make_sample_data.py",
        "seed": seed,
        "microscope": [p.to_dict() for p in params],
        "defocus_convention": "abTEM: defocus = -C10 in A; positive is underfocus",
        "lengths": "A; angles in rad; dose in e/A^2; Cs = C30 in A",
        "structure": {k: v for k, v in structure.info.items()},
        "structure_config": structure_config.to_dict(),
        "exitwave_config": exitwave_config.to_dict(),
        "target": "exit wave folded with a 0.15 A Gaussian, vacuum = 1",
    }
    io.write_series_tiff(out / f"{prefix}_series.tif", images, sampling=sampling, defocus=DEFOCI,
                         metadata={"microscope": info["microscope"], "seed": seed,
                                   "description": info["description"]})
    io.write_exit_wave_tiff(out / f"{prefix}_exit_wave.tif", ew.target, sampling,
                            metadata={"description": info["target"], "seed": seed})
    np.save(out / f"{prefix}_exit_wave.npy", ew.target.astype(np.complex64))
    with open(out / f"{prefix}_columns.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["x_A", "y_A", "row", "col", "label"])
        for (x, y), lab in zip(structure.columns_xy, structure.columns_label):
            w.writerow([f"{x:.4f}", f"{y:.4f}", f"{y / sampling:.3f}", f"{x / sampling:.3f}", lab])
    with open(out / f"{prefix}_parameters.json", "w") as fh:
        json.dump(info, fh, indent=1, default=float)
    return info


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=OUT, help=f"output folder (default: {OUT})")
    p.add_argument("--seed", type=int, default=SEED)
    p.add_argument("--sample", choices=sorted(SAMPLES), default="mos2")
    args = p.parse_args(argv)
    info = make(args.out, args.seed, args.sample)
    from napari_exitwave.data import SAMPLES as BUNDLED

    files = sorted(args.out.glob(BUNDLED[args.sample]["prefix"] + "_[a-z]*"))
    total = sum(f.stat().st_size for f in files)
    for f in files:
        print(f"{f.stat().st_size / 1e3:8.1f} kB  {f}")
    print(f"{total / 1e6:.2f} MB in total; {info['structure']['n_atoms']} atoms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
