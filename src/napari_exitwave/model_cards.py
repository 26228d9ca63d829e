"""Model cards: the JSON next to each ONNX network, how cards are found, and how they verify.

A network is ``models/<name>.onnx`` plus its card ``models/<name>.json`` (fields:
docs/contracts.md). :func:`list_models` and :func:`find_model` find cards in the model folders
(:func:`models_dirs`). :meth:`ModelCard.verify` checks every file the network loads: the ONNX
file against ``sha256`` and each ONNX external-data file against ``external_data_sha256``; a card
without a hash is *unverified*, never "ok".
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any, Sequence

from ._series import json_default
from .errors import ModelError

__all__ = [
    "DEFAULT_MODEL",
    "MODELS_ENV",
    "ModelCard",
    "sha256_file",
    "external_data_files",
    "external_data_sha256",
    "models_dirs",
    "list_models",
    "find_model",
    "models_for_n_images",
    "default_model_for",
]

DEFAULT_MODEL = "mos2"
"""The network the CLI and the widgets pick when the user names none (when it is installed)."""

MODELS_ENV = "NAPARI_EXITWAVE_MODELS"
"""Environment variable with extra model folders (``os.pathsep``-separated), searched first."""

EXIT_WAVE_KIND = "exit-wave"
"""``kind`` of an exit-wave network's card (the default when a card names none)."""

VERIFIED = "sha256 ok"
UNVERIFIED = "unverified"


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 digest of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while i < len(buf):
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, i
        shift += 7
    raise ValueError("truncated varint")


_LOCATION_ENTRY = b"\x0a\x08location\x12"  # StringStringEntryProto: key "location", then value


def external_data_files(onnx_path: str | os.PathLike) -> list[str]:
    """Relative paths of the external-data files an ONNX model loads (sorted, unique).

    ONNX stores a tensor's external data as ``external_data`` entries ``{key: "location",
    value: <path relative to the model file>}``; this finds those entries in the protobuf bytes
    without needing the ``onnx`` package. :class:`ModelError` for a location outside the
    model's folder.
    """
    buf = Path(onnx_path).read_bytes()
    found: set[str] = set()
    i = buf.find(_LOCATION_ENTRY)
    while i >= 0:
        try:
            n, j = _varint(buf, i + len(_LOCATION_ENTRY))
            loc = buf[j:j + n].decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            loc = ""
        if loc:
            p = Path(loc)
            if p.is_absolute() or ".." in p.parts:
                raise ModelError(f"{Path(onnx_path).name} loads external data from {loc!r}, "
                                 "outside its folder; re-export the model with its data beside it")
            found.add(p.as_posix())
        i = buf.find(_LOCATION_ENTRY, i + 1)
    return sorted(found)


def external_data_sha256(onnx_path: str | os.PathLike) -> dict[str, str]:
    """``{relative path: sha256}`` of every external-data file of an ONNX model ({} if none)."""
    folder = Path(onnx_path).parent
    out = {}
    for loc in external_data_files(onnx_path):
        f = folder / loc
        if not f.is_file():
            raise ModelError(f"{Path(onnx_path).name} loads external data {loc}, which is "
                             f"missing from {folder}; copy it next to the model")
        out[loc] = sha256_file(f)
    return out


