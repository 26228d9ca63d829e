"""The training data feed: exit waves in memory, focal series simulated on the fly.

Pipeline position: structures -> exitwave -> dataset -> **feed** -> network -> train -> export
-> evaluate. :func:`load_waves` reads the complete samples of a data set (the Zarr layout of
docs/contracts.md, written by :mod:`~exitwave_training.dataset`) into memory; :class:`FocalSeriesDataset` turns them into ``(images, target)`` batches, drawing fresh
microscope parameters (:func:`napari_exitwave.physics.sample_parameters`) for every series, with
optional drift between the images of a series and a jittered pixel size (the 0.22 A/px
network's 0.215-0.235 A/px). Training and evaluation read data only through this module.

Determinism: the series at position ``k`` of epoch ``e`` comes from
``numpy.random.default_rng([seed, e, k, 0])`` and the sample order of epoch ``e`` from
``default_rng([seed, e])``, so a resumed run sees exactly the series it would have seen.
"""

from __future__ import annotations

import json
import math
import os
import re
from typing import Any

import numpy as np

from napari_exitwave import physics

from .dataset import random_training_example

__all__ = ["load_waves", "FocalSeriesDataset", "shift_series", "random_drift"]


def random_drift(rng: np.random.Generator, n_images: int, max_drift: float) -> np.ndarray:
    """``(n_images, 2)`` shifts (px, (dy, dx)) of length <= ``max_drift``, mean removed."""
    r = max_drift * np.sqrt(rng.uniform(0, 1, n_images))
    a = rng.uniform(0, 2 * np.pi, n_images)
    shifts = np.stack([r * np.sin(a), r * np.cos(a)], axis=1)
    return shifts - shifts.mean(axis=0)


