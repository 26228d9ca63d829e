"""One result writer for every command: ``reconstruct``, ``watch`` and ``batch``.

:func:`write_result` writes one reconstruction as the same set of files, whatever wrote it::

    <stem>_exit_wave.tif    two float32 channels (real, imag), ImageJ-calibrated; napari and Fiji
                            open it, :func:`napari_exitwave.io.read_exit_wave` restores complex64
    <stem>_exit_wave.npy    complex64 (ny, nx), for numpy
    <stem>_exit_wave.zarr   complex64 Zarr array with the metadata as attributes
    <stem>.json             sampling (A/px), method, model, device, timings (s), warnings,
                            alignment shifts (px), source files, number of peaks, the file list
    <stem>_peaks.csv        with ``peaks``: atomic columns of |psi - 1| (peaks.peak_table)
    <stem>_argand.png       with ``peaks``: the Argand plot of the column values
    <stem>_residual.tif     with ``residual_images`` and a physics check: float32 (n, ny, nx),
                            ``(measured - model) / sigma`` of every image, on the exit wave's grid
                            (only when asked: it is as large as the series)

The JSON holds the physics check when it ran: ``estimate`` (values, units, training ranges,
warnings) and ``physics_residual`` (``reduced_chi2``, per-image ``chi2``, verdict, parameters).

How it writes
-------------
Every file is first written under a fresh temporary name in the output folder (created with
``O_EXCL``, so never through a link someone else put there), then renamed over its final name with
:func:`os.replace`, which replaces a symbolic link itself and never writes into its target. The
JSON is renamed last: a result whose JSON exists is complete. A failure at any point (a full disk,
a read-only folder) removes every temporary and leaves what was there before. Existing results
are kept unless ``overwrite=True`` (:class:`OutputExistsError`).

Test hook: :func:`set_fault_hook` installs ``hook(final_name)``, called before each file is
written (also the live ledger and ``errors.jsonl``); raise ``OSError(errno.ENOSPC, ...)`` there to simulate a full disk
(``benchmarks/live_soak.py`` and the tests use it).
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .errors import ExitWaveError
from .io import json_default

__all__ = ["write_result", "output_names", "existing_outputs", "check_output_folder",
           "remove_temporaries",
           "atomic_write_text", "set_fault_hook", "fault_check", "OutputError", "OutputExistsError"]

_fault_hook: Callable[[str], None] | None = None


class OutputError(ExitWaveError):
    """The output folder cannot take the result (missing parent, a file, read-only, full)."""


class OutputExistsError(OutputError):
    """A result of the same name exists and ``overwrite`` was not asked for."""


def set_fault_hook(hook: Callable[[str], None] | None) -> None:
    """Test hook: ``hook(final_name)`` runs before each file is written (None: remove it)."""
    global _fault_hook
    _fault_hook = hook


def fault_check(name: str) -> None:
    """Run the test hook of :func:`set_fault_hook` for a file about to be written (if any)."""
    if _fault_hook is not None:
        _fault_hook(name)


def output_names(stem: str, peaks: bool = True, residual: bool = False) -> dict[str, str]:
    """The file names :func:`write_result` writes for ``stem`` ({kind: name}, JSON last)."""
    names = {"tiff": f"{stem}_exit_wave.tif", "npy": f"{stem}_exit_wave.npy",
             "zarr": f"{stem}_exit_wave.zarr"}
    if peaks:
        names.update(peaks=f"{stem}_peaks.csv", argand=f"{stem}_argand.png")
    if residual:
        names["residual"] = f"{stem}_residual.tif"
    names["json"] = f"{stem}.json"
    return names


def existing_outputs(out: str | os.PathLike, stem: str, peaks: bool = True,
                     residual: bool = False) -> list[Path]:
    """Outputs of ``stem`` already in ``out`` (links included, whether or not they resolve)."""
    out = Path(out)
    return [out / n for n in output_names(stem, peaks, residual).values()
            if os.path.lexists(out / n)]


def check_output_folder(out: str | os.PathLike, create: bool = True) -> Path:
    """Make sure ``out`` is a folder this process can write into; return it.

    Creates it (and its parents) with ``create``, then creates and removes a probe file, which
    finds read-only mounts and full disks that permission bits do not show.

    Raises
    ------
    OutputError
        With a message naming the folder and what to do.
    """
    out = Path(out)
    if os.path.lexists(out) and not out.is_dir():
        raise OutputError(f"output folder {str(out)!r} is a file, not a folder; choose another "
                          "--out")
    try:
        if create:
            out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-probe-", dir=out)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(f"cannot write into the output folder {str(out)!r} "
                          f"({exc.strerror or exc}); choose a writable --out") from None
    return out


def _tmp_file(out: Path, name: str) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp" + Path(name).suffix, dir=out)
    os.close(fd)
    return Path(tmp)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename.

    Never follows a link at ``path`` (the link is replaced). On failure the temporary is
    removed and ``path`` is as it was.
    """
    path = Path(path)
    tmp = _tmp_file(path.parent, path.name)
    try:
        fault_check(path.name)
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _metadata(rec: Any, wave: np.ndarray) -> dict[str, Any]:
    if hasattr(rec, "to_metadata"):
        meta = dict(rec.to_metadata())
    else:  # a duck-typed result (tests, user reconstruct functions)
        shifts = getattr(rec, "shifts", None)
        meta = {"method": getattr(rec, "method", None),
                "model": getattr(rec, "model_name", None),
                "device": getattr(rec, "device", None),
                "sampling": getattr(rec, "sampling", None),
                "timings": dict(getattr(rec, "timings", {}) or {}),
                "warnings": list(getattr(rec, "warnings", []) or []),
                "shifts_px": None if shifts is None else np.asarray(shifts).tolist()}
        meta.update(getattr(rec, "metadata", None) or {})
    meta.update(units="A/px", shape=list(wave.shape))
    return meta


