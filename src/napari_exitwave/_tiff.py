"""TIFF, OME-TIFF and ImageJ stacks, read through tifffile.

Calibration, first found wins: our own JSON (written by
:func:`napari_exitwave.io.write_series_tiff`), the OME-XML ``PhysicalSizeX`` (parsed by
:func:`tifffile.xml2dict`), the ImageJ ``unit`` with the resolution tags, the FEI/Thermo
``PixelWidth``, and else rosettasciio's TIFF reader, which knows the private tags of Digital
Micrograph, JEOL and other vendors.

A file is read only when it is whole (:func:`structure_cut`, on the raw bytes: the header, every
directory of the page chain and every tag value inside the file; then every page's data inside
the file, and as many images as an ImageJ or OME header declares); otherwise
:class:`~napari_exitwave.errors.IncompleteFileError` says where it ends. Several image series,
or pages of different shapes, are refused with their shapes rather than read as their first
image.
"""

from __future__ import annotations

import json
import math
import re
import struct
from pathlib import Path
from typing import Any

import numpy as np

from ._series import METADATA_KEY, RawSeries, to_angstrom
from .errors import IncompleteFileError, ReaderError

__all__ = ["read_tiff", "check_complete", "structure_cut", "parse_defocus"]


def parse_defocus(value) -> list[float] | None:
    """Defocus values (A) from a JSON list, a comma/space separated string or a sequence."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            value = [v for v in re.split(r"[,\s;]+", value.strip("[]() ")) if v]
    try:
        out = [float(v) for v in np.atleast_1d(value)]
    except (TypeError, ValueError):
        return None
    return out if out and all(math.isfinite(v) for v in out) else None


# ----------------------------------------------------------------------------------------------
# completeness


_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_TYPE_SIZE = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4,
              16: 8, 17: 8, 18: 8}  # bytes per value of each TIFF field type


def structure_cut(path: Path) -> str | None:
    """Where the file ends inside its own TIFF structure (header, an IFD, a tag's value, the
    page chain), read from the raw bytes; None when the structure is whole. A file cut short
    or still being written; tifffile drops such pages and tags, or calls the file corrupt."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(16)
        if len(head) < 8:
            return "in its header" if any(m.startswith(head) for m in _MAGIC) else None
        if head[:4] not in _MAGIC:
            return None
        order = "<" if head[:2] == b"II" else ">"
        big = head[2:4] in (b"+\x00", b"\x00+")
        if big and len(head) < 16:
            return "in its header"
        off, no, inline = ("Q", "Q", 8) if big else ("I", "H", 4)
        tag = struct.Struct(order + ("HHQ8s" if big else "HHI4s"))
        off_size, no_size = struct.calcsize(off), struct.calcsize(no)
        offset = struct.unpack(order + off, head[8:16] if big else head[4:8])[0]
        seen: set[int] = set()
        while offset and offset not in seen and len(seen) < 1_000_000:
            page = len(seen) + 1
            if offset >= size:
                return f"before page {page}, which page {page - 1} links to"
            seen.add(offset)
            fh.seek(offset)
            raw = fh.read(no_size)
            if len(raw) < no_size:
                return f"in the directory of page {page}"
            n = struct.unpack(order + no, raw)[0]
            raw = fh.read(n * tag.size + off_size)
            if len(raw) < n * tag.size + off_size:
                return f"in the directory of page {page}"
            for k in range(n):
                _, dtype, count, value = tag.unpack_from(raw, k * tag.size)
                nbytes = count * _TYPE_SIZE.get(dtype, 1)
                if nbytes > inline:
                    start = struct.unpack(order + off, value)[0]
                    if start + nbytes > size:
                        return f"in a tag value of page {page}"
            offset = struct.unpack(order + off, raw[n * tag.size:])[0]
    return None


def _series_images(series) -> int:
    """Number of 2-D images in a tifffile series (all axes but Y, X and samples)."""
    return int(np.prod([n for n, a in zip(series.shape, series.axes) if a not in "YXS"] or [1]))