@dataclasses.dataclass
class ModelCard:
    """The JSON card that travels with an ONNX network (fields: docs/contracts.md).

    ``sampling`` is the pixel size (A/px) of the network's input and output, ``defocus_step``
    and ``defocus_range`` are in A (abTEM convention), ``energy`` in eV. ``sha256`` is the
    digest of the ONNX file, ``external_data_sha256`` that of each external-data file (only for
    models saved with external data). Unknown JSON keys are kept in ``extra`` and written back.
    ``path`` is where the card was loaded from (not saved).
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
    external_data_sha256: dict[str, str] | None = None
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
        if not d.get("external_data_sha256"):  # old readers never see the key they lack
            d.pop("external_data_sha256", None)
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
        """Set ``sha256`` (and ``external_data_sha256``) from the model's files (exporters)."""
        self.sha256 = sha256_file(self.onnx_path)
        self.external_data_sha256 = external_data_sha256(self.onnx_path) or None
        return self.sha256

    def verify(self) -> str:
        """Check every file the network loads against the card.

        Returns
        -------
        status : str
            ``"sha256 ok"`` when the ONNX file and each external-data file match their digests;
            ``"unverified (...)"`` when the card holds no digest for one of them.

        Raises
        ------
        ModelError
            A file is missing or does not match its digest.
        """
        p = self.onnx_path
        if not p.is_file():
            raise ModelError(f"model {self.name!r}: ONNX file {p} is missing; re-export the "
                             "network or fix 'onnx_file' in its card")
        files = {p.name: (p, self.sha256)}
        listed = self.external_data_sha256 or {}
        for loc in external_data_files(p):
            files[loc] = (p.parent / loc, listed.get(loc))
        unhashed = [name for name, (_, digest) in files.items() if not digest]
        for name, (f, digest) in files.items():
            if not f.is_file():
                raise ModelError(f"model {self.name!r}: {name}, which the network loads, is "
                                 f"missing from {p.parent}; re-copy the model with all its files")
            if not digest:
                continue
            got = sha256_file(f)
            if got.lower() != str(digest).lower():
                raise ModelError(
                    f"model {self.name!r}: {name} does not match its card (sha256 {got[:12]}"
                    f"... vs {str(digest)[:12]}...): the file was changed or corrupted; "
                    "re-export or re-copy the model (or update the card's sha256 if you changed "
                    "it on purpose)")
        if unhashed:
            return f"{UNVERIFIED} (the card holds no sha256 for {', '.join(unhashed)})"
        return VERIFIED

    def summary(self) -> str:
        """One line for listings."""
        s = f"{self.sampling:.4g} A/px" if self.sampling else "sampling unknown"
        if self.extra.get("kind", EXIT_WAVE_KIND) != EXIT_WAVE_KIND:
            return (f"{self.name}: {self.extra['kind']} estimator, {self.n_images} images, {s}"
                    f" - {self.description}")
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


def list_models(models_dir: str | os.PathLike | Sequence | None = None,
                kind: str | None = EXIT_WAVE_KIND) -> dict[str, ModelCard]:
    """Model cards found in the model folders (see :func:`models_dirs`), by name.

    ``kind``: the cards' ``"kind"`` to list: ``"exit-wave"`` (the default; cards without a
    kind are exit-wave networks), ``"aberrations"`` (the estimators of
    :mod:`napari_exitwave.estimate`), or ``None`` for every card.
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
            if kind is None or card.extra.get("kind", EXIT_WAVE_KIND) == kind:
                found.setdefault(card.name, card)
    return found


def default_model_for(n_images: int | None = None, models_dir=None,
                      cards: dict[str, ModelCard] | None = None) -> str | None:
    """The network to use when none is named, for a series of ``n_images`` images.

    :data:`DEFAULT_MODEL` when it is installed and takes ``n_images`` (or ``n_images`` is
    None); else the installed networks that take ``n_images``, preferring MoS2 ones (the
    default's family), then by name; ``None`` when none takes ``n_images``. ``cards``: choose
    among these instead of the installed ones.
    """
    if cards is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cards = list_models(models_dir)
    fits = sorted(name for name, c in cards.items() if n_images is None or c.n_images == n_images)
    if DEFAULT_MODEL in fits:
        return DEFAULT_MODEL
    family = [name for name in fits if name.startswith(DEFAULT_MODEL)]
    return (family or fits or [None])[0]


def models_for_n_images(n: int, models_dir=None) -> list[str]:
    """Names of the installed networks that take ``n`` images (sorted)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sorted(name for name, c in list_models(models_dir).items() if c.n_images == n)


def _static_n_images(onnx_path: Path) -> int | None:
    try:
        import onnxruntime as ort

        sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        dim = sess.get_inputs()[0].shape[-1]
        return int(dim) if isinstance(dim, int) else None
    except Exception:  # noqa: BLE001 - unknown: the card's default applies
        return None


def find_model(model: "str | os.PathLike | ModelCard",
               models_dir: str | os.PathLike | Sequence | None = None) -> ModelCard:
    """A :class:`ModelCard` from a card, a model name, a ``.json`` card path or an ``.onnx`` path.

    An ONNX file without a card gets a minimal card (sampling unknown, ``n_images`` from the
    network's input shape when static, no hash: unverified).
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
    models = list_models(models_dir, kind=None)
    if str(model) in models:
        return models[str(model)]
    where = ", ".join(str(d) for d in models_dirs(models_dir)) or "no model folder found"
    names = ", ".join(sorted(models)) or "none"
    raise ModelError(f"no model named {str(model)!r} (installed: {names}; searched {where}); "
                     f"give a name, a .onnx/.json path, or set {MODELS_ENV}")
