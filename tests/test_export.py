"""ONNX export: dynamic height/width, parity with Keras, model card round trip."""

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest

pytest.importorskip("tf2onnx")
ort = pytest.importorskip("onnxruntime")

from exitwave_training.export import (  # noqa: E402
    export_onnx, onnx_parity, read_model_card, sha256_file, write_model_card)
from exitwave_training.network import build_network  # noqa: E402
from napari_exitwave import physics  # noqa: E402


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    import keras

    keras.utils.set_random_seed(0)
    model = build_network(n_images=3, depth=2, base_filters=4)
    # non-trivial weights: perturb the biases and PReLU slopes away from their initial values
    rng = np.random.default_rng(0)
    model.set_weights([w + 0.05 * rng.standard_normal(w.shape).astype(w.dtype)
                       for w in model.get_weights()])
    path = export_onnx(model, tmp_path_factory.mktemp("onnx") / "toy.onnx")
    return model, path


def test_io_names_and_dynamic_axes(exported):
    _, path = exported
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,), (out,) = sess.get_inputs(), sess.get_outputs()
    assert inp.name == "images" and out.name == "exit_wave"
    assert inp.type == out.type == "tensor(float)"
    assert inp.shape == ["batch", "height", "width", 3]
    assert out.shape == ["batch", "height", "width", 2]


def test_parity_random_two_sizes(exported):
    model, path = exported
    worst = onnx_parity(model, path, sizes=((32, 32), (48, 80)))
    assert worst <= 1e-4


def test_parity_simulated_series_and_batch(exported):
    model, path = exported
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:64, :96] * 0.2
    phase = sum(0.4 * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / 0.2)
                for y, x in rng.uniform(2, 11, (20, 2)))
    wave = np.exp(1j * phase)
    series = physics.simulate_focal_series(wave, 0.2, physics.sample_parameters(rng, 3), rng=rng)
    x = np.moveaxis(physics.normalize_series(series), 0, -1)[None]
    worst = onnx_parity(model, path, inputs=[x, np.concatenate([x, -x])[:, :32, :48]])
    assert worst <= 1e-4


def test_float16_variant(exported, tmp_path):
    model, _ = exported
    path = export_onnx(model, tmp_path / "toy_fp16.onnx", float16=True)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].type == "tensor(float)"  # float32 I/O, float16 inside
    worst = onnx_parity(model, path, sizes=((32, 32), (16, 48)))
    assert worst <= 2e-2


def test_model_card_round_trip(exported, tmp_path):
    _, path = exported
    onnx_copy = tmp_path / "toy.onnx"
    onnx_copy.write_bytes(path.read_bytes())
    card_path = write_model_card(onnx_copy, name="toy", description="test", sampling=0.105,
                                 n_images=3, defocus_step=50.0, size_multiple=4,
                                 dataset={"name": "toy", "n": 8},
                                 training={"epochs": 1, "optimizer": "rmsprop"},
                                 metrics={"rmse_real": np.float64(0.01)})
    card = json.loads(card_path.read_text())
    for key in ("format_version", "name", "onnx_file", "sha256", "sampling", "n_images",
                "defocus_step", "defocus_range", "energy", "normalization", "size_multiple",
                "input_layout", "dtype", "dataset", "training", "metrics"):
        assert key in card, key
    assert card["sha256"] == sha256_file(onnx_copy)
    assert card["onnx_file"] == "toy.onnx" and card["size_multiple"] == 4
    assert read_model_card(card_path)["metrics"] == {"rmse_real": 0.01}
    from napari_exitwave.inference import ModelCard

    mc = ModelCard.load(card_path)
    assert mc.sampling == 0.105 and mc.n_images == 3 and mc.size_multiple == 4
    mc.verify()
    onnx_copy.write_bytes(path.read_bytes() + b"\0")  # tampered file
    with pytest.raises(ValueError, match="does not match"):
        read_model_card(card_path)


def test_mixed_precision_model_exports_in_float32(tmp_path):
    import keras

    from exitwave_training.export import _float32_copy

    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        mixed = build_network(n_images=2, depth=2, base_filters=4)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert mixed.get_layer("down0_1_conv").compute_dtype == "float16"
    full = _float32_copy(mixed)
    assert all(la.compute_dtype == "float32" for la in full.layers)
    path = export_onnx(full, tmp_path / "mp.onnx")
    assert onnx_parity(full, path, sizes=((16, 16), (32, 24))) <= 1e-4
    x = np.random.default_rng(0).standard_normal((1, 16, 16, 2)).astype("float32")
    np.testing.assert_allclose(np.asarray(full(x)), np.asarray(mixed(x), dtype=np.float32),
                               atol=1e-2)
