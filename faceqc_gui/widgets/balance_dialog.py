"""The balanced-selection dialog: a demographic target in, the best set that meets it out (as a diff to apply).

The dialog only collects the target and shows ``engine.balance.propose``'s answer; ``prepare()`` is the pure seam
(dialog state -> Candidates/Target -> Proposal). The caller applies ``changes()`` to the project as one undoable
action. docs/BALANCE.md explains the rules (rounding, manual decisions, what "lacks" means).
"""

from __future__ import annotations

import math

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QBrush, QColor, QPalette
from PySide6.QtWidgets import (
    QAbstractItemView, QButtonGroup, QCheckBox, QComboBox, QDialog, QDialogButtonBox, QDoubleSpinBox, QGridLayout,
    QGroupBox, QHBoxLayout, QHeaderView, QLabel, QPushButton, QRadioButton, QSpinBox, QTableWidget,
    QTableWidgetItem, QVBoxLayout, QWidget,
)

from ..engine.balance import AttributeConstraint, Proposal, Target, candidates_from_snapshot, group_name, propose
from ..engine.errors import FaceQCError
from ..engine.labels import CELEBA_ATTRIBUTES
from .demographics import HEADS

KINDS = {"uniform": "Uniform (same count in every group)", "shares": "Custom shares", "caps": "Caps per group"}
COLUMNS = ["Group", "Share", "Have", "Accepted now", "Target", "Would accept", "Would reject", "Missing"]
C_GROUP, C_VALUE, C_HAVE, C_NOW, C_TARGET, C_ACCEPT, C_REJECT, C_MISSING = range(len(COLUMNS))
NO_GROUP = "(no group)"
SHORTFALL_COLOUR = QColor(230, 159, 0, 70)  # Okabe-Ito orange, light: marks rows that lack images
EDITABLE_COLOUR = QColor(86, 180, 233, 45)  # Okabe-Ito sky blue, light: the cells the user types into


def display_group(group) -> str:
    # The engine's own spelling, so that the rows match the groups its messages name.
    return group_name(group)


