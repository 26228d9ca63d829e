"""Live-mode widget: watch the acquisition folder and stack each reconstruction in the viewer.

A thin view over :class:`napari_exitwave.live.FolderWatcher`: the watcher's own loop
(:meth:`~napari_exitwave.live.FolderWatcher.run`, the one ``napari-exitwave watch`` runs) runs
in a napari ``thread_worker``; its signals (``series_done``, ``series_failed``, ``status``,
emitted in the watcher's thread) are handed to the GUI thread through a Qt signal, and each
finished series is appended to two image layers (real and imaginary part) along a new leading
"time" axis, so the slider scrolls through the series as they arrive. Results are also on disk
(the watcher's output folder).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, Callable

import numpy as np
from qtpy.QtCore import QObject, Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_exitwave.live import FolderWatcher, Grouping, SeriesResult

log = logging.getLogger(__name__)

LIVE_NAME = "live exit wave"


def append_reconstruction(viewer, result: SeriesResult, name: str = LIVE_NAME,
                          max_frames: int | None = None) -> list:
    """Append one reconstruction to the live real/imaginary layers (time axis first).

    Creates the layers on the first call (and again if the frame size changes: a new pair
    ``name (2)``...); moves the time slider to the newest frame. Returns the two layers.
    """
    from napari_exitwave._reader import exit_wave_layers

    rec = result.reconstruction
    wave = np.asarray(getattr(rec, "exit_wave", rec))
    sampling = getattr(rec, "sampling", None)
    layers = []
    for data, kwargs, _ in exit_wave_layers(wave, sampling, name=name,
                                            metadata={"series_id": result.series_id,
                                                      "files": result.files}):
        lname = kwargs["name"]
        layer = _find_stack(viewer, lname, data.shape)
        if layer is None:
            k = 2
            while lname in viewer.layers:  # a different frame size: start a new stack
                lname = f"{kwargs['name']} ({k})"
                k += 1
            kwargs = dict(kwargs, name=lname, scale=(1.0,) + tuple(kwargs["scale"]),
                          units=("pixel",) + tuple(kwargs["units"]))
            meta = kwargs.pop("metadata")
            meta["exitwave"]["frames"] = [result.series_id]
            layer = viewer.add_image(data[None], metadata=meta, **kwargs)
        else:
            stack = np.concatenate([layer.data, data[None]])
            frames = layer.metadata["exitwave"].setdefault("frames", [])
            frames.append(result.series_id)
            if max_frames and len(stack) > max_frames:
                stack = stack[-max_frames:]
                del frames[:-max_frames]
            layer.data = stack
            layer.metadata["exitwave"].update(
                {"exit_wave": wave, "series_id": result.series_id, "files": result.files})
        layers.append(layer)
    step = list(viewer.dims.current_step)
    if step:
        step[0] = len(layers[0].data) - 1
        viewer.dims.current_step = tuple(step)
    return layers


def _find_stack(viewer, name: str, frame_shape) -> Any:
    for layer in viewer.layers:
        if layer.name == name and layer.data.ndim == 3 \
                and tuple(layer.data.shape[1:]) == tuple(frame_shape):
            return layer
    return None


class _ToGuiThread(QObject):
    """Hands the watcher's events (emitted in its thread) to the GUI thread (queued)."""

    result = Signal(object)
    message = Signal(str)


