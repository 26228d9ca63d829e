"""Progress generators: the form of every long computation of the package.

A long step is a generator that yields ``(fraction, message)`` and returns its result
(``StopIteration.value``), e.g. :func:`napari_exitwave.reconstruct.iter_reconstruct`. A napari
``thread_worker`` runs one as is (``worker.quit()`` stops it at the next item); :func:`drive`
runs one to its end with callbacks, for the blocking calls (CLI, live, batch).
"""

from __future__ import annotations

from typing import Any, Callable, Generator

from .errors import ReconstructionCancelled

__all__ = ["ProgressGenerator", "drive", "rescaled", "check_cancel"]

ProgressGenerator = Generator[tuple[float, str], None, Any]
"""A generator yielding ``(fraction, message)``, fraction in [0, 1], and returning a result."""


def check_cancel(cancel: Callable[[], bool] | None) -> None:
    """Raise :class:`~napari_exitwave.errors.ReconstructionCancelled` if ``cancel()`` is True."""
    if cancel is not None and cancel():
        raise ReconstructionCancelled("reconstruction cancelled")


def drive(gen: ProgressGenerator, progress: Callable[[float, str], None] | None = None,
          cancel: Callable[[], bool] | None = None):
    """Run ``gen`` to its end and return its value: ``progress(fraction, message)`` for every
    item, ``cancel()`` polled before the first and after every item."""
    check_cancel(cancel)
    while True:
        try:
            fraction, message = next(gen)
        except StopIteration as stop:
            return stop.value
        if progress is not None:
            progress(fraction, message)
        check_cancel(cancel)


def rescaled(gen: ProgressGenerator, lo: float, hi: float,
             cancel: Callable[[], bool] | None = None) -> ProgressGenerator:
    """Re-yield ``gen``'s items with the fraction mapped onto ``[lo, hi]`` of a larger task
    (``cancel()`` polled before each); return its value (``value = yield from rescaled(...)``)."""
    while True:
        check_cancel(cancel)
        try:
            fraction, message = next(gen)
        except StopIteration as stop:
            return stop.value
        yield lo + (hi - lo) * float(fraction), message