def shift_series(images: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """Shift each image of ``(n, ny, nx)`` by ``shifts[i] = (dy, dx)`` px (Fourier, periodic).

    A positive ``dy`` moves the content down (to larger row indices).
    """
    images = np.asarray(images)
    ky = np.fft.fftfreq(images.shape[-2])[:, None]
    kx = np.fft.fftfreq(images.shape[-1])[None, :]
    out = np.empty_like(images)
    for i, (dy, dx) in enumerate(np.asarray(shifts, float)):
        phase = np.exp(-2j * np.pi * (ky * dy + kx * dx))
        out[i] = np.fft.ifft2(np.fft.fft2(images[i]) * phase).real
    return out


def load_waves(path: str | os.PathLike, max_samples: int | None = None) -> dict[str, Any]:
    """Read the complete samples of a data set (Zarr layout of docs/contracts.md) into memory.

    Returns a dict with ``wave`` and ``target`` (complex64 ``(n, ny, nx)``), ``images``
    (float32 ``(n, n_images, ny, nx)`` or ``None``), ``columns`` (list, or ``None``),
    ``sampling`` (A/px) and ``config`` (the generation configuration).
    """
    import zarr

    path = str(path)
    try:
        g = zarr.open_group(path, mode="r")
    except Exception as e:  # noqa: BLE001
        raise FileNotFoundError(f"cannot open the data set {path!r} as a Zarr group: {e}. "
                                "Make one with `exitwave-train simulate`.") from e
    config = g.attrs.get("config", {})
    if isinstance(config, str):  # exitwave_training.dataset stores it as a JSON string
        config = json.loads(config)
    config = dict(config)
    keys = set(g.array_keys()) if hasattr(g, "array_keys") else set(g.keys())
    for need in ("wave", "target"):
        if need not in keys:
            raise ValueError(f"data set {path!r} has no {need!r} array; is it an exit-wave data set?")
    n = g["wave"].shape[0]
    complete = np.asarray(g["complete"][:], bool) if "complete" in keys else np.ones(n, bool)
    idx = np.flatnonzero(complete)
    if max_samples is not None:
        idx = idx[:max_samples]
    if idx.size == 0:
        raise ValueError(f"data set {path!r} has no complete samples yet")
    # contiguous read, then select (Zarr orthogonal indexing is slow on many chunks)
    hi = int(idx[-1]) + 1
    wave = np.asarray(g["wave"][:hi])[idx].astype(np.complex64)
    target = np.asarray(g["target"][:hi])[idx].astype(np.complex64)
    images = np.asarray(g["images"][:hi])[idx].astype(np.float32) if "images" in keys else None
    columns = _read_columns(g, idx) if "columns" in keys else None
    sampling = _find_sampling(g, config)
    return dict(wave=wave, target=target, images=images, columns=columns, sampling=sampling,
                config=config, path=path, indices=idx)


def _find_sampling(g, config: dict) -> float:
    structure = config.get("structure", {}) if isinstance(config, dict) else {}
    for src in (g.attrs, config, structure):
        for key in ("sampling", "network_sampling", "target_sampling"):
            if key in src and src[key] is not None:
                return float(src[key])
    raise ValueError("the data set does not record its sampling (attrs['sampling'])")


def _read_columns(g, idx) -> list[np.ndarray] | None:
    """Column positions ``(m, 2)`` in A as ``(y, x)`` per sample (``None`` if unreadable).

    :mod:`exitwave_training.dataset` stores a JSON list of ``[x_A, y_A, label]`` per sample;
    dicts with ``x``/``y`` lists are accepted too.
    """
    try:
        raw = g["columns"]
        out = []
        for i in idx:
            item = raw[int(i)]
            item = np.asarray(item).item() if not isinstance(item, (str, bytes)) else item
            out.append(_column_positions(item))
        return out
    except Exception:  # noqa: BLE001
        return None


def _column_positions(item) -> np.ndarray:
    """``(m, 2)`` (y, x) in A from one sample's column record.

    The columns scored are the specimen's: where a sample has columns of other elements, its
    carbon-only columns (``C``, ``C2``, ``C3``: the graphene support under MoS2) are left out,
    so column error and recall describe the Mo/S columns a microscopist looks for (a flake of
    graphene itself keeps its columns). The RMSE still covers the support.
    """
    if isinstance(item, (bytes, str)):
        item = json.loads(item)
    if isinstance(item, dict):
        return np.stack([np.asarray(item["y"], float), np.asarray(item["x"], float)], 1)
    if len(item) == 0:
        return np.zeros((0, 2))
    support = [len(c) > 2 and re.fullmatch(r"C\d*", str(c[2])) is not None for c in item]
    if any(support) and not all(support):
        item = [c for c, sup in zip(item, support) if not sup]
    xy = np.array([[float(c[0]), float(c[1])] for c in item]).reshape(-1, 2)
    return xy[:, ::-1].copy()


def _largest_multiple(n: int, m: int) -> int:
    return (n // m) * m


try:
    import keras as _keras

    _PyDataset = _keras.utils.PyDataset
except Exception:  # noqa: BLE001 - keras missing: the class below is unusable anyway
    _PyDataset = object


class FocalSeriesDataset(_PyDataset):
    """Batches ``(images (B, H, W, n_images), target (B, H, W, 2))`` simulated on the fly.

    Parameters
    ----------
    wave, target : complex (n, ny, nx)
        Exit waves to image and the network's targets.
    sampling : float
        A/px of both.
    n_images, batch_size : int
    crop : int or None
        Square crop side (random position) for training; ``None`` and ``fixed=True``: the
        centred largest region whose sides are multiples of ``multiple``.
    multiple : int
        ``2**depth`` of the network.
    seed : int
    ranges : ParameterRanges
    fixed : bool
        Validation mode: the same series every epoch (stored ``images`` if given).
    images : float (n, n_images, ny, nx), optional
        Pre-drawn focal series (validation).
    steps : int, optional
        Batches per epoch (default: one pass).
    workers : int
        Threads preparing batches (``keras.utils.PyDataset`` workers).
    drift : float
        Largest drift between the images of a training series, px (0: none). Each image is
        shifted by a random vector of length <= ``drift`` (the mean shift removed, so the
        target stays in the series' mean frame), as an imperfect alignment leaves them.
    sampling_range : (float, float), optional
        Pixel size (A) of each training series drawn from this range while the network is
        told ``sampling`` (calibration error, e.g. 0.215-0.235 for the 0.22 A/px network).
    crops : int
        Training crops cut from each simulated focal series (1: one series per sample). The
        feed simulates the whole stored field for one crop; ``crops=2`` halves its CPU time
        for the price of half as many microscope draws.
    """

    def __init__(self, wave, target, sampling: float, n_images: int, batch_size: int,
                 crop: int | None, multiple: int, seed: int = 0,
                 ranges: physics.ParameterRanges | None = None, fixed: bool = False,
                 images: np.ndarray | None = None, steps: int | None = None, workers: int = 1,
                 drift: float = 0.0, sampling_range: tuple[float, float] | None = None,
                 crops: int = 1):
        super().__init__(workers=workers, use_multiprocessing=False,
                         max_queue_size=max(2, 2 * workers))
        self.wave = wave
        self.target = target
        self.sampling = float(sampling)
        self.n_images = int(n_images)
        self.batch_size = int(batch_size)
        self.multiple = int(multiple)
        ny, nx = wave.shape[-2:]
        side = _largest_multiple(min(ny, nx), self.multiple)
        if side < self.multiple:
            raise ValueError(f"samples of {ny}x{nx} px are smaller than the network's size "
                             f"multiple {self.multiple}")
        if crop is not None:
            if crop % self.multiple:
                raise ValueError(f"crop ({crop}) must be a multiple of 2**depth = {self.multiple}")
            side = min(int(crop), side)
        self.crop = side
        self.full = (_largest_multiple(ny, self.multiple), _largest_multiple(nx, self.multiple))
        self.seed = int(seed)
        self.ranges = ranges or physics.ParameterRanges()
        self.fixed = bool(fixed)
        if not (math.isfinite(drift) and drift >= 0):
            raise ValueError(f"drift must be >= 0 px, got {drift}")
        self.drift = float(drift)
        if int(crops) != crops or crops < 1:
            raise ValueError(f"crops (per simulated series) must be an integer >= 1, got {crops}")
        self.crops = int(crops)
        self.sampling_range = None if sampling_range is None else tuple(map(float, sampling_range))
        if images is not None and images.shape[1] != self.n_images:
            images = None
        self.images = images
        n = len(wave)
        self.steps = int(steps) if steps else max(1, math.ceil(n / self.batch_size))
        if fixed:
            self.steps = max(1, math.ceil(n / self.batch_size))
        self.epoch = 0

    def __len__(self) -> int:
        return self.steps

    def order(self) -> np.ndarray:
        """Sample index of every position of the current epoch."""
        n = len(self.wave)
        total = self.steps * self.batch_size
        if self.fixed:
            return np.arange(total) % n
        rng = np.random.default_rng([self.seed, self.epoch])
        reps = math.ceil(total / n)
        return np.concatenate([rng.permutation(n) for _ in range(reps)])[:total]

    def sample(self, position: int, index: int) -> tuple[np.ndarray, np.ndarray]:
        """One ``(images (H, W, n), target (H, W, 2))`` pair."""
        return self._samples(position, index, 1)[0]

    def _samples(self, position: int, index: int, n_crops: int
                 ) -> list[tuple[np.ndarray, np.ndarray]]:
        """``n_crops`` pairs cut from one simulated focal series of sample ``index``."""
        epoch = 0 if self.fixed else self.epoch
        rng = np.random.default_rng([self.seed, epoch, position, 1 if self.fixed else 0])
        target = self.target[index]
        if self.fixed and self.images is not None:
            full_series = self.images[index]
        else:
            full_series, target, _, _ = random_training_example(
                self.wave[index], target, self.sampling, rng, self.n_images, self.ranges,
                None if self.fixed else self.sampling_range)
        ny, nx = target.shape
        pairs = []
        for _ in range(n_crops):
            series = full_series
            if self.fixed:
                h, w = self.full
                y0, x0 = (ny - h) // 2, (nx - w) // 2
            else:
                h = w = self.crop
                y0 = int(rng.integers(0, ny - h + 1))
                x0 = int(rng.integers(0, nx - w + 1))
                if self.drift > 0:  # drawn after the crop: the same crops with and without drift
                    series = shift_series(series, random_drift(rng, self.n_images, self.drift))
            series = physics.normalize_series(series[:, y0:y0 + h, x0:x0 + w])
            t = target[y0:y0 + h, x0:x0 + w]
            pairs.append((np.moveaxis(series, 0, -1).astype(np.float32),
                          np.stack([t.real, t.imag], axis=-1).astype(np.float32)))
        return pairs

    def __getitem__(self, i: int):
        order = self.order()
        start = i * self.batch_size
        stop = min(start + self.batch_size, len(order))
        k = 1 if self.fixed else self.crops
        pairs = []
        for p in range(start, stop, k):  # one simulated series per k crops
            pairs.extend(self._samples(p, int(order[p]), min(k, stop - p)))
        return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])

    def on_epoch_end(self):  # the epoch is set explicitly by train()
        pass
