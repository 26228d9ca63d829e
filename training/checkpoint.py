"""Checkpoints of a training run: Keras files written atomically, the run state, the machine.

A run directory holds ``last.keras`` (weights + optimizer state after the last epoch),
``best.keras`` (lowest validation loss) and ``state.json`` (epoch, history, configuration,
timings, machine); :func:`load_checkpoint` reads them back, also from a shipped
``models/checkpoints/<name>.keras`` (+ ``<name>.state.json``) to resume or fine-tune a shipped network.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["load_checkpoint", "atomic_save_model", "atomic_write_json", "machine_description",
           "keras_predictor", "set_determinism", "weights_from_onnx", "recover_run"]


def set_determinism(seed: int) -> None:
    import keras

    keras.utils.set_random_seed(int(seed))
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        try:
            tf.config.experimental.enable_op_determinism()
        except Exception:  # noqa: BLE001
            pass


def load_checkpoint(path: str | os.PathLike, which: str = "last"):
    """Load ``(model, state)`` from a run directory (``last``/``best``) or a ``.keras`` file.

    The state of a ``.keras`` file is ``<stem>.state.json`` beside it (shipped networks) or
    the ``state.json`` of its run directory; ``{}`` when there is none.
    """
    import keras

    from .network import custom_objects

    path = Path(path)
    if path.is_dir():
        state_path = path / "state.json"
        model_path = path / f"{which}.keras"
    else:  # a run's last/best.keras, or a shipped models/checkpoints/<name>.keras with <name>.state.json
        model_path = path
        state_path = path.with_suffix(".state.json")
        if not state_path.exists():
            state_path = path.parent / "state.json"
    if not model_path.exists():
        raise FileNotFoundError(f"no checkpoint {model_path}; train first (`exitwave-train train`)")
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    mixed = bool(state.get("config", {}).get("mixed_precision"))
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")
    model = keras.models.load_model(model_path, custom_objects=custom_objects(), compile=True)
    return model, state


def atomic_save_model(model, path: Path) -> None:
    tmp = path.with_name(path.stem + ".tmp.keras")
    model.save(tmp)
    os.replace(tmp, path)


def atomic_write_json(obj, path: Path) -> None:
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


def keras_predictor(model):
    def predict(x: np.ndarray) -> np.ndarray:
        return np.asarray(model(x, training=False), dtype=np.float32)

    return predict


def ship_checkpoint(run_dir: str | os.PathLike, out_dir: str | os.PathLike, name: str, *,
                    max_mb: float = 40.0) -> Path:
    """Copy a run's ``last.keras`` and ``state.json`` to ``out_dir/<name>.keras`` and
    ``<name>.state.json``: what ``train --init-from`` continues and ``finetune --from`` starts
    from. Refuses a file over ``max_mb`` (the repository keeps each shipped file <= 40 MB)."""
    import shutil

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    src, state = run_dir / "last.keras", run_dir / "state.json"
    if not src.exists() or not state.exists():
        raise FileNotFoundError(f"{run_dir} has no last.keras/state.json; train first")
    size = src.stat().st_size / 1e6
    if size > max_mb:
        raise ValueError(f"{src} is {size:.1f} MB, over --max-mb {max_mb:g}")
    out_dir.mkdir(parents=True, exist_ok=True)
    dst = out_dir / f"{name}.keras"
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)
    st = json.loads(state.read_text())
    st["shipped_from"] = str(run_dir)
    atomic_write_json(st, dst.with_suffix(".state.json"))
    return dst


def weights_from_onnx(onnx_path: str | os.PathLike, model) -> int:
    """Set ``model``'s Conv2D and PReLU weights from an ONNX file this project exported from
    the same architecture (tf2onnx keeps each layer's name in its initializers: a Conv2D's
    kernel as ``.../<layer>_1/convolution/ReadVariableOp:0`` in OIHW, its bias as
    ``.../<layer>_1/Squeeze:0``, a PReLU's alpha negated as ``.../<layer>_1/Neg:0``).

    The recovery path for a network whose Keras checkpoint was lost: the weights come back
    exactly, the optimizer state does not. Returns the number of layers set; raises
    ``ValueError`` when a layer of ``model`` has no matching initializer or a shape differs.
    """
    import onnx
    from onnx import numpy_helper

    inits = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(onnx_path)).graph.initializer}

    def find(layer: str, suffix: str) -> np.ndarray:
        hits = [v for k, v in inits.items() if f"/{layer}_1/{suffix}" in k or f"/{layer}/{suffix}" in k]
        if len(hits) != 1:
            raise ValueError(f"{onnx_path}: {len(hits)} initializers for layer {layer!r} "
                             f"({suffix}); not exported from this architecture")
        return hits[0]

    n = 0
    for layer in model.layers:
        if not layer.weights:
            continue
        kind = type(layer).__name__
        if kind == "Conv2D":
            new = [find(layer.name, "convolution/ReadVariableOp:0").transpose(2, 3, 1, 0),
                   find(layer.name, "Squeeze:0")]
        elif kind == "PReLU":
            new = [-find(layer.name, "Neg:0").reshape(tuple(layer.weights[0].shape))]
        else:
            raise ValueError(f"cannot recover a {kind} layer ({layer.name}) from ONNX")
        for w, v in zip(layer.weights, new):
            if tuple(w.shape) != v.shape:
                raise ValueError(f"{layer.name}: ONNX shape {v.shape} != Keras {tuple(w.shape)}")
        layer.set_weights([v.astype(np.float32) for v in new])
        n += 1
    return n


def recover_run(card_path: str | os.PathLike, run_dir: str | os.PathLike) -> Path:
    """Rebuild a run directory (``last.keras``, ``best.keras``, ``state.json``) from a shipped
    network's card and ONNX file, when its checkpoint is gone: the network of the card's
    ``training`` block with the ONNX weights, compiled with a fresh optimizer of the card's
    settings. ``state.json`` says so (``recovered_from_onnx``); ``train`` then continues it
    (not bit for bit: the optimizer's moments are lost) and ``ship`` ships it."""
    from .train import TrainConfig, make_model

    card_path, run_dir = Path(card_path), Path(run_dir)
    card = json.loads(card_path.read_text())
    tr = card.get("training") or {}
    if not tr.get("network"):
        raise ValueError(f"{card_path} has no training.network; cannot rebuild its network")
    ds = card.get("dataset") or {}
    cfg = TrainConfig(train=ds.get("train") or "", val=ds.get("val"), network=dict(tr["network"]),
                      epochs=int(tr.get("epochs") or 1), batch_size=int(tr.get("batch_size") or 8),
                      crop=tr.get("crop"), optimizer=tr.get("optimizer") or "adam",
                      learning_rate=float(tr.get("learning_rate") or 1e-3),
                      seed=int(tr.get("seed") or 0), schedule=tr.get("schedule") or "constant",
                      loss=tr.get("loss") or "mse", drift=float(tr.get("drift_px") or 0.0),
                      sampling_range=tr.get("sampling_range"))
    model = make_model(cfg)
    weights_from_onnx(card_path.parent / card["onnx_file"], model)
    model.optimizer.build(model.trainable_variables)  # zero moments, saved with the model
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_save_model(model, run_dir / "last.keras")
    atomic_save_model(model, run_dir / "best.keras")
    loss = tr.get("final_val_loss")
    state = dict(config=cfg.to_dict(), epoch=cfg.epochs,
                 history={"loss": [tr.get("final_loss")] if tr.get("final_loss") else [],
                          "val_loss": [loss] if loss else []},
                 epoch_seconds=[], train_seconds=float(tr.get("train_seconds") or 0.0),
                 samples_seen=int(tr.get("samples_seen") or 0), best_val_loss=loss,
                 best_epoch=cfg.epochs, finished=True,
                 recovered_from_onnx=dict(card=str(card_path), sha256=card.get("sha256"),
                                          note="weights exact; optimizer state lost"),
                 machine=tr.get("machine"))
    atomic_write_json(state, run_dir / "state.json")
    return run_dir
