"""Series and exit-wave files that the plugin writes, and the exit-wave reader.

- :func:`write_series_tiff`: a focal series as an ImageJ hyperstack (Fiji shows its pixel size)
  with sampling and defoci as JSON under the ``exitwave`` key;
  :func:`napari_exitwave.io.read_series` reads it back.
- :func:`write_exit_wave_tiff`: a complex exit wave as a two-channel (real, imaginary) float32
  ImageJ hyperstack; :func:`write_exit_wave_zarr`: a complex64 Zarr array with attributes;
  :func:`read_exit_wave` reads either back as an :class:`ExitWave`.

A Zarr store is untrusted input: its metadata is checked before zarr opens it, and anything but a
real or complex numeric array (object or structured dtypes, pickle codecs) is refused, so no
codec that runs code from the file is ever reached.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np

from ._series import METADATA_KEY, dumps
from .errors import ReaderError

__all__ = ["ExitWave", "write_series_tiff", "write_exit_wave_tiff", "write_exit_wave_zarr",
           "read_exit_wave", "check_zarr_metadata"]

_ZARR_V3_TYPES = {"complex64", "complex128", "float32", "float64"}


class ExitWave(NamedTuple):
    """An exit wave read from a file (unpacks as ``wave, sampling, metadata``)."""

    wave: np.ndarray
    """complex64 (ny, nx); vacuum = 1 + 0j."""
    sampling: float | None
    """Pixel size in A/px, or None."""
    metadata: dict[str, Any]


def _imagej_resolution(sampling: float | None):
    if not sampling:
        return None, {}
    px_per_nm = 10.0 / float(sampling)
    return (px_per_nm, px_per_nm), {"unit": "nm"}


def write_series_tiff(path: str | os.PathLike, images: np.ndarray, sampling: float | None = None,
                      defocus: Sequence[float] | None = None,
                      metadata: dict[str, Any] | None = None) -> Path:
    """Write a focal series as an ImageJ hyperstack that :func:`read_series` reads back.

    The pixel size is stored as ImageJ calibration in nm (Fiji shows it) and, exactly, together
    with the defoci (A, abTEM convention) and ``metadata`` as JSON under the key ``exitwave``.
    Each slice is labelled with its defocus.
    """
    import tifffile

    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 3:
        raise ValueError(f"images must be (n, ny, nx), got {images.shape}")
    info = dict(metadata or {})
    info.update({"kind": "focal series", "sampling": sampling,
                 "defocus": None if defocus is None else [float(d) for d in defocus],
                 "units": "A", "defocus_convention": "abTEM, defocus = -C10 (A)"})
    resolution, ij = _imagej_resolution(sampling)
    ij.update({"axes": "ZYX", METADATA_KEY: dumps(info)})
    if defocus is not None:
        ij["Labels"] = [f"defocus={float(d):g} A" for d in defocus]
    path = Path(path)
    tifffile.imwrite(str(path), images, imagej=True, resolution=resolution, metadata=ij)
    return path


def write_exit_wave_tiff(path: str | os.PathLike, exit_wave: np.ndarray, sampling: float | None,
                         metadata: dict[str, Any] | None = None) -> Path:
    """Write a complex exit wave as a two-channel float32 ImageJ TIFF (real, imaginary).

    Fiji opens it as a 2-channel image calibrated in nm; :func:`read_exit_wave` restores the
    complex64 array, the sampling (A/px) and ``metadata`` (stored as JSON under ``exitwave``).
    """
    import tifffile

    wave = np.asarray(exit_wave)
    if wave.ndim != 2:
        raise ValueError(f"exit_wave must be 2-D (ny, nx), got {wave.shape}")
    data = np.stack([wave.real, wave.imag]).astype(np.float32)
    info = dict(metadata or {})
    info.update({"kind": "exit wave", "sampling": sampling, "channels": ["real", "imag"],
                 "units": "A"})
    resolution, ij = _imagej_resolution(sampling)
    ij.update({"axes": "CYX", "Labels": ["real", "imag"], METADATA_KEY: dumps(info)})
    path = Path(path)
    tifffile.imwrite(str(path), data, imagej=True, resolution=resolution, metadata=ij)
    return path


def write_exit_wave_zarr(path: str | os.PathLike, exit_wave: np.ndarray, sampling: float | None,
                         metadata: dict[str, Any] | None = None, chunks: int = 512) -> Path:
    """Write a complex exit wave as a complex64 Zarr array with JSON attributes.

    ``attrs`` hold ``sampling`` (A/px), ``units`` and ``metadata`` (model, method, timings...).
    """
    import zarr

    wave = np.asarray(exit_wave, dtype=np.complex64)
    if wave.ndim != 2:
        raise ValueError(f"exit_wave must be 2-D (ny, nx), got {wave.shape}")
    path = Path(path)
    arr = zarr.open_array(str(path), mode="w", shape=wave.shape, dtype=np.complex64,
                          chunks=(min(chunks, wave.shape[0]), min(chunks, wave.shape[1])))
    arr[...] = wave
    attrs = json.loads(dumps({"kind": "exit wave", "sampling": sampling, "units": "A",
                              "metadata": dict(metadata or {})}))
    arr.attrs.update(attrs)
    return path


def _codec_ids(meta: dict) -> list[str]:
    found = []
    for key in ("filters", "codecs"):
        for c in meta.get(key) or []:
            if isinstance(c, dict):
                found.append(str(c.get("id") or c.get("name") or ""))
    comp = meta.get("compressor")
    if isinstance(comp, dict):
        found.append(str(comp.get("id") or ""))
    return found


def check_zarr_metadata(path: Path) -> None:
    """:class:`ReaderError` unless ``path`` is a Zarr array of a real or complex number type
    with no object codec: checked on the JSON metadata, before zarr reads anything."""
    v2, v3 = path / ".zarray", path / "zarr.json"
    try:
        if v2.is_file():
            meta = json.loads(v2.read_text(encoding="utf-8"))
            dtype = meta.get("dtype")
            kind = np.dtype(dtype).kind if isinstance(dtype, str) else "V"
            ok = kind in "fc"
        elif v3.is_file():
            meta = json.loads(v3.read_text(encoding="utf-8"))
            if meta.get("node_type") != "array":
                raise ReaderError(f"{path.name} is a Zarr group, not an exit-wave array; open "
                                  "the array inside it")
            dtype = meta.get("data_type")
            ok = isinstance(dtype, str) and dtype in _ZARR_V3_TYPES
        else:
            raise ReaderError(f"{path.name} is not a Zarr array (no .zarray or zarr.json); open "
                              "an exit wave written by napari-exitwave")
    except (ValueError, TypeError, UnicodeDecodeError) as e:
        raise ReaderError(f"{path.name}: its Zarr metadata is not valid JSON ({e})") from e
    unsafe = [c for c in _codec_ids(meta) if "pickle" in c.lower() or "msgpack" in c.lower()]
    if not ok or unsafe:
        what = f"data type {dtype!r}" if not ok else f"codec {unsafe[0]!r}"
        raise ReaderError(
            f"{path.name} holds a Zarr array with {what}, not a numeric exit wave; it is not "
            "read (object arrays can run code from the file): open only exit waves written by "
            "napari-exitwave (complex64)")


def read_exit_wave(path: str | os.PathLike) -> ExitWave:
    """Read an exit wave written by :func:`write_exit_wave_tiff` or :func:`write_exit_wave_zarr`.

    Returns
    -------
    ExitWave
        ``wave`` complex64 (ny, nx), ``sampling`` (A/px or None), ``metadata`` dict; unpacks
        as a 3-tuple.

    Raises
    ------
    ReaderError
        Missing or unreadable files, series TIFFs, Zarr arrays that are not numeric.
    """
    path = Path(path)
    if not path.exists():
        raise ReaderError(f"{path} does not exist")
    if path.is_dir() or path.suffix.lower() == ".zarr":
        check_zarr_metadata(path)
        import zarr

        try:
            arr = zarr.open_array(str(path), mode="r")
            if arr.ndim != 2 or np.dtype(arr.dtype).kind not in "fc":
                raise ReaderError(f"{path.name} holds a {arr.dtype} array of shape "
                                  f"{arr.shape}, not a 2-D exit wave")
            attrs = dict(arr.attrs)
            wave = np.asarray(arr[...], dtype=np.complex64)
        except ReaderError:
            raise
        except Exception as e:
            raise ReaderError(f"{path.name} is not a Zarr exit-wave array: {e}") from e
        return ExitWave(wave, attrs.get("sampling"), dict(attrs.get("metadata", {})))
    import tifffile

    try:
        with tifffile.TiffFile(str(path)) as tif:
            data = tif.series[0].asarray()
            ij = tif.imagej_metadata or {}
    except Exception as e:
        raise ReaderError(f"{path.name} could not be read as a TIFF: {e}") from e
    info = {}
    if METADATA_KEY in ij:
        try:
            info = json.loads(ij[METADATA_KEY])
        except ValueError:
            info = {}
    if np.iscomplexobj(data):
        wave = data.astype(np.complex64)
    elif data.ndim == 3 and data.shape[0] == 2:
        wave = (data[0] + 1j * data[1]).astype(np.complex64)
    else:
        raise ReaderError(f"{path.name} is not an exit wave (expected 2 channels real/imag or a "
                          f"complex image, got {data.dtype} {data.shape})")
    sampling = info.pop("sampling", None)
    for k in ("kind", "channels", "units"):
        info.pop(k, None)
    return ExitWave(wave, sampling, info)
