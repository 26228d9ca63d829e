"""The reconstruction dock: series + method -> run -> exit-wave layers -> peaks.

A few small views over one :class:`napari_exitwave._session.ReconstructionSession` (the models,
the ticks and the last result, with no Qt):

- :class:`~napari_exitwave._qt.series_panel.SeriesPanel`: the Image layer (a magicgui layer
  picker) and its pixel size;
- :class:`~napari_exitwave._qt.method_panel.MethodPanel`: network or Gerchberg-Saxton / Wiener,
  the model list and card, the device, the aberrations;
- the run row here: options, the fit check, Reconstruct / Cancel, progress;
- :class:`~napari_exitwave._qt.check_panel.CheckPanel`: the microscope estimate and the reduced
  chi-square of the physics residual under the result (the residual images are a layer,
  ``"<series> residual"``, diverging colormap at +-5 sigma);
- :class:`~napari_exitwave._qt.peaks_panel.PeaksPanel`: peaks and the Argand plot.

A run is :func:`napari_exitwave._session.run_jobs` (one
:func:`~napari_exitwave.reconstruct.iter_reconstruct` per ticked network) in a napari
``thread_worker``: each item it yields moves a ``napari.utils.progress`` bar (napari's activity
dock) and the bar in this dock; Cancel is ``worker.quit()``, which stops the generator at its
next item.
"""

from __future__ import annotations

from qtpy.QtWidgets import (
    QCheckBox, QHBoxLayout, QLabel, QProgressBar, QPushButton, QVBoxLayout, QWidget,
)

from .._session import METHODS, ReconstructionSession, RunResult, run_jobs
from .check_panel import CheckPanel
from .method_panel import MethodPanel, _esc, card_html  # noqa: F401 - card_html: API
from .peaks_panel import PeaksPanel
from .series_panel import SeriesPanel

__all__ = ["ReconstructionWidget", "METHODS", "card_html"]

PROGRESS_STEPS = 1000


