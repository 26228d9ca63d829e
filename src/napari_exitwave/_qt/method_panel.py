"""The "Method" box: network or traditional method, the model list and card, the aberrations.

A view of a :class:`napari_exitwave._session.ReconstructionSession`: the list shows the
session's cards and ticks, ticking writes to the session, and the session's
``models_changed`` signal refreshes the list.
"""

from __future__ import annotations

from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import (
    QAbstractItemView, QComboBox, QDoubleSpinBox, QFileDialog, QFormLayout, QGroupBox, QLabel,
    QLineEdit, QListWidget, QListWidgetItem, QPushButton,
)

from .._session import METHODS

DEVICES = (("auto", "auto (CUDA if it works)"), ("cpu", "CPU"), ("cuda", "CUDA"))


class MethodPanel(QGroupBox):
    """Method, models (ticked ones run, several of a kind give an uncertainty layer), device,
    and the defocus / Cs / focal spread the traditional methods need."""

    changed = Signal()
    model_error = Signal(str)

    def __init__(self, session, parent=None):
        super().__init__("Method", parent)
        self.session = session
        form = QFormLayout(self)
        self.method_combo = QComboBox()
        for key, text in METHODS.items():
            self.method_combo.addItem(text, key)
        form.addRow("Method", self.method_combo)
        self.model_list = QListWidget()
        self.model_list.setSelectionMode(QAbstractItemView.SingleSelection)
        self.model_list.setMinimumHeight(96)  # the five shipped networks without scrolling
        self.model_list.setMaximumHeight(120)
        self.model_list.setToolTip("Tick one model, or several of the same kind to see their "
                                   "disagreement as an uncertainty layer")
        form.addRow("Models", self.model_list)
        self.device_combo = QComboBox()
        for key, text in DEVICES:
            self.device_combo.addItem(text, key)
        self.device_combo.setToolTip("ONNX Runtime device; the one that actually ran is shown "
                                     "after the run")
        form.addRow("Device", self.device_combo)
        self.onnx_button = QPushButton("Add ONNX file…")
        form.addRow(self.onnx_button)
        self.card_label = QLabel()
        self.card_label.setWordWrap(True)
        self.card_label.setTextFormat(Qt.RichText)
        form.addRow(self.card_label)
        self._network_rows = [self.model_list, self.onnx_button, self.card_label,
                              self.device_combo]
        self._network_rows += [form.labelForField(w) for w in (self.model_list,
                                                               self.device_combo)]
        self.trad_box = self._traditional_box()
        form.addRow(self.trad_box)

        self.method_combo.currentIndexChanged.connect(self._on_method_changed)
        self.model_list.itemChanged.connect(self._on_item_changed)
        self.model_list.currentItemChanged.connect(self.show_card)
        self.onnx_button.clicked.connect(self._browse_onnx)
        self.defocus_edit.textChanged.connect(self.changed.emit)
        session.models_changed.connect(self.refresh_models)
        self.refresh_models()
        self._on_method_changed()

    def _traditional_box(self) -> QGroupBox:
        box = QGroupBox("Aberrations (Gerchberg-Saxton / Wiener)")
        form = QFormLayout(box)
        self.defocus_edit = QLineEdit()
        self.defocus_edit.setPlaceholderText("e.g. -50, 0, 50")
        self.defocus_edit.setToolTip("One defocus per image in Å, abTEM convention "
                                     "(defocus = -C10; positive = underfocus)")
        form.addRow("Defocus (Å)", self.defocus_edit)
        self.cs_spin = QDoubleSpinBox()
        self.cs_spin.setRange(-5000, 5000)
        self.cs_spin.setDecimals(2)
        self.cs_spin.setSuffix(" µm")
        self.cs_spin.setToolTip("Spherical aberration C30 in µm")
        form.addRow("Cs", self.cs_spin)
        self.focal_spread_spin = QDoubleSpinBox()
        self.focal_spread_spin.setRange(0, 500)
        self.focal_spread_spin.setDecimals(1)
        self.focal_spread_spin.setSuffix(" Å")
        form.addRow("Focal spread", self.focal_spread_spin)
        return box

    # -- the model list: a view of the session ----------------------------------------------
    def refresh_models(self) -> None:
        """Show the session's cards and ticks (the current item follows the last ticked)."""
        s = self.session
        self.model_list.blockSignals(True)
        names = [self.model_list.item(i).data(Qt.UserRole) for i in range(self.model_list.count())]
        for name in s.cards:
            if name not in names:
                item = QListWidgetItem(name)
                item.setData(Qt.UserRole, name)
                item.setFlags(item.flags() | Qt.ItemIsUserCheckable)
                self.model_list.addItem(item)
        for i in range(self.model_list.count()):
            item = self.model_list.item(i)
            item.setCheckState(Qt.Checked if item.data(Qt.UserRole) in s.ticked else Qt.Unchecked)
        if s.ticked:
            item = self._item(s.ticked[-1])
            self.model_list.setCurrentItem(item)
            self.model_list.scrollToItem(item)
        self.model_list.blockSignals(False)
        self.show_card()
        self.changed.emit()

    def _item(self, name):
        for i in range(self.model_list.count()):
            if self.model_list.item(i).data(Qt.UserRole) == name:
                return self.model_list.item(i)
        return None

    def _on_item_changed(self, item) -> None:
        ticked = [self.model_list.item(i).data(Qt.UserRole) for i in range(self.model_list.count())
                  if self.model_list.item(i).checkState() == Qt.Checked]
        self.session.set_ticked(ticked)

    def add_model(self, model, checked: bool = True):
        """Add a model (card, name or path) to the session; its card, or None with the reason
        sent as ``model_error`` (a file that is not a usable network is refused)."""
        from ..errors import ExitWaveError

        try:
            name = self.session.add_model(model, tick=checked)
        except ExitWaveError as e:
            self.model_error.emit(str(e))
            return None
        return self.session.cards[name]

    def _browse_onnx(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "ONNX network", "", "ONNX (*.onnx)")
        if path:
            self.add_model(path)

    def show_card(self, item=None, _previous=None) -> None:
        item = item or self.model_list.currentItem()
        if item is None:
            self.card_label.setText("<i>no model: install one or add an ONNX file</i>")
            return
        card = self.session.cards[item.data(Qt.UserRole)]
        self.card_label.setText(card_html(card))
        self.card_label.setToolTip(card.description)

    # -- method and the traditional parameters ----------------------------------------------
    def _on_method_changed(self, *_) -> None:
        network = self.method() == "network"
        for w in self._network_rows:
            w.setVisible(network)
        self.trad_box.setVisible(not network)
        self.show_card()
        self.changed.emit()

    def method(self) -> str:
        return self.method_combo.currentData()

    def set_method(self, key: str) -> None:
        self.method_combo.setCurrentIndex(list(METHODS).index(key))

    def providers(self) -> str:
        return self.device_combo.currentData()

    def set_defocus(self, values) -> None:
        if values:
            self.defocus_edit.setText(", ".join(f"{v:g}" for v in values))

    def defocus_values(self) -> list[float] | None:
        """The defocus values typed (A), or None when empty or not numbers."""
        text = self.defocus_edit.text().replace(";", ",").replace(" ", ",")
        vals = [t for t in text.split(",") if t.strip()]
        if not vals:
            return None
        try:
            return [float(v) for v in vals]
        except ValueError:
            return None