def write_result(rec: Any, out: str | os.PathLike, stem: str, *, peaks: bool = True,
                 min_distance: float = 1.0, threshold: float = 0.1,
                 extra: dict | None = None, overwrite: bool = False,
                 residual_images: bool = False) -> dict[str, str]:
    """Write one reconstruction into ``out`` as the files of :func:`output_names`.

    Parameters
    ----------
    rec : Reconstruction
        :class:`napari_exitwave.reconstruct.Reconstruction`, or anything with ``exit_wave`` and
        ``sampling`` (A/px) attributes.
    out : path
        Output folder (created).
    stem : str
        Common start of the file names (no path separators).
    peaks : bool
        Also find the atomic columns of ``|psi - 1|`` (:func:`napari_exitwave.peaks.find_peaks`,
        ``min_distance`` in A, ``threshold`` relative to the maximum) and write their table and
        Argand plot.
    extra : dict or None
        More JSON entries (source files, series id, grouping...).
    overwrite : bool
        Replace an earlier result of the same stem (else :class:`OutputExistsError`).
    residual_images : bool
        Also write ``<stem>_residual.tif``, the physics residual images (when ``rec.residual``
        exists; else nothing more is written).

    Returns
    -------
    dict of str -> str
        ``{kind: path}`` of every file written, ``"json"`` last.

    Raises
    ------
    OutputExistsError, OutputError, OSError
        Nothing is left behind but what was there before.
    """
    if not stem or os.sep in stem or (os.altsep and os.altsep in stem) or stem in (".", ".."):
        raise ValueError(f"stem must be a plain file name, got {stem!r}")
    wave = np.asarray(getattr(rec, "exit_wave", rec)).astype(np.complex64, copy=False)
    if wave.ndim != 2:
        raise ValueError(f"exit wave must be 2-D (ny, nx), got shape {wave.shape}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    residual = getattr(rec, "residual", None) if residual_images else None
    names = output_names(stem, peaks, residual=residual is not None)
    if not overwrite and (found := existing_outputs(out, stem, peaks, residual_images)):
        raise OutputExistsError(f"{found[0]} exists (an earlier result); pass --overwrite "
                                "(overwrite=True) to replace it or choose another --out/--name")
    meta = _metadata(rec, wave)
    meta.update(extra or {})
    sampling = meta.get("sampling") or None
    table = None
    if peaks:
        from .peaks import find_peaks, peak_table

        s = float(sampling) if sampling else 1.0
        pos = find_peaks(np.abs(wave - 1), sampling=s, min_distance=min_distance,
                         threshold=threshold)
        table = peak_table(wave, pos, s)
        meta["n_peaks"] = int(len(pos))
    meta["outputs"] = dict(names)
    meta["written"] = datetime.now(timezone.utc).isoformat(timespec="seconds")

    temps: dict[str, Path] = {}
    try:
        for kind, name in names.items():
            fault_check(name)
            if kind == "zarr":
                temps[kind] = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=out))
            else:
                temps[kind] = _tmp_file(out, name)
            _write_one(kind, temps[kind], wave, sampling, meta, table, stem, residual)
        # an earlier JSON goes first and the new one comes last: a result whose JSON exists is
        # complete, also when this process dies between two renames
        (out / names["json"]).unlink(missing_ok=True)
        for kind, name in names.items():
            _commit(temps.pop(kind), out / name)
    except BaseException as exc:
        for tmp in temps.values():
            _remove(tmp)
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EROFS, errno.EACCES,
                                                      errno.EDQUOT, errno.EPERM):
            raise OutputError(f"cannot write {stem} into {str(out)!r}: {exc.strerror}; free "
                              "space or make the folder writable") from exc
        raise
    return {kind: str(out / name) for kind, name in names.items()}


