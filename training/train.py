"""Train the exit-wave network on a simulated data set, as a sequence of short resumable jobs.

Every epoch sees fresh focal series from the data feed (:mod:`.feed`): the microscope
parameters are drawn anew and the images simulated from the stored exit waves, in a
:class:`keras.utils.PyDataset` with worker threads. Checkpoints are :mod:`.checkpoint`'s;
evaluation is not called from here (``exitwave-train train`` evaluates the best checkpoint
through :mod:`.evaluate` when a run finishes). The validation set uses the focal series stored with the data set (or, if it has
none, series drawn once with a fixed seed), so validation losses are comparable across epochs.

Determinism and resume
----------------------
The focal series of position ``k`` of epoch ``e`` come from ``numpy.random.default_rng([seed,
e, k, 0])`` and the sample order of epoch ``e`` from ``default_rng([seed, e])``; Keras' global RNG
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
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from napari_exitwave import physics

from .checkpoint import (atomic_save_model, atomic_write_json, load_checkpoint,
                         machine_description, set_determinism)
from .feed import FocalSeriesDataset, load_waves
from .presets import LOSSES, OPTIMIZERS, SCHEDULES

__all__ = ["TrainConfig", "make_model", "train", "plot_learning_curve", "EXIT_UNFINISHED",
           "OPTIMIZERS", "SCHEDULES", "LOSSES"]

EXIT_UNFINISHED = 75
"""CLI exit status when ``--max-minutes`` stopped a run before its last epoch (resume it)."""


@dataclasses.dataclass
class TrainConfig:
    """Everything that defines a training run (stored in ``state.json``).

    ``crop`` is the side of the random square crops (a multiple of ``2**depth``; ``None``: the
    largest multiple that fits). ``steps_per_epoch`` defaults to one pass over the training
    samples. ``ranges`` overrides fields of :class:`napari_exitwave.physics.ParameterRanges`.

    ``schedule``: ``"constant"`` learning rate, or ``"cosine"``: a linear warm-up over the
    first ``warmup`` fraction of all ``epochs * steps_per_epoch`` updates to
    ``learning_rate``, then a cosine decay to ``learning_rate * final_lr_fraction`` at the last
    update (a function of the update count, so it resumes exactly). ``loss``: ``"mse"`` (the
    paper's), ``"l1"``, ``"charbonnier"`` (smooth L1, eps 1e-3) or ``"column_mse"`` (MSE
    weighted by ``1 + column_weight * |target - 1| / 0.1``: extra weight on atomic columns).
    ``weight_decay`` is AdamW's. ``drift`` (px), ``sampling_range`` (A) and
    ``crops_per_series`` are the feed's (:class:`~exitwave_training.feed.FocalSeriesDataset`).
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
    schedule: str = "constant"
    warmup: float = 0.05
    final_lr_fraction: float = 0.02
    loss: str = "mse"
    column_weight: float = 4.0
    weight_decay: float = 1e-4
    drift: float = 0.0
    sampling_range: tuple[float, float] | None = None
    crops_per_series: int = 1

    def __post_init__(self):
        for name, value, allowed in (("optimizer", self.optimizer, OPTIMIZERS),
                                     ("schedule", self.schedule, SCHEDULES),
                                     ("loss", self.loss, LOSSES)):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
        if self.sampling_range is not None:
            self.sampling_range = tuple(float(v) for v in self.sampling_range)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


# ---------------------------------------------------------------------------------- model
def _learning_rate(cfg: TrainConfig, total_steps: int | None):
    import keras

    if cfg.schedule == "constant" or not total_steps:
        return cfg.learning_rate
    warmup = int(round(cfg.warmup * total_steps))
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=cfg.learning_rate * (0.1 if warmup else 1.0),
        decay_steps=max(1, total_steps - warmup), alpha=cfg.final_lr_fraction,
        warmup_target=cfg.learning_rate if warmup else None, warmup_steps=warmup)


def _optimizer(cfg: TrainConfig, total_steps: int | None = None):
    import keras

    lr = _learning_rate(cfg, total_steps)
    name = cfg.optimizer
    if name == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate=lr)
    if name == "adam":
        return keras.optimizers.Adam(learning_rate=lr)
    if name == "adamw":
        return keras.optimizers.AdamW(learning_rate=lr, weight_decay=cfg.weight_decay)
    return keras.optimizers.Adam(learning_rate=lr, amsgrad=True)


def _loss(cfg: TrainConfig):
    from . import network

    if cfg.loss == "mse":
        return "mse"
    if cfg.loss == "l1":
        return "mae"
    if cfg.loss == "charbonnier":
        return network.CharbonnierLoss()
    return network.ColumnWeightedMSE(weight=cfg.column_weight)


