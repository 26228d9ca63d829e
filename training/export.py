"""Export a trained network to ONNX with dynamic height and width, plus its JSON model card.

The ONNX graph has one input ``images`` ``[batch, height, width, n_images]`` float32 (NHWC) and
one output ``exit_wave`` ``[batch, height, width, 2]`` float32 (docs/contracts.md). ``batch``,
``height`` and ``width`` are dynamic; height and width must be multiples of ``size_multiple``.

How: the Keras model is wrapped in a ``tf.function`` with the signature
``TensorSpec([None, None, None, n_images])`` and converted with ``tf2onnx.convert.from_function``.
This works for any size because the network's upsampling is
:class:`~exitwave_training.network.BilinearUpSampling2D` (shape-agnostic ops), not Keras'
``UpSampling2D``, whose bilinear resize cannot be traced with unknown sizes. The conversion
needs TensorFlow; a model trained under another backend is saved as ``.keras`` and exported
from a TensorFlow environment (the weights are backend-independent).

The optional float16 variant computes in half precision inside the graph but keeps float32
input and output, so the plugin feeds it exactly like the float32 model.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from napari_exitwave.inference import sha256_file  # the one digest the plugin checks cards with

__all__ = ["export_onnx", "sha256_file", "write_model_card", "read_model_card", "onnx_parity",
           "export_checkpoint", "CARD_FORMAT_VERSION"]

CARD_FORMAT_VERSION = 1


def _require_tensorflow():
    if os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow":
        raise RuntimeError(
            "ONNX export needs KERAS_BACKEND=tensorflow (tf2onnx). Save the model as .keras and "
            "run `exitwave-train export` in an environment with TensorFlow.")
    import tensorflow as tf

    return tf


def _name_dims(model_proto, n_images: int) -> None:
    """Give the dynamic axes readable names: batch, height, width."""
    for value, last in ((model_proto.graph.input[0], n_images),
                        (model_proto.graph.output[0], 2)):
        dims = value.type.tensor_type.shape.dim
        for d, name in zip(dims, ("batch", "height", "width")):
            d.ClearField("dim_value")
            d.dim_param = name
        dims[3].ClearField("dim_param")
        dims[3].dim_value = last


def export_onnx(model, path: str | os.PathLike, *, float16: bool = False,
                opset: int = 17) -> Path:
    """Write ``model`` (a Keras network from :func:`~exitwave_training.network.build_network`)
    as ONNX with dynamic batch, height and width.

    Parameters
    ----------
    model : keras.Model
        Input ``(None, None, None, n_images)``, output ``(None, None, None, 2)``.
    path : path of the ``.onnx`` file to write.
    float16 : compute in float16 inside the graph (input and output stay float32).
    opset : ONNX opset.

    Returns
    -------
    Path of the written file.
    """
    tf = _require_tensorflow()
    import onnx
    import tf2onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n_images = int(model.input_shape[-1])
    net = model
    if float16:
        net = _float16_copy(model)
    spec = (tf.TensorSpec([None, None, None, n_images], tf.float32, name="images"),)

    @tf.function(input_signature=spec)
    def forward(images):
        x = images if not float16 else tf.cast(images, tf.float16)
        y = net(x, training=False)
        return {"exit_wave": tf.cast(y, tf.float32)}

    proto, _ = tf2onnx.convert.from_function(forward, input_signature=spec, opset=opset)
    _name_dims(proto, n_images)
    proto.doc_string = "napari-exitwave U-Net; input images NHWC normalised, output exit_wave"
    onnx.checker.check_model(proto)
    tmp = path.with_suffix(path.suffix + ".tmp")
    onnx.save(proto, str(tmp))
    os.replace(tmp, path)
    return path


def _float16_copy(model):
    """The same network with float16 weights and computation (float32 output layer)."""
    import keras

    from .network import NetworkConfig, build_network

    cfg = _config_of(model)
    old = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float16")
    try:
        half = build_network(cfg)
    finally:
        keras.config.set_dtype_policy(old)
    half.set_weights([np.asarray(w) for w in model.get_weights()])
    assert isinstance(cfg, NetworkConfig)
    return half


def _float32_copy(model):
    """The same network computing in float32 (for models trained with mixed precision)."""
    import keras

    from .network import build_network

    old = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")
    try:
        full = build_network(_config_of(model))
    finally:
        keras.config.set_dtype_policy(old)
    full.set_weights([np.asarray(w, dtype=np.float32) for w in model.get_weights()])
    return full


def _config_of(model):
    """Recover the :class:`NetworkConfig` of a built network from its layers."""
    from .network import NetworkConfig

    n_images = int(model.input_shape[-1])
    depth = sum(1 for layer in model.layers if layer.name.startswith("pool"))
    base = int(model.get_layer("down0_1_conv").filters)
    return NetworkConfig(n_images=n_images, depth=depth, base_filters=base)


def _card_fields(onnx_path: Path, **fields) -> dict[str, Any]:
    card = {
        "format_version": CARD_FORMAT_VERSION,
        "name": onnx_path.stem,
        "description": "",
        "onnx_file": onnx_path.name,
        "sha256": sha256_file(onnx_path),
        "sampling": None,
        "n_images": None,
        "defocus_step": None,
        "defocus_range": [-150.0, 150.0],
        "energy": 50e3,
        "normalization": "per-image standardisation (physics.normalize_series)",
        "size_multiple": None,
        "input_layout": "NHWC",
        "dtype": "float32",
        "dataset": {},
        "training": {},
        "metrics": {},
    }
    card.update({k: v for k, v in fields.items() if v is not None})
    return card


def write_model_card(onnx_path: str | os.PathLike, json_path: str | os.PathLike | None = None,
                     **fields) -> Path:
    """Write the JSON model card of ``onnx_path`` (fields of docs/contracts.md).

    ``sha256`` and ``onnx_file`` are filled in from the ONNX file; everything else comes from
    ``fields`` (``name``, ``description``, ``sampling``, ``n_images``, ``defocus_step``,
    ``defocus_range``, ``energy``, ``size_multiple``, ``dtype``, ``dataset``, ``training``,
    ``metrics``, ...). The plugin's :class:`napari_exitwave.inference.ModelCard` checks and
    writes it, so the card is exactly what the plugin reads (one card writer).
    """
    from napari_exitwave.inference import ModelCard

    onnx_path = Path(onnx_path)
    json_path = Path(json_path) if json_path else onnx_path.with_suffix(".json")
    card = json.loads(json.dumps(_card_fields(onnx_path, **fields), default=_json_default))
    tmp = json_path.with_name(json_path.name + ".tmp")
    ModelCard.from_dict(card, json_path).save(tmp)
    os.replace(tmp, json_path)
    return json_path


def read_model_card(json_path: str | os.PathLike, verify: bool = True) -> dict[str, Any]:
    """Read a card written by :func:`write_model_card` (the plugin's reader); check its digest."""
    from napari_exitwave.inference import ModelCard

    from napari_exitwave.errors import ModelError

    try:
        card = ModelCard.load(json_path)
        if verify:
            card.verify()
    except ModelError as exc:  # the exporter's callers expect ValueError
        raise ValueError(str(exc)) from exc
    return json.loads(Path(json_path).read_text())


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (Path, _dt.datetime)):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def onnx_parity(model, onnx_path: str | os.PathLike,
                inputs: Sequence[np.ndarray] | None = None,
                sizes: Sequence[tuple[int, int]] = ((64, 64), (96, 128)),
                seed: int = 0) -> float:
    """Max absolute difference between the Keras model and the ONNX file (onnxruntime CPU).

    ``inputs`` are ``(batch, h, w, n_images)`` float32 arrays; by default random normal inputs
    of the given ``sizes``.
    """
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    n_images = int(model.input_shape[-1])
    if inputs is None:
        rng = np.random.default_rng(seed)
        inputs = [rng.standard_normal((1, h, w, n_images)).astype(np.float32) for h, w in sizes]
    worst = 0.0
    for x in inputs:
        ref = np.asarray(model(x, training=False), dtype=np.float32)
        got = sess.run(["exit_wave"], {"images": np.asarray(x, np.float32)})[0]
        if got.shape != ref.shape:
            raise AssertionError(f"ONNX output shape {got.shape} != Keras {ref.shape}")
        worst = max(worst, float(np.max(np.abs(got - ref))))
    return worst


