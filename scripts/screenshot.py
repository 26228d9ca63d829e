"""Regenerate docs/images/plugin.png: the plugin after a reconstruction of the sample series.

Opens napari with the bundled simulated MoS2 focal series (File > Open Sample), docks the
reconstruction widget, reconstructs with a shipped network (default ``mos2``), finds the
atomic-column peaks, opens the Argand plot with the columns auto-classified, and saves a
screenshot of the whole window.

Needs a display with OpenGL; on a headless machine run it under Xvfb::

    xvfb-run -a -s "-screen 0 1920x1200x24" .venv/bin/python scripts/screenshot.py

Options: ``--model NAME_OR_PATH`` (a name from ``napari-exitwave models`` or an .onnx file),
``--method gs|wiener`` (traditional reconstruction with the sample's true defoci instead;
``--cs`` in um and ``--focal-spread`` in A; the sample has Cs = -8 um, focal spread 10 A),
``--classes N`` (Argand classes), ``--show real|imag|residual`` (the layer under the peaks;
``residual``: the physics residual of the check, shown with the estimate table in the dock),
``--out PATH``. The check panel (estimate and residual line) shows whenever an estimator is
installed::

    xvfb-run -a -s "-screen 0 1920x1200x24" .venv/bin/python scripts/screenshot.py \
        --show residual --out docs/images/plugin_check.png
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="mos2")
    ap.add_argument("--method", default="network", choices=["network", "gs", "wiener"])
    ap.add_argument("--cs", type=float, default=0.0, help="gs/wiener: Cs in um")
    ap.add_argument("--focal-spread", type=float, default=0.0, help="gs/wiener: A")
    ap.add_argument("--classes", type=int, default=3)
    ap.add_argument("--show", default="imag", choices=["real", "imag", "residual"],
                    help="layer shown under the peaks: a part of the exit wave (imag: where a "
                         "weak phase object shows), or the physics residual (needs the check: "
                         "an installed estimator)")
    ap.add_argument("--min-distance", type=float, default=None, help="peaks, A (widget's)")
    ap.add_argument("--threshold", type=float, default=None,
                    help="peaks, fraction of max (widget's default)")
    ap.add_argument("--size", default="1800x1100", help="window size WxH")
    ap.add_argument("--out", default=str(ROOT / "docs" / "images" / "plugin.png"))
    args = ap.parse_args(argv)

    import napari
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(title="napari-exitwave", show=True)
    w, h = (int(v) for v in args.size.split("x"))
    viewer.window._qt_window.resize(w, h)  # noqa: SLF001 - no public API to size the window
    viewer.open_sample("napari-exitwave", "mos2_series")
    _, widget = viewer.window.add_plugin_dock_widget("napari-exitwave", "Exit-wave reconstruction")

    if args.method == "network":
        card = widget.add_model(args.model)
        if card is None:
            print(f"model {args.model!r} could not be loaded: {widget.status_label.text()}",
                  file=sys.stderr)
            return 1
        for i in range(widget.model_list.count()):  # exactly this model
            item = widget.model_list.item(i)
            item.setCheckState(2 if item.text() == card.name else 0)
    else:  # the sample's defoci come with the file
        widget.set_method(args.method)
        widget.cs_spin.setValue(args.cs)
        widget.focal_spread_spin.setValue(args.focal_spread)
    if not widget.run_button.isEnabled():
        print(f"cannot run: {widget.check_label.text()}", file=sys.stderr)
        return 1
    widget.run()
    t0 = time.time()
    while widget.worker is not None and time.time() - t0 < 300:
        QApplication.processEvents()
        time.sleep(0.01)
    res = widget.last_result
    if res is None or res.error or res.cancelled:
        print(f"reconstruction failed: {res and res.error}", file=sys.stderr)
        return 1
    print(widget.status_label.text())

    if args.min_distance is not None:
        widget.min_distance_spin.setValue(args.min_distance)
    if args.threshold is not None:
        widget.threshold_spin.setValue(args.threshold)
    peaks = widget.find_peaks()
    plot = widget.show_argand()
    plot.n_classes.setValue(args.classes)
    plot.auto_classify(args.classes)
    # show one part with the peaks on top; the series and the other part stay in the list
    suffix = " residual" if args.show == "residual" else f"[{args.show}]"
    if not any(ly.name.endswith(suffix) for ly in viewer.layers):
        print(f"no layer ending in {suffix!r}: {[ly.name for ly in viewer.layers]}", file=sys.stderr)
        return 1
    for ly in viewer.layers:
        ly.visible = ly.name.endswith(suffix) or ly.name == peaks.name
    viewer.layers.selection.active = peaks
    viewer.scale_bar.visible = True
    viewer.reset_view()
    from napari._qt.dialogs.qt_notification import NapariQtNotification

    for _ in range(50):
        for toast in QApplication.instance().allWidgets():  # e.g. the PyQt5 deprecation toast
            if isinstance(toast, NapariQtNotification):
                toast.close()
        QApplication.processEvents()
        time.sleep(0.02)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    img = viewer.screenshot(canvas_only=False, flash=False)
    from skimage.io import imsave

    imsave(str(out), img, check_contrast=False)
    print(f"wrote {out} ({img.shape[1]}x{img.shape[0]}), {len(peaks.data)} peaks")
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
