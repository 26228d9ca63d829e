"""Reading focal series and writing exit waves.

Readers
-------
:func:`read_series` reads a focal series from

- a DigitalMicrograph DM3/DM4 file (via rosettasciio): a 3-D image stack, calibration from the
  file's dimension calibrations;
- a TIFF, OME-TIFF or ImageJ stack (via tifffile): pixel size from our own metadata, the OME
  ``PhysicalSizeX``, the ImageJ ``unit`` + resolution, or the FEI/Thermo ``PixelWidth``;
- a folder of single 2-D images (TIFF/DM3/DM4/NPY), sorted naturally (``img2`` before ``img10``),
  or by increasing defocus when every image has one (metadata or ``df-5nm`` in the name).

Pixel sizes are converted to Angstrom (``sampling`` in A/px; ``None`` when the file carries no
usable calibration). Defocus values (A, abTEM convention ``defocus = -C10``) are taken from the
file where it holds them: our own TIFFs (:func:`write_series_tiff`) store them, folders of single
images can carry them in the file names (``..._df-50nm.tif``, ``defocus=+25A``); otherwise
``defocus`` is ``None`` and must be given by the user where a method needs it.

Writers
-------
- :func:`write_series_tiff`: a focal series as an ImageJ hyperstack (opens in Fiji with its pixel
  size) carrying sampling and defoci as JSON in the ``exitwave`` key; read back by
  :func:`read_series`.
- :func:`write_exit_wave_tiff`: a complex exit wave as a two-channel (real, imaginary) float32
  ImageJ hyperstack with JSON metadata; :func:`write_exit_wave_zarr`: complex64 Zarr array with
  attributes; :func:`read_exit_wave` reads either back.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .errors import ReaderError

__all__ = [
    "FocalSeries",
    "read_series",
    "read_image",
    "to_angstrom",
    "natural_sort_key",
    "write_series_tiff",
    "write_exit_wave_tiff",
    "write_exit_wave_zarr",
    "read_exit_wave",
    "write_peaks_csv",
    "SERIES_EXTENSIONS",
]

SERIES_EXTENSIONS = (".dm3", ".dm4", ".tif", ".tiff", ".npy")
"""File types :func:`read_series` reads (and a folder may contain)."""

_METADATA_KEY = "exitwave"  # key of our JSON metadata inside ImageJ descriptions

# length units -> Angstrom
_UNIT_TO_A = {
    "a": 1.0, "å": 1.0, "\u212b": 1.0, "ang": 1.0, "angstrom": 1.0, "angstroms": 1.0,
    "ångström": 1.0,
    "pm": 1e-2, "picometer": 1e-2, "picometre": 1e-2,
    "nm": 10.0, "nanometer": 10.0, "nanometre": 10.0, "nanometers": 10.0,
    "um": 1e4, "µm": 1e4, "\u03bcm": 1e4, "micron": 1e4, "microns": 1e4, "micrometer": 1e4,
    "micrometre": 1e4, "\\u00b5m": 1e4,
    "mm": 1e7, "millimeter": 1e7, "cm": 1e8, "m": 1e10, "meter": 1e10, "metre": 1e10,
}
_NO_UNITS = {"", "px", "pixel", "pixels", "<auto>", "none", "<undefined>", "undefined"}


@dataclasses.dataclass
class FocalSeries:
    """A focal series with its calibration.

    Attributes
    ----------
    images : float32 array (n, ny, nx)
        The images, in acquisition order.
    sampling : float or None
        Pixel size in A/px; ``None`` when the file carried no length calibration.
    units : str
        Unit of ``sampling``: ``"Å"`` when calibrated, ``"px"`` otherwise. The file's own unit
        and scale are kept in ``metadata["original_units"]`` / ``metadata["original_scale"]``.
    defocus : list of float or None
        Defocus of each image in A (abTEM convention: ``defocus = -C10``, positive = underfocus),
        or ``None`` when unknown.
    metadata : dict
        Anything else read from the file (``energy`` in eV where known, original calibration,
        per-file names of a folder series...).
    source : str
        Where the series came from (a path, ``"sample"``, ``"array"``).
    """

    images: np.ndarray
    sampling: float | None = None
    units: str = "px"
    defocus: list[float] | None = None
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)
    source: str = "array"

    def __post_init__(self):
        images = np.asarray(self.images)
        if images.ndim == 2:
            images = images[None]
        if images.ndim != 3:
            raise ValueError(f"images must be (n, ny, nx), got shape {images.shape}")
        if np.iscomplexobj(images):
            raise ValueError("images must be real intensities, got a complex array")
        self.images = images.astype(np.float32, copy=False)
        if self.sampling is not None:
            self.sampling = float(self.sampling)
            if not self.sampling > 0:
                raise ValueError(f"sampling must be positive (A/px), got {self.sampling}")
            if self.units == "px":
                self.units = "Å"
        if self.defocus is not None:
            self.defocus = [float(d) for d in self.defocus]
            if len(self.defocus) != len(self.images):
                raise ValueError(f"{len(self.defocus)} defocus values for "
                                 f"{len(self.images)} images")

    @property
    def n_images(self) -> int:
        return int(self.images.shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.images.shape[-2:])

    def __repr__(self) -> str:  # arrays are too long for the default repr
        s = "unknown" if self.sampling is None else f"{self.sampling:.4g} A/px"
        return (f"FocalSeries({self.n_images} x {self.shape[0]} x {self.shape[1]}, sampling={s}, "
                f"defocus={self.defocus}, source={self.source!r})")


# ----------------------------------------------------------------------------------------------
# helpers


def to_angstrom(scale: float | None, unit: str | None) -> float | None:
    """Convert a pixel size ``scale`` in ``unit`` to A; ``None`` if the unit is not a length.

    >>> to_angstrom(0.0105, "nm")
    0.105
    >>> to_angstrom(1.0, "") is None
    True
    """
    if scale is None or unit is None:
        return None
    u = str(unit).strip()
    key = u.lower()
    if key in _NO_UNITS:
        return None
    if key.startswith("1/") or key.endswith("^-1") or key.endswith("-1"):
        raise ReaderError(
            f"the image is calibrated in {u} (reciprocal space): this looks like a diffraction "
            "pattern or an FFT, not an HRTEM image")
    factor = _UNIT_TO_A.get(key, _UNIT_TO_A.get(u))
    if factor is None:
        return None
    scale = float(scale)
    if not (math.isfinite(scale) and scale > 0):
        return None
    return scale * factor


def natural_sort_key(name: str) -> list:
    """Sort key that orders ``img2`` before ``img10``."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", str(name))]


