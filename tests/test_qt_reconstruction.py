"""The reconstruction widget end to end: reader -> widget -> exit-wave layers -> peaks.

The viewer is a ``napari.components.ViewerModel`` (layers without an OpenGL canvas: the headless
CI machine has no OpenGL, where ``make_napari_viewer`` fails on the first image layer); the
widget only talks to that part of the viewer. Networks are tiny ONNX nets built in the test
(tests/onnx_helpers.py), whose output is known analytically.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")
from napari.components import ViewerModel  # noqa: E402
from onnx_helpers import make_conv_model, reference_output  # noqa: E402

from napari_exitwave import physics  # noqa: E402
from napari_exitwave._reader import exit_wave_layers  # noqa: E402
from napari_exitwave.io import write_series_tiff  # noqa: E402

pytestmark = [pytest.mark.gui, pytest.mark.usefixtures("exitwave_plugin")]

N_POOL = 2
SAMPLING = 0.1


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    a, ka = make_conv_model(d / "tiny_a.onnx", n_pool=N_POOL, seed=0, sampling=SAMPLING,
                            name="tiny_a")
    b, kb = make_conv_model(d / "tiny_b.onnx", n_pool=N_POOL, seed=1, sampling=SAMPLING,
                            name="tiny_b")
    two, _ = make_conv_model(d / "tiny_two.onnx", n_images=2, n_pool=N_POOL, sampling=SAMPLING,
                             name="tiny_two")
    return {"a": (a, ka), "b": (b, kb), "two": two}


def _series(tmp_path, n=3, shape=(32, 48), seed=0, nan=False):
    rng = np.random.default_rng(seed)
    imgs = rng.normal(1.0, 0.1, (n,) + shape).astype(np.float32)
    if nan:
        imgs[1, 3, 4] = np.nan
    return write_series_tiff(tmp_path / f"series{n}{'nan' if nan else ''}.tif", imgs,
                             sampling=SAMPLING, defocus=list(np.linspace(-50, 50, n))), imgs


@pytest.fixture
def viewer_widget(qtbot):
    from napari_exitwave._qt.reconstruction import ReconstructionWidget

    viewer = ViewerModel()
    widget = ReconstructionWidget(viewer)
    qtbot.addWidget(widget)
    yield viewer, widget
    if widget.worker is not None:
        widget.cancel()
        qtbot.waitUntil(lambda: widget.worker is None, timeout=20000)


def _use_only(widget, *names):
    from qtpy.QtCore import Qt

    for i in range(widget.model_list.count()):
        item = widget.model_list.item(i)
        item.setCheckState(Qt.Checked if item.data(Qt.UserRole) in names else Qt.Unchecked)


def _run(qtbot, widget):
    assert widget.run_button.isEnabled(), widget.check_label.text()
    worker = widget.run()
    assert worker is not None
    assert not widget.run_button.isEnabled() and widget.cancel_button.isEnabled()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=30000)
    return widget.last_result


def test_end_to_end_network(qtbot, tmp_path, viewer_widget, models):
    viewer, widget = viewer_widget
    path, imgs = _series(tmp_path)
    viewer.add_image(np.zeros((3, 8, 8)), name="other")
    viewer.open(str(path), plugin="napari-exitwave")  # the npe2 reader path
    assert widget.layer_combo.currentText() == "series3"  # the series just opened
    assert widget.pixel_size.value() == pytest.approx(SAMPLING)
    assert widget.add_model(str(models["a"][0])) is not None
    _use_only(widget, "tiny_a")
    assert "fits" in widget.check_label.text()
    result = _run(qtbot, widget)
    assert result.error is None and not result.cancelled
    real = viewer.layers["series3 exit wave [real]"]
    imag = viewer.layers["series3 exit wave [imag]"]
    # the values are the network's: same as running the tiny net by hand on the normalised series
    from napari_exitwave.align import align_series

    aligned, _ = align_series(imgs)
    expected = reference_output(physics.normalize_series(aligned), models["a"][1], n_pool=N_POOL)
    np.testing.assert_allclose(real.data, expected.real, atol=2e-4)
    np.testing.assert_allclose(imag.data, expected.imag, atol=2e-4)
    # scale in A, units angstrom, one diverging colormap centred on vacuum
    for ly, centre in ((real, 1.0), (imag, 0.0)):
        assert tuple(ly.scale) == pytest.approx((SAMPLING, SAMPLING))
        assert [str(u) for u in ly.units] == ["angstrom", "angstrom"]
        lo, hi = ly.contrast_limits
        assert (lo + hi) / 2 == pytest.approx(centre, abs=1e-6)
    assert real.colormap.name == imag.colormap.name
    assert real.contrast_limits[1] - 1 == pytest.approx(imag.contrast_limits[1], rel=1e-6)
    # device and time are shown
    assert "CPU" in widget.status_label.text() and " s" in widget.status_label.text()
    assert widget.progress_bar.value() == 1000
    # peaks and the Argand plot follow each run
    peaks = viewer.layers["series3 exit wave peaks"]
    assert tuple(peaks.scale) == pytest.approx((SAMPLING, SAMPLING))
    plot = widget.show_argand()
    assert plot.layer == peaks and len(plot.values()) == len(peaks.data)


def test_amplitude_phase_and_uncertainty(qtbot, tmp_path, viewer_widget, models):
    viewer, widget = viewer_widget
    path, _ = _series(tmp_path)
    viewer.open(str(path), plugin="napari-exitwave")
    widget.add_model(str(models["a"][0]))
    widget.add_model(str(models["b"][0]), checked=False)
    _use_only(widget, "tiny_a", "tiny_b")
    widget.amplitude_check.setChecked(True)
    widget.phase_check.setChecked(True)
    result = _run(qtbot, widget)
    assert len(result.reconstructions) == 2
    names = {ly.name for ly in viewer.layers}
    for part in ("real", "imag", "amplitude", "phase", "uncertainty"):
        assert f"series3 exit wave [{part}]" in names
    w_a, w_b = (r.exit_wave for r in result.reconstructions)
    mean = (w_a + w_b) / 2
    np.testing.assert_allclose(viewer.layers["series3 exit wave [real]"].data, mean.real,
                               atol=1e-5)
    unc = viewer.layers["series3 exit wave [uncertainty]"].data
    np.testing.assert_allclose(unc, np.abs(w_a - w_b) / 2, atol=1e-5)  # std of two models
    assert unc.max() > 0
    np.testing.assert_allclose(viewer.layers["series3 exit wave [phase]"].data, np.angle(mean),
                               atol=1e-5)


def test_error_messages(qtbot, tmp_path, viewer_widget, models):
    viewer, widget = viewer_widget
    widget.add_model(str(models["a"][0]))
    _use_only(widget, "tiny_a")
    # a single 2-D image
    viewer.add_image(np.ones((16, 16), np.float32), name="single", scale=(0.1, 0.1),
                     units=("angstrom", "angstrom"))
    widget.layer_combo.setCurrentText("single")
    assert "single 2-D image" in widget.check_label.text()
    assert not widget.run_button.isEnabled() and widget.run() is None
    # the wrong number of images (5: no shipped network takes them, so the tick stays)
    path5, _ = _series(tmp_path, n=5)
    viewer.open(str(path5), plugin="napari-exitwave")
    widget.layer_combo.setCurrentText("series5")
    assert "expects 3 images" in widget.check_label.text() and not widget.run_button.isEnabled()
    # a 2-image series, which the 2-image model takes
    path2, _ = _series(tmp_path, n=2)
    viewer.open(str(path2), plugin="napari-exitwave")
    widget.layer_combo.setCurrentText("series2")
    widget.add_model(str(models["two"]))
    _use_only(widget, "tiny_two")
    assert widget.run_button.isEnabled()
    # NaNs
    pathn, _ = _series(tmp_path, nan=True)
    viewer.open(str(pathn), plugin="napari-exitwave")
    widget.layer_combo.setCurrentText("series3nan")
    _use_only(widget, "tiny_a")
    assert "NaN" in widget.check_label.text() and not widget.run_button.isEnabled()
    # a pixel size 2.5x off: warned, not blocked
    path3, _ = _series(tmp_path)
    viewer.open(str(path3), plugin="napari-exitwave")
    widget.layer_combo.setCurrentText("series3")
    widget.pixel_size.setValue(0.25)
    assert "2.5x" in widget.check_label.text() and widget.run_button.isEnabled()
    # a corrupt ONNX file is refused with a message and napari keeps going
    bad = tmp_path / "corrupt.onnx"
    bad.write_bytes(b"\x08\x01garbage" * 50)
    assert widget.add_model(str(bad)) is None
    assert "could not load model" in widget.status_label.text()
    assert "corrupt" not in [widget.model_list.item(i).text()
                             for i in range(widget.model_list.count())]
    # no model ticked
    _use_only(widget)
    assert "choose a model" in widget.check_label.text()


def test_traditional_fields_and_defocus(qtbot, tmp_path, viewer_widget):
    viewer, widget = viewer_widget
    path, _ = _series(tmp_path)
    viewer.open(str(path), plugin="napari-exitwave")
    assert widget.trad_box.isHidden() and not widget.model_list.isHidden()
    widget.set_method("gs")
    assert not widget.trad_box.isHidden() and widget.model_list.isHidden()
    # the defoci come from the file's metadata
    assert widget.defocus_values() == [-50.0, 0.0, 50.0]
    assert widget.run_button.isEnabled()
    from qtpy.QtWidgets import QLabel

    model_labels = [w for w in widget.findChildren(QLabel) if w.text() in ("Models", "Device")]
    assert len(model_labels) == 2 and all(w.isHidden() for w in model_labels)
    widget.defocus_edit.setText("-50, 0")
    assert "enter 3 defocus values" in widget.check_label.text()
    assert not widget.run_button.isEnabled()
    # a Gerchberg-Saxton run gives the same layers, at the series' own pixel size
    widget.defocus_edit.setText("-50, 0, 50")
    widget.cs_spin.setValue(-8.0)
    result = _run(qtbot, widget)
    assert result.error is None, result.error
    assert result.reconstructions[0].method == "gs"
    real = viewer.layers["series3 exit wave [real]"]
    assert real.data.shape == (32, 48) and tuple(real.scale) == pytest.approx((SAMPLING,) * 2)
    assert "Gerchberg-Saxton on CPU" in widget.status_label.text()


def test_run_error_and_cancel_keep_gui_alive(qtbot, tmp_path, viewer_widget, models, monkeypatch):
    import time

    import napari_exitwave.reconstruct as rc

    viewer, widget = viewer_widget
    path, _ = _series(tmp_path)
    viewer.open(str(path), plugin="napari-exitwave")
    widget.add_model(str(models["a"][0]))
    _use_only(widget, "tiny_a")

    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        # no CUDA here: asking for it gives a plain message, and napari carries on
        widget.device_combo.setCurrentIndex(widget.device_combo.findData("cuda"))
        result = _run(qtbot, widget)
        assert "CUDA was requested" in result.error
        assert "CUDA was requested" in widget.status_label.text()
        assert widget.run_button.isEnabled()  # ready for another try
        widget.device_combo.setCurrentIndex(widget.device_combo.findData("cpu"))

    def failing(series, **kw):
        raise RuntimeError("something unexpected")
        yield  # a generator, as iter_reconstruct

    monkeypatch.setattr(rc, "iter_reconstruct", failing)
    result = _run(qtbot, widget)
    assert result.error == "RuntimeError: something unexpected"
    assert "something unexpected" in widget.status_label.text()
    assert widget.run_button.isEnabled()

    ticks = []

    def slow(series, **kw):
        for i in range(400):
            yield i / 400, f"step {i}"
            ticks.append(i)
            time.sleep(0.01)
        raise AssertionError("not cancelled")

    monkeypatch.setattr(rc, "iter_reconstruct", slow)
    widget.run()
    qtbot.waitUntil(lambda: widget.progress_bar.value() > 0, timeout=5000)  # GUI got progress
    widget.cancel_button.click()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=10000)
    assert widget.last_result.cancelled and widget.status_label.text() == "cancelled"
    assert len(ticks) < 400


def test_cancel_goes_through_the_worker_and_ends_napari_progress(qtbot, tmp_path, viewer_widget,
                                                                 models, monkeypatch):
    """Cancel is worker.quit(): the generator is not resumed, the worker says "aborted", and
    napari's progress bar (the activity dock's) advances with the yields and then closes."""
    import time

    import napari_exitwave.reconstruct as rc
    from napari.utils import progress

    viewer, widget = viewer_widget
    path, _ = _series(tmp_path)
    viewer.open(str(path), plugin="napari-exitwave")
    widget.add_model(str(models["a"][0]))
    _use_only(widget, "tiny_a")
    resumed = []

    def slow(series, **kw):
        for i in range(1000):
            resumed.append(i)
            yield i / 1000, f"step {i}"
            time.sleep(0.005)
        raise AssertionError("not cancelled")

    monkeypatch.setattr(rc, "iter_reconstruct", slow)
    worker = widget.run()
    pbar = widget.pbar
    assert pbar in progress._all_instances and pbar.total == 1000
    qtbot.waitUntil(lambda: pbar.n > 10, timeout=5000)  # napari's bar follows the yields
    assert "step" in pbar.desc
    with qtbot.waitSignals([worker.aborted, worker.finished], timeout=10000):
        widget.cancel_button.click()
    assert worker.abort_requested
    qtbot.waitUntil(lambda: widget.worker is None, timeout=5000)
    assert pbar not in progress._all_instances  # the bar ended
    n = len(resumed)
    assert n < 1000 and pbar.n < 1000
    time.sleep(0.1)
    assert len(resumed) == n  # nothing runs on in the background
    assert widget.last_result.cancelled and widget.status_label.text() == "cancelled"
    assert widget.run_button.isEnabled() and not widget.cancel_button.isEnabled()


def test_peaks_layer_features(qtbot, viewer_widget):
    viewer, widget = viewer_widget
    # a known exit wave: Gaussian columns of two kinds on a lattice
    yy, xx = np.mgrid[:80, :80]
    centres = [(10.3 + 15 * i, 10.7 + 15 * j) for i in range(5) for j in range(5)]
    kinds = np.array([(i + j) % 2 for i in range(5) for j in range(5)])
    values = np.array([0.3 + 0.2j, 0.1 + 0.5j])
    wave = np.ones((80, 80), complex)
    for (y, x), k in zip(centres, kinds):
        wave += values[k] * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * 2.0**2))
    for data, kw, _ in exit_wave_layers(wave.astype(np.complex64), 0.1, name="known"):
        viewer.add_image(data, **kw)
    viewer.layers.selection.active = viewer.layers["known [real]"]
    widget.min_distance_spin.setValue(0.8)
    widget.threshold_spin.setValue(0.2)
    layer = widget.find_peaks()
    assert layer.name == "known peaks" and len(layer.data) == 25
    assert tuple(layer.scale) == pytest.approx((0.1, 0.1))
    assert [str(u) for u in layer.units] == ["angstrom", "angstrom"]
    order = [int(np.argmin(np.linalg.norm(np.array(centres) - p, axis=1))) for p in layer.data]
    np.testing.assert_allclose(layer.data, np.array(centres)[order], atol=0.05)
    f = layer.features
    assert {"real", "imag", "amplitude", "phase", "label"} <= set(f.columns)
    expected = 1 + values[kinds[order]]
    np.testing.assert_allclose(f["real"] + 1j * f["imag"], expected, atol=3e-3)
    np.testing.assert_allclose(f["amplitude"], np.abs(expected), atol=3e-3)
    assert (f["label"] == "").all()
    # a higher threshold keeps fewer peaks (the |psi - 1| of kind 0 is 0.36, kind 1 0.51)
    widget.threshold_spin.setValue(0.8)
    assert len(widget.find_peaks().data) == int(np.sum(kinds == 1))


def _shipped(name):
    from napari_exitwave.inference import list_models

    return list_models().get(name)


@pytest.mark.parametrize("which", ["tiny", "mos2"])
def test_sample_series_end_to_end(qtbot, viewer_widget, tmp_path_factory, which):
    """File > Open Sample, reconstruct, find peaks; with the shipped network, the peaks are the
    sample's true atomic columns."""
    from napari_exitwave.data import load_sample_columns

    viewer, widget = viewer_widget
    if which == "mos2":
        card = _shipped("mos2")
        if card is None:
            pytest.skip("the shipped mos2 model is not in models/ yet")
        name = widget.add_model(card).name
    else:
        path, _ = make_conv_model(tmp_path_factory.mktemp("m") / "tiny105.onnx", n_pool=N_POOL,
                                  sampling=0.105, name="tiny105")
        name = widget.add_model(str(path)).name
    viewer.open_sample("napari-exitwave", "mos2_series")
    series = viewer.layers[-1]
    assert series.data.ndim == 3 and widget.layer_combo.currentText() == series.name
    _use_only(widget, name)
    result = _run(qtbot, widget)
    assert result.error is None, result.error
    real = viewer.layers[f"{series.name} exit wave [real]"]
    rec = result.reconstructions[0]
    assert real.data.shape == rec.exit_wave.shape
    assert tuple(real.scale) == pytest.approx((rec.sampling,) * 2)
    assert rec.sampling == pytest.approx(0.105, rel=0.02)
    widget.min_distance_spin.setValue(1.0)
    widget.threshold_spin.setValue(0.2)
    peaks = widget.find_peaks()
    assert len(peaks.data) > 0 and tuple(peaks.scale) == tuple(real.scale)
    if which == "mos2":
        cols = load_sample_columns()
        true_A = np.stack([cols["y_A"], cols["x_A"]], axis=1)
        found_A = peaks.data * rec.sampling
        d = np.linalg.norm(true_A[:, None] - found_A[None], axis=-1).min(axis=1)
        assert np.mean(d < 0.3) > 0.8  # most true columns found within 30 pm
        assert np.median(d) < 0.15     # median position error below 15 pm


