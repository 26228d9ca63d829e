"""The live widget: start/stop the watcher in a thread, reconstructions stack along a time axis.

The viewer is a ``napari.components.ViewerModel`` (layers and dims without an OpenGL canvas, which
the headless CI machine lacks); the widget only uses that part of the viewer.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

pytest.importorskip("napari")
from napari.components import ViewerModel  # noqa: E402

pytestmark = pytest.mark.gui

NY = NX = 32


def _fake_reconstruct(series):
    images = np.asarray(series.images)
    wave = (1 + 0.01 * images.mean(axis=0) + 0.02j * images[0]).astype(np.complex64)
    return type("Rec", (), {"exit_wave": wave, "sampling": 0.1, "method": "fake",
                            "model_name": "fake", "device": "CPU", "timings": {},
                            "warnings": [], "shifts": None})()


def test_live_widget_stacks_each_series_on_a_time_axis(qtbot, tmp_path):
    from napari_exitwave._qt.live_widget import LIVE_NAME, LiveWidget
    from napari_exitwave.io import write_series_tiff

    viewer = ViewerModel()
    widget = LiveWidget(viewer, reconstruct_fn=_fake_reconstruct)
    qtbot.addWidget(widget)
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    widget.folder.setText(str(src))
    widget.out.setText(str(out))
    widget.group_by.setCurrentText("count")
    widget.n_images.setValue(3)
    widget.poll.setValue(0.1)
    widget.start()
    assert widget.running and not widget.start_btn.isEnabled()

    for i in range(6):  # two series
        tmp = src / f".im{i}.tif"
        write_series_tiff(tmp, np.full((1, NY, NX), i, np.float32), sampling=0.1,
                          defocus=[-50.0 + 50 * (i % 3)])
        tmp.rename(src / f"im{i}.tif")
        time.sleep(0.002)

    real = f"{LIVE_NAME} [real]"
    qtbot.waitUntil(lambda: real in viewer.layers and len(viewer.layers[real].data) == 2,
                    timeout=20000)
    layer_r, layer_i = viewer.layers[real], viewer.layers[f"{LIVE_NAME} [imag]"]
    assert layer_r.data.shape == layer_i.data.shape == (2, NY, NX)
    np.testing.assert_allclose(layer_r.data[1], 1 + 0.01 * 4, rtol=1e-6)  # mean of 3, 4, 5
    np.testing.assert_allclose(layer_i.data[0], 0.0)                    # 0.02 * image 0 = 0
    np.testing.assert_allclose(layer_i.data[1], 0.02 * 3, rtol=1e-6)
    assert tuple(layer_r.scale) == pytest.approx((1.0, 0.1, 0.1))
    assert layer_r.metadata["exitwave"]["frames"] == ["series_0001", "series_0002"]
    assert viewer.dims.current_step[0] == 1  # the slider follows the newest series

    widget.stop()
    qtbot.waitUntil(lambda: not widget.running, timeout=10000)
    assert widget.start_btn.isEnabled() and "2 done" in widget.status.text()
    assert (out / "series_0002_exit_wave.npy").exists()


def test_live_widget_reports_a_bad_folder(qtbot, tmp_path):
    from napari_exitwave._qt.live_widget import LiveWidget

    widget = LiveWidget(ViewerModel(), reconstruct_fn=_fake_reconstruct)
    qtbot.addWidget(widget)
    widget.folder.setText(str(tmp_path / "does-not-exist"))
    widget.start()
    assert not widget.running and "does not exist" in widget.status.text()


def test_live_widget_is_a_manifest_contribution():
    import importlib
    from pathlib import Path

    from npe2 import PluginManifest

    import napari_exitwave
    from napari_exitwave._qt.live_widget import LiveWidget

    manifest = PluginManifest.from_file(Path(napari_exitwave.__file__).parent / "napari.yaml")
    cmd = {c.id: c for c in manifest.contributions.commands}["napari-exitwave.live_widget"]
    module, attr = cmd.python_name.split(":")
    assert getattr(importlib.import_module(module), attr) is LiveWidget
    assert "napari-exitwave.live_widget" in [w.command for w in manifest.contributions.widgets]


def test_live_widget_defaults_to_the_default_network(qtbot):
    from napari.components import ViewerModel

    from napari_exitwave._qt.live_widget import LiveWidget
    from napari_exitwave.inference import DEFAULT_MODEL

    widget = LiveWidget(ViewerModel(), reconstruct_fn=_fake_reconstruct)
    qtbot.addWidget(widget)
    assert widget.model.count() >= 5 and widget.model.currentText() == DEFAULT_MODEL
