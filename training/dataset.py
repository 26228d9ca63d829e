"""Simulated training sets in chunked Zarr: generation (serial or Dask) and reading.

A data set is a Zarr group (layout in docs/contracts.md and docs/simulation.md):

==============  ====================================  ==========================================
array           shape, dtype                          content
==============  ====================================  ==========================================
``wave``        ``(n, ny, nx)`` complex64             exit wave at the network's sampling
``target``      ``(n, ny, nx)`` complex64             ``wave`` folded with the 15 pm Gaussian
``images``      ``(n, n_images, ny, nx)`` float32     one focal series per sample (not normalised,
                                                      vacuum ~1)
``params``      ``(n,)`` str                          JSON list of the microscope parameters of
                                                      each image (``MicroscopeParameters`` dicts)
``columns``     ``(n,)`` str                          JSON list of ``[x_A, y_A, label]`` atomic
                                                      columns in the frame of ``wave``
``info``        ``(n,)`` str                          JSON dict: what structure was made
``complete``    ``(n,)`` bool                         set last, once a sample is fully written
==============  ====================================  ==========================================

``attrs["config"]`` holds the whole :class:`DatasetConfig` (with the seed); ``attrs`` also
hold ``format_version``, ``sampling``, ``n_images`` and the array conventions. Every data array
is chunked one sample per chunk, so a sample is written (and overwritten on resume) without
touching any other; ``complete`` is chunked by 1024 and written only by the driver process (the
local store writes each chunk atomically). One generator per data set at a time.

Reproducibility: sample ``i`` is made from ``numpy.random.SeedSequence(seed, spawn_key=(i,))``
alone (:func:`sample_seed_sequence`), so any sample can be regenerated independently of the
others, of the order of generation and of the number of workers.

Generation (:func:`generate_dataset`) writes from the driver process only (workers return
arrays), so a local or remote Dask cluster needs no shared file system. An interrupted run is
resumed by running the same command again: samples whose ``complete`` flag is set are kept, the
others are (re)made.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from napari_exitwave import physics

from .exitwave import ExitWaveConfig, simulate_exit_wave
from .structures import StructureConfig, make_structure

__all__ = [
    "FORMAT_VERSION",
    "DatasetConfig",
    "Sample",
    "sample_seed_sequence",
    "generate_sample",
    "create_dataset",
    "generate_dataset",
    "ExitWaveDataset",
    "random_focal_series",
    "random_training_example",
    "estimate_bytes_per_sample",
]

FORMAT_VERSION = 1


@dataclasses.dataclass
class DatasetConfig:
    """Everything that defines a data set; stored in ``attrs["config"]``.

    ``n`` samples made from ``seed``; structures from ``structure`` (its ``size`` and
    ``sampling`` fix the grid of every array), exit waves from ``exitwave``, and one focal
    series of ``n_images`` images per sample with parameters drawn from ``ranges``.
    """

    n: int = 1000
    seed: int = 0
    n_images: int = 3
    structure: StructureConfig = dataclasses.field(default_factory=StructureConfig)
    exitwave: ExitWaveConfig = dataclasses.field(default_factory=ExitWaveConfig)
    ranges: physics.ParameterRanges = dataclasses.field(default_factory=physics.ParameterRanges)

    def __post_init__(self):
        if isinstance(self.structure, dict):
            self.structure = StructureConfig.from_dict(self.structure)
        if isinstance(self.exitwave, dict):
            self.exitwave = ExitWaveConfig.from_dict(self.exitwave)
        if isinstance(self.ranges, dict):
            self.ranges = physics.ParameterRanges.from_dict(self.ranges)
        if int(self.n) != self.n or self.n < 1:
            raise ValueError(f"n (number of samples) must be a positive integer, got {self.n}")
        if int(self.seed) != self.seed or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed}")
        if int(self.n_images) != self.n_images or self.n_images < 1:
            raise ValueError(f"n_images must be a positive integer, got {self.n_images}")
        self.n, self.seed, self.n_images = int(self.n), int(self.seed), int(self.n_images)
        if self.structure.sampling < self.exitwave.sampling:
            raise ValueError(
                f"the data-set sampling {self.structure.sampling} A/px is finer than the "
                f"multislice sampling {self.exitwave.sampling} A; use a coarser sampling or a "
                "finer --multislice-sampling")
        # the images are formed at the energy of the exit wave
        self.ranges.energy = float(self.exitwave.energy)

    @property
    def sampling(self) -> float:
        return float(self.structure.sampling)

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.structure.size), int(self.structure.size))

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, "seed": self.seed, "n_images": self.n_images,
                "structure": self.structure.to_dict(), "exitwave": self.exitwave.to_dict(),
                "ranges": self.ranges.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DatasetConfig":
        return cls(**d)

    def fingerprint(self) -> str:
        """What must match for a resume (everything except ``n``, which may grow)."""
        d = self.to_dict()
        d.pop("n")
        d["exitwave"].pop("device", None)  # CPU and GPU runs may continue each other
        return json.dumps(d, sort_keys=True)


@dataclasses.dataclass
class Sample:
    """One sample of a data set (see the module docstring for the fields)."""

    index: int
    wave: np.ndarray
    target: np.ndarray
    images: np.ndarray
    params: list[physics.MicroscopeParameters]
    columns_xy: np.ndarray
    columns_label: list[str]
    info: dict[str, Any]
    sampling: float


def sample_seed_sequence(seed: int, index: int) -> np.random.SeedSequence:
    """The seed of sample ``index`` of a data set with ``seed``; independent of everything else."""
    return np.random.SeedSequence(entropy=int(seed), spawn_key=(int(index),))


def random_focal_series(wave: np.ndarray, sampling: float, rng: np.random.Generator,
                        n_images: int = 3, ranges: physics.ParameterRanges | None = None
                        ) -> tuple[np.ndarray, list[physics.MicroscopeParameters]]:
    """A fresh focal series of an exit wave: Table 1 parameters drawn from ``rng``.

    This is what training calls each epoch on stored waves (cheap: no multislice).
    Returns ``(images float32 (n_images, ny, nx), params)``; images are not normalised.
    """
    params = physics.sample_parameters(rng, n_images, ranges)
    images = physics.simulate_focal_series(np.asarray(wave), sampling, params, None, rng)
    return images.astype(np.float32), params


def _crop_or_pad(array: np.ndarray, shape: tuple[int, int], fill: complex) -> np.ndarray:
    """Centre-crop or pad (with ``fill``) the last two axes to ``shape``."""
    out = np.full(array.shape[:-2] + tuple(shape), fill, dtype=array.dtype)
    src, dst = [], []
    for n_in, n_out in zip(array.shape[-2:], shape):
        if n_in >= n_out:
            a = (n_in - n_out) // 2
            src.append(slice(a, a + n_out))
            dst.append(slice(0, n_out))
        else:
            a = (n_out - n_in) // 2
            src.append(slice(0, n_in))
            dst.append(slice(a, a + n_in))
    out[..., dst[0], dst[1]] = array[..., src[0], src[1]]
    return out


def random_training_example(wave: np.ndarray, target: np.ndarray, sampling: float,
                            rng: np.random.Generator, n_images: int = 3,
                            ranges: physics.ParameterRanges | None = None,
                            sampling_range: tuple[float, float] | None = None
                            ) -> tuple[np.ndarray, np.ndarray, list[physics.MicroscopeParameters], float]:
    """A fresh focal series and its matching target, optionally at a random pixel size.

    Without ``sampling_range`` this is :func:`random_focal_series` plus the stored target.
    With it (Table 1 of the paper draws the "resolution" in 0.10-0.11 A), a pixel size is
    drawn uniformly from the range; wave and target are Fourier-resampled to it (the field of
    view is kept) and centre-cropped or padded with vacuum (1 + 0j) back to the stored shape,
    so the network sees atoms at slightly different scales and learns to tolerate calibration
    errors. Returns ``(images float32 (n_images, ny, nx), target complex64 (ny, nx), params,
    sampling used)``.
    """
    wave = np.asarray(wave)
    target = np.asarray(target)
    used = float(sampling)
    if sampling_range is not None:
        lo, hi = sampling_range
        if not 0 < lo <= hi:
            raise ValueError(f"sampling_range must satisfy 0 < lo <= hi, got {sampling_range}")
        new = float(rng.uniform(lo, hi))
        both, used = physics.fourier_resample(np.stack([wave, target]), sampling, new)
        both = _crop_or_pad(both, wave.shape[-2:], 1 + 0j)
        wave, target = both[0], both[1]
    images, params = random_focal_series(wave, used, rng, n_images, ranges)
    return images, target.astype(np.complex64), params, used


def generate_sample(config: DatasetConfig | dict, index: int) -> dict[str, Any]:
    """Make sample ``index`` of a data set: structure -> exit wave -> focal series.

    Returns a dict of ``wave``, ``target``, ``images`` (arrays) and ``params``, ``columns``,
    ``info`` (JSON strings), ready for :func:`_write_sample`. Pure function of
    ``(config, index)``.
    """
    if isinstance(config, dict):
        config = DatasetConfig.from_dict(config)
    if not 0 <= index < config.n:
        raise IndexError(f"sample index {index} out of range for a data set of {config.n}")
    t0 = time.perf_counter()
    ss_structure, ss_images = sample_seed_sequence(config.seed, index).spawn(2)
    structure = make_structure(config.structure, np.random.default_rng(ss_structure), index=index)
    t1 = time.perf_counter()
    ew = simulate_exit_wave(structure.atoms, config.sampling, config.exitwave)
    t2 = time.perf_counter()
    images, params = random_focal_series(ew.wave, ew.sampling, np.random.default_rng(ss_images),
                                         config.n_images, config.ranges)
    t3 = time.perf_counter()
    info = dict(structure.info)
    info.update({"index": int(index), "device": ew.device,
                 "multislice_gpts": list(ew.multislice_gpts),
                 "multislice_sampling": ew.multislice_sampling,
                 "timings_s": {"structure": t1 - t0, "multislice": t2 - t1, "images": t3 - t2}})
    return {
        "index": int(index),
        "wave": ew.wave,
        "target": ew.target,
        "images": images,
        "params": json.dumps([p.to_dict() for p in params]),
        "columns": json.dumps(structure.columns_records()),
        "info": json.dumps(info, default=float),
    }


def estimate_bytes_per_sample(config: DatasetConfig) -> int:
    """Upper bound of the stored size of one sample (uncompressed arrays + JSON)."""
    ny, nx = config.shape
    return ny * nx * (8 + 8 + 4 * config.n_images) + 16384


def _open_group(path, mode):
    import zarr

    return zarr.open_group(os.fspath(path), mode=mode)


def create_dataset(path: str | os.PathLike, config: DatasetConfig, overwrite: bool = False):
    """Create the Zarr group of a data set, or open an existing one with the same configuration.

    An existing data set made with a different configuration is an error (``ValueError``)
    unless ``overwrite`` (then it is deleted). A larger ``n`` than stored grows the arrays,
    keeping every finished sample.
    """
    import zarr

    path = os.fspath(path)
    if os.path.exists(path) and overwrite:
        shutil.rmtree(path)
    if os.path.exists(path):
        try:
            group = zarr.open_group(path, mode="r+")
            stored = DatasetConfig.from_dict(json.loads(group.attrs["config"]))
        except Exception as exc:  # noqa: BLE001
            raise ValueError(f"{path!r} exists but is not an exit-wave data set ({exc}); "
                             "choose another --out or pass --overwrite") from exc
        if stored.fingerprint() != config.fingerprint():
            raise ValueError(
                f"{path!r} holds a data set made with a different configuration; resume with "
                "the same options, choose another --out, or pass --overwrite to replace it")
        if config.n < stored.n:
            raise ValueError(f"{path!r} holds {stored.n} samples; asked for fewer ({config.n}): "
                             "use the same --n to resume, or --overwrite")
        if config.n > stored.n:
            for name in ("wave", "target", "images", "params", "columns", "info", "complete"):
                arr = group[name]
                arr.resize((config.n,) + arr.shape[1:])
            group.attrs["config"] = json.dumps(config.to_dict())
        return group
    from zarr.codecs import BloscCodec

    group = zarr.open_group(path, mode="w")
    n, (ny, nx), k = config.n, config.shape, config.n_images
    # lz4 with bit shuffling: as small as zstd for these floats and several times faster
    fast = dict(compressors=BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle"))
    group.create_array("wave", shape=(n, ny, nx), chunks=(1, ny, nx), dtype="complex64",
                       fill_value=0, **fast)
    group.create_array("target", shape=(n, ny, nx), chunks=(1, ny, nx), dtype="complex64",
                       fill_value=0, **fast)
    group.create_array("images", shape=(n, k, ny, nx), chunks=(1, k, ny, nx), dtype="float32",
                       fill_value=0, **fast)
    for name in ("params", "columns", "info"):
        group.create_array(name, shape=(n,), chunks=(1,), dtype=str)
    # Only the driver writes (one sample at a time) and the local store writes chunks
    # atomically, so the flags can share chunks: reading the mask then touches few files.
    group.create_array("complete", shape=(n,), chunks=(min(n, 1024),), dtype=bool,
                       fill_value=False)
    group.attrs.update({
        "format_version": FORMAT_VERSION,
        "config": json.dumps(config.to_dict()),
        "sampling": config.sampling,
        "n_images": config.n_images,
        "energy": config.exitwave.energy,
        "axes": "sample, [image], y, x; x = col * sampling, y = row * sampling (A)",
        "columns_format": "JSON list of [x_A, y_A, label] per sample",
        "params_format": "JSON list of MicroscopeParameters dicts (one per image; abTEM "
                         "convention: defocus = -C10, lengths in A)",
        "generator": "exitwave_training.dataset",
    })
    return group


def _write_sample(group, result: dict[str, Any]) -> None:
    """Write one sample; its ``complete`` flag last."""
    i = result["index"]
    group["wave"][i] = result["wave"]
    group["target"][i] = result["target"]
    group["images"][i] = result["images"]
    group["params"][i] = result["params"]
    group["columns"][i] = result["columns"]
    group["info"][i] = result["info"]
    group["complete"][i] = True


def _check_disk_space(path: str, n_missing: int, config: DatasetConfig) -> None:
    need = n_missing * estimate_bytes_per_sample(config)
    probe = os.path.abspath(path)
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    free = shutil.disk_usage(probe).free
    if need > free:
        raise OSError(
            f"not enough disk space for the data set: {n_missing} samples need up to "
            f"{need / 1e9:.2f} GB at {probe!r}, only {free / 1e9:.2f} GB free; free space, "
            "choose another --out, or generate fewer/smaller samples (--n, --size)")


def generate_dataset(path: str | os.PathLike, config: DatasetConfig, *,
                     scheduler: str | None = "local", workers: int = 2,
                     overwrite: bool = False, progress: bool = True,
                     indices: Iterable[int] | None = None,
                     callback: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Generate (or resume) a data set at ``path``.

    Parameters
    ----------
    path : str
        The Zarr group (a directory, conventionally ``*.zarr``).
    config : DatasetConfig
    scheduler : str or None
        ``"local"`` (default): a ``dask.distributed.LocalCluster`` of ``workers`` processes;
        ``"serial"`` or ``None``: in this process, no Dask; anything else: the address of an
        existing ``dask.distributed`` scheduler (``tcp://host:8786``).
    workers : int
        Worker processes of the local cluster.
    overwrite : bool
        Delete an existing data set at ``path`` first.
    progress : bool
        Show a tqdm progress bar.
    indices : iterable of int, optional
        Only these samples (default: all that are not complete).
    callback : callable, optional
        Called with each sample index once it is complete (after its flag is written).

    Returns
    -------
    dict with ``n``, ``done`` (complete samples), ``generated`` (this run), ``seconds`` and
    ``samples_per_second``.
    """
    t0 = time.perf_counter()
    path = os.fspath(path)
    group = create_dataset(path, config, overwrite=overwrite)
    complete = np.asarray(group["complete"][:], dtype=bool)
    todo = np.flatnonzero(~complete) if indices is None else np.array(
        [i for i in indices if not complete[i]], dtype=int)
    _check_disk_space(path, len(todo), config)
    if len(todo) and config.structure.dataset == "2d":
        from .structures import materials_for

        materials_for(config.structure)  # fail early on a bad database, in the driver
    cfg = config.to_dict()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.n, initial=int(complete.sum()), unit="sample",
                   desc=f"simulating {os.path.basename(path)}")
    generated = 0

    def done(result):
        nonlocal generated
        _write_sample(group, result)
        generated += 1
        if bar is not None:
            bar.update(1)
        if callback is not None:
            callback(result["index"])

    try:
        if scheduler in (None, "serial", "none") or len(todo) == 0:
            for i in todo:
                done(generate_sample(config, int(i)))
        else:
            _generate_distributed(cfg, todo, done, scheduler, workers)
    finally:
        if bar is not None:
            bar.close()
    n_done = int(np.sum(group["complete"][:]))
    seconds = time.perf_counter() - t0
    return {"n": config.n, "done": n_done, "generated": generated, "seconds": seconds,
            "samples_per_second": generated / seconds if seconds > 0 else float("nan"),
            "path": path}


