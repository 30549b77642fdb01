"""Filters of the grid: decision and status, score range, file name, CelebA attribute ranges, FairFace top labels.

Writes into the ViewState it is given and emits ``filterChanged``; the window refilters. Every filter is an AND;
several statuses match an image that has any of them.
"""

from __future__ import annotations

from PySide6.QtCore import QTimer, Signal
from PySide6.QtWidgets import QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QGridLayout, QGroupBox, \
    QHBoxLayout, QLabel, QLineEdit, QPushButton, QSpinBox, QToolButton, QVBoxLayout, QWidget

from ..engine.labels import CELEBA_ATTRIBUTES, FAIRFACE_HEADS
from ..gui.state import STATUS_TEXT, STATUSES, ViewState

ANY = "Any"
HEAD_TEXT = {"race7": "Race (7)", "race4": "Race (4)", "gender": "Gender", "age": "Age"}


class _CelebaRow(QWidget):
    changed = Signal()
    removed = Signal(object)

    def __init__(self, attr: str, lo: float, hi: float, parent=None):
        super().__init__(parent)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        self.attr = QComboBox()
        for a in CELEBA_ATTRIBUTES:
            self.attr.addItem(a.replace("_", " "), a)
        self.attr.setCurrentIndex(max(0, CELEBA_ATTRIBUTES.index(attr) if attr in CELEBA_ATTRIBUTES else 0))
        self.lo = _prob_spin(lo)
        self.hi = _prob_spin(hi)
        rm = QToolButton()
        rm.setText("✕")
        rm.setToolTip("Remove this condition")
        rm.clicked.connect(lambda: self.removed.emit(self))
        lay.addWidget(self.attr, 1)
        lay.addWidget(self.lo)
        lay.addWidget(QLabel("–"))
        lay.addWidget(self.hi)
        lay.addWidget(rm)
        for w in (self.lo, self.hi):
            w.valueChanged.connect(self.changed)
        self.attr.currentIndexChanged.connect(self.changed)

    def value(self) -> tuple[str, tuple[float, float]]:
        lo, hi = self.lo.value(), self.hi.value()
        return self.attr.currentData(), (min(lo, hi), max(lo, hi))


def _prob_spin(v: float) -> QDoubleSpinBox:
    s = QDoubleSpinBox()
    s.setRange(0.0, 1.0)
    s.setSingleStep(0.05)
    s.setDecimals(2)
    s.setValue(v)
    s.setToolTip("Probability on the image's largest face")
    return s