def make_model(cfg: TrainConfig, total_steps: int | None = None, weights_from=None):
    """Build and compile the network of ``cfg`` (loss, optimizer and schedule of ``cfg``).

    ``total_steps`` (all updates of the run) sets the length of a ``cosine`` schedule;
    ``weights_from`` (a Keras model) starts from its weights (fine-tuning).
    """
    import keras

    from .network import NetworkConfig, build_network

    if cfg.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    else:
        keras.mixed_precision.set_global_policy("float32")
    model = build_network(NetworkConfig.from_dict(cfg.network))
    if weights_from is not None:
        transfer_weights(weights_from, model)
    model.compile(optimizer=_optimizer(cfg, total_steps), loss=_loss(cfg),
                  jit_compile=cfg.jit_compile)
    return model


def transfer_weights(source, model) -> None:
    """Copy the weights of ``source`` into ``model`` layer by layer (same architecture).

    The one difference allowed is the number of images: a layer whose kernel reads the
    ``n_src`` input images (the first convolution) gets them interpolated linearly along the
    image axis to ``model``'s ``n`` and scaled by ``n_src / n``. The images of a series span
    the same total defocus whatever their number (``ParameterRanges.total_defocus_range``), so
    image ``j`` of ``n`` sits where position ``j (n_src - 1) / (n - 1)`` of the source's series
    does, and a 3-image network starts a 2- or 4-image one close to where it would be.
    """
    n_src = int(source.input_shape[-1])
    n = int(model.input_shape[-1])
    for layer in model.layers:
        if not layer.weights:
            continue
        try:
            other = source.get_layer(layer.name)
        except ValueError as exc:
            raise ValueError(f"the source network has no layer {layer.name!r}: another "
                             "architecture (depth or filters differ)") from exc
        new = []
        for w, v in zip(layer.get_weights(), other.get_weights()):
            if w.shape == v.shape:
                new.append(v)
            elif (w.ndim == 4 and v.ndim == 4 and w.shape[2] == n and v.shape[2] == n_src
                  and w.shape[:2] == v.shape[:2] and w.shape[3] == v.shape[3]):
                pos = np.linspace(0, n_src - 1, n) if n > 1 else np.array([(n_src - 1) / 2])
                lo = np.clip(np.floor(pos).astype(int), 0, max(n_src - 2, 0))
                frac = pos - lo
                hi = np.minimum(lo + 1, n_src - 1)
                k = (v[:, :, lo, :] * (1 - frac)[None, None, :, None]
                     + v[:, :, hi, :] * frac[None, None, :, None])
                new.append((k * n_src / n).astype(v.dtype))
            else:
                raise ValueError(f"layer {layer.name}: shape {v.shape} cannot start {w.shape}")
        layer.set_weights(new)


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
                                  ranges=ranges, steps=cfg.steps_per_epoch, workers=cfg.workers,
                                  drift=cfg.drift, sampling_range=cfg.sampling_range,
                                  crops=cfg.crops_per_series)
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
          init_from: str | os.PathLike | None = None,
          finetune_from: str | os.PathLike | None = None,
          snapshot_every: int | None = None,
          finetune_n_images: int | None = None,
          set_learning_rate: float | None = None) -> dict[str, Any]:
    """Train (or continue training) into ``run_dir``; returns the run's state.

    Stops after ``cfg.epochs`` epochs, or earlier when the next epoch would not finish within
    ``max_minutes`` (then ``state["finished"]`` is False: call again to continue). A
    checkpoint is written after every epoch. With ``resume=False`` an existing run is
    overwritten.

    ``init_from``: a shipped checkpoint (``models/checkpoints/<name>.keras`` with ``<name>.state.json``)
    copied into an empty ``run_dir`` and continued exactly (weights, optimizer, epoch, RNG
    positions), with the run's saved configuration. ``finetune_from``: a ``.keras`` file or
    run directory whose weights start a *new* run of ``cfg`` (fresh optimizer and schedule,
    e.g. on a user's own material class); ``cfg.network`` is taken from that checkpoint, with
    ``finetune_n_images`` images per series when given (a 2- or 4-image network started from
    a 3-image one, :func:`transfer_weights`).
    ``set_learning_rate``: continue a run of a constant schedule at this learning rate, the
    optimizer's state (Adam's moments, the update count) kept: the learning-rate drop at the end
    of a run. A fresh optimizer at a lower rate (``finetune --lr``) knocked a converged network
    off its minimum (docs/models.md). Recorded in ``state["lr_changes"]``.
    ``snapshot_every``: also keep the weights of every N-th epoch in ``run_dir/snapshots/``
    (listed in ``state["snapshots"]`` with the samples seen: the learning curve,
    ``benchmarks/learning_curve.py``).
    """
    import keras

    t_start = time.monotonic()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    state_path = run_dir / "state.json"
    has_run = state_path.exists() and (run_dir / "last.keras").exists()
    if init_from is not None and not (resume and has_run):
        _seed_run_dir(Path(init_from), run_dir)
        has_run = True
    if resume and has_run:
        old = json.loads(state_path.read_text())
        saved = TrainConfig.from_dict(old["config"])
        if saved.epochs != cfg.epochs:  # the one setting that may change on resume
            saved.epochs = cfg.epochs
        for key in ("train", "val"):  # data sets may live elsewhere in another checkout
            if getattr(cfg, key) and not Path(getattr(saved, key) or "").exists():
                setattr(saved, key, getattr(cfg, key))
        cfg = saved
        set_determinism(cfg.seed)
        model, state = load_checkpoint(run_dir)
        state["config"] = cfg.to_dict()
        if set_learning_rate is not None:
            _set_learning_rate(model, cfg, state, float(set_learning_rate), verbose)
        train_ds, val_ds, data_info, _ = _datasets(cfg)
        if verbose:
            print(f"resuming {run_dir} after epoch {state['epoch']}/{cfg.epochs}", flush=True)
    else:
        if set_learning_rate is not None:
            raise ValueError(f"there is no run in {run_dir} to continue at a new learning rate "
                             "(--set-lr continues a run; start one with --lr)")
        base = None
        if finetune_from is not None:
            base, base_state = load_checkpoint(finetune_from, "best")
            cfg.network = dict(base_state.get("config", {}).get("network") or cfg.network)
            if finetune_n_images:
                cfg.network["n_images"] = int(finetune_n_images)
        set_determinism(cfg.seed)
        train_ds, val_ds, data_info, _ = _datasets(cfg)
        model = make_model(cfg, cfg.epochs * len(train_ds), weights_from=base)
        state = dict(config=cfg.to_dict(), epoch=0, history={"loss": [], "val_loss": []},
                     epoch_seconds=[], train_seconds=0.0, best_val_loss=None, finished=False)
        if finetune_from is not None:
            state["finetuned_from"] = str(finetune_from)
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
        state["samples_seen"] = int(state.get("samples_seen", 0)) + len(train_ds) * cfg.batch_size
        atomic_save_model(model, run_dir / "last.keras")
        vl = state["history"]["val_loss"][-1] if "val_loss" in h else state["history"]["loss"][-1]
        if state["best_val_loss"] is None or vl < state["best_val_loss"]:
            state["best_val_loss"] = vl
            state["best_epoch"] = epoch + 1
            atomic_save_model(model, run_dir / "best.keras")
        if snapshot_every and state["epoch"] % int(snapshot_every) == 0:
            snap = run_dir / "snapshots" / f"epoch_{state['epoch']:05d}.weights.h5"
            snap.parent.mkdir(exist_ok=True)
            model.save_weights(snap)
            state.setdefault("snapshots", []).append(
                dict(epoch=state["epoch"], samples_seen=state["samples_seen"],
                     file=str(snap.relative_to(run_dir))))
        atomic_write_json(state, state_path)
        plot_learning_curve(state["history"], run_dir / "learning_curve.png",
                            title=f"{run_dir.name}")
    state["finished"] = state["epoch"] >= cfg.epochs
    atomic_write_json(state, state_path)
    return state