def _generate_distributed(cfg: dict, todo: Sequence[int], done: Callable, scheduler: str,
                          workers: int) -> None:
    from dask.distributed import Client, LocalCluster, as_completed

    cluster = None
    if scheduler == "local":
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               dashboard_address=None)
        client = Client(cluster)
    else:
        try:
            client = Client(scheduler, timeout="20s")
        except Exception as exc:  # noqa: BLE001
            raise ValueError(f"cannot connect to the Dask scheduler at {scheduler!r}: {exc}") from exc
    try:
        n_workers = max(1, len(client.scheduler_info().get("workers", {})) or workers)
        in_flight = 4 * n_workers  # bounded, so results never pile up in memory
        pending = iter(int(i) for i in todo)
        futures = as_completed()
        for i in pending:
            futures.add(client.submit(generate_sample, cfg, i, pure=False, key=f"sample-{i}-{time.time_ns()}"))
            if futures.count() >= in_flight:
                break
        for fut in futures:
            result = fut.result()
            fut.release()
            done(result)
            nxt = next(pending, None)
            if nxt is not None:
                futures.add(client.submit(generate_sample, cfg, nxt, pure=False,
                                          key=f"sample-{nxt}-{time.time_ns()}"))
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _json(value) -> Any:
    """Decode a JSON string read from a Zarr string array (a 0-d array or a str)."""
    value = np.asarray(value).item() if not isinstance(value, str) else value
    return json.loads(value)


