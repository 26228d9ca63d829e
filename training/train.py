"""Train the exit-wave network on a simulated data set, as a sequence of short resumable jobs.

Every epoch sees fresh focal series: the microscope parameters are drawn anew
(:func:`napari_exitwave.physics.sample_parameters`) and the images simulated from the stored
exit waves (:func:`~napari_exitwave.physics.simulate_focal_series`, then
:func:`~napari_exitwave.physics.normalize_series`), in a :class:`keras.utils.PyDataset` with
worker threads. The validation set uses the focal series stored with the data set (or, if it has
none, series drawn once with a fixed seed), so validation losses are comparable across epochs.

Determinism and resume
----------------------
The focal series of position ``k`` of epoch ``e`` come from ``numpy.random.default_rng([seed,
e, k])`` and the sample order of epoch ``e`` from ``default_rng([seed, e])``; Keras' global RNG
is re-seeded with ``keras.utils.set_random_seed(seed + e)`` at the start of every epoch and
TensorFlow op determinism is on. The RNG state at an epoch boundary is therefore a function of
``(seed, epoch)`` alone, and a checkpoint (``last.keras`` = weights + optimizer state, plus
``state.json`` = epoch, history, configuration) is all that is needed to continue bit for bit.

Run directory
-------------
``run_dir/last.keras``  model and optimizer after the last finished epoch
``run_dir/best.keras``  the one with the lowest validation loss
``run_dir/state.json``  epoch, history, configuration, timings, machine
``run_dir/learning_curve.png``
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from napari_exitwave import physics

__all__ = ["TrainConfig", "FocalSeriesDataset", "load_waves", "make_model", "train",
           "load_checkpoint", "plot_learning_curve", "machine_description", "EXIT_UNFINISHED"]

EXIT_UNFINISHED = 75
"""CLI exit status when ``--max-minutes`` stopped a run before its last epoch (resume it)."""


@dataclasses.dataclass
class TrainConfig:
    """Everything that defines a training run (stored in ``state.json``).

    ``crop`` is the side of the random square crops (a multiple of ``2**depth``; ``None``: the
    largest multiple that fits). ``steps_per_epoch`` defaults to one pass over the training
    samples. ``ranges`` overrides fields of :class:`napari_exitwave.physics.ParameterRanges`.
    """

    train: str = ""
    val: str | None = None
    network: dict[str, Any] = dataclasses.field(
        default_factory=lambda: dict(n_images=3, depth=4, base_filters=32))
    epochs: int = 50
    batch_size: int = 8
    crop: int | None = 256
    optimizer: str = "rmsprop"
    learning_rate: float = 5e-4
    seed: int = 0
    mixed_precision: bool = False
    workers: int = 1
    steps_per_epoch: int | None = None
    val_samples: int | None = None
    train_samples: int | None = None
    ranges: dict[str, Any] = dataclasses.field(default_factory=dict)
    jit_compile: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


# ----------------------------------------------------------------------------------- data
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
    """``(m, 2)`` (y, x) in A from one sample's column record."""
    if isinstance(item, (bytes, str)):
        item = json.loads(item)
    if isinstance(item, dict):
        return np.stack([np.asarray(item["y"], float), np.asarray(item["x"], float)], 1)
    if len(item) == 0:
        return np.zeros((0, 2))
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
    """

    def __init__(self, wave, target, sampling: float, n_images: int, batch_size: int,
                 crop: int | None, multiple: int, seed: int = 0,
                 ranges: physics.ParameterRanges | None = None, fixed: bool = False,
                 images: np.ndarray | None = None, steps: int | None = None, workers: int = 1):
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
        epoch = 0 if self.fixed else self.epoch
        rng = np.random.default_rng([self.seed, epoch, position, 1 if self.fixed else 0])
        if self.fixed and self.images is not None:
            series = self.images[index]
        else:
            params = physics.sample_parameters(rng, self.n_images, self.ranges)
            series = physics.simulate_focal_series(self.wave[index], self.sampling, params,
                                                   rng=rng)
        target = self.target[index]
        ny, nx = target.shape
        if self.fixed:
            h, w = self.full
            y0, x0 = (ny - h) // 2, (nx - w) // 2
        else:
            h = w = self.crop
            y0 = int(rng.integers(0, ny - h + 1))
            x0 = int(rng.integers(0, nx - w + 1))
        series = physics.normalize_series(series[:, y0:y0 + h, x0:x0 + w])
        t = target[y0:y0 + h, x0:x0 + w]
        x = np.moveaxis(series, 0, -1).astype(np.float32)
        y = np.stack([t.real, t.imag], axis=-1).astype(np.float32)
        return x, y

    def __getitem__(self, i: int):
        order = self.order()
        start = i * self.batch_size
        pairs = [self.sample(p, int(order[p])) for p in range(start, start + self.batch_size)
                 if p < len(order)]
        return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])

    def on_epoch_end(self):  # the epoch is set explicitly by train()
        pass


# ---------------------------------------------------------------------------------- model
def _optimizer(name: str, lr: float):
    import keras

    name = name.lower()
    if name == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate=lr)
    if name == "adam":
        return keras.optimizers.Adam(learning_rate=lr)
    if name == "amsgrad":
        return keras.optimizers.Adam(learning_rate=lr, amsgrad=True)
    raise ValueError(f"unknown optimizer {name!r}; use rmsprop, adam or amsgrad")


def make_model(cfg: TrainConfig):
    """Build and compile the network of ``cfg`` (MSE loss)."""
    import keras

    from .network import NetworkConfig, build_network

    if cfg.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    else:
        keras.mixed_precision.set_global_policy("float32")
    model = build_network(NetworkConfig.from_dict(cfg.network))
    model.compile(optimizer=_optimizer(cfg.optimizer, cfg.learning_rate), loss="mse",
                  jit_compile=cfg.jit_compile)
    return model


def _set_determinism(seed: int) -> None:
    import keras

    keras.utils.set_random_seed(int(seed))
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        try:
            tf.config.experimental.enable_op_determinism()
        except Exception:  # noqa: BLE001
            pass


def load_checkpoint(path: str | os.PathLike, which: str = "last"):
    """Load ``(model, state)`` from a run directory (``last``/``best``) or a ``.keras`` file."""
    import keras

    from .network import custom_objects

    path = Path(path)
    if path.is_dir():
        state_path = path / "state.json"
        model_path = path / f"{which}.keras"
    else:
        state_path = path.parent / "state.json"
        model_path = path
    if not model_path.exists():
        raise FileNotFoundError(f"no checkpoint {model_path}; train first (`exitwave-train train`)")
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    mixed = bool(state.get("config", {}).get("mixed_precision"))
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")
    model = keras.models.load_model(model_path, custom_objects=custom_objects(), compile=True)
    return model, state


def _atomic_save_model(model, path: Path) -> None:
    tmp = path.with_name(path.stem + ".tmp.keras")
    model.save(tmp)
    os.replace(tmp, path)


def _atomic_write_json(obj, path: Path) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=_json_default) + "\n")
    os.replace(tmp, path)


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def machine_description() -> dict[str, Any]:
    """Host, CPU count, Keras backend and accelerators (for cards and benchmarks)."""
    import keras

    info = {"host": platform.node(), "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "python": sys.version.split()[0],
            "keras": keras.__version__, "backend": keras.backend.backend(), "gpus": []}
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        info["tensorflow"] = tf.__version__
        info["gpus"] = [d.name for d in tf.config.list_physical_devices("GPU")]
    return info


def plot_learning_curve(history: dict[str, list[float]], path: str | os.PathLike,
                        title: str = "") -> Path:
    """Training and validation MSE per epoch, log scale, as PNG."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 3.5), dpi=120)
    ax = fig.add_subplot()
    for key, label in (("loss", "training"), ("val_loss", "validation")):
        v = history.get(key) or []
        if v:
            ax.plot(np.arange(1, len(v) + 1), v, marker="o", ms=3, label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("MSE loss")
    if any(history.get(k) for k in ("loss", "val_loss")):
        ax.set_yscale("log")
        ax.legend()
    ax.set_title(title or "learning curve")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    return path


# ------------------------------------------------------------------------------- training
def _datasets(cfg: TrainConfig):
    from .network import size_multiple

    n_images = int(cfg.network.get("n_images", 3))
    multiple = size_multiple(int(cfg.network.get("depth", 4)))
    tr = load_waves(cfg.train, cfg.train_samples)
    # the data set's Table-1 ranges (and energy), overridden by the run's own
    ranges = physics.ParameterRanges.from_dict({**physics.ParameterRanges().to_dict(),
                                               **(tr["config"].get("ranges") or {}),
                                               **(cfg.ranges or {})})
    train_ds = FocalSeriesDataset(tr["wave"], tr["target"], tr["sampling"], n_images,
                                  cfg.batch_size, cfg.crop, multiple, seed=cfg.seed,
                                  ranges=ranges, steps=cfg.steps_per_epoch, workers=cfg.workers)
    val_ds, va = None, None
    if cfg.val:
        va = load_waves(cfg.val, cfg.val_samples)
        if abs(va["sampling"] - tr["sampling"]) > 1e-3 * tr["sampling"]:
            raise ValueError(f"validation sampling {va['sampling']} != training {tr['sampling']}")
        val_ds = FocalSeriesDataset(va["wave"], va["target"], va["sampling"], n_images,
                                    cfg.batch_size, None, multiple, seed=cfg.seed + 7919,
                                    ranges=ranges, fixed=True,
                                    # stored series were drawn from the data set's ranges
                                    images=None if cfg.ranges else va["images"])
    data_info = dict(sampling=tr["sampling"], ranges=ranges.to_dict(), n_train=len(tr["wave"]),
                     n_val=0 if va is None else len(va["wave"]), crop=train_ds.crop,
                     dataset=dict(train=str(cfg.train), val=str(cfg.val) if cfg.val else None,
                                  n_train=len(tr["wave"]),
                                  n_val=0 if va is None else len(va["wave"]),
                                  config=tr["config"]))
    return train_ds, val_ds, data_info, va


def train(cfg: TrainConfig, run_dir: str | os.PathLike, *, resume: bool = True,
          max_minutes: float | None = None, verbose: int = 1,
          evaluate_at_end: bool = True) -> dict[str, Any]:
    """Train (or continue training) into ``run_dir``; returns the run's state.

    Stops after ``cfg.epochs`` epochs, or earlier when the next epoch would not finish within
    ``max_minutes`` (then ``state["finished"]`` is False: call again to continue). A
    checkpoint is written after every epoch. With ``resume=False`` an existing run is
    overwritten.
    """
    import keras

    t_start = time.monotonic()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    state_path = run_dir / "state.json"
    if resume and state_path.exists() and (run_dir / "last.keras").exists():
        old = json.loads(state_path.read_text())
        saved = TrainConfig.from_dict(old["config"])
        if saved.epochs != cfg.epochs:  # the one setting that may change on resume
            saved.epochs = cfg.epochs
        cfg = saved
        _set_determinism(cfg.seed)
        model, state = load_checkpoint(run_dir)
        state["config"] = cfg.to_dict()
        if verbose:
            print(f"resuming {run_dir} after epoch {state['epoch']}/{cfg.epochs}", flush=True)
    else:
        _set_determinism(cfg.seed)
        model = make_model(cfg)
        state = dict(config=cfg.to_dict(), epoch=0, history={"loss": [], "val_loss": []},
                     epoch_seconds=[], train_seconds=0.0, best_val_loss=None, finished=False)
    train_ds, val_ds, data_info, va = _datasets(cfg)
    state["data"] = data_info
    state["machine"] = machine_description()
    state["backend"] = keras.backend.backend()
    budget = None if max_minutes is None else 60.0 * float(max_minutes)
    while state["epoch"] < cfg.epochs:
        epoch = int(state["epoch"])
        elapsed = time.monotonic() - t_start
        last = state["epoch_seconds"][-1] if state["epoch_seconds"] else 0.0
        if budget is not None and epoch > 0 and elapsed + 1.1 * last + 10 > budget:
            if verbose:
                print(f"stopping after epoch {epoch}: the next one would pass --max-minutes "
                      f"({max_minutes}); run the same command again to continue", flush=True)
            break
        keras.utils.set_random_seed(int(cfg.seed) + epoch)
        train_ds.epoch = epoch
        if verbose:
            print(f"epoch {epoch + 1}/{cfg.epochs}", flush=True)
        t0 = time.monotonic()
        hist = model.fit(train_ds, validation_data=val_ds, initial_epoch=epoch,
                         epochs=epoch + 1, verbose=1 if verbose else 0, shuffle=False)
        dt = time.monotonic() - t0
        h = hist.history
        state["history"]["loss"].append(float(h["loss"][-1]))
        if "val_loss" in h:
            state["history"]["val_loss"].append(float(h["val_loss"][-1]))
        state["epoch"] = epoch + 1
        state["epoch_seconds"].append(dt)
        state["train_seconds"] = float(state["train_seconds"]) + dt
        _atomic_save_model(model, run_dir / "last.keras")
        vl = state["history"]["val_loss"][-1] if "val_loss" in h else state["history"]["loss"][-1]
        if state["best_val_loss"] is None or vl < state["best_val_loss"]:
            state["best_val_loss"] = vl
            state["best_epoch"] = epoch + 1
            _atomic_save_model(model, run_dir / "best.keras")
        _atomic_write_json(state, state_path)
        plot_learning_curve(state["history"], run_dir / "learning_curve.png",
                            title=f"{run_dir.name}")
    state["finished"] = state["epoch"] >= cfg.epochs
    if state["finished"] and evaluate_at_end and va is not None and not state.get("metrics"):
        from .evaluate import evaluate_arrays

        best = model
        if (run_dir / "best.keras").exists():  # the metrics describe the exported checkpoint
            best, _ = load_checkpoint(run_dir, "best")
        summary = evaluate_arrays(_keras_predictor(best), va, n_images=cfg.network["n_images"],
                                  multiple=train_ds.multiple, seed=cfg.seed + 7919,
                                  out_dir=run_dir / "evaluation", ranges=train_ds.ranges,
                                  use_stored_images=not cfg.ranges)
        state["metrics_checkpoint"] = "best"
        state["metrics"] = {k: summary.get(k) for k in
                            ("rmse_real", "rmse_imag", "delta", "peak_error_pm",
                             "yscramble_rmse_real", "yscramble_rmse_imag", "n_samples")}
    _atomic_write_json(state, state_path)
    return state


def _keras_predictor(model):
    def predict(x: np.ndarray) -> np.ndarray:
        return np.asarray(model(x, training=False), dtype=np.float32)

    return predict
