"""Running exported networks with ONNX Runtime: sessions, devices, padding and tiles.

A network is ``models/<name>.onnx`` plus its model card (:mod:`napari_exitwave.model_cards`,
docs/contracts.md): input ``images`` float32 NHWC ``[batch, height, width, n_images]`` normalised
by :func:`napari_exitwave.physics.normalize_series`, output ``exit_wave`` float32
``[batch, height, width, 2]`` (real, imaginary). Height and width must be multiples of the card's
``size_multiple``: :class:`OnnxReconstructor` pads (reflect) smaller frames and cuts large ones
into overlapping tiles blended with cosine ramps; :func:`auto_tile` is the one rule that picks
the tile (one pass up to :data:`SINGLE_PASS_MAX` px, else balanced tiles).

Devices: ``providers="auto"`` asks for CUDA when ONNX Runtime offers it and CPU otherwise, then
reads back the providers the session really uses: onnxruntime-gpu silently falls back to CPU when
the CUDA libraries are missing, and :attr:`OnnxReconstructor.device` says so. A GPU session is
run once on a small input; if that fails (cuDNN mismatch...), the CPU takes over, with a note.
"""

from __future__ import annotations

import math
import warnings
from typing import Callable, Sequence

import numpy as np

from .errors import ModelError, ReconstructionCancelled
from .model_cards import (DEFAULT_MODEL, MODELS_ENV, UNVERIFIED, ModelCard,  # noqa: F401
                          find_model, list_models, models_dirs, sha256_file)

__all__ = [
    "DEFAULT_MODEL",
    "ModelCard",
    "list_models",
    "find_model",
    "models_dirs",
    "sha256_file",
    "OnnxReconstructor",
    "get_reconstructor",
    "tile_starts",
    "auto_tile",
    "SINGLE_PASS_MAX",
]

SINGLE_PASS_MAX = 1024
"""Largest network frame (px) inferred in one pass by :func:`auto_tile`."""

INPUT_NAME = "images"
OUTPUT_NAME = "exit_wave"