class ExitWaveDataset:
    """Read a data set written by :func:`generate_dataset`.

    ``len(ds)`` is the number of sample slots ``n``; ``ds.complete`` the boolean mask of the
    finished ones and ``ds.indices`` their indices. :meth:`sample` refuses an incomplete
    sample. :meth:`read` loads a field for many samples at once (for training batches).

    Examples
    --------
    >>> ds = ExitWaveDataset("data/mos2.zarr")              # doctest: +SKIP
    >>> s = ds.sample(ds.indices[0]); s.target.shape        # doctest: +SKIP
    (256, 256)
    """

    def __init__(self, path: str | os.PathLike):
        import zarr

        self.path = os.fspath(path)
        if not os.path.exists(self.path):
            raise FileNotFoundError(f"no data set at {self.path!r}; make one with "
                                    "'exitwave-train simulate --out ...'")
        try:
            self.group = zarr.open_group(self.path, mode="r")
            self.config = DatasetConfig.from_dict(json.loads(self.group.attrs["config"]))
        except Exception as exc:  # noqa: BLE001
            raise ValueError(f"{self.path!r} is not an exit-wave data set: {exc}") from exc

    def __len__(self) -> int:
        return self.config.n

    def __repr__(self) -> str:
        return (f"ExitWaveDataset({self.path!r}, n={len(self)}, complete={self.n_complete}, "
                f"shape={self.shape}, sampling={self.sampling})")

    @property
    def sampling(self) -> float:
        return self.config.sampling

    @property
    def shape(self) -> tuple[int, int]:
        return self.config.shape

    @property
    def n_images(self) -> int:
        return self.config.n_images

    @property
    def complete(self) -> np.ndarray:
        """Boolean mask of the samples whose ``complete`` flag is set (re-read each time)."""
        return np.asarray(self.group["complete"][:], dtype=bool)

    @property
    def indices(self) -> np.ndarray:
        return np.flatnonzero(self.complete)

    @property
    def n_complete(self) -> int:
        return int(self.complete.sum())

    def _check(self, indices) -> np.ndarray:
        idx = np.atleast_1d(np.asarray(indices, dtype=int))
        if np.any((idx < 0) | (idx >= len(self))):
            raise IndexError(f"sample index out of range 0..{len(self) - 1}: {idx}")
        comp = np.asarray(self.group["complete"].get_coordinate_selection(idx), dtype=bool)
        if not comp.all():
            raise ValueError(f"sample(s) {idx[~comp].tolist()} of {self.path!r} are not complete "
                             "(generation interrupted?); use ds.indices, or resume the generation")
        return idx

    def read(self, field: str, indices) -> np.ndarray:
        """Stack ``field`` (``wave``, ``target``, ``images``) of complete samples ``indices``."""
        if field not in ("wave", "target", "images"):
            raise ValueError(f"field must be 'wave', 'target' or 'images', got {field!r}")
        idx = self._check(indices)
        arr = self.group[field]
        return np.stack([arr[int(i)] for i in idx])

    def sample(self, i: int) -> Sample:
        """Sample ``i`` (``ValueError`` if it is not complete)."""
        i = int(self._check(i)[0])
        cols = _json(self.group["columns"][i])
        return Sample(
            index=i,
            wave=np.asarray(self.group["wave"][i]),
            target=np.asarray(self.group["target"][i]),
            images=np.asarray(self.group["images"][i]),
            params=[physics.MicroscopeParameters.from_dict(p)
                    for p in _json(self.group["params"][i])],
            columns_xy=np.array([c[:2] for c in cols], dtype=float).reshape(-1, 2),
            columns_label=[c[2] for c in cols],
            info=_json(self.group["info"][i]),
            sampling=self.sampling,
        )

    def random_series(self, i: int, rng: np.random.Generator) -> tuple[np.ndarray, list]:
        """A fresh focal series of sample ``i`` (new microscope parameters, new noise)."""
        wave = self.read("wave", [i])[0]
        return random_focal_series(wave, self.sampling, rng, self.n_images, self.config.ranges)