def test_card_text_is_short_lines_with_the_validation_figures():
    """Every shipped card is shown as short lines (no wrapping, nothing clipped) with its
    validation RMSE; the full description stays available."""
    import re
    from pathlib import Path

    from napari_exitwave._qt.reconstruction import card_html
    from napari_exitwave.inference import ModelCard

    import json

    cards = sorted(p for p in (Path(__file__).resolve().parents[1] / "models").glob("*.json")
                   if json.loads(p.read_text()).get("kind", "exit-wave") == "exit-wave")
    assert cards  # the networks the widget lists (the aberration estimator is not one)
    for path in cards:
        card = ModelCard.load(path)
        lines = [re.sub("<[^>]+>", "", line) for line in card_html(card).split("<br>")]
        assert lines[0] == card.name and len(lines) == 4
        assert all(len(line) <= 52 for line in lines), lines  # ~ the width of the dock
        assert f"RMSE im {card.metrics['rmse_imag']:.3g}" in lines[3]


def test_the_shipped_default_network_is_ticked_and_visible(viewer_widget):
    """With all five shipped networks listed, the default (`mos2`) is the one ticked, its card
    is shown, and the list scrolls to it (it sorts last)."""
    from qtpy.QtCore import Qt

    from napari_exitwave.inference import DEFAULT_MODEL

    _, widget = viewer_widget
    assert widget.model_list.count() >= 5
    ticked = [widget.model_list.item(i).data(Qt.UserRole) for i in range(widget.model_list.count())
              if widget.model_list.item(i).checkState() == Qt.Checked]
    assert ticked == [DEFAULT_MODEL]
    assert widget.model_list.currentItem().data(Qt.UserRole) == DEFAULT_MODEL
    assert widget.card_label.text().startswith(f"<b>{DEFAULT_MODEL}</b>")