def _check_finite(images: np.ndarray, source: str) -> None:
    bad = ~np.isfinite(images)
    if bad.any():
        counts = bad.reshape(len(images), -1).sum(axis=1)
        which = ", ".join(f"image {i + 1}: {c}" for i, c in enumerate(counts) if c)
        raise ReaderError(
            f"{source}: the series contains NaN or infinite pixels ({which} of "
            f"{images.shape[1] * images.shape[2]} px); replace them (e.g. by the image median) "
            "before reconstructing")


def json_default(o):
    """``json.dumps(..., default=json_default)``: numpy scalars and arrays as Python values,
    anything else (paths, ...) as its string."""
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    return str(o)


def _dumps(d: dict) -> str:
    return json.dumps(d, default=json_default, ensure_ascii=True)


def _finish(images: np.ndarray, sampling, units_in, scale_in, defocus, metadata, source,
            allow_single: bool, allow_nonfinite: bool) -> FocalSeries:
    images = np.asarray(images)
    name = Path(source).name if source else "the data"
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
    metadata = dict(metadata)
    metadata.setdefault("original_units", units_in if units_in is not None else "")
    metadata.setdefault("original_scale", scale_in)
    if defocus is not None and len(defocus) != len(images):
        metadata["defocus_ignored"] = list(defocus)
        defocus = None
    return FocalSeries(images=images, sampling=sampling, units="Å" if sampling else "px",
                       defocus=defocus, metadata=metadata, source=str(source))


# ----------------------------------------------------------------------------------------------
# DigitalMicrograph