def check_complete(tif, name: str) -> None:
    """:class:`ReaderError` unless the TIFF is whole (see the module docstring)."""
    size = tif.filehandle.size
    pages = tif.pages
    n_pages = len(pages)
    if n_pages == 0:
        raise IncompleteFileError(f"{name} holds no image (the file may be truncated); copy it "
                                  "again")
    for i in range(n_pages):
        page = pages[i]
        offsets, counts = getattr(page, "dataoffsets", ()), getattr(page, "databytecounts", ())
        end = max((o + c for o, c in zip(offsets, counts) if c), default=0)
        if end > size:
            raise IncompleteFileError(
                f"{name} is truncated: the data of page {i + 1} of {n_pages} end at byte {end}, "
                f"past the end of the file ({size} bytes); copy the complete file again")
    ij = tif.imagej_metadata if tif.is_imagej else None
    if ij and ij.get("images"):
        declared = int(ij["images"])
        found = _series_images(tif.series[0]) if tif.series else 0
        if found < declared:
            raise IncompleteFileError(
                f"{name} is an incomplete ImageJ stack: its header declares {declared} images, "
                f"the file holds {found}; copy the complete file again")
    if tif.is_ome and tif.ome_metadata:
        declared = _ome_plane_count(tif.ome_metadata)
        if declared and declared > n_pages:
            raise IncompleteFileError(
                f"{name} is an incomplete OME-TIFF: its OME-XML declares {declared} planes, the "
                f"file holds {n_pages} pages; copy the complete file again")
    where = structure_cut(Path(tif.filehandle.path))
    if where:
        raise IncompleteFileError(
            f"{name} is truncated: the file ({size} bytes) ends {where} ({n_pages} complete "
            "pages); copy the complete file again (or wait until it is written)")


def _ome_images(xml: str) -> list[dict]:
    import tifffile

    images = (tifffile.xml2dict(xml).get("OME") or {}).get("Image") or []
    return images if isinstance(images, list) else [images]


def _ome_plane_count(xml: str) -> int:
    total = 0
    for image in _ome_images(xml):
        px = image.get("Pixels") or {}
        total += int(px.get("SizeZ", 1)) * int(px.get("SizeC", 1)) * int(px.get("SizeT", 1))
    return total


def _check_one_series(tif, name: str) -> None:
    series = [s for s in tif.series if not getattr(s.keyframe, "is_reduced", False)]
    if len(series) > 1:
        shapes = ", ".join(" x ".join(str(n) for n in s.shape) for s in series[:6])
        raise ReaderError(
            f"{name} holds {len(series)} image series of different shapes ({shapes}), not one "
            "stack; save the focal series alone as one stack of equal-size images")


# ----------------------------------------------------------------------------------------------
# calibration


def _ours(tif) -> dict | None:
    ij = tif.imagej_metadata if tif.is_imagej else None
    if ij and METADATA_KEY in ij:
        try:
            return json.loads(ij[METADATA_KEY])
        except (TypeError, ValueError):
            return None
    if tif.is_shaped:
        shaped = tif.shaped_metadata[0] if tif.shaped_metadata else {}
        if "sampling" in shaped or "defocus" in shaped:
            return shaped
    return None


def _rsciio_calibration(path: Path) -> tuple[float | None, str, float | None, float | None]:
    """(sampling A/px, unit, scale, y sampling A/px) from rosettasciio's TIFF reader (DM, JEOL,
    Zeiss, Olympus... private tags); Nones when it finds no length calibration."""
    try:
        from rsciio.tiff import file_reader

        axes = file_reader(str(path), lazy=True)[0]["axes"]
    except Exception:  # noqa: BLE001 - no calibration is the answer, not an error
        return None, "", None, None
    if len(axes) < 2:
        return None, "", None, None
    ay, ax = axes[-2], axes[-1]
    unit = str(ax.get("units") or "")
    if unit.lower() in ("cm", "inch", "in"):  # the baseline ResolutionUnit: a print size
        return None, "", None, None
    scale = float(ax.get("scale", 1.0))
    sy = to_angstrom(float(ay.get("scale", 1.0)), str(ay.get("units") or ""))
    return to_angstrom(scale, unit), unit, scale, sy


