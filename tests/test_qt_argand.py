"""The Argand plot dock and its Points layer stay in sync through features and selection.

Plot -> layer: a lasso (or a click) in the plot sets ``layer.selected_data``.
Layer -> plot: selecting points in the viewer highlights them in the plot.
Labels (by hand or k-means) go into ``layer.features["label"]`` and colour both views alike.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")
from napari.components import ViewerModel  # noqa: E402

pytestmark = pytest.mark.gui

# two column types in the complex plane: near vacuum (S2-like) and further out (Mo-like)
RNG = np.random.default_rng(0)
N = 30
VALUES = np.concatenate([0.95 + 0.25j + 0.01 * RNG.normal(size=N),
                         0.55 + 0.70j + 0.01 * RNG.normal(size=N)])
TRUTH = np.repeat([0, 1], N)


@pytest.fixture
def setup(qtbot):
    from napari_exitwave._qt.argand_plot import ArgandPlotWidget

    viewer = ViewerModel()
    pos = RNG.uniform(0, 100, (2 * N, 2))
    features = {"real": VALUES.real, "imag": VALUES.imag, "amplitude": np.abs(VALUES),
                "phase": np.angle(VALUES), "label": [""] * (2 * N)}
    viewer.add_image(np.zeros((100, 100)), name="image")  # not a peaks layer: ignored
    layer = viewer.add_points(pos, features=features, name="peaks", scale=(0.1, 0.1))
    widget = ArgandPlotWidget(viewer)
    qtbot.addWidget(widget)
    return viewer, layer, widget


def _plotted(widget, label):
    return [c for c in widget.ax.collections if c.get_label() == label]


def test_follows_the_peaks_layer(setup):
    viewer, layer, widget = setup
    assert widget.layer is layer and widget.layer_combo.currentText() == "peaks"
    offsets = np.concatenate([c.get_offsets() for c in widget.ax.collections])
    np.testing.assert_allclose(np.sort(offsets[:, 0]), np.sort(VALUES.real))
    # a new peaks layer is picked up; removing it falls back to the other one
    other = viewer.add_points(np.zeros((2, 2)), features={"real": [1.0, 0.5],
                                                          "imag": [0.0, 0.5]}, name="more")
    assert widget.layer is other
    viewer.layers.remove(other)
    assert widget.layer is layer
    assert "60 peaks" in widget.info_label.text()


def test_lasso_in_plot_selects_points_in_viewer(setup):
    viewer, layer, widget = setup
    # a polygon around the far cluster (data coordinates of the plot)
    box = [(0.4, 0.55), (0.7, 0.55), (0.7, 0.85), (0.4, 0.85)]
    picked = widget.select_in_plot(box)
    assert sorted(picked) == list(range(N, 2 * N))
    assert set(layer.selected_data) == set(range(N, 2 * N))
    # ... and the plot highlights exactly those
    sel = _plotted(widget, "selected")[0].get_offsets()
    np.testing.assert_allclose(np.sort(sel[:, 0]), np.sort(VALUES.real[N:]))
    # a click (tiny lasso) on one point selects just that point
    k = 3
    widget.canvas.draw()
    click = [(VALUES[k].real, VALUES[k].imag)] * 2
    assert widget.select_in_plot(click) == [k]
    assert set(layer.selected_data) == {k}
    # a click in empty space clears the selection
    assert widget.select_in_plot([(0.0, -0.5)] * 2) == []
    assert len(layer.selected_data) == 0


def test_selection_in_viewer_highlights_plot(setup):
    viewer, layer, widget = setup
    layer.selected_data = {0, 5, 40}
    sel = _plotted(widget, "selected")[0].get_offsets()
    np.testing.assert_allclose(sel, [[VALUES[i].real, VALUES[i].imag] for i in (0, 5, 40)])
    assert "3 selected" in widget.info_label.text()
    layer.selected_data = set()
    assert not _plotted(widget, "selected")


def test_labels_classify_and_export(setup, tmp_path):
    from napari_exitwave.peaks import read_peaks_csv

    viewer, layer, widget = setup
    layer.selected_data = set(range(N, 2 * N))
    widget.label_selection("Mo")
    assert (layer.features["label"][N:] == "Mo").all() and (layer.features["label"][:N] == "").all()
    # plot legend and point colours follow the labels
    assert len(_plotted(widget, "Mo")[0].get_offsets()) == N
    colours = np.asarray(layer.face_color)
    assert not np.allclose(colours[0], colours[N]) and np.allclose(colours[N], colours[-1])
    # k-means separates the two clusters; class 0 is the one nearer vacuum
    widget.auto_classify(2)
    labels = np.asarray(layer.features["label"])
    np.testing.assert_array_equal(labels, np.where(TRUTH == 0, "class 0", "class 1"))
    # export: positions, complex values and labels
    out = widget.export_csv(tmp_path / "peaks.csv")
    tab = read_peaks_csv(out)
    np.testing.assert_allclose(tab["y"], layer.data[:, 0])
    np.testing.assert_allclose(tab["x_A"], layer.data[:, 1] * 0.1)
    np.testing.assert_allclose(tab["real"] + 1j * tab["imag"], VALUES)
    assert tab["label"].tolist() == labels.tolist()
    # too many classes: a message, no crash
    widget.auto_classify(10)
    widget.n_classes.setValue(3)
    layer.data = layer.data[:2]
    widget.auto_classify(3)
    assert "exceeds" in widget.info_label.text()


def test_reconstruction_widget_opens_linked_plot(qtbot):
    """'Find peaks' then 'Argand plot' from the reconstruction widget link the two views."""
    from napari_exitwave._reader import exit_wave_layers
    from napari_exitwave._qt.reconstruction import ReconstructionWidget

    viewer = ViewerModel()
    widget = ReconstructionWidget(viewer)
    qtbot.addWidget(widget)
    yy, xx = np.mgrid[:40, :40]
    wave = np.ones((40, 40), complex)
    for y, x in [(10, 10), (10, 30), (30, 10), (30, 30)]:
        wave += (0.2 + 0.3j) * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / 8.0)
    for data, kw, _ in exit_wave_layers(wave.astype(np.complex64), 0.1, name="w"):
        viewer.add_image(data, **kw)
    peaks = widget.find_peaks()
    plot = widget.show_argand()
    assert plot.layer is peaks and len(plot.values()) == 4
    plot.select_in_plot([(1.0, 0.1), (1.5, 0.1), (1.5, 0.5), (1.0, 0.5)])
    assert set(peaks.selected_data) == {0, 1, 2, 3}
    # new peaks replace the layer; the plot follows
    widget.threshold_spin.setValue(0.5)
    peaks2 = widget.find_peaks()
    assert plot.layer is peaks2


def test_updates_move_the_artists_instead_of_rebuilding_the_axes(setup):
    """A selection, new values and new labels update the same artists (set_offsets, colours
    from the label feature); nothing is cleared and rebuilt."""
    viewer, layer, widget = setup
    before = list(widget.ax.collections)
    (points,) = _plotted(widget, "columns")
    layer.selected_data = {1, 2}
    assert list(widget.ax.collections) == before  # the same objects, in the same order
    np.testing.assert_allclose(points.get_offsets()[:, 0], VALUES.real)
    # new values (e.g. a new reconstruction in live mode): the same artist, new offsets
    features = layer.features.copy()
    features["real"] = features["real"] + 0.1
    layer.features = features
    assert _plotted(widget, "columns")[0] is points
    np.testing.assert_allclose(points.get_offsets()[:, 0], VALUES.real + 0.1)
    # labels: one artist per class, coloured by the colour cycle of argand.class_colors
    from matplotlib.colors import to_rgba

    from napari_exitwave.argand import class_colors

    layer.selected_data = set(range(N))
    widget.label_selection("S2")
    (s2,) = _plotted(widget, "S2")
    assert len(s2.get_offsets()) == N
    np.testing.assert_allclose(s2.get_facecolor()[0], to_rgba(class_colors(["", "S2"])["S2"],
                                                              0.8))
    assert not _plotted(widget, "columns") and len(_plotted(widget, "unlabelled")[0]
                                                   .get_offsets()) == N
