"""The demographics panel: how the accepted set is spread over FairFace groups, next to all scored images.

Shows one FairFace head as paired horizontal bars (all scored images / accepted; bar length = share, text = count and
share) and a cross-table of two heads (accepted / all per cell). The numbers come from ``engine.balance_stats`` (see
docs/BALANCE.md for what counts); this widget only draws them and turns clicks into group filters.
"""

from __future__ import annotations

import time

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QFont, QPalette
from PySide6.QtWidgets import (
    QAbstractItemView, QComboBox, QHBoxLayout, QHeaderView, QLabel, QSizePolicy, QSpinBox, QTableWidget,
    QTableWidgetItem, QVBoxLayout, QWidget,
)

from ..engine.balance import (
    ACCEPTED_COLOUR, ALL_COLOUR, UNCERTAIN, UNKNOWN, group_mask, snapshot_population, snapshot_probs,
)
from ..engine.balance_stats import GroupCounter
from ..engine.errors import FaceQCError

HEADS = {"race7": "Race (7)", "race4": "Race (4)", "gender": "Gender", "age": "Age"}
CROSS_TABLES = (("race7", "gender"), ("race7", "age"), ("race4", "gender"), ("race4", "age"), ("gender", "age"))
MODE_TEXT = {"top": "top label", "expected": "expected value"}
TOTAL = "All"


def label_text(label: str) -> str:
    """A FairFace label as shown on screen (the raw label is what filters use)."""
    if label in (UNCERTAIN, UNKNOWN):
        return f"({label})"
    return label.replace("_", "/")


def group_filter_mask(snapshot, group: dict, min_conf: float = 0.0) -> np.ndarray:
    """Rows of ``snapshot`` in the group a click asked for ({head: label}; {} = every row), counted as the panel
    counts them: labels below ``min_conf`` are "uncertain", missing FairFace numbers "unknown"."""
    if not group:
        return np.ones(len(snapshot.ids), bool)
    heads = tuple(group)
    return group_mask(snapshot_probs(snapshot), heads, tuple(group[h] for h in heads), min_conf)


def _rgb(c) -> str:
    return "#%02x%02x%02x" % tuple(c)