def export_checkpoint(checkpoint: str | os.PathLike, out_dir: str | os.PathLike, name: str, *,
                      description: str = "", float16: bool = False,
                      metrics: dict | None = None, extra: dict | None = None,
                      parity_inputs: Sequence[np.ndarray] | None = None) -> dict[str, Any]:
    """Export a training run (its ``run_dir`` or a ``.keras`` file) to ``out_dir/<name>.onnx``
    and ``out_dir/<name>.json``; returns the card (with ``parity_max_abs`` in ``training``).

    The card's sampling, n_images, defocus step, data set and training configuration come from
    the run's ``state.json`` (written by :mod:`exitwave_training.train`).
    """
    from .checkpoint import load_checkpoint

    model, state = load_checkpoint(checkpoint)
    if any(getattr(la, "compute_dtype", "float32") != "float32" for la in model.layers):
        model = _float32_copy(model)  # mixed-precision training: export float32 compute
    out_dir = Path(out_dir)
    onnx_path = export_onnx(model, out_dir / f"{name}.onnx")
    parity = onnx_parity(model, onnx_path, inputs=parity_inputs)
    card_fields = _fields_from_state(state, name, description)
    card_fields["training"]["onnx_parity_max_abs"] = parity
    if metrics is None:
        metrics = state.get("metrics") or {}
    card_fields["metrics"] = metrics
    card_fields.update(extra or {})
    json_path = write_model_card(onnx_path, out_dir / f"{name}.json", **card_fields)
    result = read_model_card(json_path)
    if float16:
        p16 = export_onnx(model, out_dir / f"{name}_fp16.onnx", float16=True)
        f16 = dict(card_fields, name=f"{name}_fp16", dtype="float16",
                   description=(description + " (float16 compute, float32 I/O)").strip())
        write_model_card(p16, out_dir / f"{name}_fp16.json", **f16)
    return result


