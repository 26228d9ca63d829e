"""The resume ledger and the error log of a live watch, in its output folder.

``live-ledger.json`` lists every file that was consumed and every series that finished or failed;
it is rewritten atomically (temporary + rename, never through a link) after every change.
``errors.jsonl`` gets one JSON line per problem. Neither ever raises: when the output folder is
read-only or full, the ledger stays in memory (``dirty``) and the error lines wait in a queue;
both are written at the next :meth:`Ledger.flush` that succeeds.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..batch import _reduced_chi2
from ..io import json_default
from ..results import atomic_write_text, fault_check

__all__ = ["Ledger", "LEDGER_NAME", "ERRORS_NAME", "now_iso"]

log = logging.getLogger("napari_exitwave.live")

LEDGER_NAME = "live-ledger.json"
ERRORS_NAME = "errors.jsonl"
_VERSION = 1
_MAX_QUEUED = 10000
"""Error lines kept in memory while ``errors.jsonl`` cannot be written (the oldest go first)."""


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Ledger:
    """What a watch consumed and finished, kept in ``out``; survives restarts and kills."""

    def __init__(self, out: Path, folder: Path, grouping: dict[str, Any]) -> None:
        self.path = out / LEDGER_NAME
        self.errors_path = out / ERRORS_NAME
        self.dirty = False
        self._errors: list[str] = []
        self.data = self._load(folder, grouping)

    @property
    def files(self) -> dict[str, dict]:
        return self.data["files"]

    @property
    def series(self) -> dict[str, dict]:
        return self.data["series"]

    def _load(self, folder: Path, grouping: dict) -> dict:
        fresh = {"version": _VERSION, "folder": str(folder.resolve()), "grouping": grouping,
                 "next_index": 1, "files": {}, "series": {}}
        if not self.path.exists():
            return fresh
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if data.get("version") != _VERSION:
                raise ValueError(f"unknown ledger version {data.get('version')!r}")
        except (OSError, ValueError) as exc:
            bad = self.path.with_suffix(".json.bad")
            try:
                os.replace(self.path, bad)
            except OSError:
                pass
            log.warning("live watcher: could not read %s (%s); moved it to %s and start afresh",
                        self.path, exc, bad)
            return fresh
        if data.get("grouping") != grouping:
            log.warning("live watcher: resuming with a different grouping (%s, was %s); "
                        "finished series are kept", grouping, data.get("grouping"))
            data["grouping"] = grouping
        return data

    def next_id(self) -> str:
        i = int(self.data.get("next_index", 1))
        self.data["next_index"] = i + 1
        return f"series_{i:04d}"

    def mark_files(self, items, series_id: str | None, status: str) -> None:
        for it in items:
            self.files[it.name] = {"size": it.size, "mtime_ns": it.mtime_ns,
                                   "series": series_id, "status": status}
        self.save()

    def finish(self, result, items) -> None:
        self.series[result.series_id] = {
            "files": result.files, "status": result.status, "outputs": result.outputs,
            "elapsed_s": round(result.elapsed, 4), "finished": now_iso(), "error": result.error,
            "reduced_chi2": _reduced_chi2(result.reconstruction)}
        self.mark_files(items, result.series_id, result.status)

    def save(self) -> bool:
        """Write the ledger; on failure keep it in memory (``dirty``) and return False."""
        try:
            atomic_write_text(self.path, json.dumps(self.data, indent=1, default=json_default))
        except OSError as exc:
            if not self.dirty:
                log.error("live watcher: cannot write %s (%s); kept in memory, retried at the "
                          "next poll", self.path, exc)
            self.dirty = True
            return False
        self.dirty = False
        return True

    def report(self, kind: str, name: str, message: str) -> None:
        """Log an error and append it to ``errors.jsonl`` (queued when that cannot be written)."""
        log.error("live watcher: %s %s: %s", kind, name, message)
        entry = {"time": now_iso(), "kind": kind, "name": name, "error": message}
        self._errors.append(json.dumps(entry, default=json_default) + "\n")
        del self._errors[:-_MAX_QUEUED]  # a folder read-only for days must not fill the memory
        self._write_errors()

    def _write_errors(self) -> bool:
        if not self._errors:
            return True
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
        try:
            fault_check(self.errors_path.name)
            try:  # O_NOFOLLOW: never append to the target of a link someone put there
                fd = os.open(self.errors_path, flags, 0o644)
            except OSError:
                if not self.errors_path.is_symlink():
                    raise
                log.warning("live watcher: %s is a link; replaced by a file (its target is "
                            "left alone)", self.errors_path)
                self.errors_path.unlink()
                fd = os.open(self.errors_path, flags | os.O_EXCL, 0o644)
            with os.fdopen(fd, "a", encoding="utf-8") as f:
                f.write("".join(self._errors))
        except OSError as exc:
            log.warning("live watcher: cannot append to %s (%s); %d line(s) kept in memory",
                        self.errors_path, exc, len(self._errors))
            return False
        self._errors.clear()
        return True

    def flush(self) -> bool:
        """Retry what could not be written; True when nothing is left in memory."""
        ok = self._write_errors()
        if self.dirty:
            ok = self.save() and ok
        return ok
