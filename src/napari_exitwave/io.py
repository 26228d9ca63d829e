"""Reading focal series and writing exit waves: the public entry points.

Readers
-------
:func:`read_series` reads a focal series from

- a DigitalMicrograph DM3/DM4 file (``_dm``, via rosettasciio): a 3-D image stack, calibration
  from the file's dimension calibrations, beam energy from rosettasciio's mapped metadata;
- a TIFF, OME-TIFF or ImageJ stack (``_tiff``, via tifffile): pixel size from our own metadata,
  the OME ``PhysicalSizeX``, the ImageJ ``unit`` + resolution, the FEI/Thermo ``PixelWidth``, or
  rosettasciio's TIFF reader (Digital Micrograph and JEOL tags); truncated files are refused;
- a folder of single 2-D images (TIFF/DM3/DM4/NPY), sorted naturally (``img2`` before ``img10``),
  or by increasing defocus when every image has one (metadata or ``df-5nm`` in the name).

Pixel sizes are converted to Angstrom (``sampling`` in A/px; ``None`` when the file carries no
usable calibration). Defocus values (A, abTEM convention ``defocus = -C10``) are taken from the
file where it holds them: our own TIFFs (:func:`write_series_tiff`) store them, folders of single
images can carry them in the file names (``..._df-50nm.tif``, ``defocus=+25A``); otherwise
``defocus`` is ``None`` and must be given by the user where a method needs it.

Writers (``_exit_wave_io``)
---------------------------
:func:`write_series_tiff`, :func:`write_exit_wave_tiff`, :func:`write_exit_wave_zarr`, and
:func:`read_exit_wave`, which refuses Zarr stores that are not numeric arrays.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from ._exit_wave_io import (ExitWave, read_exit_wave, write_exit_wave_tiff,
                            write_exit_wave_zarr, write_series_tiff)
from ._series import (METADATA_KEY, FocalSeries, RawSeries, json_default, natural_sort_key,
                      to_angstrom)
from .errors import IncompleteFileError, ReaderError

__all__ = [
    "FocalSeries",
    "ExitWave",
    "read_series",
    "read_image",
    "to_angstrom",
    "natural_sort_key",
    "json_default",
    "write_series_tiff",
    "write_exit_wave_tiff",
    "write_exit_wave_zarr",
    "read_exit_wave",
    "write_peaks_csv",
    "SERIES_EXTENSIONS",
]

SERIES_EXTENSIONS = (".dm3", ".dm4", ".tif", ".tiff", ".npy")
"""File types :func:`read_series` reads (and a folder may contain)."""

_METADATA_KEY = METADATA_KEY  # the name the napari reader imports


def _check_finite(images: np.ndarray, source: str) -> None:
    bad = ~np.isfinite(images)
    if bad.any():
        counts = bad.reshape(len(images), -1).sum(axis=1)
        which = ", ".join(f"image {i + 1}: {c}" for i, c in enumerate(counts) if c)
        raise ReaderError(
            f"{source}: the series contains NaN or infinite pixels ({which} of "
            f"{images.shape[1] * images.shape[2]} px); replace them (e.g. by the image median) "
            "before reconstructing")


def _finish(raw: RawSeries, source: str, allow_single: bool,
            allow_nonfinite: bool) -> FocalSeries:
    images = np.asarray(raw.data)
    name = Path(source).name if source else "the data"
    if images.dtype.names is not None or images.dtype.kind not in "biufc":
        raise ReaderError(f"{name} holds {images.dtype} pixels, not intensities; save the focal "
                          "series as grayscale (intensity) images")
    if images.ndim == 2:
        if not allow_single:
            raise ReaderError(
                f"{name} holds a single 2-D image ({images.shape[0]} x {images.shape[1]} px); a "
                "focal series needs a stack of 2-4 images: save the series as one 3-D stack, or "
                "put its single images into one folder and open the folder")
        images = images[None]
    if images.ndim != 3:
        raise ReaderError(f"{name}: expected an image stack (n, ny, nx), got shape {images.shape}")
    if np.iscomplexobj(images):
        raise ReaderError(f"{name} holds complex data (an exit wave?), not focal-series images; "
                          "open it with read_exit_wave")
    if images.shape[-1] < 2 or images.shape[-2] < 2:
        raise ReaderError(f"{name}: images of {images.shape[-2]} x {images.shape[-1]} px are too "
                          "small to reconstruct")
    images = images.astype(np.float32)
    if not allow_nonfinite:
        _check_finite(images, name)
    metadata = dict(raw.metadata)
    metadata.setdefault("original_units", raw.unit if raw.unit is not None else "")
    metadata.setdefault("original_scale", raw.scale)
    defocus = raw.defocus
    if defocus is not None and len(defocus) != len(images):
        metadata["defocus_ignored"] = list(defocus)
        defocus = None
    return FocalSeries(images=images, sampling=raw.sampling,
                       units="Å" if raw.sampling else "px", defocus=defocus, metadata=metadata,
                       source=str(source))


# ----------------------------------------------------------------------------------------------
# folders


_DF_PATTERN = re.compile(
    r"(?:defocus|df)[ _=:]?([+-]?\d+(?:\.\d+)?)\s*(nm|a|å|pm)?(?![a-z0-9])", re.IGNORECASE)


def _defocus_from_name(name: str) -> float | None:
    m = _DF_PATTERN.search(Path(name).stem)
    if not m:
        return None
    value = float(m.group(1))
    unit = (m.group(2) or "nm").lower()  # microscopists type defocus in nm unless told
    return value * {"nm": 10.0, "a": 1.0, "å": 1.0, "pm": 0.01}[unit]


def _read_folder(path: Path, allow_nonfinite: bool) -> RawSeries:
    files = sorted((p for p in path.iterdir()
                    if p.is_file() and p.suffix.lower() in SERIES_EXTENSIONS
                    and not p.name.startswith(".")), key=lambda p: natural_sort_key(p.name))
    if not files:
        raise ReaderError(f"folder {path} contains no images ({', '.join(SERIES_EXTENSIONS)})")
    singles = []
    for f in files:
        s = read_series(f, allow_single=True, allow_nonfinite=allow_nonfinite)
        if s.n_images != 1:
            raise ReaderError(
                f"folder {path.name}: {f.name} holds {s.n_images} images; a folder series must "
                "contain single 2-D images (open a stack file directly instead)")
        singles.append(s)
    shapes = {s.shape for s in singles}
    if len(shapes) > 1:
        raise ReaderError(f"folder {path.name}: the images differ in size "
                          f"{sorted(shapes)}; a focal series needs images of one size")
    samplings = [s.sampling for s in singles]
    sampling = samplings[0]
    if any(s is None for s in samplings):
        sampling = None
    elif not np.allclose(samplings, sampling, rtol=1e-3):
        raise ReaderError(f"folder {path.name}: the images have different pixel sizes "
                          f"{[round(s, 5) for s in samplings]} A; reconstruct only images "
                          "taken at one magnification")
    defocus = [s.defocus[0] if s.defocus else None for s in singles]
    if any(d is None for d in defocus):
        defocus = [_defocus_from_name(f.name) for f in files]
    if any(d is None for d in defocus):
        defocus = None
    else:
        # A focal series runs in increasing defocus (the order the networks are trained on),
        # whatever the file names sort to (img_df-50, img_df0, img_df50 sort as text otherwise).
        order = sorted(range(len(files)), key=lambda i: defocus[i])
        files, singles = [files[i] for i in order], [singles[i] for i in order]
        defocus = [defocus[i] for i in order]
    meta = {"format": "folder", "files": [f.name for f in files],
            "file_metadata": [s.metadata for s in singles]}
    energy = singles[0].metadata.get("energy")
    if energy:
        meta["energy"] = energy
    images = np.stack([s.images[0] for s in singles])
    return RawSeries(images, sampling, singles[0].metadata.get("original_units", ""),
                     singles[0].metadata.get("original_scale"), defocus, meta)


def _read_npy(path: Path) -> RawSeries:
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as e:
        raise ReaderError(f"{path.name} could not be read as a NumPy file ({e}); save the "
                          "series with numpy.save (a numeric array, no objects)") from e
    return RawSeries(data, metadata={"format": "npy"})


# ----------------------------------------------------------------------------------------------
# public readers


def read_series(path: str | os.PathLike, *, allow_single: bool = False,
                allow_nonfinite: bool = False) -> FocalSeries:
    """Read a focal series from a DM3/DM4 file, a TIFF stack or a folder of single images.

    Parameters
    ----------
    path : str or Path
        A ``.dm3``/``.dm4``/``.tif``/``.tiff``/``.npy`` file, or a folder of single images.
    allow_single : bool
        Accept a single 2-D image (returned as a series of one). By default a 2-D image raises
        :class:`ReaderError`, since a reconstruction needs a stack.
    allow_nonfinite : bool
        Accept NaN/inf pixels (by default they raise :class:`ReaderError` naming the images).

    Returns
    -------
    FocalSeries
        ``images`` float32 ``(n, ny, nx)``, ``sampling`` in A/px (or None), ``defocus`` in A
        (or None).

    Raises
    ------
    IncompleteFileError
        (a :class:`ReaderError`) Empty or truncated files: still being written, or cut short.
    ReaderError
        Missing, unsupported or corrupt files; colour pixels, spectrum images, files
        with several image series; a 2-D image; NaNs.

    Examples
    --------
    >>> series = read_series("series.dm4")            # doctest: +SKIP
    >>> series.images.shape, series.sampling          # doctest: +SKIP
    ((3, 1024, 1024), 0.1024)
    """
    path = Path(path)
    if not path.exists():
        raise ReaderError(f"{path} does not exist")
    if path.is_dir():
        raw = _read_folder(path, allow_nonfinite)
    else:
        ext = path.suffix.lower()
        if path.stat().st_size == 0:
            raise IncompleteFileError(f"{path.name} is empty (0 bytes); copy it again (or wait "
                                      "until it is written)")
        if ext in (".dm3", ".dm4"):
            from ._dm import read_dm

            raw = read_dm(path)
        elif ext in (".tif", ".tiff"):
            from ._tiff import read_tiff

            raw = read_tiff(path)
        elif ext == ".npy":
            raw = _read_npy(path)
        else:
            raise ReaderError(f"{path.name}: unsupported file type {ext!r}; open a DM3/DM4 or "
                              "TIFF stack, or a folder of single images")
    return _finish(raw, str(path), allow_single=allow_single, allow_nonfinite=allow_nonfinite)


def read_image(path: str | os.PathLike, *, allow_nonfinite: bool = False) -> FocalSeries:
    """Read one file as a series that may hold a single image (live mode: one image a file)."""
    return read_series(path, allow_single=True, allow_nonfinite=allow_nonfinite)


def write_peaks_csv(table, path: str | os.PathLike) -> Path:
    """Write a peak table (:func:`napari_exitwave.peaks.peak_table`) as CSV (delegates to peaks)."""
    from .peaks import write_peaks_csv as _write

    _write(table, path)
    return Path(path)