class DemographicsPanel(QWidget):
    """Counts and shares per FairFace group for all scored images and for the accepted set.

    ``set_data(snapshot, accepted)`` when the data change (new snapshot, streamed results), ``set_accepted(accepted)``
    when only the decisions do (threshold, overrides): the numbers are recomputed with numpy (tens of ms for 100k
    images), only while the panel is visible. A click on a bar, a bar
    label, a cell or a header emits ``groupFilterRequested`` with {head: label, ...} (raw FairFace labels, or
    "uncertain"/"unknown"); a click on the table's All/All corner emits {} (no group filter).
    """

    groupFilterRequested = Signal(dict)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._snapshot = None
        self._accepted = None
        self._stats = None
        self._dirty = False
        self._counter: GroupCounter | None = None  # per-image weights for the current data and options
        self._counter_key = None
        self._rows: list[str] = []      # bar chart labels, top to bottom
        self._cross_rows: list[str] = []
        self._cross_cols: list[str] = []
        self.last_compute_ms = 0.0

        self.head_combo = QComboBox()
        for key, text in HEADS.items():
            self.head_combo.addItem(text, key)
        self.mode_combo = QComboBox()
        for key, text in MODE_TEXT.items():
            self.mode_combo.addItem(text, key)
        self.mode_combo.setToolTip("Top label: each image counts 1 for its most probable label.\n"
                                   "Expected value: each image spreads 1 over the labels by their probabilities.")
        self.conf_spin = QSpinBox()
        self.conf_spin.setRange(0, 100)
        self.conf_spin.setSingleStep(5)
        self.conf_spin.setSuffix(" %")
        self.conf_spin.setToolTip("Predictions whose top probability is below this count as 'uncertain'.")
        self.cross_combo = QComboBox()
        for a, b in CROSS_TABLES:
            self.cross_combo.addItem(f"{HEADS[a]} × {HEADS[b].lower()}", (a, b))

        self.summary = QLabel()
        self.summary.setWordWrap(True)
        self.legend = QLabel(
            f"<span style='color:{_rgb(ALL_COLOUR)}'>&#9632;</span> all scored &nbsp;&nbsp;"
            f"<span style='color:{_rgb(ACCEPTED_COLOUR)}'>&#9632;</span> accepted &nbsp;&nbsp;"
            "<span style='color:gray'>(bar = share; text = count · share)</span>")

        self.plot = pg.PlotWidget()
        self.plot.setMinimumHeight(180)
        self.plot.setCursor(Qt.CursorShape.PointingHandCursor)
        self._vb = self.plot.getPlotItem().getViewBox()
        self._vb.setMouseEnabled(False, False)
        self._vb.setMenuEnabled(False)
        self._vb.invertY(True)
        pi = self.plot.getPlotItem()
        pi.hideButtons()
        pi.setLabel("bottom", "share of images (%)")
        pi.getAxis("left").setStyle(tickLength=0)
        self.all_bars = pg.BarGraphItem(x0=[], y=[], width=[], height=0.36, brush=QColor(*ALL_COLOUR), pen=None)
        self.accepted_bars = pg.BarGraphItem(x0=[], y=[], width=[], height=0.36, brush=QColor(*ACCEPTED_COLOUR),
                                             pen=None)
        pi.addItem(self.all_bars)
        pi.addItem(self.accepted_bars)
        self.bar_texts: list[pg.TextItem] = []  # per row: all, accepted
        self.plot.scene().sigMouseClicked.connect(self._plot_clicked)

        self.table = QTableWidget()
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        self.table.verticalHeader().setDefaultSectionSize(2 * self.fontMetrics().height() + 8)
        self.table.setWordWrap(False)
        self.table.setToolTip("Each cell: accepted / all scored images, and their shares of the accepted set | of "
                              "all. Click a cell or a header to filter the grid.")
        self.table.cellClicked.connect(self._cell_clicked)
        self.table.horizontalHeader().sectionClicked.connect(lambda c: self._cell_clicked(len(self._cross_rows), c))
        self.table.verticalHeader().sectionClicked.connect(lambda r: self._cell_clicked(r, len(self._cross_cols)))
        self.table_note = QLabel("Cells: accepted / all scored; shares of accepted | of all.")
        self.table_note.setStyleSheet("color: gray")
        self.note = QLabel("Click a bar, a cell or a header to show that group in the grid. FairFace labels are a "
                           "model's predictions, not facts about people.")
        self.note.setStyleSheet("color: gray")
        self.note.setWordWrap(True)

        top = QHBoxLayout()
        for text, w in (("Bars:", self.head_combo), ("Count by:", self.mode_combo), ("Min. conf.:", self.conf_spin)):
            label = QLabel(text)
            label.setToolTip(w.toolTip())
            top.addWidget(label)
            top.addWidget(w)
            combo = w if isinstance(w, QComboBox) else None
            if combo is not None:
                combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        top.addStretch(1)
        cross = QHBoxLayout()
        cross.addWidget(QLabel("Cross-table:"))
        cross.addWidget(self.cross_combo)
        cross.addStretch(1)
        lay = QVBoxLayout(self)
        lay.addLayout(top)
        lay.addWidget(self.summary)
        lay.addWidget(self.legend)
        lay.addWidget(self.plot, 3)
        lay.addLayout(cross)
        lay.addWidget(self.table_note)
        lay.addWidget(self.table, 2)
        lay.addWidget(self.note)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Expanding)

        for combo in (self.head_combo, self.mode_combo, self.cross_combo):
            combo.currentIndexChanged.connect(self._options_changed)
        self.conf_spin.valueChanged.connect(self._options_changed)
        self._apply_palette()
        self._show_message("No project data yet.")

    # ------------------------------------------------------------------------------------------ public state

    @property
    def head(self) -> str:
        return self.head_combo.currentData()

    @property
    def mode(self) -> str:
        return self.mode_combo.currentData()

    @property
    def min_conf(self) -> float:
        return self.conf_spin.value() / 100.0

    @property
    def cross(self) -> tuple[str, str]:
        return tuple(self.cross_combo.currentData())

    def set_head(self, head: str) -> None:
        self._select(self.head_combo, head)

    def set_mode(self, mode: str) -> None:
        self._select(self.mode_combo, mode)

    def set_min_conf(self, p: float) -> None:
        self.conf_spin.setValue(int(round(float(p) * 100)))

    def set_cross(self, heads) -> None:
        self._select(self.cross_combo, tuple(heads))

    def state(self) -> dict:
        """The panel's options, JSON-ready (for ``Project.set_setting``)."""
        return {"head": self.head, "mode": self.mode, "min_conf": self.min_conf, "cross": list(self.cross)}

    def restore_state(self, state) -> None:
        """Options from ``state()``; unknown or malformed values are ignored."""
        if not isinstance(state, dict):
            return
        try:
            if state.get("head") in HEADS:
                self.set_head(state["head"])
            if state.get("mode") in MODE_TEXT:
                self.set_mode(state["mode"])
            if isinstance(state.get("min_conf"), (int, float)) and 0 <= state["min_conf"] <= 1:
                self.set_min_conf(state["min_conf"])
            if isinstance(state.get("cross"), (list, tuple)) and tuple(state["cross"]) in CROSS_TABLES:
                self.set_cross(state["cross"])
        except (TypeError, ValueError):
            pass

    @property
    def stats(self):
        """The ``GroupStats`` on display (joint = the cross-table; marginals include the bar head), or None."""
        self._flush()
        return self._stats

    def bar_labels(self) -> list[str]:
        """The raw labels of the bar rows, top to bottom."""
        self._flush()
        return list(self._rows)

    def set_data(self, snapshot, accepted) -> None:
        """New data: a store ``Snapshot`` (new, or edited in place by streamed results) and its accepted mask
        (``snapshot.decide(threshold)[0]``); None clears. Always recounts."""
        self._counter = None  # the images (or their numbers) changed: per-image weights are recomputed
        self._set(snapshot, accepted)

    def _set(self, snapshot, accepted) -> None:
        self._snapshot = snapshot
        self._accepted = None if accepted is None else np.array(accepted, dtype=bool, copy=True)
        self._dirty = True
        if self.isVisible():
            self._flush()

    def set_accepted(self, accepted) -> None:
        """Only the decisions changed (threshold, overrides): a mask equal to the last one costs nothing, so the
        many steps of a slider drag that move no image are free."""
        acc = None if accepted is None else np.asarray(accepted, dtype=bool)
        if acc is not None and self._accepted is not None and acc.shape == self._accepted.shape \
                and np.array_equal(acc, self._accepted):
            return
        self._set(self._snapshot, acc)  # keeps the GroupCounter: only the accepted counts are redone (1.5 ms at 100k)

    def clear(self) -> None:
        self.set_data(None, None)

    # ----------------------------------------------------------------------------------------------- drawing

    def showEvent(self, event) -> None:
        super().showEvent(event)
        self._flush()

    def changeEvent(self, event) -> None:
        super().changeEvent(event)
        if event.type() == event.Type.PaletteChange:
            self._apply_palette()

    def _apply_palette(self) -> None:
        pal = self.palette()
        self.plot.setBackground(pal.color(QPalette.ColorRole.Base))
        fg = pal.color(QPalette.ColorRole.Text)
        for name in ("left", "bottom"):
            ax = self.plot.getPlotItem().getAxis(name)
            ax.setPen(fg)
            ax.setTextPen(fg)
        for t in self.bar_texts:
            t.setColor(fg)

    def _options_changed(self, *_):
        self._dirty = True
        if self.isVisible():
            self._flush()

    def _select(self, combo: QComboBox, data) -> None:
        for i in range(combo.count()):
            if combo.itemData(i) == data or (isinstance(data, tuple) and tuple(combo.itemData(i)) == data):
                combo.setCurrentIndex(i)
                return
        raise ValueError(f"{data!r} is not an option")

    def _flush(self) -> None:
        if not self._dirty:
            return
        self._dirty = False
        t0 = time.perf_counter()
        snap, acc = self._snapshot, self._accepted
        self._stats = None
        if snap is None:
            self._show_message("No project data yet.")
            return
        heads = {self.head, *self.cross}
        missing = [h for h in heads if getattr(snap, h, None) is None]
        if missing:
            self._show_message(f"No FairFace {', '.join(sorted(missing))} numbers in this project; score the images "
                               f"with the FairFace model to see demographics.")
            return
        try:
            accepted = acc if acc is not None else np.zeros(len(snap.ids), bool)
            key = (id(snap), len(snap.ids), self.cross, self.head, self.mode, self.min_conf)
            if self._counter is None or self._counter_key != key:
                pop = snapshot_population(snap)
                if not pop.any():
                    self._show_message("No scored images yet: the counts appear as images are scored.")
                    return
                if not any(np.isfinite(getattr(snap, h)[pop]).all(axis=1).any() for h in heads):
                    self._show_message(
                        "No FairFace labels in this project yet: score the images with the FairFace weights "
                        "(Models ▸ Models…) to see who is in the set.")
                    return
                # Only the heads on screen: each extra head costs a full pass over the images.
                probs = {h: getattr(snap, h) for h in heads}
                self._counter = GroupCounter(probs, by=self.cross, mode=self.mode, min_conf=self.min_conf,
                                             population=snapshot_population(snap))
                self._counter_key = key
            self._stats = self._counter.stats(accepted)
        except (FaceQCError, ValueError, TypeError, AttributeError) as e:
            self._show_message(f"Cannot compute the demographics: {e}")
            return
        self._draw_summary()
        self._draw_bars()
        self._fill_table()
        self.last_compute_ms = (time.perf_counter() - t0) * 1000.0

    def _fmt(self, x: float) -> str:
        return f"{int(round(x)):,}" if self.mode == "top" else f"{x:,.1f}"

    def _show_message(self, text: str) -> None:
        self.summary.setText(text)
        self._rows, self._cross_rows, self._cross_cols = [], [], []
        self._set_bars([], [], [])
        self.table.clear()
        self.table.setRowCount(0)
        self.table.setColumnCount(0)

    def _draw_summary(self) -> None:
        st = self._stats
        n_all, n_acc = st.n_all, st.n_accepted
        pct = f" ({n_acc / n_all:.1%})" if n_all else ""
        conf = f"; predictions below {st.min_conf:.0%} count as uncertain" if st.min_conf > 0 else ""
        self.summary.setText(f"<b>{n_acc:,}</b> accepted of <b>{n_all:,}</b> scored images{pct}. "
                             f"Counted by {MODE_TEXT[st.mode]}{conf}.")

    def _set_bars(self, labels, share_all, share_acc) -> None:
        n = len(labels)
        y = np.arange(n, dtype=float)
        self.all_bars.setOpts(x0=np.zeros(n), y=y - 0.19, width=np.asarray(share_all, float) * 100, height=0.36)
        self.accepted_bars.setOpts(x0=np.zeros(n), y=y + 0.19, width=np.asarray(share_acc, float) * 100,
                                   height=0.36)
        axis = self.plot.getPlotItem().getAxis("left")
        texts = [label_text(s) for s in labels]
        axis.setTicks([list(zip(map(float, range(n)), texts))])
        # Sized here, not by pyqtgraph's auto-expansion, which lags one paint behind and drops wider labels meanwhile.
        fm = self.plot.fontMetrics()
        axis.setWidth(max([fm.horizontalAdvance(t) for t in texts], default=20) + 14)
        if n == 0:
            for t in self.bar_texts:
                t.setVisible(False)

    def _draw_bars(self) -> None:
        table = self._stats.marginals[self.head]
        self._rows = [g[0] for g in table.groups]
        n = len(self._rows)
        sa, sc = table.share_all, table.share_accepted
        self._set_bars(self._rows, sa, sc)
        pi = self.plot.getPlotItem()
        fg = self.palette().color(QPalette.ColorRole.Text)
        while len(self.bar_texts) < 2 * n:
            t = pg.TextItem(color=fg, anchor=(0, 0.5))
            font = QFont()
            font.setPointSizeF(max(7.0, font.pointSizeF() * 0.85))
            t.setFont(font)
            pi.addItem(t, ignoreBounds=True)
            self.bar_texts.append(t)
        top = max(float(sa.max(initial=0)), float(sc.max(initial=0))) * 100
        pad = max(top, 1.0) * 0.015
        for i in range(n):
            for k, (count, share) in enumerate(((table.all[i], sa[i]), (table.accepted[i], sc[i]))):
                t = self.bar_texts[2 * i + k]
                t.setText(f"{self._fmt(count)} · {share:.1%}")
                t.setPos(share * 100 + pad, i + (0.19 if k else -0.19))
                t.setVisible(True)
        for t in self.bar_texts[2 * n:]:
            t.setVisible(False)
        # Room on the right for the longest text: the bars use about two thirds of the width.
        self._vb.setXRange(0, max(top, 1.0) * 1.5, padding=0)
        self._vb.setYRange(-0.6, n - 0.4, padding=0)

    def _fill_table(self) -> None:
        st = self._stats
        a, b = st.by
        rl, cl, m_acc = st.joint.matrix("accepted")
        _, _, m_all = st.joint.matrix("all")
        n_acc, n_all = st.joint.n_accepted, st.joint.n_all
        ma, mb = st.marginals[a], st.marginals[b]
        row_tot = {g[0]: (x, y) for g, x, y in zip(ma.groups, ma.accepted, ma.all)}
        col_tot = {g[0]: (x, y) for g, x, y in zip(mb.groups, mb.accepted, mb.all)}
        self._cross_rows, self._cross_cols = list(rl), list(cl)
        self.table.clear()
        self.table.setRowCount(len(rl) + 1)
        self.table.setColumnCount(len(cl) + 1)
        self.table.setHorizontalHeaderLabels([label_text(c) for c in cl] + [TOTAL])
        self.table.setVerticalHeaderLabels([label_text(r) for r in rl] + [TOTAL])
        top = float(m_acc.max(initial=0)) / n_acc if n_acc else 0.0
        base = self.palette().color(QPalette.ColorRole.Base)
        cell_font = QFont(self.font())
        cell_font.setPointSizeF(self.font().pointSizeF() * 0.9)
        bold = QFont(cell_font)
        bold.setBold(True)
        for i in range(len(rl) + 1):
            for j in range(len(cl) + 1):
                if i < len(rl) and j < len(cl):
                    acc, al = m_acc[i, j], m_all[i, j]
                elif i < len(rl):
                    acc, al = row_tot.get(rl[i], (0.0, 0.0))
                elif j < len(cl):
                    acc, al = col_tot.get(cl[j], (0.0, 0.0))
                else:
                    acc, al = n_acc, n_all
                s_acc = acc / n_acc if n_acc else 0.0
                s_all = al / n_all if n_all else 0.0
                item = QTableWidgetItem(f"{self._fmt(acc)} / {self._fmt(al)}\n{s_acc:.1%} | {s_all:.1%}")
                item.setTextAlignment(Qt.AlignmentFlag.AlignCenter)
                item.setFont(cell_font)
                item.setData(Qt.ItemDataRole.UserRole, (float(acc), float(al)))
                if i == len(rl) or j == len(cl):
                    item.setFont(bold)
                elif top > 0:
                    # Shade by the cell's share of the accepted set: the larger groups stand out at a glance.
                    item.setBackground(QBrush(self._mix(base, QColor(*ACCEPTED_COLOUR), 0.45 * s_acc / top)))
                self.table.setItem(i, j, item)

    @staticmethod
    def _mix(a: QColor, b: QColor, t: float) -> QColor:
        t = min(max(t, 0.0), 1.0)
        return QColor(*(int(round(x + (y - x) * t)) for x, y in zip(a.getRgb()[:3], b.getRgb()[:3])))

    # ------------------------------------------------------------------------------------------------ clicks

    def bar_scene_pos(self, row: int, which: str = "accepted") -> QPointF:
        """Scene position of the middle of a bar (for tests and tooltips); ``which`` = "all" | "accepted"."""
        self._flush()
        bars = self.accepted_bars if which == "accepted" else self.all_bars
        w = float(bars.opts["width"][row])
        y = row + (0.19 if which == "accepted" else -0.19)
        return self._vb.mapViewToScene(QPointF(max(w / 2, 0.01), y))

    def _plot_clicked(self, ev) -> None:
        if ev.button() != Qt.MouseButton.LeftButton or not self._rows:
            return
        pos = ev.scenePos()
        axis = self.plot.getPlotItem().getAxis("left")
        if not (self._vb.sceneBoundingRect().contains(pos) or axis.sceneBoundingRect().contains(pos)):
            return
        # A click anywhere on a row (bar, empty space after it, or its label) picks the row: small bars stay clickable.
        y = self._vb.mapSceneToView(pos).y()
        row = int(round(y))
        if 0 <= row < len(self._rows) and abs(y - row) <= 0.5:
            ev.accept()
            self.groupFilterRequested.emit({self.head: self._rows[row]})

    def _cell_clicked(self, row: int, col: int) -> None:
        if self._stats is None:
            return
        a, b = self._stats.by
        group = {}
        if 0 <= row < len(self._cross_rows):
            group[a] = self._cross_rows[row]
        if 0 <= col < len(self._cross_cols):
            group[b] = self._cross_cols[col]
        self.groupFilterRequested.emit(group)
