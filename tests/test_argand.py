"""Argand plot and column classification."""

import numpy as np
import pytest

from napari_exitwave.argand import argand_figure, classify, save_argand_png


def two_clusters(n=40, seed=0):
    rng = np.random.default_rng(seed)
    a = 0.95 + 0.25j + 0.02 * (rng.normal(size=n) + 1j * rng.normal(size=n))
    b = 0.40 + 0.80j + 0.02 * (rng.normal(size=n) + 1j * rng.normal(size=n))
    v = np.concatenate([a, b])
    truth = np.r_[np.zeros(n, int), np.ones(n, int)]
    perm = rng.permutation(2 * n)
    return v[perm], truth[perm]


def test_classify_separates_clusters_ordered_by_distance_from_vacuum():
    v, truth = two_clusters()
    lab = classify(v, 2)
    # class 0 is the cluster nearest vacuum (1+0j), i.e. exactly the truth labelling
    np.testing.assert_array_equal(lab, truth)
    # deterministic
    np.testing.assert_array_equal(classify(v, 2), lab)


def test_classify_three_classes_like_mos2():
    rng = np.random.default_rng(3)
    centres = np.array([0.97 + 0.15j, 0.85 + 0.35j, 0.5 + 0.75j])  # S, S2, Mo
    truth = np.repeat([0, 1, 2], 30)
    v = centres[truth] + 0.015 * (rng.normal(size=90) + 1j * rng.normal(size=90))
    np.testing.assert_array_equal(classify(v, 3), truth)


def test_classify_validation():
    v, _ = two_clusters(5)
    assert np.all(classify(v, 1) == 0)
    with pytest.raises(ValueError, match="exceeds"):
        classify(v[:2], 3)
    with pytest.raises(ValueError, match="NaN"):
        classify(np.array([1, np.nan, 2j]), 2)


def test_argand_figure_axes_and_vacuum():
    v, truth = two_clusters()
    fig = argand_figure(v, labels=np.where(truth == 0, "S2", "Mo"), selected=[0, 1])
    ax = fig.axes[0]
    assert "Re" in ax.get_xlabel() and "Im" in ax.get_ylabel()
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert {"Mo", "S2", "selected", "vacuum (1+0j)"} <= set(legend)
    # the vacuum marker sits at 1+0j
    vac = [ln for ln in ax.get_lines() if ln.get_label() == "vacuum (1+0j)"][0]
    assert vac.get_xdata()[0] == 1 and vac.get_ydata()[0] == 0
    # every value is plotted at (Re, Im)
    pts = np.concatenate([c.get_offsets() for c in ax.collections
                          if c.get_label() in ("Mo", "S2")])
    assert len(pts) == len(v)
    assert set(map(tuple, np.round(pts, 9))) == set(zip(np.round(v.real, 9), np.round(v.imag, 9)))


def test_argand_figure_draws_into_given_axes():
    from matplotlib.figure import Figure

    fig = Figure()
    ax = fig.add_subplot(111)
    assert argand_figure(np.array([1 + 0.1j]), ax=ax) is fig
    argand_figure(np.array([1 + 0.1j, 0.5j]), ax=ax)  # redraw clears
    assert sum(len(c.get_offsets()) for c in ax.collections) == 2


def test_save_png(tmp_path):
    v, truth = two_clusters()
    p = save_argand_png(v, tmp_path / "a.png", labels=truth, title="test")
    data = open(p, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