def _write_one(kind, tmp, wave, sampling, meta, table, stem, residual=None) -> None:
    from . import io

    if kind == "residual":
        info = {"content": "physics residual (measured - model) / sigma per image",
                "reduced_chi2": float(residual.reduced_chi2),
                "chi2": [float(c) for c in residual.chi2]}
        io.write_series_tiff(tmp, residual.images, sampling, metadata=info)

    if kind == "zarr":
        io.write_exit_wave_zarr(tmp, wave, sampling, meta)
    if kind == "tiff":
        io.write_exit_wave_tiff(tmp, wave, sampling, meta)
    elif kind == "npy":
        with open(tmp, "wb") as f:
            np.save(f, wave)
    elif kind == "peaks":
        from .peaks import write_peaks_csv

        write_peaks_csv(table, tmp)
    elif kind == "argand":
        from .argand import save_argand_png

        how = str(meta.get("method")) + (f", {meta['model']}" if meta.get("model") else "")
        save_argand_png(table["real"] + 1j * table["imag"], tmp,
                        title=f"{stem}: {len(table['real'])} columns ({how})")
    elif kind == "json":
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(json.dumps(meta, indent=2, default=json_default) + "\n")
            f.flush()
            os.fsync(f.fileno())


_TEMP_NAME = re.compile(r"^\..+\.(old\.)?[A-Za-z0-9_]{8}(\.tmp(\.\w+)?)?$")


def remove_temporaries(out: str | os.PathLike) -> list[str]:
    """Remove the temporaries a killed writer left in ``out``; return their names.

    Only names this module makes (``.<name>.<8 random characters>.tmp[.<suffix>]`` and the
    ``.<name>.old.<random>`` folders); call it only when no other writer works in ``out``.
    """
    removed = []
    try:
        entries = list(os.scandir(out))
    except OSError:
        return removed
    for e in entries:
        if _TEMP_NAME.match(e.name) and (".tmp" in e.name or ".old." in e.name):
            _remove(Path(e.path))
            removed.append(e.name)
    return removed


def _commit(tmp: Path, target: Path) -> None:
    """Rename ``tmp`` over ``target``; a link at ``target`` is replaced, never followed."""
    if tmp.is_dir():
        old = None
        if os.path.lexists(target):
            if target.is_dir() and not target.is_symlink():
                old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
                os.replace(target, old / "x")
            else:
                target.unlink()
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, target)
