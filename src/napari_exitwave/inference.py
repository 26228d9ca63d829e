"""Running exported networks with ONNX Runtime.

A network is ``models/<name>.onnx`` plus its model card ``models/<name>.json``
(docs/contracts.md): input ``images`` float32 NHWC ``[batch, height, width, n_images]`` normalised
by :func:`napari_exitwave.physics.normalize_series`, output ``exit_wave`` float32
``[batch, height, width, 2]`` (real, imaginary). Height and width must be multiples of the card's
``size_multiple``: :class:`OnnxReconstructor` pads (reflect) smaller frames and cuts large ones
into overlapping tiles blended with cosine ramps, so a 4096 x 4096 frame needs only a few tiles'
worth of memory.

Devices: ``providers="auto"`` asks for CUDA when ONNX Runtime offers it and CPU otherwise, then
reads back the providers the session really uses: onnxruntime-gpu silently falls back to CPU when
the CUDA libraries are missing, and :attr:`OnnxReconstructor.device` says so. A GPU session is
run once on a small input; if that fails (cuDNN mismatch...), the CPU takes over, with a note.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .errors import ModelError, ReconstructionCancelled
from .io import json_default

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
]

DEFAULT_MODEL = "mos2"
"""The network the CLI and the widgets pick when the user names none (when it is installed)."""

MODELS_ENV = "NAPARI_EXITWAVE_MODELS"
"""Environment variable with extra model folders (``os.pathsep``-separated), searched first."""

SINGLE_PASS_MAX = 1024
"""``tile="auto"``: frames up to this size (px, after padding) run in one pass, larger ones in
512 px tiles (the same rule as :func:`napari_exitwave.live.auto_tile`)."""

INPUT_NAME = "images"
OUTPUT_NAME = "exit_wave"


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 digest of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclasses.dataclass
class ModelCard:
    """The JSON card that travels with an ONNX network (fields: docs/contracts.md).

    ``sampling`` is the pixel size (A/px) of the network's input and output, ``defocus_step``
    and ``defocus_range`` are in A (abTEM convention), ``energy`` in eV. Unknown JSON keys are kept
    in ``extra`` and written back. ``path`` is where the card was loaded from (not saved).
    """

    name: str
    onnx_file: str
    sampling: float | None = None
    n_images: int = 3
    description: str = ""
    sha256: str | None = None
    defocus_step: float | None = None
    defocus_range: list[float] | None = None
    energy: float = 50e3
    normalization: str = "per-image standardisation (physics.normalize_series)"
    size_multiple: int = 16
    input_layout: str = "NHWC"
    dtype: str = "float32"
    dataset: dict[str, Any] = dataclasses.field(default_factory=dict)
    training: dict[str, Any] = dataclasses.field(default_factory=dict)
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)
    format_version: int = 1
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    path: Path | None = dataclasses.field(default=None, compare=False, repr=False)

    _SKIP = ("extra", "path")

    @property
    def onnx_path(self) -> Path:
        """Absolute path of the ONNX file (relative names resolve next to the card)."""
        p = Path(self.onnx_file)
        if not p.is_absolute() and self.path is not None:
            p = Path(self.path).parent / p
        return p

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
             if f.name not in self._SKIP}
        d.update(self.extra)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], path: str | os.PathLike | None = None) -> "ModelCard":
        names = {f.name for f in dataclasses.fields(cls)} - set(cls._SKIP)
        missing = {"name", "onnx_file"} - set(d)
        if missing:
            raise ModelError(f"model card {path or ''} lacks {sorted(missing)}; a card needs at "
                             "least 'name' and 'onnx_file' (see docs/contracts.md)")
        known = {k: v for k, v in d.items() if k in names}
        extra = {k: v for k, v in d.items() if k not in names}
        card = cls(**known, extra=extra, path=Path(path) if path else None)
        if card.sampling is not None:
            card.sampling = float(card.sampling)
        card.n_images = int(card.n_images)
        card.size_multiple = int(card.size_multiple)
        if card.n_images < 1 or card.size_multiple < 1:
            raise ModelError(f"model card {path or card.name}: n_images and size_multiple must "
                             "be positive")
        return card

    @classmethod
    def load(cls, json_path: str | os.PathLike) -> "ModelCard":
        """Read a card; :class:`ModelError` if it is missing or not valid JSON."""
        json_path = Path(json_path)
        try:
            d = json.loads(json_path.read_text(encoding="utf-8"))
        except FileNotFoundError as e:
            raise ModelError(f"model card {json_path} does not exist") from e
        except (ValueError, UnicodeDecodeError) as e:
            raise ModelError(f"model card {json_path.name} is not valid JSON ({e}); fix or "
                             "re-export it") from e
        if not isinstance(d, dict):
            raise ModelError(f"model card {json_path.name} must hold a JSON object")
        return cls.from_dict(d, json_path.resolve())

    def save(self, json_path: str | os.PathLike | None = None) -> Path:
        """Write the card as JSON (default: where it was loaded from, or next to the ONNX)."""
        if json_path is None:
            json_path = self.path or self.onnx_path.with_suffix(".json")
        json_path = Path(json_path)
        json_path.write_text(json.dumps(self.to_dict(), indent=2, default=json_default) + "\n",
                             encoding="utf-8")
        self.path = json_path
        return json_path

    def update_sha256(self) -> str:
        """Set ``sha256`` from the ONNX file (for exporters)."""
        self.sha256 = sha256_file(self.onnx_path)
        return self.sha256

    def verify(self) -> None:
        """Check that the ONNX file exists and matches ``sha256``; :class:`ModelError` if not."""
        p = self.onnx_path
        if not p.is_file():
            raise ModelError(f"model {self.name!r}: ONNX file {p} is missing; re-export the "
                             "network or fix 'onnx_file' in its card")
        if self.sha256:
            digest = sha256_file(p)
            if digest.lower() != str(self.sha256).lower():
                raise ModelError(
                    f"model {self.name!r}: {p.name} does not match its card (sha256 {digest[:12]}"
                    f"... vs {str(self.sha256)[:12]}...): the file was changed or corrupted; "
                    "re-export or re-copy the model (or update the card's sha256 if you changed "
                    "it on purpose)")

    def summary(self) -> str:
        """One line for listings."""
        s = f"{self.sampling:.4g} A/px" if self.sampling else "sampling unknown"
        step = f", step {self.defocus_step:g} A" if self.defocus_step else ""
        mt = self.metrics if isinstance(self.metrics, dict) else {}
        parts = [f"{k.split('_')[1]} {mt[k]:.3g}" for k in ("rmse_real", "rmse_imag")
                 if isinstance(mt.get(k), (int, float))]
        m = f", val. RMSE {' / '.join(parts)}" if parts else ""
        return (f"{self.name}: {self.n_images} images, {s}{step}, {self.energy / 1e3:g} keV{m}"
                f" - {self.description}")


# ----------------------------------------------------------------------------------------------
# finding models


def models_dirs(models_dir: str | os.PathLike | Sequence | None = None) -> list[Path]:
    """Folders searched for models, in priority order.

    ``models_dir`` if given; else ``$NAPARI_EXITWAVE_MODELS`` folders, then the shipped
    networks: the repository's ``models/`` when running from a source checkout (editable
    installs: ``src/napari_exitwave/../../models``), else the package data ``models/`` inside the
    installed package (the wheel maps the repository's ``models/`` there, see pyproject.toml).
    """
    if models_dir is not None:
        if isinstance(models_dir, (str, os.PathLike)):
            return [Path(models_dir)]
        return [Path(p) for p in models_dir]
    dirs = [Path(p) for p in os.environ.get(MODELS_ENV, "").split(os.pathsep) if p]
    here = Path(__file__).resolve().parent
    if here.parent.name == "src":  # a source checkout, not site-packages/.. of an install
        dirs.append(here.parent.parent / "models")
    dirs.append(here / "models")
    out = []
    for d in dirs:
        if d.is_dir() and d.resolve() not in [o.resolve() for o in out]:
            out.append(d)
    return out


def list_models(models_dir: str | os.PathLike | Sequence | None = None) -> dict[str, ModelCard]:
    """Model cards found in the model folders (see :func:`models_dirs`), by name.

    A card that cannot be read is skipped with a warning; the first card of a name wins.
    Hashes are not checked here (:meth:`ModelCard.verify` does, when a model is loaded).
    """
    found: dict[str, ModelCard] = {}
    for d in models_dirs(models_dir):
        for js in sorted(Path(d).glob("*.json")):
            try:
                card = ModelCard.load(js)
            except ModelError as e:
                warnings.warn(f"skipping model card {js}: {e}", stacklevel=2)
                continue
            found.setdefault(card.name, card)
    return found


def find_model(model: "str | os.PathLike | ModelCard",
               models_dir: str | os.PathLike | Sequence | None = None) -> ModelCard:
    """A :class:`ModelCard` from a card, a model name, a ``.json`` card path or an ``.onnx`` path.

    An ONNX file without a card gets a minimal card (sampling unknown, ``n_images`` from the
    network's input shape when static).
    """
    if isinstance(model, ModelCard):
        return model
    p = Path(model)
    if p.suffix.lower() == ".json":
        return ModelCard.load(p)
    if p.suffix.lower() == ".onnx":
        if not p.is_file():
            raise ModelError(f"ONNX file {p} does not exist")
        card_path = p.with_suffix(".json")
        if card_path.is_file():
            card = ModelCard.load(card_path)
            if card.onnx_path.resolve() == p.resolve():
                return card
        return ModelCard(name=p.stem, onnx_file=str(p.resolve()), sampling=None,
                         n_images=_static_n_images(p) or 3,
                         description="ONNX file without a model card")
    models = list_models(models_dir)
    if str(model) in models:
        return models[str(model)]
    where = ", ".join(str(d) for d in models_dirs(models_dir)) or "no model folder found"
    names = ", ".join(sorted(models)) or "none"
    raise ModelError(f"no model named {str(model)!r} (installed: {names}; searched {where}); "
                     f"give a name, a .onnx/.json path, or set {MODELS_ENV}")


def _static_n_images(onnx_path: Path) -> int | None:
    try:
        import onnxruntime as ort

        sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        dim = sess.get_inputs()[0].shape[-1]
        return int(dim) if isinstance(dim, int) else None
    except Exception:
        return None


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
        if verify:
            self.card.verify()
        elif not self.card.onnx_path.is_file():
            raise ModelError(f"ONNX file {self.card.onnx_path} does not exist")
        requested = _choose_providers(providers)
        self.notes: list[str] = []
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
        ``tile="auto"``: one pass for frames up to :data:`SINGLE_PASS_MAX` px, else 512.

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
            side = max(ny + (-ny) % m, nx + (-nx) % m)
            tile = side if side <= SINGLE_PASS_MAX else 512
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