def _set_learning_rate(model, cfg: TrainConfig, state: dict, lr: float, verbose: int) -> None:
    """Change a resumed run's constant learning rate, keeping the optimizer's state."""
    if cfg.schedule != "constant":
        raise ValueError(f"the run's learning rate follows a {cfg.schedule} schedule (a function "
                         "of the update count); a new rate applies to constant-rate runs only")
    if not lr > 0:
        raise ValueError(f"the learning rate must be positive, got {lr}")
    if lr == cfg.learning_rate:
        return
    model.optimizer.learning_rate.assign(lr)
    state.setdefault("lr_changes", []).append(
        dict(epoch=int(state["epoch"]), old=float(cfg.learning_rate), new=lr))
    cfg.learning_rate = lr
    state["config"] = cfg.to_dict()
    if verbose:
        print(f"learning rate {state['lr_changes'][-1]['old']:g} -> {lr:g} from epoch "
              f"{state['epoch'] + 1} (optimizer state kept)", flush=True)


def _seed_run_dir(source: Path, run_dir: Path) -> None:
    """Copy a shipped checkpoint (``<name>.keras`` + ``<name>.state.json``) into ``run_dir``."""
    if source.is_dir():
        model, state_file = source / "last.keras", source / "state.json"
    else:
        model, state_file = source, source.with_suffix(".state.json")
    if not model.exists() or not state_file.exists():
        raise FileNotFoundError(f"{source} is not a checkpoint to resume: it needs {model.name} "
                                f"and {state_file.name} (exitwave-train ship writes both)")
    shutil.copyfile(model, run_dir / "last.keras")
    shutil.copyfile(model, run_dir / "best.keras")
    shutil.copyfile(state_file, run_dir / "state.json")
