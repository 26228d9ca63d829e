"""The widgets docked in a real napari window through the npe2 manifest.

``make_napari_viewer_proxy`` hands the widgets a public-only proxy of the viewer, so any use of
napari's private attributes fails here. Headless Qt without OpenGL cannot draw image layers, so
this test uses Points layers only (the image path is covered with ``ViewerModel`` in
test_qt_reconstruction.py).
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

pytestmark = [pytest.mark.gui, pytest.mark.usefixtures("exitwave_plugin")]


def test_widgets_dock_and_link_in_napari(make_napari_viewer_proxy):
    viewer = make_napari_viewer_proxy()
    _, recon = viewer.window.add_plugin_dock_widget("napari-exitwave", "Exit-wave reconstruction")
    _, plot = viewer.window.add_plugin_dock_widget("napari-exitwave", "Argand plot")
    assert "open a focal series" in recon.series_label.text()
    assert not recon.run_button.isEnabled()
    assert plot.layer is None
    v = np.array([1.2 + 0.3j, 1.25 + 0.32j, 0.8 + 0.6j])
    layer = viewer.add_points(np.array([[1.0, 1.0], [5.0, 5.0], [9.0, 2.0]]),
                              features={"real": v.real, "imag": v.imag, "label": [""] * 3},
                              name="peaks")
    assert plot.layer == layer
    plot.select_in_plot([(1.1, 0.2), (1.4, 0.2), (1.4, 0.4), (1.1, 0.4)])
    assert set(layer.selected_data) == {0, 1}
    layer.selected_data = {2}
    assert plot.selected() == [2]
    plot.label_selection("Mo")
    assert list(layer.features["label"]) == ["", "", "Mo"]
    # the reconstruction widget's own Argand button reuses a plot linked to the same layer
    assert recon.show_argand().layer == layer