def test_physics_check_table_and_residual_layer(qtbot, tmp_path, viewer_widget, monkeypatch):
    from estimate_stand_in import install_stand_in

    from napari_exitwave.data import load_sample_series

    install_stand_in(monkeypatch)
    viewer, widget = viewer_widget
    s = load_sample_series("mos2")
    path = write_series_tiff(tmp_path / "mos2.tif", s.images, s.sampling, s.defocus)
    viewer.open(str(path), plugin="napari-exitwave")
    assert widget.check_panel.isHidden()
    assert widget.add_model("mos2") is not None
    _use_only(widget, "mos2")
    widget.auto_peaks_check.setChecked(False)
    result = _run(qtbot, widget)
    assert result.error is None, result.error
    panel = widget.check_panel
    assert not panel.isHidden() and not panel.table.isHidden()
    assert "physics residual: reduced chi-square" in panel.residual_label.text()
    assert panel.table.rowCount() == 6 and panel.table.item(0, 0).text() == "defocus_mean"
    # the aberration fit's column beside the estimate (Cs is fitted; the file's defocus is not)
    assert panel.table.columnCount() == 4
    assert panel.table.horizontalHeaderItem(2).text() == "fitted"
    cs_row = [panel.table.item(i, 0).text() for i in range(6)].index("Cs")
    assert panel.table.item(cs_row, 2).text().endswith(" um")
    assert panel.table.item(0, 2).text() == ""
    assert "stand-in" in panel.estimate_label.text()
    assert not any(panel.table.item(i, 1).toolTip() for i in range(6))  # no notes here
    layer = viewer.layers["mos2 residual"]
    assert layer.data.shape == (3, 256, 256) and tuple(layer.contrast_limits) == (-5.0, 5.0)
    assert layer.colormap.name == "coolwarm"
    assert layer.metadata["exitwave"]["reduced_chi2"] == pytest.approx(
        result.reconstructions[0].reduced_chi2)


