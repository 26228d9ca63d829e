"""Tiny ONNX networks with outputs known analytically, for tests (no trained model needed).

``make_conv_model`` builds a network with the contract's interface (input ``images`` NHWC
float32 ``[batch, h, w, n_images]``, output ``exit_wave`` ``[batch, h, w, 2]``):

- real part = 1 + sum over images of a 5x5 correlation (zero padding) with ``kernel`` (n, 5, 5)
- imaginary part = (2 x 2 average pooling, nearest upsampling) of image 0, repeated
  ``n_pool`` times in blocks of ``2**n_pool`` px: it needs sizes that are multiples of
  ``2**n_pool``, like a U-Net, and is local to aligned blocks.

``reference_output`` computes the same in numpy for a padded frame.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def make_conv_model(path, n_images=3, n_pool=4, seed=0, card=True, sampling=0.1,
                    name="tiny", defocus_step=50.0):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    kernel = rng.normal(scale=0.2, size=(n_images, 5, 5)).astype(np.float32)
    block = 2 ** n_pool
    w = np.zeros((1, n_images, 5, 5), np.float32)
    w[0] = kernel
    nodes = [
        helper.make_node("Transpose", ["images"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["nchw", "W"], ["conv"], pads=[2, 2, 2, 2]),
        helper.make_node("Add", ["conv", "one"], ["real"]),
        helper.make_node("Slice", ["nchw", "s0", "s1", "sax"], ["first"]),
        helper.make_node("AveragePool", ["first"], ["pooled"], kernel_shape=[block, block],
                         strides=[block, block]),
        helper.make_node("Resize", ["pooled", "", "scales"], ["imag"], mode="nearest"),
        helper.make_node("Concat", ["real", "imag"], ["out_nchw"], axis=1),
        helper.make_node("Transpose", ["out_nchw"], ["exit_wave"], perm=[0, 2, 3, 1]),
    ]
    inits = [
        numpy_helper.from_array(w, "W"),
        numpy_helper.from_array(np.array([1.0], np.float32), "one"),
        numpy_helper.from_array(np.array([0], np.int64), "s0"),
        numpy_helper.from_array(np.array([1], np.int64), "s1"),
        numpy_helper.from_array(np.array([1], np.int64), "sax"),
        numpy_helper.from_array(np.array([1, 1, block, block], np.float32), "scales"),
    ]
    graph = helper.make_graph(
        nodes, "tiny_exitwave",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["b", "h", "w", n_images])],
        [helper.make_tensor_value_info("exit_wave", TensorProto.FLOAT, ["b", "h", "w", 2])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = Path(path)
    onnx.save(model, str(path))
    if card:
        from napari_exitwave.inference import sha256_file

        d = {"format_version": 1, "name": name, "description": "tiny analytic test network",
             "onnx_file": path.name, "sha256": sha256_file(path), "sampling": sampling,
             "n_images": n_images, "defocus_step": defocus_step,
             "defocus_range": [-150, 150], "energy": 50000.0,
             "normalization": "per-image standardisation (physics.normalize_series)",
             "size_multiple": block, "input_layout": "NHWC", "dtype": "float32",
             "dataset": {}, "training": {}, "metrics": {}}
        path.with_suffix(".json").write_text(json.dumps(d, indent=2))
    return path, kernel


def reference_output(frame, kernel, n_pool=4):
    """What ``make_conv_model`` returns for one (n, H, W) frame (H, W multiples of 2**n_pool)."""
    from scipy import ndimage

    frame = np.asarray(frame, np.float64)
    real = 1.0 + sum(ndimage.correlate(frame[i], kernel[i].astype(np.float64), mode="constant")
                     for i in range(len(frame)))
    b = 2 ** n_pool
    H, W = frame.shape[-2:]
    pooled = frame[0].reshape(H // b, b, W // b, b).mean(axis=(1, 3))
    imag = np.repeat(np.repeat(pooled, b, axis=0), b, axis=1)
    return real + 1j * imag
