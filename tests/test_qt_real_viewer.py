"""The plugin in a real napari window with image layers: reader -> widget -> layers -> Argand.

``make_napari_viewer_proxy`` gives a real ``napari.Viewer`` (vispy canvas, OpenGL) behind a
public-only proxy. Adding an image layer needs OpenGL, which ``QT_QPA_PLATFORM=offscreen`` does
not have, so these tests need a display: ``./tasks.sh test`` runs pytest under Xvfb (Mesa's
llvmpipe) when ``xvfb-run`` is there. Without a display they skip, except in CI (``$CI`` set),
where they fail: CI must exercise them.

TensorFlow (loaded by the training tests) and Mesa's llvmpipe cannot share a process: each
brings its own LLVM, and the first OpenGL draw segfaults (or the exit aborts). So the suite's
process stays offscreen, and when this process is offscreen or has TensorFlow,
``test_real_viewer_in_fresh_process`` runs this module again in a fresh interpreter on the
display (``QT_QPA_PLATFORM=xcb``) while the in-process copies skip.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

PLUGIN = "napari-exitwave"
RECON_WIDGET = "Exit-wave reconstruction"  # display names in napari.yaml
ARGAND_WIDGET = "Argand plot"


# tasks.sh hides Xvfb's display from the suite's own process (with DISPLAY set, even Qt
# offscreen loads Mesa, which aborts a TensorFlow process at exit) and passes it here instead
XVFB_DISPLAY = os.environ.get("EXITWAVE_XVFB_DISPLAY")
LINUX = sys.platform.startswith("linux")


def _no_display_reason() -> str | None:
    if LINUX and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
                      or XVFB_DISPLAY):
        return "no DISPLAY"
    return None


_REASON = _no_display_reason()
if _REASON is not None:
    _why = (f"real-viewer tests need a GL-capable display ({_REASON}); run them with "
            "`./tasks.sh test` (uses xvfb-run) or `xvfb-run -a .venv/bin/pytest ...`")
    if os.environ.get("CI"):
        pytest.fail("CI must run the real-viewer tests: " + _why, pytrace=False)
    pytest.skip(_why, allow_module_level=True)

pytestmark = [pytest.mark.gui, pytest.mark.usefixtures("exitwave_plugin")]

SAMPLING = 0.105  # A/px of the bundled series and of the shipped mos2 model
CHILD = "NAPARI_EXITWAVE_REAL_VIEWER_CHILD"  # set in the fresh process


def _not_here_reason() -> str | None:
    """Why this process cannot draw a real viewer (None: it can)."""
    if os.environ.get("QT_QPA_PLATFORM") == "offscreen":
        return "Qt runs offscreen in this process (no OpenGL)"
    if LINUX and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return "no DISPLAY in this process"
    if "tensorflow" in sys.modules:
        return "TensorFlow is loaded in this process and its LLVM crashes Mesa's llvmpipe"
    return None


@pytest.fixture
def real_viewer(request):
    """``make_napari_viewer_proxy``, in a process where OpenGL (llvmpipe) can work."""
    why = _not_here_reason()
    if why:  # skip before napari's fixture is set up (its teardown needs a test call)
        assert not os.environ.get(CHILD), why
        pytest.skip(f"{why}: covered by test_real_viewer_in_fresh_process")
    return request.getfixturevalue("make_napari_viewer_proxy")


def test_real_viewer_in_fresh_process():
    """Run this module's real-viewer tests in a fresh interpreter on the display."""
    if _not_here_reason() is None:
        pytest.skip("this process can draw: the real-viewer tests run here directly")
    env = dict(os.environ, **{CHILD: "1"})
    if LINUX:
        env["QT_QPA_PLATFORM"] = "xcb"
        if XVFB_DISPLAY:
            env["DISPLAY"] = XVFB_DISPLAY
    else:
        env.pop("QT_QPA_PLATFORM", None)
    proc = subprocess.run([sys.executable, "-m", "pytest", __file__, "-q", "-p", "no:cacheprovider",
                           "-k", "not fresh_process"], env=env, capture_output=True, text=True,
                          timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    assert " passed" in proc.stdout.strip().splitlines()[-1], out[-3000:]


def _use_only(widget, *names):
    from qtpy.QtCore import Qt

    for i in range(widget.model_list.count()):
        item = widget.model_list.item(i)
        item.setCheckState(Qt.Checked if item.data(Qt.UserRole) in names else Qt.Unchecked)


def test_sample_series_reconstructed_in_real_viewer(real_viewer, qtbot):
    from napari_exitwave.data import load_sample_series, sample_series_path

    viewer = real_viewer(show=True)  # shown, so that the canvas really draws
    path = sample_series_path()
    opened = viewer.open(str(path), plugin=PLUGIN)
    assert len(opened) == 1
    series = opened[0]
    expected = load_sample_series().images
    assert series.data.shape == expected.shape and series.data.ndim == 3
    assert tuple(series.scale[-2:]) == pytest.approx((SAMPLING, SAMPLING))

    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, RECON_WIDGET)
    assert widget.layer_combo.currentText() == series.name
    assert widget.pixel_size.value() == pytest.approx(SAMPLING)
    assert widget.add_model("mos2") is not None, widget.status_label.text()
    _use_only(widget, "mos2")
    widget.set_method("network")
    widget.auto_peaks_check.setChecked(True)
    assert widget.run_button.isEnabled(), widget.check_label.text()
    assert widget.run() is not None
    qtbot.waitUntil(lambda: widget.worker is None, timeout=120000)
    result = widget.last_result
    assert result.error is None and not result.cancelled, result.error

    base = f"{series.name} exit wave"
    real, imag = viewer.layers[f"{base} [real]"], viewer.layers[f"{base} [imag]"]
    wave = result.reconstructions[0].exit_wave
    assert real.data.shape == imag.data.shape == wave.shape == expected.shape[-2:]
    np.testing.assert_allclose(real.data, wave.real, atol=1e-6)
    np.testing.assert_allclose(imag.data, wave.imag, atol=1e-6)
    assert np.isfinite(wave).all() and np.std(wave.imag) > 0  # not a blank output
    for ly in (real, imag):
        assert tuple(ly.scale) == pytest.approx((SAMPLING, SAMPLING))
        assert [str(u) for u in ly.units] == ["angstrom", "angstrom"]
    # the canvas drew them (a real vispy node exists for an image layer in a real viewer)
    viewer.reset_view()
    shot = viewer.screenshot(canvas_only=True, flash=False)
    assert shot.ndim == 3 and shot[..., :3].std() > 0

    peaks = viewer.layers[f"{base} peaks"]
    assert len(peaks.data) > 5
    assert {"real", "imag"} <= set(peaks.features.columns)
    assert tuple(peaks.scale) == pytest.approx((SAMPLING, SAMPLING))
    # features hold the exit wave's value at each (rounded) peak position
    rows, cols = np.round(peaks.data).astype(int).T
    np.testing.assert_allclose(peaks.features["real"], wave.real[rows, cols], atol=0.05)
    np.testing.assert_allclose(peaks.features["imag"], wave.imag[rows, cols], atol=0.05)

    # the Argand dock (opened by the run) and the Points layer share the selection both ways
    plot = widget.show_argand()
    assert plot.layer == peaks and len(plot.values()) == len(peaks.data)
    v = plot.values()
    target = int(np.argmax(np.abs(v - 1)))
    re0, im0 = v[target].real, v[target].imag
    eps = 1e-4
    picked = plot.select_in_plot([(re0 - eps, im0 - eps), (re0 + eps, im0 - eps),
                                  (re0 + eps, im0 + eps), (re0 - eps, im0 + eps)])
    assert target in picked
    assert set(peaks.selected_data) == set(picked)
    # the right half of the points; the lasso's left edge between two values, never on one
    srt = np.sort(v.real)
    mid = 0.5 * (srt[len(srt) // 2 - 1] + srt[len(srt) // 2])
    inside = np.flatnonzero(v.real > mid)
    plot.select_in_plot([(mid, v.imag.min() - 1), (v.real.max() + 1, v.imag.min() - 1),
                         (v.real.max() + 1, v.imag.max() + 1), (mid, v.imag.max() + 1)])
    assert set(peaks.selected_data) == set(inside.tolist())
    peaks.selected_data = {0, len(v) - 1}
    assert plot.selected() == [0, len(v) - 1]
    assert f"{len(v)} peaks, 2 selected" in plot.info_label.text()

    # the Argand widget docked through the manifest links to the same layer
    _, plot2 = viewer.window.add_plugin_dock_widget(PLUGIN, ARGAND_WIDGET)
    assert plot2.layer == peaks and plot2.selected() == [0, len(v) - 1]


def test_dm_sample_opens_as_image_layer(dm_file, real_viewer):
    import napari

    from napari_exitwave import _reader

    path, name = dm_file, dm_file.name
    if _reader.get_reader(str(path)) is None:
        pytest.skip(f"the reader declines {name}")
    from rsciio.digitalmicrograph import file_reader

    expected = np.asarray(file_reader(str(path))[0]["data"])
    viewer = real_viewer()
    layers = viewer.open(str(path), plugin=PLUGIN)
    assert len(layers) == 1 and len(viewer.layers) == 1
    layer = viewer.layers[0]
    assert isinstance(layer, napari.layers.Image)
    np.testing.assert_array_equal(layer.data, expected.astype(np.float32))
    assert len(layer.scale) == expected.ndim and all(s > 0 for s in layer.scale)
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, RECON_WIDGET)
    if expected.ndim == 3:  # a stack: offered as a series
        assert widget.layer_combo.currentText() == layer.name