def _read_dm(path: Path):
    try:
        from rsciio.digitalmicrograph import file_reader
    except ImportError as e:  # pragma: no cover - rosettasciio is a core dependency
        raise ReaderError("reading DM3/DM4 needs rosettasciio: pip install rosettasciio") from e
    try:
        signals = file_reader(str(path))
    except Exception as e:  # rsciio raises struct.error, ValueError, IndexError... on bad files
        raise ReaderError(
            f"{path.name} could not be read as a DigitalMicrograph file ({type(e).__name__}: "
            f"{e}); the file may be truncated or not a DM3/DM4 file: copy it again from the "
            "microscope PC or re-export it from GMS") from e
    images = [s for s in signals if np.ndim(s.get("data")) >= 2]
    if not images:
        raise ReaderError(f"{path.name} contains no image")
    sig = images[0]
    data = np.asarray(sig["data"])
    axes = sorted(sig["axes"], key=lambda a: a.get("index_in_array", 0))
    if len(axes) != data.ndim:
        axes = [dict(scale=1.0, units="", name=f"axis{i}", navigate=i < data.ndim - 2)
                for i in range(data.ndim)]
    signal_axes = [a for a in axes if not a.get("navigate", False)]
    if len(signal_axes) != 2 and data.ndim >= 2:
        raise ReaderError(
            f"{path.name} is not an image or image stack (its signal has {len(signal_axes)} "
            f"dimension(s): {[a.get('name') for a in signal_axes]}; a spectrum image?)")
    if data.ndim > 3:
        raise ReaderError(f"{path.name} has {data.ndim} dimensions {data.shape}; expected one "
                          "image stack (n, ny, nx)")
    ay, ax = axes[-2], axes[-1]
    unit_y, unit_x = str(ay.get("units") or ""), str(ax.get("units") or "")
    scale_x = float(ax.get("scale", 1.0))
    scale_y = float(ay.get("scale", 1.0))
    sampling = to_angstrom(scale_x, unit_x)
    metadata: dict[str, Any] = {"format": "DigitalMicrograph",
                                "title": sig.get("metadata", {}).get("General", {}).get("title")}
    sy = to_angstrom(scale_y, unit_y)
    if sampling is not None and sy is not None and not np.isclose(sy, sampling, rtol=1e-3):
        metadata["anisotropic_sampling"] = (sy, sampling)
    energy = _find_key(sig.get("original_metadata", {}), "Voltage")
    if isinstance(energy, (int, float)) and energy > 0:
        metadata["energy"] = float(energy)
    if data.ndim == 3:
        metadata["stack_axis"] = {"name": axes[0].get("name"), "scale": axes[0].get("scale"),
                                  "units": axes[0].get("units")}
    return data, sampling, unit_x, scale_x, None, metadata


def _find_key(d, key, depth=0):
    """First value of ``key`` anywhere in a nested dict (DM tag trees), or None."""
    if not isinstance(d, dict) or depth > 12:
        return None
    if key in d and not isinstance(d[key], dict):
        return d[key]
    for v in d.values():
        r = _find_key(v, key, depth + 1)
        if r is not None:
            return r
    return None


# ----------------------------------------------------------------------------------------------
# TIFF


def _parse_defocus(value) -> list[float] | None:
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


def _tiff_calibration(tif, page) -> tuple[float | None, str, float | None, list | None, dict]:
    """(sampling A/px, original unit, original scale, defocus A, metadata) of a TIFF."""
    meta: dict[str, Any] = {}
    defocus = None
    # 1. our own metadata (ImageJ key or shaped JSON description)
    ours = None
    ij = tif.imagej_metadata if tif.is_imagej else None
    if ij and _METADATA_KEY in ij:
        try:
            ours = json.loads(ij[_METADATA_KEY])
        except (TypeError, ValueError):
            ours = None
    if ours is None and tif.is_shaped:
        shaped = tif.shaped_metadata[0] if tif.shaped_metadata else {}
        if "sampling" in shaped or "defocus" in shaped:
            ours = shaped
    if ours and ours.get("kind") == "exit wave":
        raise ReaderError("this TIFF holds an exit wave (real and imaginary channels), not a "
                          "focal series; open it with read_exit_wave")
    if ours:
        meta.update({k: v for k, v in ours.items() if k not in ("shape",)})
        defocus = _parse_defocus(ours.get("defocus"))
        if ours.get("sampling"):
            return float(ours["sampling"]), "Å", float(ours["sampling"]), defocus, meta
    if ij:
        meta["imagej"] = {k: v for k, v in ij.items() if isinstance(v, (str, int, float))}
        if defocus is None:
            defocus = _parse_defocus(ij.get("defocus"))
    # 2. OME-XML
    if tif.is_ome and tif.ome_metadata:
        m = re.search(r'PhysicalSizeX="([0-9.eE+-]+)"', tif.ome_metadata)
        if m:
            mu = re.search(r'PhysicalSizeXUnit="([^"]+)"', tif.ome_metadata)
            unit = mu.group(1) if mu else "µm"  # OME default unit is micrometre
            scale = float(m.group(1))
            meta["format"] = "OME-TIFF"
            return to_angstrom(scale, unit), unit, scale, defocus, meta
    # 3. ImageJ unit + resolution (pixels per unit)
    if ij and ij.get("unit") not in (None, ""):
        unit = str(ij["unit"])
        xres = page.tags.get("XResolution")
        if xres is not None:
            num, den = xres.value if isinstance(xres.value, tuple) else (xres.value, 1)
            if num:
                scale = den / num
                meta["format"] = "ImageJ"
                return to_angstrom(scale, unit), unit, scale, defocus, meta
    # 4. FEI / Thermo Fisher SEM/TEM TIFF
    fei = getattr(tif, "fei_metadata", None)
    if fei:
        pw = fei.get("Scan", {}).get("PixelWidth") or fei.get("EScan", {}).get("PixelWidth")
        if pw:
            meta["format"] = "FEI-TIFF"
            return to_angstrom(float(pw), "m"), "m", float(pw), defocus, meta
    return None, "", None, defocus, meta