def auto_tile(shape, sampling: float | None = None, network_sampling: float | None = None,
              size_multiple: int = 16, single_pass_max: int = SINGLE_PASS_MAX,
              max_tile: int = 512, overlap: int = 64) -> int:
    """The inference tile (px at the network's pixel size) for a frame of ``shape``.

    Parameters
    ----------
    shape : tuple
        Shape of the series or frame; its last two entries are (ny, nx) in px.
    sampling, network_sampling : float, optional
        Pixel sizes (A/px) of the series and of the network; the frame is sized as it will be
        after resampling. Unknown (None): as is.
    size_multiple : int
        The network's ``size_multiple``; the frame is padded up to a multiple of it.
    single_pass_max : int
        Frames up to this size (px, after padding) run in one pass.
    max_tile, overlap : int
        Larger frames are cut into the fewest tiles of at most ``max_tile`` px that cover them
        with ``overlap`` px, all of about the same size.

    On a CPU one pass over a frame of up to ~1k px is the fastest (no overlap is computed
    twice) and needs less memory than batches of tiles; larger frames get balanced tiles (a 1952
    px frame: 5 x 5 tiles of 448 px instead of 512 px tiles whose last row and column mostly
    repeat the previous ones). See docs/performance.md.

    >>> auto_tile((3, 1024, 1024), 0.1, 0.105)
    976
    >>> auto_tile((3, 2048, 2048), 0.1, 0.105)
    448
    """
    n = max(int(v) for v in shape[-2:])
    if sampling and network_sampling:
        n = int(np.ceil(n * float(sampling) / float(network_sampling)))
    m = max(1, int(size_multiple))
    n = -(-n // m) * m
    if n <= single_pass_max:
        return n
    k = -(-(n - overlap) // (max_tile - overlap))          # tiles per axis
    tile = -(-(n + (k - 1) * overlap) // k)                 # equal tiles covering n
    return min(max_tile, -(-tile // m) * m)


# ----------------------------------------------------------------------------------------------
# tiling


def tile_starts(n: int, tile: int, overlap: int) -> list[int]:
    """Start indices of tiles of length ``tile`` covering ``0..n`` with at least ``overlap``."""
    if n <= tile:
        return [0]
    step = tile - overlap
    if step <= 0:
        raise ValueError(f"overlap ({overlap}) must be smaller than the tile ({tile})")
    starts = list(range(0, n - tile, step))
    starts.append(n - tile)
    return starts


def _edge_weights(length: int, start: int, total: int, overlap: int) -> np.ndarray:
    """1-D blending weight of a tile: a raised-cosine ramp at edges inside the frame.

    The ramp is zero over the outer quarter of the overlap, rises over its middle half and is
    one beyond, so pixels a network computes with less than ``overlap / 4`` px of context at a
    tile edge never count; at the frame's own edges the weight is one.
    """
    w = np.ones(length)
    if overlap <= 0:
        return w
    d = np.arange(length) + 0.5
    lo, width = overlap / 4, overlap / 2
    ramp_left = np.sin(0.5 * np.pi * np.clip((d - lo) / width, 0, 1)) ** 2
    ramp_right = ramp_left[::-1]
    if start > 0:
        w *= ramp_left
    if start + length < total:
        w *= ramp_right
    return w


# ----------------------------------------------------------------------------------------------
# the reconstructor

_AUTO = "auto"


def _choose_providers(providers) -> list:
    import onnxruntime as ort

    available = ort.get_available_providers()
    if providers is None or (isinstance(providers, str) and providers.lower() == _AUTO):
        wanted = [p for p in ("CUDAExecutionProvider",) if p in available]
        return wanted + ["CPUExecutionProvider"]
    if isinstance(providers, str):
        key = providers.lower()
        if key == "cpu":
            return ["CPUExecutionProvider"]
        if key in ("cuda", "gpu"):
            if "CUDAExecutionProvider" not in available:
                raise ModelError(
                    "CUDA was requested but this ONNX Runtime has no CUDA support (available: "
                    f"{', '.join(available)}); install the gpu extra (onnxruntime-gpu, without "
                    "the CPU onnxruntime) or use the CPU")
            return ["CUDAExecutionProvider"]
        providers = [providers]
    return list(providers)


def _device_name(providers: Sequence[str]) -> str:
    first = providers[0] if providers else "CPUExecutionProvider"
    for key, name in (("CUDA", "CUDA"), ("Tensorrt", "CUDA"), ("ROCM", "ROCm"),
                      ("DirectML", "DirectML"), ("CoreML", "CoreML"), ("OpenVINO", "OpenVINO")):
        if key.lower() in first.lower():
            return name
    return "CPU"


class OnnxReconstructor:
    """An ONNX Runtime session for one exit-wave network.

    Parameters
    ----------
    model : ModelCard, str or Path
        A card, a model name (see :func:`list_models`), or a ``.json``/``.onnx`` path.
    providers : "auto", "cpu", "cuda" or list of ONNX Runtime provider names
        ``"auto"``: CUDA when available and working, CPU otherwise. ``"cuda"`` raises
        :class:`ModelError` when CUDA is not available.
    verify : bool
        Check the ONNX file against the card's sha256 before loading.

    Attributes
    ----------
    card : ModelCard
    device : str
        ``"CUDA"`` or ``"CPU"``: what the session actually runs on.
    providers : list of str
        The session's providers (``session.get_providers()``).
    notes : list of str
        E.g. that CUDA was asked for but ONNX Runtime fell back to CPU.
    """

    def __init__(self, model, providers="auto", verify: bool = True, models_dir=None):
        import onnxruntime as ort

        self.card = find_model(model, models_dir)
        self.notes: list[str] = []
        if verify:
            status = self.card.verify()
            if status.startswith(UNVERIFIED):
                self.notes.append(f"model {self.card.name!r} is {status}: its files cannot be "
                                  "checked; use a model with a complete card where it matters")
        elif not self.card.onnx_path.is_file():
            raise ModelError(f"ONNX file {self.card.onnx_path} does not exist")
        requested = _choose_providers(providers)
        opts = ort.SessionOptions()
        opts.log_severity_level = 3  # errors only: fallbacks are reported through .notes
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                self.session = ort.InferenceSession(str(self.card.onnx_path), sess_options=opts,
                                                    providers=requested)
        except Exception as e:
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ModelError(
                f"could not load model {self.card.name!r} from {self.card.onnx_path.name}: "
                f"{msg[:300]}; the file may be truncated or not an ONNX network - re-export it "
                "(exitwave-train export) or re-copy it") from e
        self.providers = list(self.session.get_providers())
        self.device = _device_name(self.providers)
        self.requested_providers = requested
        if "CUDAExecutionProvider" in requested and self.device != "CUDA":
            self.notes.append(
                "CUDA was requested but ONNX Runtime fell back to the CPU (CUDA/cuDNN libraries "
                "missing or incompatible?); running on the CPU")
        for w in caught:
            if "provider" in str(w.message).lower():
                self.notes.append(str(w.message))
        inputs = self.session.get_inputs()
        outputs = self.session.get_outputs()
        names_in = [i.name for i in inputs]
        names_out = [o.name for o in outputs]
        self.input_name = INPUT_NAME if INPUT_NAME in names_in else names_in[0]
        self.output_name = OUTPUT_NAME if OUTPUT_NAME in names_out else names_out[0]
        shape = next(i.shape for i in inputs if i.name == self.input_name)
        if len(shape) != 4:
            raise ModelError(f"model {self.card.name!r}: input {self.input_name!r} has shape "
                             f"{shape}; expected NHWC [batch, height, width, n_images]")
        if isinstance(shape[-1], int) and shape[-1] != self.card.n_images:
            raise ModelError(f"model {self.card.name!r}: the network takes {shape[-1]} images "
                             f"but its card says {self.card.n_images}; fix the card")
        if self.device != "CPU":
            self._check_device(ort, opts, providers)
        # Tiles per call: batching feeds a GPU, but on the CPU it gains no speed and multiplies
        # the activation memory (measured in benchmarks/inference.py), so one tile at a time.
        if isinstance(shape[0], int):
            self._max_batch = shape[0]
        else:
            self._max_batch = 1 if self.device == "CPU" else 4

    def _check_device(self, ort, opts, providers) -> None:
        """Run a small input once on the GPU; if that fails (cuDNN mismatch, out of memory...),
        fall back to a CPU session, unless the GPU was demanded (``providers="cuda"``)."""
        m = max(1, int(self.card.size_multiple))
        probe = np.zeros((1, m, m, self.card.n_images), np.float32)
        try:
            self.session.run([self.output_name], {self.input_name: probe})
        except Exception as e:
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            if isinstance(providers, str) and providers.lower() in ("cuda", "gpu"):
                raise ModelError(f"model {self.card.name!r} does not run on {self.device}: "
                                 f"{msg[:300]}") from e
            self.session = ort.InferenceSession(str(self.card.onnx_path), sess_options=opts,
                                                providers=["CPUExecutionProvider"])
            self.notes.append(f"{self.device} failed on a test input ({msg[:200]}); running on "
                              "the CPU")
            self.providers = list(self.session.get_providers())
            self.device = _device_name(self.providers)

    def __repr__(self) -> str:
        return f"OnnxReconstructor({self.card.name!r}, device={self.device!r})"

    @property
    def name(self) -> str:
        return self.card.name

    @property
    def n_images(self) -> int:
        return self.card.n_images

    def _run(self, batch: np.ndarray) -> np.ndarray:
        try:
            out = self.session.run([self.output_name], {self.input_name: batch})[0]
        except Exception as e:
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ModelError(f"model {self.card.name!r} failed on input {batch.shape}: "
                             f"{msg[:300]}") from e
        if out.ndim != 4 or out.shape[-1] != 2 or out.shape[:3] != batch.shape[:3]:
            raise ModelError(f"model {self.card.name!r} returned shape {out.shape} for input "
                             f"{batch.shape}; expected [batch, height, width, 2]")
        return out

    def predict(self, normalised: np.ndarray, tile: int | str = 512, overlap: int = 64,
                progress: Callable[[float, str], None] | None = None,
                cancel: Callable[[], bool] | None = None) -> np.ndarray:
        """Exit wave complex64 (ny, nx) from a normalised series (n, ny, nx).

        The frame is reflect-padded at its bottom/right to a multiple of ``size_multiple``;
        frames larger than ``tile`` are processed as overlapping tiles (``overlap`` px, rounded
        up to a multiple of ``size_multiple``) blended with raised-cosine ramps. The output is
        cropped back to (ny, nx). Height and width of the network input must be dynamic.
        ``tile="auto"``: :func:`auto_tile` (one pass up to :data:`SINGLE_PASS_MAX` px).

        Raises
        ------
        SeriesMismatchError
            The series has the wrong number of images.
        ReconstructionCancelled
            ``cancel()`` returned True between tiles.
        """
        from .errors import SeriesMismatchError

        x = np.asarray(normalised, dtype=np.float32)
        if x.ndim == 2:
            x = x[None]
        if x.ndim != 3:
            raise ValueError(f"normalised must be (n_images, ny, nx), got {x.shape}")
        n, ny, nx = x.shape
        if n != self.card.n_images:
            raise SeriesMismatchError(f"model {self.card.name!r} expects {self.card.n_images} "
                                      f"images, the series has {n}")
        m = max(1, int(self.card.size_multiple))
        if tile is None or tile == "auto":
            tile = auto_tile(x.shape, size_multiple=m, overlap=overlap)
        tile = max(m, (int(tile) // m) * m)
        # tiles start on the network's pooling grid: overlap a multiple of size_multiple
        overlap = int(math.ceil(max(0, overlap) / m) * m)
        overlap = min(overlap, (tile // 2 // m) * m)
        py = (-ny) % m
        px = (-nx) % m
        img = np.moveaxis(x, 0, -1)  # (ny, nx, n)
        if py or px:
            mode = "reflect" if min(ny, nx) > 1 else "symmetric"
            img = np.pad(img, ((0, py), (0, px), (0, 0)), mode=mode)
        Py, Px = img.shape[:2]
        th, tw = min(tile, Py), min(tile, Px)
        ys, xs = tile_starts(Py, th, overlap), tile_starts(Px, tw, overlap)
        jobs = [(y0, x0) for y0 in ys for x0 in xs]
        if len(jobs) == 1:
            if cancel is not None and cancel():
                raise ReconstructionCancelled("reconstruction cancelled")
            out = self._run(img[None])[0]
            if progress is not None:
                progress(1.0, "inference done")
            return (out[:ny, :nx, 0] + 1j * out[:ny, :nx, 1]).astype(np.complex64)
        acc = np.zeros((Py, Px, 2), dtype=np.float32)
        wsum = np.zeros((Py, Px), dtype=np.float32)
        wy = {y0: _edge_weights(th, y0, Py, overlap) for y0 in ys}
        wx = {x0: _edge_weights(tw, x0, Px, overlap) for x0 in xs}
        bs = max(1, int(self._max_batch))
        for k in range(0, len(jobs), bs):
            if cancel is not None and cancel():
                raise ReconstructionCancelled("reconstruction cancelled")
            chunk = jobs[k:k + bs]
            batch = np.stack([img[y0:y0 + th, x0:x0 + tw] for y0, x0 in chunk])
            out = self._run(np.ascontiguousarray(batch))
            for (y0, x0), o in zip(chunk, out):
                w = wy[y0][:, None] * wx[x0][None, :]
                acc[y0:y0 + th, x0:x0 + tw] += o * w[..., None]
                wsum[y0:y0 + th, x0:x0 + tw] += w
            if progress is not None:
                done = min(k + bs, len(jobs))
                progress(done / len(jobs), f"inference tile {done}/{len(jobs)}")
        res = acc / wsum[..., None]
        return (res[:ny, :nx, 0] + 1j * res[:ny, :nx, 1]).astype(np.complex64)


_CACHE: dict[tuple, OnnxReconstructor] = {}


def get_reconstructor(model, providers="auto", models_dir=None) -> OnnxReconstructor:
    """A cached :class:`OnnxReconstructor` (one session per model file, hash and providers).

    The live and batch modes and the widget call this so a session is built once.
    """
    if isinstance(model, OnnxReconstructor):
        return model
    card = find_model(model, models_dir)
    p = card.onnx_path
    try:
        stat = p.stat()
        key = (str(p.resolve()), stat.st_mtime_ns, stat.st_size, card.sha256, str(providers))
    except OSError:
        key = None
    if key is not None and key in _CACHE:
        return _CACHE[key]
    rec = OnnxReconstructor(card, providers=providers)
    if key is not None:
        _CACHE[key] = rec
    return rec
