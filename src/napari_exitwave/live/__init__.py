"""Live reconstruction: watch the folder the acquisition software writes into.

A :class:`FolderWatcher` polls a folder, waits until each new file is complete, groups the
arriving images into focal series, reconstructs every complete series and writes the result into
an output folder. It is Qt-free; the napari widget (``_qt/live_widget.py``) and the CLI
(``napari-exitwave watch``) are thin layers on top: both run :meth:`FolderWatcher.iter_results`
(or :meth:`~FolderWatcher.run`) and listen to its psygnal signals.

The parts, one module each:

- :mod:`._files`: when a file is complete (size/mtime stability, a full read, a stable page count
  for stacks), back-off for stalled writers, vanished files forgotten.
- :mod:`._grouping`: :class:`Grouping` and the three modes (count, pattern, defocus) as pure
  functions.
- :mod:`._ledger`: the resume ledger (``live-ledger.json``) and ``errors.jsonl``, which never
  raise on a read-only or full output folder.
- :mod:`._watcher`: :class:`FolderWatcher`, which ties them together.

Polling, not file-system events, so that it works the same on local disks and network shares.
Nothing is dropped: files stay on disk until they are grouped, complete series wait in a queue
until they are reconstructed, and a result the output folder refuses (read-only, full) is kept
and written again later. Stopping and restarting the watcher on the same output folder skips what
the ledger lists and regroups the files that were not yet consumed. Outputs per series: those of
:func:`napari_exitwave.results.write_result`. See docs/live.md.
"""

from ..batch import ModelReconstructor
from ._grouping import Grouping
from ._ledger import ERRORS_NAME, LEDGER_NAME
from ._watcher import IMAGE_EXTENSIONS, FolderWatcher, SeriesResult

__all__ = ["Grouping", "SeriesResult", "FolderWatcher", "ModelReconstructor",
           "IMAGE_EXTENSIONS", "LEDGER_NAME", "ERRORS_NAME"]