class BalanceDialog(QDialog):
    """Propose the highest-quality set that meets a demographic target, show it as a diff, return it on Apply.

    ``snapshot``: the project's ``Snapshot``; ``threshold``: the current threshold (decides who is accepted now and
    is the default quality floor for images the proposal may add). After ``exec()`` returns Accepted, ``changes()``
    is {image_id: "accept" | "reject"} and ``description()`` a one-line name for the undo stack.
    """

    def __init__(self, snapshot, threshold: float, parent: QWidget | None = None, *,
                 by=("race7", "gender"), min_conf: float = 0.0, auto_update: bool = True, not_manual=()):
        super().__init__(parent)
        self.setWindowTitle("Balanced selection")
        self._snapshot = snapshot
        self._not_manual = frozenset(int(i) for i in not_manual)  # overrides set by an earlier applied proposal
        self._threshold = float(threshold)
        self._auto = auto_update
        self._cands_key = None
        self._cands = None
        self._groups: list = []
        self._values: dict[str, dict] = {"shares": {}, "caps": {}}  # per kind: group -> text typed by the user
        self._proposal: Proposal | None = None
        self._changes: dict[int, str] = {}
        self._filling = False

        # --- groups
        self.race_combo = QComboBox()
        self.race_combo.addItem(HEADS["race7"], "race7")
        self.race_combo.addItem(HEADS["race4"], "race4")
        self.race_combo.addItem("no race", None)
        self.gender_check = QCheckBox("Gender")
        self.age_check = QCheckBox("Age (9 bins)")
        self.conf_spin = QSpinBox()
        self.conf_spin.setRange(0, 100)
        self.conf_spin.setSingleStep(5)
        self.conf_spin.setSuffix(" %")
        self.conf_spin.setToolTip("Images whose top FairFace probability is below this are in no group and are not "
                                  "chosen.")
        self.set_by(by)
        self.conf_spin.setValue(int(round(min(max(float(min_conf), 0.0), 1.0) * 100)))
        g_box = QGroupBox("Groups")
        g_lay = QHBoxLayout(g_box)
        for w in (QLabel("Race:"), self.race_combo, self.gender_check, self.age_check):
            g_lay.addWidget(w)
        g_lay.addSpacing(16)
        g_lay.addWidget(QLabel("Min. confidence:"))
        g_lay.addWidget(self.conf_spin)
        g_lay.addStretch(1)

        # --- target, size, options
        self.kind_buttons = QButtonGroup(self)
        self.kind_radio = {}
        t_box = QGroupBox("Target")
        t_lay = QVBoxLayout(t_box)
        kinds = QHBoxLayout()
        for i, (kind, text) in enumerate(KINDS.items()):
            rb = QRadioButton(text)
            self.kind_radio[kind] = rb
            self.kind_buttons.addButton(rb, i)
            kinds.addWidget(rb)
            kinds.addSpacing(12)
        kinds.addStretch(1)
        t_lay.addLayout(kinds)
        self.kind_radio["uniform"].setChecked(True)
        self.fill_spin = QDoubleSpinBox()
        self.fill_spin.setRange(0, 1e9)
        self.fill_spin.setDecimals(2)
        self.fill_spin.setValue(1.0)
        self.fill_button = QPushButton("Set all groups")
        self.fill_button.setToolTip("Write this value into every group's share or cap.")
        fill = QHBoxLayout()
        fill.addWidget(QLabel("Shares and caps are edited in the table below; value for every group:"))
        fill.addWidget(self.fill_spin)
        fill.addWidget(self.fill_button)
        fill.addStretch(1)
        t_lay.addLayout(fill)

        self.max_radio = QRadioButton("As large as possible")
        self.n_radio = QRadioButton("Exactly")
        self.max_radio.setChecked(True)
        size_group = QButtonGroup(self)
        size_group.addButton(self.max_radio)
        size_group.addButton(self.n_radio)
        self.n_spin = QSpinBox()
        self.n_spin.setRange(0, 1_000_000_000)
        self.n_spin.setGroupSeparatorShown(True)
        self.keep_check = QCheckBox("Keep my manual accepts and rejects")
        self.keep_check.setChecked(True)
        self.keep_check.setToolTip("Manual rejects are never chosen; manual accepts always stay in the set.")
        self.floor_check = QCheckBox(f"Only add images scoring at least the threshold ({self._threshold:g})")
        self.floor_check.setChecked(True)
        s_box = QGroupBox("Size and decisions")
        s_lay = QGridLayout(s_box)
        s_lay.addWidget(self.max_radio, 0, 0)
        size_n = QHBoxLayout()
        size_n.addWidget(self.n_radio)
        size_n.addWidget(self.n_spin)
        size_n.addWidget(QLabel("images"))
        size_n.addStretch(1)
        s_lay.addLayout(size_n, 0, 1)
        s_lay.addWidget(self.keep_check, 1, 0)
        s_lay.addWidget(self.floor_check, 1, 1)

        # --- CelebA constraints
        self.cons_table = QTableWidget(0, 3)
        self.cons_table.setHorizontalHeaderLabels(["CelebA attribute", "At least", "At most"])
        self.cons_table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.cons_table.verticalHeader().setVisible(False)
        self.cons_table.setMaximumHeight(96)
        self.cons_table.verticalHeader().setDefaultSectionSize(self.fontMetrics().height() + 12)
        self.cons_table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.add_cons = QPushButton("Add")
        self.del_cons = QPushButton("Remove")
        c_box = QGroupBox("CelebA attributes within each group (optional; an image has one at p ≥ 0.5)")
        c_lay = QHBoxLayout(c_box)
        c_lay.addWidget(self.cons_table, 1)
        c_btn = QVBoxLayout()
        c_btn.addWidget(self.add_cons)
        c_btn.addWidget(self.del_cons)
        c_btn.addStretch(1)
        c_lay.addLayout(c_btn)

        # --- result
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        for col, tip in ((C_HAVE, "Images that may be in the set: the group's images that can be chosen (above the "
                                  "quality floor if ticked, not rejected by hand) plus its manual accepts."),
                         (C_NOW, "Images of the group accepted now (threshold and manual decisions)."),
                         (C_TARGET, "Images of the group in the proposed set."),
                         (C_ACCEPT, "Rejected now, accepted by the proposal."),
                         (C_REJECT, "Accepted now, rejected by the proposal."),
                         (C_MISSING, "Images the group lacks for the target (nothing is changed then).")):
            self.table.horizontalHeaderItem(col).setToolTip(tip)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setSectionResizeMode(C_GROUP, QHeaderView.ResizeMode.Stretch)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.AllEditTriggers)
        self.table.horizontalHeader().setSectionResizeMode(C_VALUE, QHeaderView.ResizeMode.Interactive)
        self.table.setColumnWidth(C_VALUE, 80)
        self.table.verticalHeader().setDefaultSectionSize(self.fontMetrics().height() + 8)
        self.table.setMinimumHeight(12 * (self.fontMetrics().height() + 8))
        self.message = QLabel()
        self.message.setWordWrap(True)
        self.message.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.buttons = QDialogButtonBox()
        self.apply_button = self.buttons.addButton("Apply", QDialogButtonBox.ButtonRole.AcceptRole)
        self.apply_button.setToolTip("Set the proposed accepts and rejects as manual decisions (one undoable step).")
        self.buttons.addButton(QDialogButtonBox.StandardButton.Cancel)
        self.apply_button.setEnabled(False)

        lay = QVBoxLayout(self)
        lay.addWidget(g_box)
        lay.addWidget(t_box)
        lay.addWidget(s_box)
        lay.addWidget(c_box)
        lay.addWidget(self.table, 1)
        lay.addWidget(self.message)
        lay.addWidget(self.buttons)

        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(250)
        self._timer.timeout.connect(self.refresh)

        self.race_combo.currentIndexChanged.connect(self._by_changed)
        self.gender_check.toggled.connect(self._by_changed)
        self.age_check.toggled.connect(self._by_changed)
        self.conf_spin.valueChanged.connect(self._changed)
        self.kind_buttons.idToggled.connect(self._kind_toggled)
        self.fill_button.clicked.connect(self._fill_all)
        for w in (self.max_radio, self.keep_check, self.floor_check):
            w.toggled.connect(self._changed)
        self.n_spin.valueChanged.connect(self._size_typed)
        self.add_cons.clicked.connect(lambda: self.add_constraint())
        self.del_cons.clicked.connect(self._remove_constraint)
        self.table.itemChanged.connect(self._value_edited)
        self.buttons.accepted.connect(self._apply)
        self.buttons.rejected.connect(self.reject)

        self._rebuild_groups()
        self._kind_toggled()
        if self._cands is not None:
            in_group = self._cands.group >= 0
            self.n_spin.blockSignals(True)
            self.n_spin.setValue(int((self._cands.accepted & in_group).sum()))
            self.n_spin.blockSignals(False)
        self.resize(880, 860)
        self.refresh()

    # ------------------------------------------------------------------------------------------- dialog state

    def by(self) -> tuple[str, ...]:
        race = self.race_combo.currentData()
        return tuple(h for h, on in ((race, race is not None), ("gender", self.gender_check.isChecked()),
                                     ("age", self.age_check.isChecked())) if on)

    def set_by(self, heads) -> None:
        heads = tuple(heads)
        race = next((h for h in heads if h in ("race7", "race4")), None)
        self.race_combo.setCurrentIndex(self.race_combo.findData(race) if race else 2)
        self.gender_check.setChecked("gender" in heads)
        self.age_check.setChecked("age" in heads)

    @property
    def kind(self) -> str:
        return next(k for k, rb in self.kind_radio.items() if rb.isChecked())

    def set_kind(self, kind: str) -> None:
        self.kind_radio[kind].setChecked(True)

    @property
    def min_conf(self) -> float:
        return self.conf_spin.value() / 100.0

    @property
    def keep_overrides(self) -> bool:
        return self.keep_check.isChecked()

    def set_size(self, n: int | None) -> None:
        """None: as large as possible."""
        if n is None:
            self.max_radio.setChecked(True)
        else:
            self.n_spin.setValue(int(n))
            self.n_radio.setChecked(True)

    def size(self) -> int | None:
        return None if self.max_radio.isChecked() else self.n_spin.value()

    def groups(self) -> list:
        """The target groups (label tuples) shown as rows, in order."""
        return list(self._groups)

    def set_group_value(self, group, value) -> None:
        """Type ``value`` into a group's share/cap cell (the current kind's column); "" clears it."""
        row = self._groups.index(tuple(group))
        self.table.item(row, C_VALUE).setText("" if value is None else str(value))

    def add_constraint(self, attribute: str = "Smiling", min_share: float | None = None,
                       max_share: float | None = None) -> None:
        """A row in the CelebA table; shares in 0..1 (None: no bound)."""
        row = self.cons_table.rowCount()
        self.cons_table.insertRow(row)
        combo = QComboBox()
        combo.addItems([a.replace("_", " ") for a in CELEBA_ATTRIBUTES])
        combo.setCurrentIndex(CELEBA_ATTRIBUTES.index(attribute) if attribute in CELEBA_ATTRIBUTES else 0)
        lo, hi = QSpinBox(), QSpinBox()
        for spin, value, default in ((lo, min_share, 0), (hi, max_share, 100)):
            spin.setRange(0, 100)
            spin.setSuffix(" %")
            spin.setValue(default if value is None else int(round(value * 100)))
            spin.valueChanged.connect(self._changed)
        lo.setToolTip("At least this share of every group has the attribute (0 % = no minimum).")
        hi.setToolTip("At most this share of every group has the attribute (100 % = no maximum). "
                      "Equal to the minimum: exactly that share, rounded either way.")
        combo.currentIndexChanged.connect(self._changed)
        self.cons_table.setCellWidget(row, 0, combo)
        self.cons_table.setCellWidget(row, 1, lo)
        self.cons_table.setCellWidget(row, 2, hi)
        self._changed()

    def constraints(self) -> tuple[AttributeConstraint, ...]:
        out = []
        for row in range(self.cons_table.rowCount()):
            attr = CELEBA_ATTRIBUTES[self.cons_table.cellWidget(row, 0).currentIndex()]
            lo = self.cons_table.cellWidget(row, 1).value() / 100
            hi = self.cons_table.cellWidget(row, 2).value() / 100
            if lo > hi:
                raise FaceQCError(f"the minimum share of {attr.replace('_', ' ')} is above its maximum.")
            if lo == hi:
                out.append(AttributeConstraint(attr, share=lo))
            elif lo > 0 or hi < 1:
                out.append(AttributeConstraint(attr, min_share=lo if lo > 0 else None,
                                               max_share=hi if hi < 1 else None))
        return tuple(out)

    def target(self) -> Target:
        kind = self.kind
        cons = self.constraints()
        if kind == "uniform":
            return Target("uniform", constraints=cons)
        values = {}
        for g in self._groups:
            text = str(self._values[kind].get(g, "")).strip()
            if not text:
                continue
            try:
                v = float(text.rstrip("%")) / (100 if text.endswith("%") else 1)
            except ValueError:
                raise FaceQCError(f"the {'share' if kind == 'shares' else 'cap'} of {display_group(g)} is not a "
                                  f"number: {text!r}.") from None
            if not math.isfinite(v) or v < 0:
                raise FaceQCError(f"the {'share' if kind == 'shares' else 'cap'} of {display_group(g)} must be a "
                                  f"number >= 0.")
            if kind == "caps" and v != int(v):
                raise FaceQCError(f"the cap of {display_group(g)} must be a whole number.")
            values[g] = v
        if kind == "shares":
            if not values or sum(values.values()) <= 0:
                raise FaceQCError("give at least one group a share above 0.")
            return Target("shares", shares=values, constraints=cons)
        return Target("caps", caps={g: int(v) for g, v in values.items()}, constraints=cons)

    # ---------------------------------------------------------------------------------------------- the seam

    def candidates(self):
        """The engine's Candidates for the current groups, confidence and quality floor (cached)."""
        by = self.by()
        if not by:
            raise FaceQCError("choose at least one of race, gender or age to group by.")
        min_score = self._threshold if self.floor_check.isChecked() else None
        key = (by, self.min_conf, min_score)
        if key != self._cands_key:
            if self._snapshot is None:
                raise FaceQCError("there is no project data to balance.")
            self._cands = candidates_from_snapshot(self._snapshot, self._threshold, by=by, min_conf=self.min_conf,
                                                   min_score=min_score, not_manual=self._not_manual)
            self._cands_key = key
        return self._cands

    def prepare(self) -> Proposal:
        """Dialog state -> engine Candidates and Target -> ``propose``. Raises FaceQCError for unusable input."""
        cands = self.candidates()
        return propose(cands, self.target(), size=self.size(), keep_overrides=self.keep_overrides)

    def refresh(self) -> Proposal | None:
        """Propose now and show the result (also run, debounced, after every change)."""
        self._timer.stop()
        self._proposal = None
        try:
            if self.by() != self._shown_by:
                self._rebuild_groups()
            prop = self.prepare()
        except (FaceQCError, ValueError) as e:
            self._show_proposal(None)
            self._set_message(str(e)[:1].upper() + str(e)[1:], error=True)
            return None
        self._proposal = prop
        self._show_proposal(prop)
        return prop

    @property
    def proposal(self) -> Proposal | None:
        """The proposal on display (None while settings changed and it is being recomputed, or on an error)."""
        return self._proposal

    def changes(self) -> dict[int, str]:
        """After Apply: image id -> "accept" | "reject" (empty before, or when cancelled)."""
        return dict(self._changes)

    def description(self) -> str:
        acc = sum(1 for v in self._changes.values() if v == "accept")
        return f"Balance by {' × '.join(self.by())}: accept {acc}, reject {len(self._changes) - acc}"

    # --------------------------------------------------------------------------------------------- internals

    _shown_by: tuple = ()

    def _changed(self, *_):
        self._proposal = None
        self.apply_button.setEnabled(False)
        if self._auto:
            self._timer.start()

    def _size_typed(self, *_):
        self.n_radio.setChecked(True)
        self._changed()

    def _by_changed(self, *_):
        try:
            self._rebuild_groups()
        except FaceQCError:
            pass
        self._changed()

    def _kind_toggled(self, *_):
        kind = self.kind
        self.table.setColumnHidden(C_VALUE, kind == "uniform")
        self.fill_spin.setEnabled(kind != "uniform")
        self.fill_button.setEnabled(kind != "uniform")
        if kind == "caps":
            self.fill_spin.setDecimals(0)
        else:
            self.fill_spin.setDecimals(2)
        head = {"shares": "Share", "caps": "Cap"}.get(kind, "")
        self.table.horizontalHeaderItem(C_VALUE).setText(head)
        self.table.horizontalHeaderItem(C_VALUE).setToolTip(
            "Relative weight: 2 means twice as many images as a group with 1; empty = none." if kind == "shares"
            else "At most this many images; empty = no cap.")
        self._fill_value_column()
        self._changed()

    def _fill_all(self):
        v = self.fill_spin.value()
        text = str(int(v)) if self.kind == "caps" or v == int(v) else f"{v:g}"
        for g in self._groups:
            self._values[self.kind][g] = text
        self._fill_value_column()
        self._changed()

    def _remove_constraint(self):
        rows = sorted({i.row() for i in self.cons_table.selectedIndexes()}) or [self.cons_table.rowCount() - 1]
        for r in reversed(rows):
            if r >= 0:
                self.cons_table.removeRow(r)
        self._changed()

    def _value_edited(self, item: QTableWidgetItem):
        if self._filling or item.column() != C_VALUE or item.row() >= len(self._groups):
            return
        if self.kind in self._values:
            self._values[self.kind][self._groups[item.row()]] = item.text()
        self._changed()

    def _rebuild_groups(self):
        self._shown_by = self.by()
        try:
            groups = list(self.candidates().groups)
        except FaceQCError:
            groups = []
        self._groups = groups
        for kind, default in (("shares", "1"), ("caps", "")):
            old = self._values[kind]
            self._values[kind] = {g: old.get(g, default) for g in groups}
        self._filling = True
        try:
            self.table.setRowCount(len(groups) + (1 if groups else 0))
            for r in range(self.table.rowCount()):
                name = display_group(groups[r]) if r < len(groups) else NO_GROUP
                for c in range(len(COLUMNS)):
                    item = QTableWidgetItem(name if c == C_GROUP else "")
                    if c != C_VALUE or r >= len(groups):
                        item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsEditable)
                    else:
                        item.setBackground(QBrush(EDITABLE_COLOUR))
                        item.setToolTip("Double-click or type to edit.")
                    if c not in (C_GROUP,):
                        item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                    self.table.setItem(r, c, item)
            if groups:
                self.table.item(len(groups), C_GROUP).setToolTip(
                    "Images in no target group (no face, or a label below the minimum confidence): a balanced set "
                    "leaves them out unless you accepted them by hand.")
        finally:
            self._filling = False
        self._fill_value_column()

    def _fill_value_column(self):
        kind = self.kind if self.kind_radio else "uniform"
        self._filling = True
        try:
            for r, g in enumerate(self._groups):
                item = self.table.item(r, C_VALUE)
                if item is not None:
                    item.setText(str(self._values.get(kind, {}).get(g, "")))
        finally:
            self._filling = False

    def _set_cell(self, row: int, col: int, value, tooltip: str = "") -> None:
        item = self.table.item(row, col)
        if item is not None:
            item.setText("" if value is None else str(value))
            item.setToolTip(tooltip)

    def _show_proposal(self, prop: Proposal | None) -> None:
        self._filling = True
        try:
            plans = {p.group: p for p in prop.groups} if prop is not None else {}
            base = self.palette().color(QPalette.ColorRole.Base)
            for r, g in enumerate(self._groups):
                p = plans.get(g)
                cols = (C_HAVE, C_NOW, C_TARGET, C_ACCEPT, C_REJECT, C_MISSING)
                if p is None:
                    for c in cols:
                        self._set_cell(r, c, "")
                    continue
                missing, tip = "", ""
                if p.shortfall is None:
                    missing, tip = "?", "No number of images makes this group meet the attribute shares."
                elif p.shortfall:
                    missing, tip = f"{p.shortfall:,}", f"This group lacks {p.shortfall:,} images for the target."
                if p.over:
                    missing = (missing + " " if missing else "") + f"({p.over} manual too many)"
                    tip = (tip + " " if tip else "") + (f"{p.over} manual accepts beyond the target: clear them or "
                                                        f"untick 'Keep my manual accepts and rejects'.")
                for c, v in ((C_HAVE, p.available), (C_NOW, p.current), (C_TARGET, p.target),
                             (C_ACCEPT, p.would_accept), (C_REJECT, p.would_reject)):
                    # An impossible target changes nothing: no diff to show, only what is missing.
                    diff = c in (C_ACCEPT, C_REJECT)
                    self._set_cell(r, c, "–" if diff and not prop.feasible else f"{v:,}")
                self._set_cell(r, C_MISSING, missing, tip)
                shade = QBrush(SHORTFALL_COLOUR) if missing else QBrush(base)
                for c in range(len(COLUMNS)):
                    if c != C_VALUE:
                        self.table.item(r, c).setBackground(shade)
            r = len(self._groups)
            if self._groups:
                if prop is None or self._cands is None:
                    for c in (C_HAVE, C_NOW, C_TARGET, C_ACCEPT, C_REJECT, C_MISSING):
                        self._set_cell(r, c, "")
                else:
                    outside = self._cands.group < 0
                    self._set_cell(r, C_HAVE, f"{int(outside.sum()):,}")
                    self._set_cell(r, C_NOW, f"{int((outside & self._cands.accepted).sum()):,}")
                    self._set_cell(r, C_TARGET, f"{len(prop.outside_kept_ids):,}")
                    self._set_cell(r, C_ACCEPT, "0" if prop.feasible else "–")
                    self._set_cell(r, C_REJECT, f"{prop.outside_rejected:,}" if prop.feasible else "–")
                    self._set_cell(r, C_MISSING, "")
        finally:
            self._filling = False
        if prop is None:
            self.apply_button.setEnabled(False)
            return
        if prop.feasible:
            n_acc, n_rej = len(prop.accept_ids), len(prop.reject_ids)
            text = prop.message
            if not n_acc and not n_rej:
                text += " The accepted set already is this proposal: nothing to apply."
            self._set_message(text, error=False)
            self.apply_button.setEnabled(bool(n_acc or n_rej))
        else:
            self._set_message(prop.message, error=True)
            self.apply_button.setEnabled(False)

    def _set_message(self, text: str, error: bool) -> None:
        self.message.setText(text)
        self.message.setStyleSheet("color: #b3261e; font-weight: bold" if error else "")
        self.message.setProperty("error", error)

    def _apply(self) -> None:
        # Settings may have changed since the proposal on screen was made: apply exactly what the settings say now.
        if self._timer.isActive() or self._proposal is None:
            self.refresh()
        prop = self._proposal
        if prop is None or not prop.feasible:
            return
        self._changes = prop.changes()
        self.accept()

    def reject(self) -> None:
        self._changes = {}
        super().reject()