class ReconstructionWidget(QWidget):
    """Exit-wave reconstruction from the focal-series layer chosen in the viewer."""

    def __init__(self, napari_viewer, parent=None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.session = ReconstructionSession()
        self.worker = None
        self.pbar = None  # the napari progress bar of the current (or last) run
        self._series_name = ""

        self.series_panel = SeriesPanel(napari_viewer)
        self.method_panel = MethodPanel(self.session)
        self.peaks_panel = PeaksPanel(napari_viewer, self.session, self._notify)
        lay = QVBoxLayout(self)
        lay.addWidget(self.series_panel)
        lay.addWidget(self.method_panel)
        self._add_run_row(lay)
        self.check_panel = CheckPanel()
        lay.addWidget(self.check_panel)
        lay.addWidget(self.peaks_panel)
        lay.addStretch(1)

        # the controls by the names scripts use (tests, scripts/screenshot.py)
        sp, mp, pp = self.series_panel, self.method_panel, self.peaks_panel
        self.layer_combo, self.pixel_size, self.series_label = (sp.layer_combo, sp.pixel_size,
                                                                sp.info_label)
        self.method_combo, self.model_list, self.device_combo = (mp.method_combo, mp.model_list,
                                                                 mp.device_combo)
        self.onnx_button, self.card_label, self.trad_box = (mp.onnx_button, mp.card_label,
                                                            mp.trad_box)
        self.defocus_edit, self.cs_spin, self.focal_spread_spin = (mp.defocus_edit, mp.cs_spin,
                                                                   mp.focal_spread_spin)
        self.method, self.set_method, self.defocus_values = (mp.method, mp.set_method,
                                                             mp.defocus_values)
        self.min_distance_spin, self.threshold_spin, self.refine_check = (
            pp.min_distance_spin, pp.threshold_spin, pp.refine_check)
        self.peaks_button, self.argand_button, self.peaks_label = (pp.peaks_button,
                                                                   pp.argand_button,
                                                                   pp.peaks_label)
        self.find_peaks, self.show_argand = pp.find_peaks, pp.show_argand
        self.current_exit_wave = pp.current_exit_wave

        sp.changed.connect(self._on_series_changed)
        mp.changed.connect(self.update_check)
        mp.model_error.connect(self._on_model_error)
        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)
        self.reload_models()
        self._on_series_changed()

    def _add_run_row(self, lay) -> None:
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
        self.progress_bar.setRange(0, PROGRESS_STEPS)
        self.progress_bar.setFormat("%p%")
        lay.addWidget(self.progress_bar)
        self.status_label = QLabel("")
        self.status_label.setWordWrap(True)
        lay.addWidget(self.status_label)

    # -- the session's state, by its old names ----------------------------------------------
    @property
    def cards(self) -> dict:
        return self.session.cards

    @property
    def last_result(self) -> RunResult | None:
        return self.session.last_result

    @property
    def exit_wave(self):
        return self.session.exit_wave

    @property
    def sampling(self):
        return self.session.sampling

    # -- models -----------------------------------------------------------------------------
    def reload_models(self, models_dir=None) -> None:
        """(Re)list the shipped models (:func:`napari_exitwave.inference.list_models`)."""
        try:
            self.session.load_models(models_dir)
        except Exception as e:  # noqa: BLE001 - a broken models folder must not kill the GUI
            self._notify(f"could not list models: {e}", "warning")

    def add_model(self, model, checked: bool = True):
        """Add a model (card, name or .onnx/.json path) to the list; its card, or None."""
        return self.method_panel.add_model(model, checked=checked)

    def selected_cards(self) -> list:
        return self.session.selected_cards()

    def _on_model_error(self, message: str) -> None:
        self._notify(message, "error")
        self.status_label.setText(f"<span style='color:#e06c6c'>{_esc(message)}</span>")

    # -- series and checks ------------------------------------------------------------------
    def current_layer(self):
        return self.series_panel.current_layer()

    def current_series(self):
        return self.series_panel.current_series()

    def _on_series_changed(self) -> None:
        self.method_panel.set_defocus(self.series_panel.defocus())
        layer = self.series_panel.current_layer()
        if layer is not None and layer.ndim == 3:  # pick the network for this many images
            self.session.tick_for_series(int(layer.data.shape[0]))
        self.update_check()

    def check(self):
        from .._layers import FitCheck

        try:
            series = self.current_series()
        except ValueError as e:
            return FitCheck(errors=[str(e)])
        return self.session.check(series, self.method(), self.defocus_values())

    def update_check(self, *_):
        """Say plainly whether the series fits the model/method; enable Run accordingly."""
        chk = self.check()
        colour = "#e06c6c" if chk.errors else ("#e0b050" if chk.warnings else "#7fbf7f")
        text = chk.text() or "✔ the series fits"
        self.check_label.setText(f"<span style='color:{colour}'>{_esc(text)}</span>")
        self.run_button.setEnabled(chk.ok and self.worker is None)
        return chk

    # -- running ----------------------------------------------------------------------------
    def run(self):
        """Start the reconstruction in a napari ``thread_worker`` (returns it at once)."""
        if self.worker is not None:
            return None
        chk = self.update_check()
        if not chk.ok:
            self._notify(chk.errors[0], "error")
            return None
        for w in chk.warnings:
            self._notify(w, "warning")
        jobs = self.session.jobs(self.method(), align=self.align_check.isChecked(),
                                 providers=self.method_panel.providers(),
                                 defocus=self.defocus_values(), Cs_um=self.cs_spin.value(),
                                 focal_spread=self.focal_spread_spin.value())
        self._series_name = self.layer_combo.currentText()
        from napari.qt.threading import thread_worker
        from napari.utils import progress

        self.pbar = progress(total=PROGRESS_STEPS, desc=f"exit wave of {self._series_name}")
        worker = thread_worker(run_jobs, start_thread=False)(self.current_series(), jobs,
                                                               self._abort_requested)
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(self._on_done)
        worker.aborted.connect(self._on_aborted)
        worker.finished.connect(self._on_finished)
        self.worker = worker
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress_bar.setValue(0)
        self.check_panel.clear()
        self.status_label.setText("running…")
        worker.start()
        return worker

    def _abort_requested(self) -> bool:
        # polled by the running stage between inference tiles (worker.quit() is seen at once
        # between stages and iterations, where the generator yields)
        worker = self.worker
        return worker is not None and worker.abort_requested

    def cancel(self) -> None:
        """Stop the run at its next step (``worker.quit()``)."""
        if self.worker is not None:
            self.worker.quit()
            self.status_label.setText("cancelling…")

    def _on_progress(self, item) -> None:
        frac, msg = item
        steps = int(round(PROGRESS_STEPS * min(max(frac, 0.0), 1.0)))
        if self.pbar is not None:
            if steps > self.pbar.n:
                self.pbar.update(steps - self.pbar.n)
            self.pbar.set_description(f"exit wave: {msg}")
        self.progress_bar.setValue(steps)
        self.progress_bar.setFormat(f"%p% {msg}")

    def _on_aborted(self) -> None:
        self._on_done(RunResult(cancelled=True))

    def _on_finished(self) -> None:
        if self.pbar is not None:
            self.pbar.close()
        self.worker = None
        self.cancel_button.setEnabled(False)
        self.update_check()

    def _on_done(self, result: RunResult) -> None:
        summary = self.session.finish(result, self._series_name)
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
        self._show(summary)
        self.check_panel.show_summary(summary)
        self.status_label.setText(summary.status)
        self.progress_bar.setValue(PROGRESS_STEPS)
        self.progress_bar.setFormat("%p% done")
        for w in summary.warnings:
            self._notify(w, "warning")
        if self.auto_peaks_check.isChecked():
            self.find_peaks(source=(summary.exit_wave, summary.sampling, summary.name))
            self.show_argand()

    def _show(self, summary) -> None:
        from .._reader import exit_wave_layers

        parts = ["real", "imag"] + [p for p, box in (("amplitude", self.amplitude_check),
                                                     ("phase", self.phase_check))
                                    if box.isChecked()]
        for data, kwargs, _ in exit_wave_layers(summary.exit_wave, summary.sampling,
                                                name=summary.name, parts=parts,
                                                metadata=summary.metadata):
            self._set_image(data, kwargs)
        residual = summary.residual_layer()
        if residual is not None:
            self._set_image(*residual)
        std, s = summary.uncertainty, summary.sampling
        if std is not None:
            self._set_image(std, {"name": f"{summary.name} [uncertainty]",
                                  "scale": (s or 1.0,) * 2,
                                  "units": ("angstrom",) * 2 if s else ("pixel",) * 2,
                                  "colormap": "magma",
                                  "contrast_limits": (0.0, float(std.max()) or 1e-3),
                                  "metadata": {"exitwave": {"part": "uncertainty",
                                                            "sampling": s}}})

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

    def _notify(self, message: str, level: str = "info") -> None:
        from napari.utils import notifications

        fn = {"error": notifications.show_error, "warning": notifications.show_warning}.get(
            level, notifications.show_info)
        try:
            fn(str(message))
        except Exception:  # noqa: BLE001 - a notification must never break the widget
            pass
