"""A small synthetic stand-in for a simulated data set (Zarr layout of docs/contracts.md).

Weak-phase "flakes": Gaussian atoms on a hexagonal lattice inside a disc, vacuum 1 + 0j,
with a little absorption, so images and exit waves behave like the real MoS2 ones at
a fraction of the cost. Used by the network/training tests only.
"""

from __future__ import annotations

import json

import numpy as np

from napari_exitwave import physics


def toy_wave(rng: np.random.Generator, size: int, sampling: float, spacing: float = 3.2):
    """One exit wave (size, size) and its column positions (m, 2) in A (y, x)."""
    n_side = int(size * sampling / spacing) + 3
    a1 = np.array([0.0, spacing])
    a2 = np.array([spacing * np.sqrt(3) / 2, spacing / 2])
    theta = rng.uniform(0, np.pi)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    centre = np.array([size, size]) * sampling / 2 + rng.uniform(-2, 2, 2)
    radius = rng.uniform(0.3, 0.45) * size * sampling
    pts, kinds = [], []
    for i in range(-n_side, n_side):
        for j in range(-n_side, n_side):
            for k, basis in enumerate((np.zeros(2), (a1 + a2) / 3)):
                p = centre + rot @ (i * a1 + j * a2 + basis)
                if np.linalg.norm(p - centre) < radius and rng.uniform() > 0.05:
                    pts.append(p)
                    kinds.append(k)
    pts = np.asarray(pts).reshape(-1, 2)
    yy, xx = np.mgrid[:size, :size] * sampling
    phase = np.zeros((size, size))
    for p, k in zip(pts, kinds):
        strength = 0.45 if k == 0 else 0.25  # "Mo" vs "S2"
        phase += strength * np.exp(-((yy - p[0]) ** 2 + (xx - p[1]) ** 2) / (2 * 0.3**2))
    wave = np.exp(1j * phase - 0.05 * phase)
    return wave.astype(np.complex64), pts, np.asarray(kinds)


def make_toy_dataset(path, n: int = 8, size: int = 64, sampling: float = 0.2,
                     n_images: int = 3, seed: int = 0) -> str:
    """Write ``n`` toy samples to a Zarr group at ``path``; returns the path."""
    import zarr

    rng = np.random.default_rng(seed)
    waves, targets, images, params, columns = [], [], [], [], []
    for _ in range(n):
        w, pts, kinds = toy_wave(rng, size, sampling)
        t = physics.gaussian_blur(w, sampling, 0.15).astype(np.complex64)
        p = physics.sample_parameters(rng, n_images)
        images.append(physics.simulate_focal_series(w, sampling, p, rng=rng))  # not normalised
        waves.append(w)
        targets.append(t)
        params.append(json.dumps([q.to_dict() for q in p]))
        # exitwave_training.dataset's format: [x_A, y_A, label] per column
        columns.append(json.dumps([[float(p[1]), float(p[0]), "Mo" if k == 0 else "S2"]
                                   for p, k in zip(pts, kinds)]))
    g = zarr.open_group(str(path), mode="w")
    g.attrs["config"] = json.dumps({"name": "toy", "n_images": n_images, "seed": seed, "n": n,
                                    "structure": {"size": size, "sampling": sampling}})
    g.attrs["sampling"] = sampling
    g.attrs["n_images"] = n_images
    g.create_array("wave", data=np.stack(waves))
    g.create_array("target", data=np.stack(targets))
    g.create_array("images", data=np.stack(images).astype(np.float32))
    for name, values in (("params", params), ("columns", columns)):
        arr = g.create_array(name, shape=(n,), chunks=(1,), dtype=str)  # as the real data sets
        for i, v in enumerate(values):
            arr[i] = v
    g.create_array("complete", data=np.ones(n, bool))
    return str(path)
