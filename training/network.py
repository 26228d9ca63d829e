"""The exit-wave network: a U-Net / FusionNet (Larsen et al., SOI Sec. A.1), in Keras 3.

Input ``(batch, height, width, n_images)`` (NHWC, each image standardised by
:func:`napari_exitwave.physics.normalize_series`); output ``(batch, height, width, 2)``, the real
and imaginary part of the exit wave. ``height`` and ``width`` are free (``None``) but must be
multiples of ``2**depth`` (:func:`size_multiple`).

Architecture
------------
- A convolutional block is five 3x3 convolutions, each followed by a PReLU whose slopes are
  shared over space (``shared_axes=[1, 2]``, so the model accepts any image size). The output of
  the first convolution is added to the input of the fifth (the short, FusionNet skip).
- Kernels start He-normal (suited to rectifiers: activations keep their scale through
  the ~35 convolutions of the default network).
- Encoder: ``depth`` blocks each followed by 2x2 MaxPool; the number of channels doubles after
  every pooling (``base_filters * 2**level``). A bottleneck block at the lowest resolution.
- Decoder: bilinear 2x upsampling (:class:`BilinearUpSampling2D`), concatenation with the encoder
  block of the same resolution (the long skip), a block with half the channels.
- Output: a linear 1x1 convolution to 2 channels, in float32 even under mixed precision; its
  kernel starts at zero and its bias at (1, 0), the vacuum value, so training starts from
  "vacuum everywhere" (with He-normal kernels this trains several times faster than Keras'
  default initialisation in our tests).

The code uses ``keras.ops`` only, so the same model builds under ``KERAS_BACKEND=tensorflow``
(default), ``torch`` or ``jax``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import keras
from keras import layers, ops

__all__ = ["NetworkConfig", "PRESETS", "BilinearUpSampling2D", "build_network", "size_multiple",
           "custom_objects"]


@dataclasses.dataclass
class NetworkConfig:
    """Hyper-parameters of the network.

    ``depth`` is the number of MaxPool steps (input sizes must be multiples of ``2**depth``);
    ``base_filters`` the channels of the first block. The paper's network (Fig. S1, after
    Madsen et al.) is close to ``depth=4, base_filters=32``.
    """

    n_images: int = 3
    depth: int = 4
    base_filters: int = 32
    n_outputs: int = 2

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "NetworkConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


from .presets import PRESETS  # noqa: E402  (re-exported; Keras-free module)


def size_multiple(depth: int) -> int:
    """Input height and width must be multiples of this (``2**depth``)."""
    return 2**int(depth)


@keras.saving.register_keras_serializable(package="exitwave")
class BilinearUpSampling2D(layers.Layer):
    """Exact 2x bilinear upsampling (half-pixel centres, edge clamped) from shape-agnostic ops.

    Equal to ``UpSampling2D(2, interpolation="bilinear")`` / ``tf.image.resize(...,
    "bilinear")``: output pixel ``2k`` is ``3/4 x[k] + 1/4 x[k-1]`` and ``2k+1`` is
    ``3/4 x[k] + 1/4 x[k+1]``, with ``x[-1] = x[0]`` and ``x[n] = x[n-1]``. Built from slicing,
    concatenation, stacking and reshaping only, so it traces with dynamic height and width
    (ONNX export) on every backend, which Keras' ``UpSampling2D`` does not.
    """

    def _up_axis(self, x, axis: int):
        if axis == 1:
            prev = ops.concatenate([x[:, :1], x[:, :-1]], axis=1)
            nxt = ops.concatenate([x[:, 1:], x[:, -1:]], axis=1)
        else:
            prev = ops.concatenate([x[:, :, :1], x[:, :, :-1]], axis=2)
            nxt = ops.concatenate([x[:, :, 1:], x[:, :, -1:]], axis=2)
        even = 0.75 * x + 0.25 * prev
        odd = 0.75 * x + 0.25 * nxt
        y = ops.stack([even, odd], axis=axis + 1)  # (..., n, 2, ...): interleave even/odd
        shape = ops.shape(x)
        new_shape = [-1, shape[1], shape[2], shape[3]]
        new_shape[axis] = shape[axis] * 2
        return ops.reshape(y, new_shape)

    def call(self, x):
        return self._up_axis(self._up_axis(x, 1), 2)

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape
        return (b, None if h is None else 2 * h, None if w is None else 2 * w, c)


def _conv(x, filters: int, name: str):
    x = layers.Conv2D(filters, 3, padding="same", kernel_initializer="he_normal",
                      name=f"{name}_conv")(x)
    return layers.PReLU(shared_axes=[1, 2], name=f"{name}_prelu")(x)


def _block(x, filters: int, name: str):
    """Five 3x3 conv + PReLU; the first one's output is added to the fifth one's input."""
    first = _conv(x, filters, f"{name}_1")
    y = first
    for i in range(2, 5):
        y = _conv(y, filters, f"{name}_{i}")
    y = layers.Add(name=f"{name}_skip")([first, y])
    return _conv(y, filters, f"{name}_5")


def build_network(config: NetworkConfig | None = None, **kwargs) -> keras.Model:
    """Build the U-Net / FusionNet of :mod:`exitwave_training.network`.

    Parameters
    ----------
    config : NetworkConfig, optional
        Or pass its fields as keyword arguments (``n_images``, ``depth``, ``base_filters``).

    Returns
    -------
    keras.Model with input ``images`` ``(None, None, None, n_images)`` and output
    ``exit_wave`` ``(None, None, None, 2)``.
    """
    cfg = config if config is not None else NetworkConfig(**kwargs)
    if cfg.depth < 1 or cfg.base_filters < 1 or cfg.n_images < 1:
        raise ValueError(f"depth, base_filters and n_images must be >= 1, got {cfg}")
    inputs = keras.Input(shape=(None, None, cfg.n_images), name="images")
    x = inputs
    skips = []
    for level in range(cfg.depth):
        x = _block(x, cfg.base_filters * 2**level, f"down{level}")
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"pool{level}")(x)
    x = _block(x, cfg.base_filters * 2**cfg.depth, "bottom")
    for level in reversed(range(cfg.depth)):
        x = BilinearUpSampling2D(name=f"up{level}")(x)
        x = layers.Concatenate(name=f"concat{level}")([x, skips[level]])
        x = _block(x, cfg.base_filters * 2**level, f"dec{level}")
    # bias starts at vacuum (1 + 0j): the network learns the deviation from vacuum
    bias0 = [1.0] + [0.0] * (cfg.n_outputs - 1)
    outputs = layers.Conv2D(cfg.n_outputs, 1, activation="linear", dtype="float32",
                            kernel_initializer="zeros",
                            bias_initializer=keras.initializers.Constant(bias0),
                            name="exit_wave")(x)
    return keras.Model(inputs, outputs, name="exitwave_unet")


@keras.saving.register_keras_serializable(package="exitwave")
class CharbonnierLoss(keras.losses.Loss):
    """Smooth L1: ``mean(sqrt((pred - true)^2 + eps^2) - eps)``."""

    def __init__(self, eps: float = 1e-3, name: str = "charbonnier", **kwargs):
        super().__init__(name=name, **kwargs)
        self.eps = float(eps)

    def call(self, y_true, y_pred):
        d = y_pred - y_true
        return keras.ops.mean(keras.ops.sqrt(d * d + self.eps**2) - self.eps, axis=-1)

    def get_config(self):
        return {**super().get_config(), "eps": self.eps}


@keras.saving.register_keras_serializable(package="exitwave")
class ColumnWeightedMSE(keras.losses.Loss):
    """MSE weighted by ``1 + weight * |target - 1| / 0.1`` per pixel: atomic columns (where the
    exit wave departs from vacuum, ``|psi - 1|`` ~ 0.1-0.5) count more than the vacuum."""

    def __init__(self, weight: float = 4.0, name: str = "column_mse", **kwargs):
        super().__init__(name=name, **kwargs)
        self.weight = float(weight)

    def call(self, y_true, y_pred):
        dev = keras.ops.sqrt((y_true[..., 0] - 1.0) ** 2 + y_true[..., 1] ** 2)
        w = 1.0 + self.weight * dev / 0.1
        return w * keras.ops.mean((y_pred - y_true) ** 2, axis=-1)

    def get_config(self):
        return {**super().get_config(), "weight": self.weight}


def custom_objects() -> dict[str, Any]:
    """Objects needed by ``keras.models.load_model`` for a saved network."""
    return {"BilinearUpSampling2D": BilinearUpSampling2D, "CharbonnierLoss": CharbonnierLoss,
            "ColumnWeightedMSE": ColumnWeightedMSE}
