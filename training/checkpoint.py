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
           "keras_predictor", "set_determinism"]


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
