"""Exceptions of napari-exitwave.

Every error the plugin raises on purpose derives from :class:`ExitWaveError`, so the widget and
the CLI can show its message as one line without a traceback. Messages say what was wrong and
what to do about it.
"""

from __future__ import annotations

__all__ = [
    "ExitWaveError",
    "ReaderError",
    "IncompleteFileError",
    "SeriesMismatchError",
    "ModelError",
    "ReconstructionCancelled",
]


class ExitWaveError(Exception):
    """Base class of the errors napari-exitwave raises on purpose (bad input, bad model...)."""


class ReaderError(ExitWaveError):
    """A file could not be read as a focal series (wrong format, truncated, 2-D, NaNs...)."""


class IncompleteFileError(ReaderError):
    """A file holds less than its own structure declares (empty, a page chain or data cut short,
    fewer images than its header says): still being written, or cut while copied. Watchers retry
    it later; a user copies it again."""


class SeriesMismatchError(ExitWaveError):
    """A focal series does not fit the chosen model or method (image count, pixel size...)."""


class ModelError(ExitWaveError):
    """A network could not be found, verified or loaded (missing file, hash mismatch, corrupt
    ONNX, unavailable device)."""


class ReconstructionCancelled(ExitWaveError):
    """The user cancelled a running reconstruction (raised when ``cancel()`` returns True)."""
