"""DigitalMicrograph DM3/DM4 files, read through rosettasciio.

The calibration comes from the file's dimension calibrations (rosettasciio's ``axes``); the beam
energy from rosettasciio's metadata mapping (``Acquisition_instrument.TEM.beam_energy``, keV),
applied here to the file's own tag tree as HyperSpy would. A file is refused, with the reason,
when it is not a stack of intensity images: colour (RGB/RGBA) pixels, a spectrum image (EELS,
EDS, CL: its signal type, or a stack axis in energy units), or more than three dimensions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import struct

import numpy as np

from ._series import RawSeries, to_angstrom
from .errors import IncompleteFileError, ReaderError

__all__ = ["read_dm", "mapped_metadata", "SPECTRAL_SIGNAL_TYPES", "ENERGY_UNITS"]

SPECTRAL_SIGNAL_TYPES = ("EELS", "EDS", "EDX", "CL", "PL", "RAMAN", "SPECTRUM", "DIFFRACTION",
                         "DIELECTRIC")
"""HyperSpy signal types (matched as upper-case substrings) that are never a focal series."""

ENERGY_UNITS = {"ev", "kev", "mev", "j", "cm-1", "cm^-1", "1/cm", "hz", "thz"}
"""Units of a stack axis that make it a spectrum (energy, wavenumber, frequency), not a focus."""


def _get_path(tree: dict, path: str):
    """Value at a dotted ``path`` in a nested tag tree; a key matches with spaces or
    underscores (rosettasciio's mapping writes both). ``KeyError`` when absent."""
    node: Any = tree
    for part in path.split("."):
        if not isinstance(node, dict):
            raise KeyError(path)
        if part in node:
            node = node[part]
            continue
        want = part.replace(" ", "_")
        for key in node:
            if str(key).replace(" ", "_") == want:
                node = node[key]
                break
        else:
            raise KeyError(path)
    return node


def mapped_metadata(signal: dict) -> dict:
    """HyperSpy-style metadata of a rosettasciio signal: its ``metadata`` plus its ``mapping``
    applied to its ``original_metadata`` (e.g. ``Acquisition_instrument.TEM.beam_energy`` in
    keV from the DM tag ``Microscope Info.Voltage`` in V)."""
    out: dict = {}

    def put(dotted: str, value) -> None:
        node = out
        *parents, last = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                return
        node[last] = value

    def merge(src: dict, prefix: str = "") -> None:
        for k, v in src.items():
            if isinstance(v, dict):
                merge(v, f"{prefix}{k}.")
            else:
                put(f"{prefix}{k}", v)

    merge(signal.get("metadata") or {})
    original = signal.get("original_metadata") or {}
    for source, (target, convert) in (signal.get("mapping") or {}).items():
        try:
            value = _get_path(original, source)
            if convert is not None:
                value = convert(value)
        except Exception:  # noqa: BLE001 - a tag that is absent or unparsable maps to nothing
            continue
        if value is not None and not isinstance(value, dict):
            put(target, value)
    return out


def _refuse_non_images(name: str, data: np.ndarray, axes: list[dict], meta: dict) -> None:
    if data.dtype.names is not None or data.dtype.kind == "V":
        fields = ", ".join(data.dtype.names or ()) or str(data.dtype)
        raise ReaderError(
            f"{name} holds colour pixels ({fields}), not intensities; convert the stack to "
            "grayscale in Digital Micrograph (or save the raw camera images) and open that")
    signal_type = str((meta.get("Signal") or {}).get("signal_type") or "")
    if any(t in signal_type.upper() for t in SPECTRAL_SIGNAL_TYPES):
        raise ReaderError(
            f"{name} holds a {signal_type!r} signal (a spectrum image or pattern), not a focal "
            "series of HRTEM images; open a stack of images taken at different defoci")
    if data.ndim == 3:
        stack = axes[0]
        unit = str(stack.get("units") or "").strip()
        if unit.lower() in ENERGY_UNITS or "energy" in str(stack.get("name") or "").lower():
            raise ReaderError(
                f"{name}: its stack axis {stack.get('name')!r} runs in {unit or 'energy'} "
                f"({data.shape[0]} channels): this is a spectrum image, not a focal series; "
                "open a stack of images taken at different defoci")


def declared_size(path: Path) -> int | None:
    """Bytes a DM3/DM4 file declares in its header (version, tag-tree length), or None when the
    header is not a DigitalMicrograph one."""
    with open(path, "rb") as fh:
        head = fh.read(12)
    if len(head) < 12:
        return None
    version = struct.unpack(">I", head[:4])[0]
    if version == 3:
        return struct.unpack(">I", head[4:8])[0] + 12  # version, length, byte order
    if version == 4:
        return struct.unpack(">Q", head[4:12])[0] + 16
    return None


def read_dm(path: Path) -> RawSeries:
    """Read the first image (stack) of a DM3/DM4 file; :class:`ReaderError` when it is not a
    focal series (see the module docstring)."""
    from rsciio.digitalmicrograph import file_reader

    declared, size = declared_size(path), path.stat().st_size
    if declared is not None and size < declared:
        raise IncompleteFileError(
            f"{path.name} is truncated: its header declares {declared} bytes, the file has "
            f"{size}; copy it again from the microscope PC (or wait until it is written)")
    try:
        signals = file_reader(str(path))
    except Exception as e:  # rsciio raises struct.error, ValueError, IndexError... on bad files
        raise ReaderError(
            f"{path.name} could not be read as a DigitalMicrograph file ({type(e).__name__}: "
            f"{e}); the file may be truncated or not a DM3/DM4 file: copy it again from the "
            "microscope PC or re-export it from GMS") from e
    images = [s for s in signals if np.ndim(s.get("data")) >= 2]
    if not images:
        raise ReaderError(f"{path.name} contains no image; open a DM3/DM4 image stack")
    sig = images[0]
    data = np.asarray(sig["data"])
    axes = sorted(sig["axes"], key=lambda a: a.get("index_in_array", 0))
    if len(axes) != data.ndim:
        axes = [dict(scale=1.0, units="", name=f"axis{i}", navigate=i < data.ndim - 2)
                for i in range(data.ndim)]
    meta_tree = mapped_metadata(sig)
    _refuse_non_images(path.name, data, axes, meta_tree)
    if data.ndim > 3:
        raise ReaderError(f"{path.name} has {data.ndim} dimensions {data.shape}; expected one "
                          "image stack (n, ny, nx): save the focal series as a 3-D stack")
    signal_axes = [a for a in axes if not a.get("navigate", False)]
    if len(signal_axes) != 2:
        raise ReaderError(
            f"{path.name} is not an image or image stack (its signal has {len(signal_axes)} "
            f"dimension(s): {[a.get('name') for a in signal_axes]}); open a stack of images")
    ay, ax = axes[-2], axes[-1]
    unit_x = str(ax.get("units") or "")
    scale_x = float(ax.get("scale", 1.0))
    sampling = to_angstrom(scale_x, unit_x)
    metadata: dict[str, Any] = {"format": "DigitalMicrograph",
                                "title": (meta_tree.get("General") or {}).get("title")}
    sy = to_angstrom(float(ay.get("scale", 1.0)), str(ay.get("units") or ""))
    if sampling is not None and sy is not None and not np.isclose(sy, sampling, rtol=1e-3):
        metadata["anisotropic_sampling"] = (sy, sampling)
    tem = (meta_tree.get("Acquisition_instrument") or {}).get("TEM") or {}
    kev = tem.get("beam_energy")
    if isinstance(kev, (int, float)) and kev > 0:
        metadata["energy"] = float(kev) * 1e3  # keV -> eV
    if data.ndim == 3:
        metadata["stack_axis"] = {"name": axes[0].get("name"), "scale": axes[0].get("scale"),
                                  "units": axes[0].get("units")}
    return RawSeries(data, sampling, unit_x, scale_x, None, metadata)
