"""Argand plot (complex plane) of exit-wave values at atomic columns, and column classes.

Pure matplotlib (object API, no pyplot state, no Qt): the same figure is saved by the CLI and
drawn on a Qt canvas by the widget. In an Argand plot of an exit wave vacuum sits at ``1 + 0j``
and each column type (e.g. Mo, S2, single S in MoS2) forms its own cluster. (In the bundled
50 keV MoS2 sample, Mo and S2 columns lie about equally far from vacuum, |psi - 1| ~ 0.69, and
differ mainly in the real part, 1.02 vs 0.99; single S sits at ~1.09 + 0.31j.)

    >>> import numpy as np
    >>> from napari_exitwave.argand import classify
    >>> v = np.array([0.9 + 0.3j, 0.91 + 0.31j, 0.5 + 0.8j, 0.52 + 0.79j])
    >>> classify(v, 2).tolist()
    [0, 0, 1, 1]
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

__all__ = ["argand_figure", "save_argand_png", "classify", "VACUUM", "class_colors",
           "style_axes", "selection_mask", "SELECTED_STYLE", "POINT_STYLE"]

VACUUM = 1 + 0j
"""The exit wave of vacuum."""

_CYCLE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
          "#17becf", "#bcbd22", "#7f7f7f"]


POINT_STYLE = {"s": 14, "alpha": 0.8, "linewidths": 0}
"""Matplotlib ``scatter`` style of the values (the CLI's PNG and the widget alike)."""
SELECTED_STYLE = {"s": 40, "facecolors": "none", "edgecolors": "k", "linewidths": 1.2}
"""Style of the ring drawn around selected values."""


def style_axes(ax) -> None:
    """The fixed parts of an Argand plot: vacuum marked at ``1 + 0j``, the axes through it,
    labels, equal aspect."""
    ax.plot([VACUUM.real], [VACUUM.imag], marker="+", color="k", markersize=12, mew=2,
            linestyle="none", label="vacuum (1+0j)")
    ax.axhline(0, color="0.8", lw=0.8, zorder=0)
    ax.axvline(1, color="0.8", lw=0.8, zorder=0)
    ax.set_xlabel("Re ψ")
    ax.set_ylabel("Im ψ")
    ax.set_aspect("equal", adjustable="datalim")


def selection_mask(selected, n: int) -> np.ndarray:
    """A boolean mask of ``n`` values from a mask or a sequence of indices (or None)."""
    sel = np.zeros(n, bool)
    if selected is not None:
        selected = np.asarray(selected)
        if selected.dtype == bool and selected.size == n:
            sel = selected.copy()
        elif selected.size:
            sel[np.asarray(selected, dtype=int)] = True
    return sel


def class_colors(labels: Sequence) -> dict:
    """A stable colour per distinct label (sorted order), as ``{label: "#rrggbb"}``."""
    uniq = sorted({str(v) for v in labels}, key=_label_key)
    return {lab: _CYCLE[i % len(_CYCLE)] for i, lab in enumerate(uniq)}


def _label_key(s: str):
    # "" (unlabelled) first, then numbers in numeric order, then text.
    if s == "":
        return (0, 0.0, "")
    try:
        return (1, float(s), "")
    except ValueError:
        return (2, 0.0, s)


def argand_figure(values, labels=None, ax=None, *, title=None, selected=None):
    """Draw complex values in the complex plane.

    Parameters
    ----------
    values : (n,) complex array
        E.g. ``table["real"] + 1j * table["imag"]`` from :func:`napari_exitwave.peaks.peak_table`.
    labels : (n,) sequence, optional
        A class per value; each class gets its own colour and a legend entry.
    ax : matplotlib Axes, optional
        Draw into this axes (cleared first); a new :class:`matplotlib.figure.Figure` otherwise.
    title : str, optional
    selected : (n,) bool array or index sequence, optional
        Values drawn highlighted (larger, black edge).

    Returns
    -------
    matplotlib.figure.Figure
        The figure holding the axes; the axes is ``fig.axes[0]`` (or ``ax``).
    """
    values = np.asarray(values).ravel()
    if ax is None:
        from matplotlib.figure import Figure

        fig = Figure(figsize=(4.5, 4.5), dpi=100)
        ax = fig.add_subplot(111)
    else:
        fig = ax.figure
        ax.clear()
    re, im = values.real.astype(float), values.imag.astype(float)
    sel = selection_mask(selected, values.size)
    if labels is None:
        ax.scatter(re, im, c=_CYCLE[0], label="columns", **POINT_STYLE)
    else:
        labels = np.array([str(v) for v in np.asarray(labels, dtype=object).ravel()])
        if labels.size != values.size:
            raise ValueError(f"labels has {labels.size} entries for {values.size} values")
        for lab, col in class_colors(labels).items():
            m = labels == lab
            ax.scatter(re[m], im[m], c=col, label=lab if lab else "unlabelled", **POINT_STYLE)
    if sel.any():
        ax.scatter(re[sel], im[sel], label="selected", **SELECTED_STYLE)
    style_axes(ax)
    if title:
        ax.set_title(title)
    ax.legend(loc="best", fontsize="small", framealpha=0.7)
    return fig


def save_argand_png(values, path, labels=None, title=None, dpi=150) -> str:
    """Save :func:`argand_figure` of ``values`` as a PNG; returns the path."""
    fig = argand_figure(values, labels=labels, title=title)
    fig.tight_layout()
    path = os.fspath(path)
    fig.savefig(path, dpi=dpi)
    return path


def classify(values, n_classes: int, *, seed: int = 0) -> np.ndarray:
    """Split complex values into ``n_classes`` clusters (k-means on (Re, Im)).

    Deterministic: k-means++ seeded with ``seed``, best of 10 starts; classes are numbered
    by increasing distance of their centre from vacuum (``|centre - 1|``).

    Parameters
    ----------
    values : (n,) complex array
    n_classes : int, 1 <= n_classes <= n

    Returns
    -------
    (n,) int array of class indices.
    """
    values = np.asarray(values).ravel()
    n = values.size
    if int(n_classes) != n_classes or n_classes < 1:
        raise ValueError(f"n_classes must be a positive integer, got {n_classes}")
    n_classes = int(n_classes)
    if n_classes > n:
        raise ValueError(f"n_classes ({n_classes}) exceeds the number of values ({n})")
    if not np.all(np.isfinite(values)):
        raise ValueError("values contain NaN or inf; drop those peaks first")
    if n_classes == 1:
        return np.zeros(n, dtype=int)
    from scipy.cluster.vq import kmeans2

    pts = np.stack([values.real, values.imag], axis=1).astype(np.float64)
    best = None
    rng = np.random.default_rng(seed)
    for _ in range(10):
        centres, lab = kmeans2(pts, n_classes, minit="++", seed=rng, iter=50)
        inertia = float(np.sum((pts - centres[lab]) ** 2))
        if len(np.unique(lab)) == n_classes and (best is None or inertia < best[0] - 1e-15):
            best = (inertia, centres, lab)
    if best is None:  # degenerate (duplicate values): fall back to the last run
        best = (0.0, centres, lab)
    _, centres, lab = best
    dist = np.abs(centres[:, 0] + 1j * centres[:, 1] - VACUUM)
    rank = np.empty(n_classes, dtype=int)
    rank[np.argsort(dist, kind="stable")] = np.arange(n_classes)
    return rank[lab]
