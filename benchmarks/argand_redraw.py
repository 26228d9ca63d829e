"""Time the Argand plot dock with many peaks: a selection change and a live update.

Reproduce (offscreen Qt, no display needed)::

    QT_QPA_PLATFORM=offscreen python benchmarks/argand_redraw.py --peaks 2000 --repeat 20

Each operation is timed until the Qt event loop is idle again (``processEvents``: a pending
``draw_idle`` has been drawn, a blit painted), i.e. until the screen shows the result, median
and maximum over ``--repeat`` runs; ``--full-draw`` adds a forced ``canvas.draw()`` after each
(the cost of a complete redraw of the figure, whatever the widget itself does):

- **select**: ``layer.selected_data`` changes (a click or a lasso in the viewer or the plot),
- **live**: a new peaks layer (built beforehand) is added to the viewer, which the plot
  follows (what live mode does for every series),
- **auto_classify**: k-means labels written to the layer's ``label`` feature.

It uses only the widget's public API (``ArgandPlotWidget(viewer)``, ``auto_classify``), so
the same script times every version of the widget.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import numpy as np


def _peaks(n, rng, name):
    from napari.layers import Points

    values = np.concatenate([0.95 + 0.25j + 0.02 * rng.normal(size=n // 2),
                             0.55 + 0.70j + 0.02 * rng.normal(size=n - n // 2)])
    features = {"real": values.real, "imag": values.imag, "amplitude": np.abs(values),
                "phase": np.angle(values), "label": np.array([""] * n, dtype=object)}
    return Points(rng.uniform(0, 1000, (n, 2)), features=features, name=name)


def run(n_peaks: int = 2000, repeat: int = 20, seed: int = 0, full_draw: bool = False) -> dict:
    from napari.components import ViewerModel
    from qtpy.QtWidgets import QApplication

    from napari_exitwave._qt.argand_plot import ArgandPlotWidget

    app = QApplication.instance() or QApplication([])
    rng = np.random.default_rng(seed)
    viewer = ViewerModel()
    layer = _peaks(n_peaks, rng, "peaks 0")
    viewer.layers.append(layer)
    widget = ArgandPlotWidget(viewer)
    widget.resize(420, 520)
    widget.show()
    app.processEvents()
    widget.canvas.draw()

    def timed(fn):
        t = time.perf_counter()
        fn()
        if full_draw:
            widget.canvas.draw()
        app.processEvents()
        return time.perf_counter() - t

    select, live, classify = [], [], []
    for k in range(repeat):
        idx = set(rng.choice(n_peaks, size=50, replace=False).tolist())
        select.append(timed(lambda: setattr(layer, "selected_data", idx)))
    for k in range(repeat):
        new = _peaks(n_peaks, rng, f"peaks {k + 1}")
        live.append(timed(lambda: viewer.layers.append(new)))  # the widget follows it
        viewer.layers.remove(layer)
        layer = new
    for k in range(max(3, repeat // 4)):
        classify.append(timed(lambda: widget.auto_classify(3 if k % 2 else 2)))
    widget.close()

    def stats(ts):
        return {"median_ms": round(1e3 * statistics.median(ts), 1),
                "max_ms": round(1e3 * max(ts), 1)}

    return {"n_peaks": n_peaks, "repeat": repeat, "full_draw": full_draw, "select": stats(select),
            "live_new_layer": stats(live), "auto_classify": stats(classify),
            "python": platform.python_version()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--peaks", type=int, default=2000)
    p.add_argument("--repeat", type=int, default=20)
    p.add_argument("--full-draw", action="store_true",
                   help="force a complete canvas.draw() after every operation")
    p.add_argument("--json", help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    res = run(args.peaks, args.repeat, full_draw=args.full_draw)
    print(json.dumps(res, indent=2))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=2)


if __name__ == "__main__":
    main()