def _read_tiff(path: Path):
    import tifffile

    try:
        with tifffile.TiffFile(str(path)) as tif:
            series = tif.series[0]
            data = series.asarray()
            axes = series.axes
            photometric = int(getattr(tif.pages[0], "photometric", 1))
            sampling, unit, scale, defocus, meta = _tiff_calibration(tif, tif.pages[0])
    except ReaderError as e:
        raise ReaderError(f"{path.name}: {e}") from None
    except Exception as e:
        raise ReaderError(f"{path.name} could not be read as a TIFF ({type(e).__name__}: {e}); "
                          "the file may be truncated or not a TIFF") from e
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
    return data, sampling, unit, scale, defocus, meta


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


def _read_folder(path: Path, allow_nonfinite: bool):
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
    return (images, sampling, singles[0].metadata.get("original_units", ""),
            singles[0].metadata.get("original_scale"), defocus, meta)


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
    ReaderError
        Missing, unsupported, truncated or corrupt files; a 2-D image; NaNs.

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
        result = _read_folder(path, allow_nonfinite)
    else:
        ext = path.suffix.lower()
        if path.stat().st_size == 0:
            raise ReaderError(f"{path.name} is empty (0 bytes); copy it again")
        if ext in (".dm3", ".dm4"):
            result = _read_dm(path)
        elif ext in (".tif", ".tiff"):
            result = _read_tiff(path)
        elif ext == ".npy":
            try:
                data = np.load(path, allow_pickle=False)
            except Exception as e:
                raise ReaderError(f"{path.name} could not be read as a NumPy file: {e}") from e
            result = (data, None, "", None, None, {"format": "npy"})
        else:
            raise ReaderError(f"{path.name}: unsupported file type {ext!r}; open a DM3/DM4 or "
                              "TIFF stack, or a folder of single images")
    data, sampling, unit, scale, defocus, meta = result
    return _finish(data, sampling, unit, scale, defocus, meta, str(path),
                   allow_single=allow_single, allow_nonfinite=allow_nonfinite)


def read_image(path: str | os.PathLike, *, allow_nonfinite: bool = False) -> FocalSeries:
    """Read one file as a series that may hold a single image (live mode: one image a file)."""
    return read_series(path, allow_single=True, allow_nonfinite=allow_nonfinite)


# ----------------------------------------------------------------------------------------------
# writers


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
    ij.update({"axes": "ZYX", _METADATA_KEY: _dumps(info)})
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
    ij.update({"axes": "CYX", "Labels": ["real", "imag"], _METADATA_KEY: _dumps(info)})
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
    attrs = json.loads(_dumps({"kind": "exit wave", "sampling": sampling, "units": "A",
                               "metadata": dict(metadata or {})}))
    arr.attrs.update(attrs)
    return path


def read_exit_wave(path: str | os.PathLike) -> tuple[np.ndarray, float | None, dict[str, Any]]:
    """Read an exit wave written by :func:`write_exit_wave_tiff` or :func:`write_exit_wave_zarr`.

    Returns
    -------
    exit_wave : complex64 (ny, nx)
    sampling : float or None (A/px)
    metadata : dict
    """
    path = Path(path)
    if not path.exists():
        raise ReaderError(f"{path} does not exist")
    if path.is_dir() or path.suffix.lower() == ".zarr":
        import zarr

        try:
            arr = zarr.open_array(str(path), mode="r")
        except Exception as e:
            raise ReaderError(f"{path.name} is not a Zarr exit-wave array: {e}") from e
        attrs = dict(arr.attrs)
        return (np.asarray(arr[...], dtype=np.complex64), attrs.get("sampling"),
                dict(attrs.get("metadata", {})))
    import tifffile

    try:
        with tifffile.TiffFile(str(path)) as tif:
            data = tif.series[0].asarray()
            ij = tif.imagej_metadata or {}
    except Exception as e:
        raise ReaderError(f"{path.name} could not be read as a TIFF: {e}") from e
    info = {}
    if _METADATA_KEY in ij:
        try:
            info = json.loads(ij[_METADATA_KEY])
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
    return wave, sampling, info


def write_peaks_csv(table, path: str | os.PathLike) -> Path:
    """Write a peak table (:func:`napari_exitwave.peaks.peak_table`) as CSV (delegates to peaks)."""
    from .peaks import write_peaks_csv as _write

    _write(table, path)
    return Path(path)