def _fields_from_state(state: dict[str, Any], name: str, description: str) -> dict[str, Any]:
    cfg = state.get("config", {})
    data = state.get("data", {})
    net = cfg.get("network", {})
    ranges = data.get("ranges", {})
    n_images = int(net.get("n_images", 3))
    total = float(ranges.get("total_defocus_range", 100.0))
    return dict(
        name=name,
        description=description,
        sampling=data.get("sampling"),
        n_images=n_images,
        defocus_step=total / (n_images - 1) if n_images > 1 else 0.0,
        defocus_range=list(ranges.get("defocus", [-150.0, 150.0])),
        energy=float(ranges.get("energy", 50e3)),
        size_multiple=2 ** int(net.get("depth", 4)),
        dataset=data.get("dataset", {}),
        training=dict(
            network=net,
            epochs=state.get("epoch"),
            optimizer=cfg.get("optimizer"),
            learning_rate=cfg.get("learning_rate"),
            schedule=cfg.get("schedule", "constant"),
            loss=cfg.get("loss", "mse"),
            drift_px=cfg.get("drift", 0.0),
            sampling_range=cfg.get("sampling_range"),
            samples_seen=state.get("samples_seen"),
            finetuned_from=state.get("finetuned_from"),
            lr_changes=state.get("lr_changes"),
            batch_size=cfg.get("batch_size"),
            crop=cfg.get("crop"),
            seed=cfg.get("seed"),
            mixed_precision=cfg.get("mixed_precision"),
            train_seconds=state.get("train_seconds"),
            machine=state.get("machine"),
            backend=state.get("backend"),
            final_loss=(state.get("history", {}).get("loss") or [None])[-1],
            final_val_loss=(state.get("history", {}).get("val_loss") or [None])[-1],
        ),
    )