class LiveWidget(QWidget):
    """Start/stop a folder watcher; each reconstructed series is appended to the viewer.

    ``reconstruct_fn`` (optional) replaces the network path, e.g. in tests.
    """

    def __init__(self, napari_viewer, reconstruct_fn: Callable | None = None):
        super().__init__()
        self.viewer = napari_viewer
        self._reconstruct_fn = reconstruct_fn
        self._worker = None
        self._stop = threading.Event()
        self.watcher: FolderWatcher | None = None
        self._events = _ToGuiThread(self)
        self._events.result.connect(self._on_result)
        self._events.message.connect(self._set_status)

        self.folder = QLineEdit()
        self.folder.setPlaceholderText("folder the camera writes into")
        self.out = QLineEdit()
        self.out.setPlaceholderText("output folder (default: <folder>/exitwave)")
        self.model = QComboBox()
        self.model.setEditable(True)  # a name from models/ or a path to a .json/.onnx
        self._fill_models()
        self.group_by = QComboBox()
        self.group_by.addItems(["count", "pattern", "defocus"])
        self.n_images = QSpinBox()
        self.n_images.setRange(1, 64)
        self.n_images.setValue(3)
        self.pattern = QLineEdit(r"(?P<series>.+)_(?P<index>\d+)\.\w+$")
        self.pattern.setToolTip("regular expression on the file name; group 'series' names "
                                "the series, optional group 'index' orders its images")
        self.poll = QDoubleSpinBox()
        self.poll.setRange(0.1, 60.0)
        self.poll.setValue(1.0)
        self.poll.setSuffix(" s")
        self.max_frames = QSpinBox()
        self.max_frames.setRange(1, 10000)
        self.max_frames.setValue(200)
        self.show_in_viewer = QCheckBox("add to viewer")
        self.show_in_viewer.setChecked(True)
        self.start_btn = QPushButton("Start watching")
        self.stop_btn = QPushButton("Stop")
        self.stop_btn.setEnabled(False)
        self.status = QLabel("idle")
        self.status.setWordWrap(True)

        form = QFormLayout()
        form.addRow("Watch folder", self._with_browse(self.folder))
        form.addRow("Output folder", self._with_browse(self.out))
        form.addRow("Model", self.model)
        form.addRow("Group by", self.group_by)
        form.addRow("Images per series", self.n_images)
        form.addRow("Pattern", self.pattern)
        form.addRow("Poll every", self.poll)
        form.addRow("Frames kept", self.max_frames)
        buttons = QHBoxLayout()
        buttons.addWidget(self.start_btn)
        buttons.addWidget(self.stop_btn)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(self.show_in_viewer)
        lay.addLayout(buttons)
        lay.addWidget(self.status)
        lay.addStretch(1)

        self.group_by.currentTextChanged.connect(self._update_enabled)
        self.start_btn.clicked.connect(self.start)
        self.stop_btn.clicked.connect(self.stop)
        self._update_enabled()

    # -------------------------------------------------------------- form helpers
    def _with_browse(self, edit: QLineEdit) -> QWidget:
        w = QWidget()
        h = QHBoxLayout(w)
        h.setContentsMargins(0, 0, 0, 0)
        h.addWidget(edit)
        b = QPushButton("...")
        b.setMaximumWidth(30)
        b.clicked.connect(lambda: self._browse(edit))
        h.addWidget(b)
        return w

    def _browse(self, edit: QLineEdit) -> None:
        d = QFileDialog.getExistingDirectory(self, "Choose a folder", edit.text())
        if d:
            edit.setText(d)

    def _fill_models(self) -> None:
        try:
            from napari_exitwave.inference import DEFAULT_MODEL, list_models

            names, default = sorted(list_models()), DEFAULT_MODEL
        except Exception as exc:  # noqa: BLE001 - a broken models folder must not kill the GUI
            log.warning("could not list models: %s", exc)
            names, default = [], None
        self.model.addItems(names)
        if default in names:
            self.model.setCurrentText(default)

    def _update_enabled(self) -> None:
        mode = self.group_by.currentText()
        self.pattern.setEnabled(mode == "pattern")

    def grouping(self) -> Grouping:
        mode = self.group_by.currentText()
        n = self.n_images.value()
        if mode == "pattern":
            return Grouping("pattern", n_images=n, pattern=self.pattern.text())
        if mode == "defocus":
            return Grouping("defocus", n_images=n, timeout=max(10.0, 5 * self.poll.value()))
        return Grouping("count", n_images=n)

    # -------------------------------------------------------------- running
    @property
    def running(self) -> bool:
        return self._worker is not None

    def start(self) -> None:
        """Build the watcher from the form and start it in a worker thread."""
        from napari.qt.threading import create_worker

        if self.running:
            return
        folder = self.folder.text().strip()
        try:
            if not folder:
                raise ValueError("choose the folder to watch")
            out = self.out.text().strip() or str(Path(folder) / "exitwave")
            model = self.model.currentText().strip() or None
            fn = self._reconstruct_fn
            if fn is None and model is not None:  # the network path with the physics check
                from ..batch import ModelReconstructor

                fn = ModelReconstructor(model, physics_check="auto")
            self.watcher = FolderWatcher(folder, out, self.grouping(), fn,
                                         model=model, poll_interval=self.poll.value())
        except Exception as exc:  # noqa: BLE001 - shown to the user, nothing started
            self._set_status(f"cannot start: {exc}")
            return
        self.watcher.series_done.connect(self._events.result.emit)
        self.watcher.series_failed.connect(
            lambda r: self._events.message.emit(f"{r.series_id} failed: {r.error}"))
        self._stop.clear()
        self._worker = create_worker(self.watcher.run, self._stop, _start_thread=False)
        self._worker.errored.connect(lambda e: self._set_status(f"watcher stopped: {e}"))
        self._worker.finished.connect(self._on_finished)
        self.start_btn.setEnabled(False)
        self.stop_btn.setEnabled(True)
        self._set_status(f"watching {folder} -> {out}")
        self._worker.start()

    def stop(self) -> None:
        """Ask the watcher to stop after the series it is working on (the ledger stays valid)."""
        self._stop.set()
        if self._worker is not None:
            self._set_status("stopping after the current series...")

    def _on_result(self, result: SeriesResult) -> None:
        w = self.watcher
        res = getattr(result.reconstruction, "residual", None)
        chi2 = "" if res is None else f", reduced chi-square {res.reduced_chi2:.3g}"
        self._set_status(f"{result.series_id} done in {result.elapsed:.2f} s{chi2} "
                         f"({w.n_done} done, {w.n_failed} failed, {w.pending} queued)")
        if self.show_in_viewer.isChecked():
            append_reconstruction(self.viewer, result, max_frames=self.max_frames.value())

    def _on_finished(self) -> None:
        self._worker = None
        self.start_btn.setEnabled(True)
        self.stop_btn.setEnabled(False)
        w = self.watcher
        if w is not None:
            self._set_status(f"stopped: {w.n_done} done, {w.n_failed} failed "
                             f"(see {w.errors_path.name} in the output folder)"
                             if w.n_failed else f"stopped: {w.n_done} done")

    def _set_status(self, text: str) -> None:
        self.status.setText(text)

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt name
        self.stop()
        super().closeEvent(event)