def test_check_panel_moves_notes_into_tooltips(qtbot):
    """The estimate table fits a dock: "(not determined)" and "(noise spectrum)" leave the
    cells for their tooltips, and a value the series does not determine is greyed."""
    from types import SimpleNamespace

    from napari_exitwave._qt.check_panel import CheckPanel

    panel = CheckPanel()
    qtbot.addWidget(panel)
    rows = [("defocus_mean", "-18.1 A ± 13", "-100 to 100"),
            ("C12", "0.6 A (not determined)", "0 to 25"),
            ("dose", "6.22e+03 e/A^2 (noise spectrum)", "316-1e+05")]
    panel.show_summary(SimpleNamespace(estimate_rows=rows, estimate_model="m",
                                       fit_values={"C12": "5.9 A"}, check_text="ok"))
    t = panel.table
    assert [t.item(i, 1).text() for i in range(3)] == ["-18.1 A ± 13", "0.6 A", "6.22e+03 e/A^2"]
    assert t.item(0, 1).toolTip() == ""
    assert "not determined" in t.item(1, 1).toolTip()
    assert t.item(1, 1).foreground().color().getRgb()[:3] == (128, 128, 128)
    assert t.item(2, 1).toolTip() == "6.22e+03 e/A^2 (noise spectrum)"
    assert t.item(1, 2).text() == "5.9 A" and t.item(2, 3).text() == "316-1e+05"