def _esc(text) -> str:
    import html

    return html.escape(str(text)).replace("\n", "<br>")


def card_html(card) -> str:
    """Short HTML description of a model card for the widget.

    One fact per line, each short enough not to wrap in a docked widget (a word-wrapped rich-text
    QLabel in a form can be given too little height and clip its last line); the whole
    description is the label's tooltip.
    """
    desc = card.description.split(";")[0].split(",")[0]
    desc = desc if len(desc) <= 50 else desc[:47] + "…"
    rows = [f"<b>{_esc(card.name)}</b>"] + ([_esc(desc)] if desc else [])
    s = f"{card.sampling:.4g} Å/px" if card.sampling else "pixel size unknown"
    step = f", step {card.defocus_step:g} Å" if card.defocus_step else ""
    rows.append(f"{card.n_images} images, {s}{step}, {card.energy / 1e3:g} keV")
    m = card.metrics if isinstance(card.metrics, dict) else {}
    parts = []
    for key, label, fmt in (("rmse_imag", "RMSE im", ".3g"), ("rmse_real", "re", ".3g"),
                            ("peak_error_pm", "peaks", ".0f")):
        v = m.get(key)
        if isinstance(v, (int, float)):
            parts.append(f"{label} {v:{fmt}}" + (" pm" if key == "peak_error_pm" else ""))
    if parts:
        rows.append("validation: " + ", ".join(parts))
    return "<br>".join(rows)
