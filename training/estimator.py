"""The aberration estimator: a small CNN that reads the microscope parameters off a focal series.

Pipeline position: beside the exit-wave network (structures -> exitwave -> dataset -> feed ->
**estimator** -> export). It trains on the same stored exit waves as the U-Nets, imaged on the fly
with fresh Table 1 parameters (:func:`exitwave_training.dataset.random_focal_series`), whose
values are the targets (:func:`napari_exitwave.estimate.encode_parameters`). Input and output
contract: :mod:`napari_exitwave.estimate` (the plugin side, which needs no Keras).

Network: five stride-2 stages of two 3x3 convolutions (ReLU), 16 -> 128 channels, then the
8x8x128 map flattened (the spectra's rings are located by radius, which a global pooling would
throw away), a 128-unit dense layer and a linear output per parameter. ~1.4 M parameters, ~0.3
GFLOP per 256 px series: it trains in minutes on 2 cores.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from napari_exitwave import physics
from napari_exitwave.estimate import (ESTIMATOR_KIND, OUTPUTS, UNITS, decode_parameters,
                                      encode_parameters, estimator_features, training_ranges)

from .dataset import random_focal_series
from .feed import load_waves

__all__ = ["build_estimator", "EstimatorDataset", "train_estimator", "export_estimator",
           "errors_table", "validation_arrays"]

INPUT_NAME = "features"
OUTPUT_NAME = "parameters"


def build_estimator(n_images: int = 3, size: int = 256, widths: Sequence[int] = (16, 32, 64, 96, 128),
                    dense: int = 128):
    """The Keras estimator: input ``(size, size, 2 n_images)``, output ``len(OUTPUTS)``."""
    import keras
    from keras import layers

    x = inp = keras.Input((size, size, 2 * n_images), name=INPUT_NAME)
    for i, w in enumerate(widths):
        x = layers.Conv2D(w, 3, strides=2, padding="same", activation="relu",
                          kernel_initializer="he_normal", name=f"down{i}")(x)
        x = layers.Conv2D(w, 3, padding="same", activation="relu",
                          kernel_initializer="he_normal", name=f"conv{i}")(x)
    x = layers.Flatten()(x)
    x = layers.Dense(dense, activation="relu", kernel_initializer="he_normal", name="dense")(x)
    out = layers.Dense(len(OUTPUTS), name=OUTPUT_NAME)(x)
    return keras.Model(inp, out, name="aberration_estimator")


def _series(wave, sampling, rng, n_images, ranges, size):
    images, params = random_focal_series(wave, sampling, rng, n_images, ranges)
    ny, nx = images.shape[1:]
    y0 = int(rng.integers(0, ny - size + 1))
    x0 = int(rng.integers(0, nx - size + 1))
    feats = estimator_features(physics.normalize_series(images[:, y0:y0 + size, x0:x0 + size]))
    return feats, encode_parameters(params, ranges), params


try:
    import keras as _keras

    _PyDataset = _keras.utils.PyDataset
except Exception:  # noqa: BLE001
    _PyDataset = object


class EstimatorDataset(_PyDataset):
    """Batches ``(features (B, S, S, 2n), targets (B, len(OUTPUTS)))`` drawn on the fly.

    Series ``k`` of epoch ``e`` uses ``default_rng([seed, e, k])``; :meth:`set_epoch` picks
    the epoch (a resumed run sees the series it would have seen).
    """

    def __init__(self, waves: np.ndarray, sampling: float, n_images: int = 3, batch_size: int = 16,
                 steps: int = 50, size: int = 256, seed: int = 0,
                 ranges: physics.ParameterRanges | None = None, workers: int = 2):
        super().__init__(workers=workers, use_multiprocessing=False, max_queue_size=2 * workers)
        self.waves, self.sampling = waves, float(sampling)
        self.n_images, self.batch_size, self.steps, self.size = n_images, batch_size, steps, size
        self.seed, self.ranges, self.epoch = int(seed), ranges or physics.ParameterRanges(), 0

    def __len__(self) -> int:
        return self.steps

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __getitem__(self, i: int):
        xs, ys = [], []
        for k in range(i * self.batch_size, (i + 1) * self.batch_size):
            rng = np.random.default_rng([self.seed, self.epoch, k])
            w = self.waves[int(rng.integers(len(self.waves)))]
            f, t, _ = _series(w, self.sampling, rng, self.n_images, self.ranges, self.size)
            xs.append(f)
            ys.append(t)
        return np.stack(xs), np.stack(ys)


def validation_arrays(waves: np.ndarray, sampling: float, n_images: int = 3, size: int = 256,
                      seed: int = 1, ranges: physics.ParameterRanges | None = None):
    """Fixed validation series: ``(features, targets, params)``, one per wave."""
    ranges = ranges or physics.ParameterRanges()
    xs, ys, ps = [], [], []
    for k, w in enumerate(waves):
        f, t, p = _series(w, sampling, np.random.default_rng([seed, 10**6, k]), n_images, ranges,
                          size)
        xs.append(f)
        ys.append(t)
        ps.append(p)
    return np.stack(xs), np.stack(ys), ps


def _waves(paths: Sequence[str], max_per_set: int | None) -> tuple[np.ndarray, float]:
    out, sampling = [], None
    for p in paths:
        d = load_waves(p, max_per_set)
        if sampling is not None and abs(d["sampling"] - sampling) > 1e-6:
            raise ValueError(f"{p} is at {d['sampling']} A/px, the others at {sampling}")
        sampling = d["sampling"]
        out.append(d["wave"])
    return np.concatenate(out), float(sampling)


def errors_table(pred: np.ndarray, params: Sequence[Sequence[physics.MicroscopeParameters]],
                 n_images: int, ranges: physics.ParameterRanges | None = None) -> dict[str, Any]:
    """Median absolute error of every value (:data:`UNITS`), and that of the trivial estimator
    (the middle of the training range), over validation series."""
    ranges = ranges or physics.ParameterRanges()
    mid = decode_parameters(np.zeros(len(OUTPUTS)), n_images, ranges)
    rows: dict[str, dict[str, list]] = {}

    def add(name, est, triv, true):
        r = rows.setdefault(name, {"net": [], "trivial": []})
        r["net"].append(abs(est - true))
        r["trivial"].append(abs(triv - true))

    for vec, ps in zip(pred, params):
        est = decode_parameters(vec, n_images, ranges)
        p = ps[0]
        d = np.array([q.defocus for q in ps])
        for i, di in enumerate(d):
            off = i - (n_images - 1) / 2
            add("defocus", est["defocus_mean"] + off * est["defocus_step"],
                mid["defocus_mean"] + off * mid["defocus_step"], di)
        add("Cs", est["Cs"], mid["Cs"], p.Cs / 1e4)
        true12 = p.astigmatism * np.exp(2j * p.astigmatism_angle)
        add("C12", abs(est["C12"] * np.exp(2j * est["phi12"]) - true12), abs(true12), 0.0)
        true21 = p.coma * np.exp(1j * p.coma_angle)
        add("C21", abs(est["C21"] * np.exp(1j * est["phi21"]) - true21), abs(true21), 0.0)
        add("focal_spread", est["focal_spread"], mid["focal_spread"], p.focal_spread)
        add("blur", est["blur"], mid["blur"], p.blur)
        add("log10_dose", math.log10(est["dose"]), math.log10(mid["dose"]), math.log10(p.dose))
    units = dict(UNITS, defocus="A", C12="A (vector error)", C21="A (vector error)",
                 log10_dose="log10(e/A^2)")
    tr = training_ranges(ranges, n_images)
    tr["log10_dose"] = tuple(ranges.log10_dose)
    tr["defocus"] = tuple(ranges.defocus)
    return {k: {"median_abs_error": float(np.median(v["net"])),
                "trivial_median_abs_error": float(np.median(v["trivial"])),
                "unit": units[k], "training_range": list(tr[k])} for k, v in rows.items()}


def train_estimator(train: Sequence[str], val: Sequence[str], out: str | os.PathLike, *,
                    n_images: int = 3, size: int = 256, batch_size: int = 16,
                    steps_per_epoch: int = 50, epochs: int = 1000, lr: float = 1e-3,
                    max_minutes: float = 20.0, seed: int = 0, workers: int = 2,
                    max_train_waves: int | None = None, max_val_waves: int = 60,
                    verbose: int = 1) -> dict[str, Any]:
    """Train (or continue, from ``out/last.keras``) an estimator for at most ``max_minutes``.

    Saves ``last.keras``, ``best.keras`` (lowest validation loss) and ``state.json`` in ``out``.
    Returns the state.
    """
    import keras

    from .checkpoint import atomic_save_model, atomic_write_json, machine_description, set_determinism

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    set_determinism(seed)
    waves, sampling = _waves(train, max_train_waves)
    vwaves, vs = _waves(val, max_val_waves)
    if abs(vs - sampling) > 1e-6:
        raise ValueError(f"validation data at {vs} A/px, training data at {sampling} A/px")
    vx, vy, _ = validation_arrays(vwaves, sampling, n_images, size)
    state_path = out / "state.json"
    if (out / "last.keras").exists() and state_path.exists():
        model = keras.models.load_model(out / "last.keras")
        state = json.loads(state_path.read_text())
    else:
        model = build_estimator(n_images, size)
        model.compile(optimizer=keras.optimizers.Adam(lr), loss="mse")
        state = {"epoch": 0, "history": {"loss": [], "val_loss": []}, "best_val_loss": None,
                 "seconds": 0.0,
                 "config": dict(train=list(map(str, train)), val=list(map(str, val)),
                                n_images=n_images, size=size, batch_size=batch_size,
                                steps_per_epoch=steps_per_epoch, lr=lr, seed=seed,
                                sampling=sampling, max_train_waves=max_train_waves,
                                max_val_waves=max_val_waves, n_train_waves=len(waves),
                                n_val_series=len(vx))}
    data = EstimatorDataset(waves, sampling, n_images, batch_size, steps_per_epoch, size, seed,
                            workers=workers)
    t0 = time.monotonic()
    start_seconds = float(state["seconds"])
    while state["epoch"] < epochs and (time.monotonic() - t0) < 60 * max_minutes:
        data.set_epoch(state["epoch"])
        h = model.fit(data, epochs=1, verbose=0)
        loss = float(h.history["loss"][-1])
        val_loss = float(model.evaluate(vx, vy, batch_size=16, verbose=0))
        state["epoch"] += 1
        state["history"]["loss"].append(loss)
        state["history"]["val_loss"].append(val_loss)
        state["seconds"] = start_seconds + time.monotonic() - t0
        state["samples_seen"] = state["epoch"] * steps_per_epoch * batch_size
        atomic_save_model(model, out / "last.keras")
        if state["best_val_loss"] is None or val_loss < state["best_val_loss"]:
            state["best_val_loss"], state["best_epoch"] = val_loss, state["epoch"]
            atomic_save_model(model, out / "best.keras")
        state["machine"] = machine_description()
        atomic_write_json(state, state_path)
        if verbose:
            print(f"epoch {state['epoch']}: loss {loss:.4f}, val {val_loss:.4f} "
                  f"({state['seconds'] / 60:.1f} min)", flush=True)
    return state


def export_estimator(run_dir: str | os.PathLike, out_dir: str | os.PathLike, name: str, *,
                     which: str = "best", description: str = "", opset: int = 17,
                     evaluate: bool = True) -> Path:
    """ONNX file and card (``kind: aberrations``) of a run; with ``evaluate``, the per-parameter
    errors on the run's validation series go into the card's metrics."""
    import keras
    import onnx
    import onnxruntime as ort
    import tensorflow as tf
    import tf2onnx

    from .export import write_model_card

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    state = json.loads((run_dir / "state.json").read_text())
    cfg = state["config"]
    model = keras.models.load_model(run_dir / f"{which}.keras")
    n, size = int(cfg["n_images"]), int(cfg["size"])
    spec = (tf.TensorSpec([None, size, size, 2 * n], tf.float32, name=INPUT_NAME),)

    @tf.function(input_signature=spec)
    def forward(features):
        return {OUTPUT_NAME: tf.cast(model(features, training=False), tf.float32)}

    proto, _ = tf2onnx.convert.from_function(forward, input_signature=spec, opset=opset)
    proto.doc_string = ("napari-exitwave aberration estimator; input features NHWC "
                        "(estimate.estimator_features), output scaled parameters")
    onnx.checker.check_model(proto)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.onnx"
    tmp = path.with_suffix(".onnx.tmp")
    onnx.save(proto, str(tmp))
    os.replace(tmp, path)
    # parity on the validation inputs
    vwaves, sampling = _waves(cfg["val"], int(cfg.get("max_val_waves") or 60))
    vx, vy, vparams = validation_arrays(vwaves, sampling, n, size)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = np.concatenate([sess.run(None, {INPUT_NAME: vx[i:i + 8]})[0] for i in range(0, len(vx), 8)])
    ref = np.asarray(model.predict(vx, batch_size=8, verbose=0))
    parity = float(np.max(np.abs(got - ref)))
    if parity > 1e-3:
        raise AssertionError(f"ONNX and Keras outputs differ by {parity:.2g}")
    metrics = {"onnx_parity_max_abs": parity, "n_val_series": len(vx)}
    if evaluate:
        metrics["errors"] = errors_table(got, vparams, n)
    write_model_card(
        path, name=name, kind=ESTIMATOR_KIND, description=description or
        "aberration estimator: defocus, Cs, C12, C21, focal spread, blur and dose of a focal series",
        sampling=sampling, n_images=n, size_multiple=size, input_size=size,
        outputs=list(OUTPUTS), units=dict(UNITS), ranges=physics.ParameterRanges().to_dict(),
        input_name=INPUT_NAME, output_name=OUTPUT_NAME,
        normalization="estimate.estimator_features of the normalised series",
        dataset={"train": cfg["train"], "val": cfg["val"], "n_train_waves": cfg.get("n_train_waves")},
        training={k: state.get(k) for k in ("epoch", "best_epoch", "seconds", "samples_seen",
                                             "machine")} | {"config": cfg},
        metrics=metrics)
    return path