def _calibration(tif, page, path: Path) -> RawSeries:
    """A :class:`RawSeries` without data: the calibration, defoci and metadata of a TIFF."""
    meta: dict[str, Any] = {}
    defocus = None
    ours = _ours(tif)
    if ours and ours.get("kind") == "exit wave":
        raise ReaderError(f"{path.name} holds an exit wave (real and imaginary channels), not "
                          "a focal series; open it with read_exit_wave")
    if ours:
        meta.update({k: v for k, v in ours.items() if k != "shape"})
        defocus = parse_defocus(ours.get("defocus"))
        if ours.get("sampling"):
            s = float(ours["sampling"])
            return RawSeries(None, s, "Å", s, defocus, meta)
    ij = tif.imagej_metadata if tif.is_imagej else None
    if ij:
        meta["imagej"] = {k: v for k, v in ij.items() if isinstance(v, (str, int, float))}
        if defocus is None:
            defocus = parse_defocus(ij.get("defocus"))
    if tif.is_ome and tif.ome_metadata:
        images = _ome_images(tif.ome_metadata)
        px = (images[0].get("Pixels") or {}) if images else {}
        if px.get("PhysicalSizeX") is not None:
            unit = str(px.get("PhysicalSizeXUnit") or "µm")  # the OME default unit
            scale = float(px["PhysicalSizeX"])
            meta["format"] = "OME-TIFF"
            return RawSeries(None, to_angstrom(scale, unit), unit, scale, defocus, meta)
    if ij and ij.get("unit") not in (None, ""):
        unit = str(ij["unit"])
        xres = page.tags.get("XResolution")
        if xres is not None:
            num, den = xres.value if isinstance(xres.value, tuple) else (xres.value, 1)
            if num:
                meta["format"] = "ImageJ"
                return RawSeries(None, to_angstrom(den / num, unit), unit, den / num, defocus,
                                 meta)
    fei = getattr(tif, "fei_metadata", None)
    if fei:
        pw = fei.get("Scan", {}).get("PixelWidth") or fei.get("EScan", {}).get("PixelWidth")
        if pw:
            meta["format"] = "FEI-TIFF"
            return RawSeries(None, to_angstrom(float(pw), "m"), "m", float(pw), defocus, meta)
    sampling, unit, scale, sy = _rsciio_calibration(path)
    if sampling is not None:
        meta["calibration"] = "rosettasciio"
        if sy is not None and not np.isclose(sy, sampling, rtol=1e-3):
            meta["anisotropic_sampling"] = (sy, sampling)
        return RawSeries(None, sampling, unit, scale, defocus, meta)
    return RawSeries(None, None, "", None, defocus, meta)


# ----------------------------------------------------------------------------------------------
# the reader


def read_tiff(path: Path) -> RawSeries:
    """Read a TIFF stack (see the module docstring); :class:`ReaderError` when it is truncated,
    holds several series, colour pixels or an exit wave."""
    import tifffile

    try:
        with tifffile.TiffFile(str(path)) as tif:
            check_complete(tif, path.name)
            _check_one_series(tif, path.name)
            series = tif.series[0]
            data = series.asarray()
            axes = series.axes
            photometric = int(getattr(tif.pages[0], "photometric", 1))
            raw = _calibration(tif, tif.pages[0], path)
    except ReaderError:
        raise
    except Exception as e:
        where = structure_cut(path)
        if where:
            raise IncompleteFileError(
                f"{path.name} is truncated: the file ends {where}; copy the complete file "
                "again (or wait until it is written)") from e
        raise ReaderError(f"{path.name} could not be read as a TIFF ({type(e).__name__}: {e}); "
                          "the file may be truncated or not a TIFF") from e
    meta = raw.metadata
    meta.setdefault("format", "TIFF")
    meta["tiff_axes"] = axes
    # a colour image, unless it is a float/16-bit stack that tifffile stored as planar "RGB"
    if "S" in axes and photometric in (2, 3, 6) and (data.dtype == np.uint8 or axes[-1] == "S"):
        raise ReaderError(f"{path.name} is an RGB(A) image; save the focal series as grayscale "
                          "(intensity) images")
    # keep Y and X, fold every other axis into the image index
    if "Y" in axes and "X" in axes:
        others = [i for i, a in enumerate(axes) if a not in "YX"]
        order = others + [axes.index("Y"), axes.index("X")]
        data = np.transpose(data, order)
        n = int(np.prod([data.shape[i] for i in range(len(others))])) if others else None
        data = data.reshape((n,) + data.shape[-2:]) if n is not None else data
    data = np.squeeze(data) if data.ndim > 3 else data
    if data.ndim == 3 and data.shape[0] == 1:
        data = data[0]
    raw.data = data
    return raw
