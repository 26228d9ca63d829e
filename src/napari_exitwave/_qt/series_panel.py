"""The "Focal series" box: which Image layer, its pixel size, and what it is.

The layer choice is a magicgui ``ComboBox`` made by
``create_widget(annotation=napari.layers.Image)`` (napari's own layer picker), restricted to the
series a user can reconstruct (not the exit-wave layers this plugin adds). The series itself is
:func:`napari_exitwave._layers.series_from_layer`.
"""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import Signal
from qtpy.QtWidgets import QDoubleSpinBox, QFormLayout, QGroupBox, QLabel

from .._layers import layer_sampling, series_from_layer


class SeriesPanel(QGroupBox):
    """Layer + pixel size of the focal series; ``changed`` fires when either changes."""

    changed = Signal()

    def __init__(self, viewer, parent=None):
        super().__init__("Focal series", parent)
        from magicgui.widgets import create_widget
        from napari.layers import Image

        self.viewer = viewer
        self.layer_picker = create_widget(annotation=Image, label="Layer",
                                          options={"choices": self._choices})
        self.layer_combo = self.layer_picker.native  # the QComboBox
        self.layer_combo.setToolTip("Image layer holding the focal series (n, ny, nx)")
        self.pixel_size = QDoubleSpinBox()
        self.pixel_size.setDecimals(4)
        self.pixel_size.setRange(0.0, 1000.0)
        self.pixel_size.setSingleStep(0.001)
        self.pixel_size.setSpecialValueText("unknown")
        self.pixel_size.setSuffix(" Å/px")
        self.pixel_size.setToolTip("Pixel size of the series (from the file; correct it here)")
        self.info_label = QLabel()
        self.info_label.setWordWrap(True)
        form = QFormLayout(self)
        form.addRow("Layer", self.layer_combo)
        form.addRow("Pixel size", self.pixel_size)
        form.addRow(self.info_label)

        self.layer_picker.changed.connect(self._on_layer_changed)
        self.pixel_size.valueChanged.connect(self._on_pixel_size)
        viewer.layers.events.inserted.connect(self.refresh)
        viewer.layers.events.removed.connect(self.refresh)
        self.refresh()
        self._on_layer_changed()

    def _choices(self, _widget=None) -> list:
        from napari.layers import Image

        return [ly for ly in self.viewer.layers if isinstance(ly, Image)
                and "part" not in (ly.metadata or {}).get("exitwave", {})]

    def refresh(self, event=None) -> None:
        """Re-list the layers; a series just opened becomes the current one."""
        before = self.layer_picker.value
        with self.layer_picker.changed.blocked():
            self.layer_picker.reset_choices()
            new = getattr(event, "value", None) if getattr(event, "type", "") == "inserted" \
                else None
            if new is not None and new in self._choices():
                self.layer_picker.value = new
        if self.layer_picker.value is not before or new is not None:
            self._on_layer_changed()
        else:
            self.update_info()

    def current_layer(self):
        return self.layer_picker.value

    def current_series(self):
        """The chosen layer as a FocalSeries (pixel size from the spin box), or None."""
        layer = self.current_layer()
        if layer is None:
            return None
        return series_from_layer(layer, sampling=self.pixel_size.value() or None)

    def defocus(self) -> list[float] | None:
        """The defocus values (A) the reader stored with the layer, if any."""
        layer = self.current_layer()
        return None if layer is None else (layer.metadata or {}).get("exitwave", {}).get(
            "defocus")

    def _on_layer_changed(self, *_):
        layer = self.current_layer()
        self.pixel_size.blockSignals(True)
        self.pixel_size.setValue((layer_sampling(layer) or 0.0) if layer is not None else 0.0)
        self.pixel_size.blockSignals(False)
        self.update_info()
        self.changed.emit()

    def _on_pixel_size(self, *_):
        self.update_info()
        self.changed.emit()

    def update_info(self) -> None:
        layer = self.current_layer()
        if layer is None:
            self.info_label.setText("<i>open a focal series (File > Open, or File > Open "
                                    "Sample > Exit-wave reconstruction)</i>")
            return
        shape = np.shape(layer.data)
        s = self.pixel_size.value()
        self.info_label.setText(f"{' × '.join(map(str, shape))} px"
                                + (f", {s:.4g} Å/px, field {shape[-1] * s / 10:.3g} nm"
                                   if s else ""))
