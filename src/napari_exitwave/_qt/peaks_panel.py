"""The "Atomic-column peaks" box: peaks of |psi - 1| as a Points layer, and the Argand plot.

The peaks are :func:`napari_exitwave._layers.peak_features` (the package's one peak finder,
:func:`napari_exitwave.peaks.find_wave_peaks`); their complex values go into the layer's
``features``, which the Argand dock (:mod:`napari_exitwave._qt.argand_plot`) reads.
"""

from __future__ import annotations

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QCheckBox, QDoubleSpinBox, QFormLayout, QGroupBox, QHBoxLayout, QLabel, QPushButton,
)

from .._layers import exit_wave_of_layer, peak_features


class PeaksPanel(QGroupBox):
    """Min. distance, threshold, refinement; Find peaks, Argand plot."""

    def __init__(self, viewer, session, notify, parent=None):
        super().__init__("Atomic-column peaks of |ψ - 1|", parent)
        self.viewer = viewer
        self.session = session
        self._notify = notify
        self.argand = None
        form = QFormLayout(self)
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
        self.peaks_button.clicked.connect(lambda: self.find_peaks())
        self.argand_button.clicked.connect(lambda: self.show_argand())

    def current_exit_wave(self):
        """(exit wave, sampling, name): the active exit-wave layer's, else the last
        reconstruction's, else any exit-wave layer's; None when there is none."""
        active = self.viewer.layers.selection.active
        if active is not None:
            got = exit_wave_of_layer(active)
            if got is not None:
                return got[0], got[1], active.name.rsplit(" [", 1)[0]
        s = self.session
        if s.exit_wave is not None:
            return s.exit_wave, s.sampling, s.output_name
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
        from ..argand import class_colors

        name = f"{base} peaks"
        if name in self.viewer.layers:
            self.viewer.layers.remove(name)
        layer = self.viewer.add_points(
            pos, name=name, scale=(s, s), units=("angstrom",) * 2 if sampling else ("pixel",) * 2,
            features=features, size=max(3.0, 0.5 / s), face_color=class_colors([""])[""],
            border_color="white", border_width=0.1, opacity=0.9,
            metadata={"exitwave": {"kind": "peaks", "sampling": sampling}})
        self.peaks_label.setText(f"{len(pos)} peaks")
        self.viewer.layers.selection.active = layer
        if self.argand is not None:
            self.argand.set_layer(layer)
        return layer

    def show_argand(self):
        """Open (or show) the Argand plot dock, linked to the newest peaks layer."""
        from .argand_plot import ArgandPlotWidget

        if self.argand is None:
            window = getattr(self.viewer, "window", None)  # a bare ViewerModel has none
            if window is not None:
                self.argand = ArgandPlotWidget(self.viewer)
                window.add_dock_widget(self.argand, name="Argand plot", area="right")
            else:  # its own window, owned (and closed) by this widget
                self.argand = ArgandPlotWidget(self.viewer, parent=self)
                self.argand.setWindowFlags(Qt.Window)
                self.argand.show()
        layers = [ly for ly in self.viewer.layers if self.argand.accepts(ly)]
        if layers:
            self.argand.set_layer(layers[-1])
        return self.argand
