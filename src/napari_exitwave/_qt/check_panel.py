"""The physics check under the result: the microscope estimate as a short table (with the
aberration fit's values beside it when the fit ran) and the reduced chi-square of the physics
residual (the residual images are a layer).

A thin view of :class:`napari_exitwave._session.RunSummary` (``estimate_rows``,
``estimate_model``, ``fit_values``, ``check_text``); hidden until a run brings a check.

The cells keep to the value and its unit so the table fits a dock: a note in parentheses
(``(not determined)``, ``(noise spectrum)``) goes into the cell's tooltip, and a value the
series does not determine is greyed.
"""

from __future__ import annotations

import re

from qtpy.QtGui import QBrush, QColor
from qtpy.QtWidgets import (
    QAbstractItemView, QLabel, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget,
)

__all__ = ["CheckPanel", "split_note"]

_NOTE = re.compile(r"^(.*?)\s*\(([^()]*)\)\s*$")


def split_note(text: str) -> tuple[str, str]:
    """``"0.6 A (not determined)"`` -> ``("0.6 A", "not determined")``; no note: ``(text, "")``.

    >>> split_note("0.6 A (not determined)")
    ('0.6 A', 'not determined')
    >>> split_note("-18.1 A ± 13")
    ('-18.1 A ± 13', '')
    """
    m = _NOTE.match(str(text))
    if not m or not m.group(1):
        return str(text), ""
    return m.group(1), m.group(2)


class CheckPanel(QWidget):
    """Microscope estimate table + physics residual line."""

    def __init__(self, parent=None):
        super().__init__(parent)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        self.residual_label = QLabel("")
        self.residual_label.setWordWrap(True)
        self.estimate_label = QLabel("")
        self.table = QTableWidget(0, 3)
        self.table.setHorizontalHeaderLabels(["parameter", "estimate", "training range"])
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.horizontalHeader().setStretchLastSection(True)
        for w in (self.residual_label, self.estimate_label, self.table):
            lay.addWidget(w)
        self.clear()

    def clear(self) -> None:
        self.residual_label.setText("")
        self.estimate_label.setText("")
        self.table.setRowCount(0)
        self.table.setVisible(False)
        self.setVisible(False)

    def show_summary(self, summary) -> None:
        """Fill from a :class:`~napari_exitwave._session.RunSummary` (or clear)."""
        self.clear()
        if summary is None:
            return
        rows = list(getattr(summary, "estimate_rows", []) or [])
        fitted = dict(getattr(summary, "fit_values", {}) or {})
        headers = ["parameter", "estimate", "training range"]
        if fitted:  # the fit against the images with the exit wave held fixed
            headers.insert(2, "fitted")
            rows = [(r[0], r[1], fitted.get(r[0], ""), *r[2:]) for r in rows]
        self.table.setColumnCount(len(headers))
        self.table.setHorizontalHeaderLabels(headers)
        self.residual_label.setText(getattr(summary, "check_text", "") or "")
        if rows:
            self.estimate_label.setText(f"microscope estimate ({summary.estimate_model}):")
            self.table.setRowCount(len(rows))
            grey = QBrush(QColor(128, 128, 128))
            for i, row in enumerate(rows):
                for j, text in enumerate(row):
                    value, note = split_note(text) if j > 0 else (str(text), "")
                    item = QTableWidgetItem(value)
                    if note:
                        item.setToolTip(f"{text}")
                        if "not determined" in note:
                            item.setForeground(grey)
                            item.setToolTip(f"{value}: not determined (on validation series the "
                                            "estimator does little better than the middle of "
                                            "the training range)")
                    self.table.setItem(i, j, item)
            self.table.resizeColumnsToContents()
            self.table.setFixedHeight(self.table.horizontalHeader().height()
                                      + sum(self.table.rowHeight(i) for i in range(len(rows)))
                                      + 4)
            self.table.setVisible(True)
        self.setVisible(bool(rows) or bool(self.residual_label.text()))