class FilterPanel(QWidget):
    filterChanged = Signal()

    def __init__(self, view: ViewState, parent=None):
        super().__init__(parent)
        self.view = view
        self._loading = False
        lay = QVBoxLayout(self)
        lay.setContentsMargins(6, 6, 6, 6)

        status = QGroupBox("Show")
        grid = QGridLayout(status)
        self.status_boxes: dict[str, QCheckBox] = {}
        for i, s in enumerate(STATUSES):
            cb = QCheckBox(STATUS_TEXT[s])
            cb.toggled.connect(self._changed)
            self.status_boxes[s] = cb
            grid.addWidget(cb, i // 2, i % 2)
        note = QLabel("None ticked: all images.")
        note.setEnabled(False)
        grid.addWidget(note, (len(STATUSES) + 1) // 2, 0, 1, 2)
        lay.addWidget(status)

        score = QGroupBox("MagFace score (norm)")
        form = QFormLayout(score)
        self.score_min = _score_spin()
        self.score_max = _score_spin()
        form.addRow("From", self.score_min)
        form.addRow("To", self.score_max)
        self.score_min.valueChanged.connect(self._changed)
        self.score_max.valueChanged.connect(self._changed)
        lay.addWidget(score)

        name = QGroupBox("File")
        nl = QVBoxLayout(name)
        self.path = QLineEdit()
        self.path.setPlaceholderText("path contains…")
        self.path.setClearButtonEnabled(True)
        self._text_timer = QTimer(self, singleShot=True, interval=250)
        self._text_timer.timeout.connect(self._changed)
        self.path.textChanged.connect(lambda _t: self._text_timer.start())
        nl.addWidget(self.path)
        lay.addWidget(name)

        ff = QGroupBox("FairFace (top label)")
        ffl = QFormLayout(ff)
        self.ff_boxes: dict[str, QComboBox] = {}
        for head, labels in FAIRFACE_HEADS.items():
            c = QComboBox()
            c.addItem(ANY, None)
            for lab in labels:
                c.addItem(lab.replace("_", " "), lab)
            # The Demographics panel's two extra buckets, so a click on them filters the grid too.
            c.addItem("uncertain (below the confidence)", "uncertain")
            c.addItem("unknown (no FairFace result)", "unknown")
            c.currentIndexChanged.connect(self._changed)
            self.ff_boxes[head] = c
            ffl.addRow(HEAD_TEXT[head], c)
        self.ff_conf = QSpinBox()
        self.ff_conf.setRange(0, 100)
        self.ff_conf.setSingleStep(5)
        self.ff_conf.setSuffix(" %")
        self.ff_conf.setToolTip("A label counts only when its probability is at least this; below it the image is "
                                "'uncertain' (the Demographics panel's setting is copied here on a click there).")
        self.ff_conf.valueChanged.connect(self._changed)
        ffl.addRow("Min. confidence", self.ff_conf)
        lay.addWidget(ff)

        cel = QGroupBox("CelebA attributes (probability)")
        self.cel_layout = QVBoxLayout(cel)
        self.cel_rows: list[_CelebaRow] = []
        add = QPushButton("Add condition")
        add.clicked.connect(lambda: self.add_celeba_condition("Smiling", 0.5, 1.0))
        self.cel_layout.addWidget(add)
        lay.addWidget(cel)

        self.clear_btn = QPushButton("Clear all filters")
        self.clear_btn.clicked.connect(self.clear)
        lay.addWidget(self.clear_btn)
        lay.addStretch(1)
        self.load(view)

    # ---- view state <-> widgets --------------------------------------------------------------------------------------
    def load(self, view: ViewState) -> None:
        self.view = view
        self._loading = True
        try:
            for s, cb in self.status_boxes.items():
                cb.setChecked(s in view.status)
            _set_spin(self.score_min, view.score_min)
            _set_spin(self.score_max, view.score_max)
            self.path.setText(view.path_contains)
            for head, c in self.ff_boxes.items():
                i = c.findData(view.fairface.get(head))
                c.setCurrentIndex(max(0, i))
            self.ff_conf.setValue(round(view.fairface_min_conf * 100))
            for row in list(self.cel_rows):
                self._remove_row(row, emit=False)
            for attr, (lo, hi) in view.celeba.items():
                self.add_celeba_condition(attr, lo, hi, emit=False)
        finally:
            self._loading = False

    def add_celeba_condition(self, attr: str, lo: float, hi: float, emit: bool = True) -> None:
        row = _CelebaRow(attr, lo, hi)
        row.changed.connect(self._changed)
        row.removed.connect(self._remove_row)
        self.cel_layout.insertWidget(len(self.cel_rows), row)
        self.cel_rows.append(row)
        if emit:
            self._changed()

    def _remove_row(self, row, emit: bool = True) -> None:
        if row in self.cel_rows:
            self.cel_rows.remove(row)
            row.setParent(None)
            row.deleteLater()
            if emit:
                self._changed()

    def set_status(self, statuses: set[str]) -> None:
        """Programmatic status filter (e.g. a click in the counts)."""
        self._loading = True
        for s, cb in self.status_boxes.items():
            cb.setChecked(s in statuses)
        self._loading = False
        self._changed()

    def clear(self) -> None:
        self.view.clear_filter()
        self.load(self.view)
        self.filterChanged.emit()

    def _changed(self, *_args) -> None:
        if self._loading:
            return
        v = self.view
        v.status = {s for s, cb in self.status_boxes.items() if cb.isChecked()}
        v.score_min = _spin_value(self.score_min)
        v.score_max = _spin_value(self.score_max)
        v.path_contains = self.path.text().strip()
        v.fairface = {h: c.currentData() for h, c in self.ff_boxes.items() if c.currentData()}
        v.fairface_min_conf = self.ff_conf.value() / 100.0
        v.celeba = dict(row.value() for row in self.cel_rows)
        self.filterChanged.emit()


def _score_spin() -> QDoubleSpinBox:
    s = QDoubleSpinBox()
    s.setRange(-1.0, 100.0)
    s.setDecimals(1)
    s.setSingleStep(0.5)
    s.setSpecialValueText("any")  # the minimum (-1) means "no bound"
    s.setValue(-1.0)
    s.setKeyboardTracking(False)
    return s


def _spin_value(s: QDoubleSpinBox) -> float | None:
    return None if s.value() <= s.minimum() else float(s.value())


def _set_spin(s: QDoubleSpinBox, v: float | None) -> None:
    s.setValue(s.minimum() if v is None else v)

