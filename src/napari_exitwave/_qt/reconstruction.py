"""The reconstruction dock widget: series + model/method -> exit-wave layers -> peaks.

A thin view: the checks are :func:`napari_exitwave._layers.check_fit`, the work is
:func:`napari_exitwave.reconstruct.reconstruct_series` (run in a napari ``thread_worker``
generator that yields progress, so the GUI never freezes and Cancel works between steps), the
layers are built by :func:`napari_exitwave._reader.exit_wave_layers`, and the peaks by
:func:`napari_exitwave._layers.peak_features`.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QAbstractItemView, QCheckBox, QComboBox, QDoubleSpinBox, QFileDialog, QFormLayout, QGroupBox,
    QHBoxLayout, QLabel, QLineEdit, QListWidget, QListWidgetItem, QProgressBar, QPushButton,
    QVBoxLayout, QWidget,
)

from .._layers import check_fit, ensemble, exit_wave_of_layer, peak_features, series_from_layer

METHODS = {"network": "Neural network", "gs": "Gerchberg-Saxton", "wiener": "Wiener (linear)"}


@dataclasses.dataclass
class RunResult:
    """What a run hands back to the GUI thread (never raises across threads)."""

    reconstructions: list = dataclasses.field(default_factory=list)
    error: str | None = None
    cancelled: bool = False
    seconds: float = 0.0


def run_reconstructions(series, jobs: list[dict], cancel_event: threading.Event):
    """Generator: run ``reconstruct_series`` once per job in a thread, yielding progress.

    Yields ``(fraction, message)``; returns a :class:`RunResult`. Errors are caught and returned
    as messages (an :class:`~napari_exitwave.errors.ExitWaveError` as its own text, anything else
    with its type), so a failed run never takes napari down.
    """
    from ..errors import ExitWaveError, ReconstructionCancelled
    from ..reconstruct import reconstruct_series

    msgs: queue.Queue = queue.Queue()
    result = RunResult()
    t0 = time.perf_counter()

    def target():
        try:
            for k, job in enumerate(jobs):
                def progress(frac, message, k=k):
                    msgs.put(((k + float(frac)) / len(jobs), str(message)))

                rec = reconstruct_series(series, progress=progress, cancel=cancel_event.is_set,
                                         **job)
                result.reconstructions.append(rec)
        except ReconstructionCancelled:
            result.cancelled = True
        except ExitWaveError as e:
            result.error = str(e)
        except MemoryError:
            result.error = ("out of memory: crop the images or use a smaller tile size")
        except Exception as e:  # noqa: BLE001 - shown to the user, never raised into Qt
            result.error = f"{type(e).__name__}: {e}"
        finally:
            msgs.put(None)

    th = threading.Thread(target=target, name="exitwave-reconstruction", daemon=True)
    th.start()
    yield 0.0, "starting"
    while True:
        try:
            item = msgs.get(timeout=0.05)
        except queue.Empty:
            continue
        if item is None:
            break
        yield item
    th.join()
    if cancel_event.is_set() and not result.error:
        result.cancelled = True
    result.seconds = time.perf_counter() - t0
    return result


class ReconstructionWidget(QWidget):
    """Exit-wave reconstruction from the focal-series layer chosen in the viewer."""

    def __init__(self, napari_viewer, parent=None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.cards: dict[str, Any] = {}
        self.worker = None
        self.last_result: RunResult | None = None
        self.exit_wave: np.ndarray | None = None
        self.sampling: float | None = None
        self.output_name = "exit wave"
        self._cancel = threading.Event()
        self._argand = None

        lay = QVBoxLayout(self)

        # -- input ----------------------------------------------------------------------------
        box = QGroupBox("Focal series")
        form = QFormLayout(box)
        self.layer_combo = QComboBox()
        self.layer_combo.setToolTip("Image layer holding the focal series (n, ny, nx)")
        form.addRow("Layer", self.layer_combo)
        self.pixel_size = QDoubleSpinBox()
        self.pixel_size.setDecimals(4)
        self.pixel_size.setRange(0.0, 1000.0)
        self.pixel_size.setSingleStep(0.001)
        self.pixel_size.setSpecialValueText("unknown")
        self.pixel_size.setSuffix(" Å/px")
        self.pixel_size.setToolTip("Pixel size of the series (from the file; correct it here)")
        form.addRow("Pixel size", self.pixel_size)
        self.series_label = QLabel()
        self.series_label.setWordWrap(True)
        form.addRow(self.series_label)
        lay.addWidget(box)

        # -- method and model -----------------------------------------------------------------
        box = QGroupBox("Method")
        form = QFormLayout(box)
        self.method_combo = QComboBox()
        for key, text in METHODS.items():
            self.method_combo.addItem(text, key)
        form.addRow("Method", self.method_combo)
        self.model_list = QListWidget()
        self.model_list.setSelectionMode(QAbstractItemView.SingleSelection)
        self.model_list.setMinimumHeight(96)  # the five shipped networks without scrolling
        self.model_list.setMaximumHeight(120)
        self.model_list.setToolTip("Tick one model, or several of the same kind to see their "
                                   "disagreement as an uncertainty layer")
        form.addRow("Models", self.model_list)
        self.device_combo = QComboBox()
        for key, text in (("auto", "auto (CUDA if it works)"), ("cpu", "CPU"), ("cuda", "CUDA")):
            self.device_combo.addItem(text, key)
        self.device_combo.setToolTip("ONNX Runtime device; the one that actually ran is shown "
                                     "after the run")
        form.addRow("Device", self.device_combo)
        self.onnx_button = QPushButton("Add ONNX file…")
        form.addRow(self.onnx_button)
        self.card_label = QLabel()
        self.card_label.setWordWrap(True)
        self.card_label.setTextFormat(Qt.RichText)
        form.addRow(self.card_label)
        self._model_rows = [self.model_list, self.onnx_button, self.card_label,
                            self.device_combo]
        self._model_rows += [form.labelForField(w) for w in (self.model_list, self.device_combo)]

        self.trad_box = QGroupBox("Aberrations (Gerchberg-Saxton / Wiener)")
        tform = QFormLayout(self.trad_box)
        self.defocus_edit = QLineEdit()
        self.defocus_edit.setPlaceholderText("e.g. -50, 0, 50")
        self.defocus_edit.setToolTip("One defocus per image in Å, abTEM convention "
                                     "(defocus = -C10; positive = underfocus)")
        tform.addRow("Defocus (Å)", self.defocus_edit)
        self.cs_spin = QDoubleSpinBox()
        self.cs_spin.setRange(-5000, 5000)
        self.cs_spin.setDecimals(2)
        self.cs_spin.setSuffix(" µm")
        self.cs_spin.setToolTip("Spherical aberration C30 in µm")
        tform.addRow("Cs", self.cs_spin)
        self.focal_spread_spin = QDoubleSpinBox()
        self.focal_spread_spin.setRange(0, 500)
        self.focal_spread_spin.setDecimals(1)
        self.focal_spread_spin.setSuffix(" Å")
        tform.addRow("Focal spread", self.focal_spread_spin)
        form.addRow(self.trad_box)
        lay.addWidget(box)

        # -- output options, check, run -------------------------------------------------------
        row = QHBoxLayout()
        self.align_check = QCheckBox("Align")
        self.align_check.setChecked(True)
        self.amplitude_check = QCheckBox("Amplitude")
        self.phase_check = QCheckBox("Phase")
        self.auto_peaks_check = QCheckBox("Peaks + Argand")
        self.auto_peaks_check.setChecked(True)
        self.auto_peaks_check.setToolTip("After each run, find the peaks and open the Argand plot")
        for w in (self.align_check, self.amplitude_check, self.phase_check,
                  self.auto_peaks_check):
            row.addWidget(w)
        lay.addLayout(row)
        self.check_label = QLabel()
        self.check_label.setWordWrap(True)
        lay.addWidget(self.check_label)
        row = QHBoxLayout()
        self.run_button = QPushButton("Reconstruct")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        row.addWidget(self.run_button)
        row.addWidget(self.cancel_button)
        lay.addLayout(row)
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 1000)
        self.progress_bar.setFormat("%p%")
        lay.addWidget(self.progress_bar)
        self.status_label = QLabel("")
        self.status_label.setWordWrap(True)
        lay.addWidget(self.status_label)

        # -- peaks ----------------------------------------------------------------------------
        box = QGroupBox("Atomic-column peaks of |ψ - 1|")
        form = QFormLayout(box)
        self.min_distance_spin = QDoubleSpinBox()
        self.min_distance_spin.setRange(0.05, 50)
        self.min_distance_spin.setDecimals(2)
        self.min_distance_spin.setSingleStep(0.1)
        self.min_distance_spin.setValue(1.0)
        self.min_distance_spin.setSuffix(" Å")
        form.addRow("Min. distance", self.min_distance_spin)
        self.threshold_spin = QDoubleSpinBox()
        self.threshold_spin.setRange(0.0, 1.0)
        self.threshold_spin.setDecimals(2)
        self.threshold_spin.setSingleStep(0.05)
        self.threshold_spin.setValue(0.1)  # as the CLI
        self.threshold_spin.setToolTip("Keep peaks above this fraction of the highest")
        form.addRow("Threshold", self.threshold_spin)
        self.refine_check = QCheckBox("Sub-pixel refinement")
        self.refine_check.setChecked(True)
        form.addRow(self.refine_check)
        row = QHBoxLayout()
        self.peaks_button = QPushButton("Find peaks")
        self.argand_button = QPushButton("Argand plot")
        row.addWidget(self.peaks_button)
        row.addWidget(self.argand_button)
        form.addRow(row)
        self.peaks_label = QLabel("")
        form.addRow(self.peaks_label)
        lay.addWidget(box)
        lay.addStretch(1)

        # -- wiring ---------------------------------------------------------------------------
        self.layer_combo.currentIndexChanged.connect(self._on_layer_changed)
        self.pixel_size.valueChanged.connect(self.update_check)
        self.method_combo.currentIndexChanged.connect(self._on_method_changed)
        self.model_list.itemChanged.connect(self.update_check)
        self.model_list.currentItemChanged.connect(self._show_card)
        self.onnx_button.clicked.connect(self._browse_onnx)
        self.defocus_edit.textChanged.connect(self.update_check)
        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)
        self.peaks_button.clicked.connect(self.find_peaks)
        self.argand_button.clicked.connect(self.show_argand)
        events = self.viewer.layers.events
        events.inserted.connect(self._refresh_layers)
        events.removed.connect(self._refresh_layers)

        self.reload_models()
        self._refresh_layers()
        self._on_method_changed()

    # ------------------------------------------------------------------------------ models

    def reload_models(self, models_dir=None):
        """(Re)list the shipped models (:func:`napari_exitwave.inference.list_models`)."""
        from ..inference import list_models

        try:
            cards = list_models(models_dir)
        except Exception as e:  # noqa: BLE001
            cards = {}
            self._notify(f"could not list models: {e}", "warning")
        for name, card in cards.items():
            self.add_model(card, checked=False)
        if self.model_list.count() and not self.selected_cards():
            from ..inference import DEFAULT_MODEL

            item = self._item(DEFAULT_MODEL) or self.model_list.item(0)
            item.setCheckState(Qt.Checked)
            self.model_list.setCurrentItem(item)
            self.model_list.scrollToItem(item)

    def add_model(self, model, checked=True):
        """Add a model (card, name or .onnx/.json path) to the list; returns its card or None.

        A file that is not a usable network (missing, corrupt ONNX, card mismatch) is refused
        with a message in the widget and a notification.
        """
        from ..errors import ExitWaveError
        from ..inference import find_model, get_reconstructor

        try:
            card = find_model(model)
            if not isinstance(model, type(card)):  # a user's file: load it now to say if it's bad
                get_reconstructor(card)
        except ExitWaveError as e:
            self._notify(str(e), "error")
            self.status_label.setText(f"<span style='color:#e06c6c'>{_esc(e)}</span>")
            return None
        name = card.name
        if name in self.cards and self.cards[name].onnx_path != card.onnx_path:
            name = f"{card.name} ({Path(card.onnx_path).name})"
        new = name not in self.cards
        self.cards[name] = card
        if new:
            item = QListWidgetItem(name)
            item.setData(Qt.UserRole, name)
            item.setFlags(item.flags() | Qt.ItemIsUserCheckable)
            item.setCheckState(Qt.Unchecked)
            self.model_list.addItem(item)
        item = self._item(name)
        if checked:
            for i in range(self.model_list.count()):
                other = self.model_list.item(i)
                if other is not item and self._incompatible(self.cards[other.data(Qt.UserRole)],
                                                            card):
                    other.setCheckState(Qt.Unchecked)
            item.setCheckState(Qt.Checked)
            self.model_list.setCurrentItem(item)
            self.model_list.scrollToItem(item)
        self.update_check()
        return card

    def _item(self, name):
        for i in range(self.model_list.count()):
            if self.model_list.item(i).data(Qt.UserRole) == name:
                return self.model_list.item(i)
        return None

    @staticmethod
    def _incompatible(a, b) -> bool:
        return a.n_images != b.n_images or (a.sampling or 0) != (b.sampling or 0)

    def selected_cards(self) -> list:
        return [self.cards[self.model_list.item(i).data(Qt.UserRole)]
                for i in range(self.model_list.count())
                if self.model_list.item(i).checkState() == Qt.Checked]

    def _browse_onnx(self):
        path, _ = QFileDialog.getOpenFileName(self, "ONNX network", "", "ONNX (*.onnx)")
        if path:
            self.add_model(path)

    def _show_card(self, item=None, _prev=None):
        item = item or self.model_list.currentItem()
        if item is None:
            self.card_label.setText("<i>no model: install one or add an ONNX file</i>")
            return
        card = self.cards[item.data(Qt.UserRole)]
        self.card_label.setText(card_html(card))
        self.card_label.setToolTip(card.description)

    # ------------------------------------------------------------------------------ layers

    def _image_layers(self):
        from napari.layers import Image

        return [ly for ly in self.viewer.layers if isinstance(ly, Image)
                and "part" not in (ly.metadata or {}).get("exitwave", {})]

    def _refresh_layers(self, event=None):
        current = self.layer_combo.currentText()
        self.layer_combo.blockSignals(True)
        self.layer_combo.clear()
        layers = self._image_layers()
        for ly in layers:
            self.layer_combo.addItem(ly.name)
        names = [ly.name for ly in layers]
        new = getattr(event, "value", None) if getattr(event, "type", "") == "inserted" else None
        if new is not None and new in layers:  # a series just opened: take it
            self.layer_combo.setCurrentIndex(layers.index(new))
        elif current in names:
            self.layer_combo.setCurrentIndex(names.index(current))
        self.layer_combo.blockSignals(False)
        self._on_layer_changed()

    def current_layer(self):
        name = self.layer_combo.currentText()
        for ly in self._image_layers():
            if ly.name == name:
                return ly
        return None

    def _on_layer_changed(self, *_):
        from .._layers import layer_sampling

        layer = self.current_layer()
        self.pixel_size.blockSignals(True)
        self.pixel_size.setValue((layer_sampling(layer) or 0.0) if layer is not None else 0.0)
        self.pixel_size.blockSignals(False)
        if layer is not None:
            d = (layer.metadata or {}).get("exitwave", {}).get("defocus")
            if d:
                self.defocus_edit.setText(", ".join(f"{v:g}" for v in d))
        self.update_check()

    def _on_method_changed(self, *_):
        network = self.method() == "network"
        for w in self._model_rows:
            w.setVisible(network)
        self.trad_box.setVisible(not network)
        self._show_card()
        self.update_check()

    def method(self) -> str:
        return self.method_combo.currentData()

    def set_method(self, key: str):
        self.method_combo.setCurrentIndex(list(METHODS).index(key))

    def defocus_values(self) -> list[float] | None:
        text = self.defocus_edit.text().replace(";", ",").replace(" ", ",")
        vals = [t for t in text.split(",") if t.strip()]
        if not vals:
            return None
        try:
            return [float(v) for v in vals]
        except ValueError:
            return None

    def current_series(self):
        """The chosen layer as a FocalSeries (pixel size from the spin box), or None."""
        layer = self.current_layer()
        if layer is None:
            return None
        return series_from_layer(layer, sampling=self.pixel_size.value() or None)

    # ------------------------------------------------------------------------------ checks

    def update_check(self, *_):
        """Say plainly whether the series fits the model/method; enable Run accordingly."""
        chk = self.check()
        colour = "#e06c6c" if chk.errors else ("#e0b050" if chk.warnings else "#7fbf7f")
        text = chk.text() or "✔ the series fits"
        self.check_label.setText(f"<span style='color:{colour}'>{_esc(text)}</span>")
        running = self.worker is not None
        self.run_button.setEnabled(chk.ok and not running)
        layer = self.current_layer()
        if layer is None:
            self.series_label.setText("<i>open a focal series (File > Open, or File > Open "
                                      "Sample > Exit-wave reconstruction)</i>")
        else:
            shape = np.shape(layer.data)
            s = self.pixel_size.value()
            self.series_label.setText(
                f"{' × '.join(map(str, shape))} px"
                + (f", {s:.4g} Å/px, field {shape[-1] * s / 10:.3g} nm" if s else ""))
        return chk

    def check(self):
        from .._layers import FitCheck

        try:
            series = self.current_series()
        except ValueError as e:
            return FitCheck(errors=[str(e)])
        if series is None:
            return FitCheck(errors=["no image layer: open a focal series"])
        method = self.method()
        if method == "network":
            cards = self.selected_cards()
            if len({(c.n_images, c.sampling) for c in cards}) > 1:
                return FitCheck(errors=["the ticked models differ in image count or pixel size; "
                                        "tick models of one kind"])
            return check_fit(series, cards[0] if cards else None, "network")
        return check_fit(series, None, method, defocus=self.defocus_values())

    # ------------------------------------------------------------------------------ running

    def run(self):
        """Start the reconstruction in a worker thread (returns at once)."""
        if self.worker is not None:
            return None
        chk = self.update_check()
        if not chk.ok:
            self._notify(chk.errors[0], "error")
            return None
        for w in chk.warnings:
            self._notify(w, "warning")
        series = self.current_series()
        method = self.method()
        align = self.align_check.isChecked()
        if method == "network":
            providers = self.device_combo.currentData()
            jobs = [dict(model=c, method="network", align=align, providers=providers)
                    for c in self.selected_cards()]
        else:
            jobs = [dict(model=None, method=method, align=align, defocus=self.defocus_values(),
                         Cs=self.cs_spin.value() * 1e4,
                         focal_spread=self.focal_spread_spin.value())]
        self._series_name = self.layer_combo.currentText()
        self._cancel = threading.Event()
        from napari.qt.threading import create_worker

        self.worker = create_worker(run_reconstructions, series, jobs, self._cancel,
                                    _connect={"yielded": self._on_progress,
                                              "returned": self._on_done,
                                              "finished": self._on_finished})
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress_bar.setValue(0)
        self.status_label.setText("running…")
        return self.worker

    def cancel(self):
        self._cancel.set()
        self.status_label.setText("cancelling…")

    def _on_progress(self, item):
        frac, msg = item
        self.progress_bar.setValue(int(round(1000 * min(max(frac, 0.0), 1.0))))
        self.progress_bar.setFormat(f"%p% {msg}")

    def _on_finished(self):
        self.worker = None
        self.cancel_button.setEnabled(False)
        self.update_check()

    def _on_done(self, result: RunResult):
        self.last_result = result
        if result.cancelled:
            self.status_label.setText("cancelled")
            self.progress_bar.setValue(0)
            self.progress_bar.setFormat("%p%")
            return
        if result.error:
            self.status_label.setText(f"<span style='color:#e06c6c'>✖ {_esc(result.error)}"
                                      "</span>")
            self._notify(result.error, "error")
            return
        recs = result.reconstructions
        mean, std = ensemble([r.exit_wave for r in recs])
        rec = recs[0]
        self.exit_wave, self.sampling = mean, rec.sampling
        name = f"{self._series_name} exit wave"
        self.output_name = name
        meta = {"method": rec.method, "model": [r.model_name for r in recs],
                "device": rec.device, "timings": dict(rec.timings), "source": self._series_name}
        parts = ["real", "imag"]
        if self.amplitude_check.isChecked():
            parts.append("amplitude")
        if self.phase_check.isChecked():
            parts.append("phase")
        from .._reader import exit_wave_layers

        for data, kwargs, _ in exit_wave_layers(mean, rec.sampling, name=name, parts=parts,
                                                metadata=meta):
            self._set_image(data, kwargs)
        if std is not None:
            s = rec.sampling or 1.0
            self._set_image(std, {"name": f"{name} [uncertainty]", "scale": (s, s),
                                  "units": ("angstrom",) * 2 if rec.sampling else ("pixel",) * 2,
                                  "colormap": "magma",
                                  "contrast_limits": (0.0, float(std.max()) or 1e-3),
                                  "metadata": {"exitwave": {"part": "uncertainty",
                                                            "sampling": rec.sampling}}})
        total = sum(r.timings.get("total", 0.0) for r in recs) or result.seconds
        models = ", ".join(m for m in meta["model"] if m) or METHODS.get(rec.method, rec.method)
        self.status_label.setText(f"✔ {models} on {rec.device} in {total:.2f} s"
                                  + (f" ({len(recs)} models; uncertainty layer)"
                                     if len(recs) > 1 else ""))
        self.progress_bar.setValue(1000)
        self.progress_bar.setFormat("%p% done")
        for w in dict.fromkeys(w for r in recs for w in r.warnings):
            self._notify(w, "warning")
        if self.auto_peaks_check.isChecked():
            self.find_peaks(source=(mean, rec.sampling, name))
            self.show_argand()

    def _set_image(self, data, kwargs):
        """Update the layer of that name in place, or add it."""
        name = kwargs["name"]
        if name in self.viewer.layers:
            ly = self.viewer.layers[name]
            ly.data = data
            ly.scale = kwargs["scale"]
            ly.units = kwargs["units"]
            ly.metadata = kwargs["metadata"]
            ly.contrast_limits = kwargs["contrast_limits"]
            return ly
        return self.viewer.add_image(data, **kwargs)

    # ------------------------------------------------------------------------------ peaks

    def current_exit_wave(self):
        """(exit wave, sampling): the active exit-wave layer's, else the last reconstruction's."""
        active = self.viewer.layers.selection.active
        if active is not None:
            got = exit_wave_of_layer(active)
            if got is not None:
                return got[0], got[1], active.name.rsplit(" [", 1)[0]
        if self.exit_wave is not None:
            return self.exit_wave, self.sampling, self.output_name
        for ly in self.viewer.layers:
            got = exit_wave_of_layer(ly)
            if got is not None:
                return got[0], got[1], ly.name.rsplit(" [", 1)[0]
        return None

    def find_peaks(self, source=None):
        """Peaks of |ψ - 1| as a Points layer whose features hold the complex values.

        ``source``: ``(exit wave, sampling, name)``; default :meth:`current_exit_wave`.
        """
        got = source if source is not None else self.current_exit_wave()
        if got is None:
            self._notify("no exit wave yet: reconstruct first (or open a saved exit wave)",
                         "warning")
            return None
        wave, sampling, base = got
        s = float(sampling) if sampling else 1.0
        try:
            pos, features = peak_features(wave, s, self.min_distance_spin.value(),
                                          self.threshold_spin.value(),
                                          self.refine_check.isChecked())
        except ValueError as e:
            self._notify(str(e), "error")
            return None
        name = f"{base} peaks"
        units = ("angstrom",) * 2 if sampling else ("pixel",) * 2
        size = max(3.0, 0.5 / s)
        from napari_exitwave.argand import class_colors

        colour = class_colors([""])[""]
        if name in self.viewer.layers:
            self.viewer.layers.remove(name)
        layer = self.viewer.add_points(
            pos, name=name, scale=(s, s), units=units, features=features, size=size,
            face_color=colour, border_color="white", border_width=0.1, opacity=0.9,
            metadata={"exitwave": {"kind": "peaks", "sampling": sampling}})
        self.peaks_label.setText(f"{len(pos)} peaks")
        self.viewer.layers.selection.active = layer
        if self._argand is not None:
            self._argand.set_layer(layer)
        return layer

    def show_argand(self):
        """Open (or show) the Argand plot dock, linked to the newest peaks layer."""
        from .argand_plot import ArgandPlotWidget

        if self._argand is None:
            window = getattr(self.viewer, "window", None)  # a bare ViewerModel has none
            if window is not None:
                self._argand = ArgandPlotWidget(self.viewer)
                window.add_dock_widget(self._argand, name="Argand plot", area="right")
            else:  # its own window, owned (and closed) by this widget
                self._argand = ArgandPlotWidget(self.viewer, parent=self)
                self._argand.setWindowFlags(Qt.Window)
                self._argand.show()
        layers = [ly for ly in self.viewer.layers if self._argand.accepts(ly)]
        if layers:
            self._argand.set_layer(layers[-1])
        return self._argand

    # ------------------------------------------------------------------------------ utils

    def _notify(self, message: str, level: str = "info"):
        from napari.utils import notifications

        fn = {"error": notifications.show_error, "warning": notifications.show_warning}.get(
            level, notifications.show_info)
        try:
            fn(str(message))
        except Exception:  # noqa: BLE001 - a notification must never break the widget
            pass


def _esc(text) -> str:
    import html

    return html.escape(str(text)).replace("\n", "<br>")


def card_html(card) -> str:
    """Short HTML description of a model card for the widget.

    One fact per line, each short enough not to wrap in a docked widget (a word-wrapped rich-text
    QLabel in a form can be given too little height and clip its last line); the whole
    description is the label's tooltip.
    """
    desc = card.description.split(";")[0].split(",")[0]
    desc = desc if len(desc) <= 50 else desc[:47] + "…"
    rows = [f"<b>{_esc(card.name)}</b>"] + ([_esc(desc)] if desc else [])
    s = f"{card.sampling:.4g} Å/px" if card.sampling else "pixel size unknown"
    step = f", step {card.defocus_step:g} Å" if card.defocus_step else ""
    rows.append(f"{card.n_images} images, {s}{step}, {card.energy / 1e3:g} keV")
    m = card.metrics if isinstance(card.metrics, dict) else {}
    parts = []
    for key, label, fmt in (("rmse_imag", "RMSE im", ".3g"), ("rmse_real", "re", ".3g"),
                            ("peak_error_pm", "peaks", ".0f")):
        v = m.get(key)
        if isinstance(v, (int, float)):
            parts.append(f"{label} {v:{fmt}}" + (" pm" if key == "peak_error_pm" else ""))
    if parts:
        rows.append("validation: " + ", ".join(parts))
    return "<br>".join(rows)
