"""The physics check under the result: the microscope estimate as a short table (with the
aberration fit's values beside it when the fit ran) and the reduced chi-square of the physics
residual (the residual images are a layer).

A thin view of :class:`napari_exitwave._session.RunSummary` (``estimate_rows``,
``estimate_model``, ``fit_values``, ``check_text``); hidden until a run brings a check.
"""

from __future__ import annotations

from qtpy.QtWidgets import (
    QAbstractItemView, QLabel, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget,
)

__all__ = ["CheckPanel"]


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
            for i, row in enumerate(rows):
                for j, text in enumerate(row):
                    self.table.setItem(i, j, QTableWidgetItem(str(text)))
            self.table.resizeColumnsToContents()
            self.table.setFixedHeight(self.table.horizontalHeader().height()
                                      + sum(self.table.rowHeight(i) for i in range(len(rows)))
                                      + 4)
            self.table.setVisible(True)
        self.setVisible(bool(rows) or bool(self.residual_label.text()))
