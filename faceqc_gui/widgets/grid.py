"""The thumbnail grid: a model over the session's visible rows, a tile delegate, and a uniform-grid item view.

Why not QListView: in its list and icon modes any dataChanged, reset or resize re-lays out every item (measured at
~0.3 s for 100k tiles), which would make each threshold move and each arriving thumbnail stall the UI. Tiles here all
have one size, so ``TileGridView`` places them arithmetically (row = i // columns): reset, resize and repaint cost
O(visible tiles), whatever the number of images. It is still a real QAbstractItemView (model, selection model,
delegate, keyboard navigation, rubber-band selection).

Repaints bypass dataChanged on purpose: the delegate reads the session's arrays directly, so a threshold move only
has to repaint the viewport, and an arriving thumbnail only its tile's rectangle.
"""

from __future__ import annotations

import math
import os

import numpy as np
from PySide6.QtCore import QAbstractListModel, QItemSelection, QModelIndex, QPointF, QRect, QRectF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QFont, QFontMetrics, QPainter, QPainterPath, QPalette, QPen, QPixmap, QRegion
from PySide6.QtWidgets import QAbstractItemDelegate, QAbstractItemView, QStyle, QStyleOptionViewItem

from ..engine.decisions import REASON_TEXT
from ..gui.colors import ACCEPT, ERROR, OVERRIDE, PENDING, REJECT, UNSCORED, quality_color, text_color_on
from ..gui.thumbs import ImageLoader, PixmapCache

IdRole = Qt.ItemDataRole.UserRole + 1
STRIP = 18  # height of the score strip under the picture
MARGIN = 3


def score_text(score: float, quality: float, scale: str) -> str:
    # Rounded down: a score just under the threshold (19.996 at 20) must never read as if it reached it.
    if scale == "q100":
        return f"{math.floor(quality):.0f}"
    return f"{math.floor(score * 100) / 100:.2f}"


class GridModel(QAbstractListModel):
    """Rows = the session's visible order. Data for painting is read from the session by the delegate."""

    def __init__(self, session, loader: ImageLoader | None = None, parent=None):
        super().__init__(parent)
        self.session = session
        self.loader = loader
        self.pixmaps = PixmapCache()
        self.failed: set[int] = set()  # ids whose file could not be turned into a thumbnail
        self.tile = 128
        self.thumbArrived = None  # callable(positions) set by the view owner
        if loader is not None:
            loader.loaded.connect(self._on_loaded)

    # ---- Qt model --------------------------------------------------------------------------------------------------
    def rowCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.session.order)

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid() or index.row() >= len(self.session.order):
            return None
        r = int(self.session.order[index.row()])
        s = self.session.snapshot
        if role == Qt.ItemDataRole.DisplayRole:
            return os.path.basename(s.paths[r])
        if role == IdRole:
            return int(s.ids[r])
        if role == Qt.ItemDataRole.ToolTipRole:
            score = s.score[r]
            sc = "" if not np.isfinite(score) else f"MagFace {score:.2f} (quality {self.session.quality[r]:.0f}/100)\n"
            dec = "Accepted" if self.session.accepted[r] else "Rejected"
            return f"{s.paths[r]}\n{sc}{dec}: {REASON_TEXT.get(int(self.session.reason[r]), '')}"
        return None

    def flags(self, index):
        return Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable

    def reset(self) -> None:
        self.beginResetModel()
        self.endResetModel()

    def snapshot_row(self, pos: int) -> int:
        return int(self.session.order[pos])

    def image_id(self, pos: int) -> int:
        return int(self.session.snapshot.ids[self.session.order[pos]])

    # ---- thumbnails ------------------------------------------------------------------------------------------------
    def set_tile(self, side: int) -> None:
        if side != self.tile:
            self.tile = side
            self.pixmaps.clear()
            if self.loader is not None:
                self.loader.clear()
                self.loader.tile_side = side

    def thumbnail(self, row: int) -> QPixmap | None:
        """The tile picture of snapshot row ``row`` if ready; otherwise asks the loader for it and returns None."""
        image_id = int(self.session.snapshot.ids[row])
        pm = self.pixmaps.get(image_id)
        if pm is None and self.loader is not None and image_id not in self.failed:
            self.loader.request(image_id, self.session.snapshot.paths[row])
        return pm

    def _on_loaded(self, batch) -> None:
        positions = []
        ids = self.session.snapshot.ids
        for res in batch:
            if res.kind != "thumb":
                continue
            if res.image is None:
                self.failed.add(res.key)
            else:
                img = res.image
                if max(img.width(), img.height()) > self.tile:
                    img = img.scaled(self.tile, self.tile, Qt.AspectRatioMode.KeepAspectRatio,
                                     Qt.TransformationMode.SmoothTransformation)
                self.pixmaps.put(res.key, QPixmap.fromImage(img))
            r = int(np.searchsorted(ids, res.key))
            if r < len(ids) and ids[r] == res.key and r < len(self.session.pos) and self.session.pos[r] >= 0:
                positions.append(int(self.session.pos[r]))
        if positions and self.thumbArrived is not None:
            self.thumbArrived(positions)


class TileDelegate(QAbstractItemDelegate):
    """Draws one tile: the picture, a strip in the quality colour with the score, the decision as border + badge
    (shape and colour: a round tick for accepted, a square cross for rejected), and a pin when set by hand."""

    def __init__(self, model: GridModel, parent=None):
        super().__init__(parent)
        self.model = model
        self.scale = "norm"
        self.font = QFont()
        self.font.setPointSizeF(max(7.0, self.font.pointSizeF() * 0.85))
        self.font.setBold(True)
        self.small = QFont(self.font)
        self.small.setBold(False)
        self.fm = QFontMetrics(self.font)

    def sizeHint(self, option, index) -> QSize:
        t = self.model.tile
        return QSize(t + 2 * MARGIN, t + STRIP + 2 * MARGIN)

    def paint(self, p: QPainter, option: QStyleOptionViewItem, index) -> None:
        session = self.model.session
        pos = index.row()
        if pos >= len(session.order):
            return
        r = int(session.order[pos])
        s = session.snapshot
        rect = option.rect.adjusted(MARGIN, MARGIN, -MARGIN, -MARGIN)
        t = self.model.tile
        pic = QRect(rect.left(), rect.top(), rect.width(), rect.height() - STRIP)
        selected = bool(option.state & QStyle.StateFlag.State_Selected)
        if selected:
            p.fillRect(option.rect, option.palette.color(QPalette.ColorRole.Highlight))
        p.fillRect(pic, QColor(40, 40, 40))
        pm = self.model.thumbnail(r)
        accepted = bool(session.accepted[r])
        scored = s.n_faces[r] >= 0 or s.error[r]
        if pm is not None:
            x = pic.left() + (pic.width() - pm.width()) // 2
            y = pic.top() + (pic.height() - pm.height()) // 2
            p.drawPixmap(x, y, pm)
            if not accepted and scored:
                p.fillRect(pic, QColor(0, 0, 0, 90))  # rejected tiles recede (shape + colour say why)
        else:
            p.setPen(QColor(150, 150, 150))
            p.setFont(self.small)
            failed = int(s.ids[r]) in self.model.failed
            p.drawText(pic, Qt.AlignmentFlag.AlignCenter, "unreadable" if failed else "…")
        # strip
        strip = QRect(rect.left(), pic.bottom() + 1, rect.width(), STRIP)
        score = float(s.score[r])
        if s.error[r]:
            bg, fg, text = ERROR, QColor(255, 255, 255), "error"
        elif s.missing[r]:
            bg, fg, text = UNSCORED, QColor(255, 255, 255), "missing"
        elif s.n_faces[r] < 0:
            bg, fg, text = UNSCORED, QColor(255, 255, 255), "not scored"
        elif s.n_faces[r] == 0:
            bg, fg, text = UNSCORED, QColor(255, 255, 255), "no face"
        elif not np.isfinite(score):
            bg, fg, text = UNSCORED, QColor(255, 255, 255), f"{int(s.n_faces[r])} face(s)"
        else:
            q = float(session.quality[r])
            bg, fg = quality_color(q), text_color_on(q)
            text = score_text(score, q, self.scale)
            if s.n_faces[r] > 1:
                text += f" · {int(s.n_faces[r])} faces" if t >= 110 else f" ·{int(s.n_faces[r])}"
        p.fillRect(strip, bg)
        p.setPen(fg)
        p.setFont(self.font)
        p.drawText(strip, Qt.AlignmentFlag.AlignCenter, text)
        # decision: border + badge
        p.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        ov = int(s.override[r])
        b = 14 if t < 100 else 18
        if s.n_faces[r] < 0 and not ov and not s.error[r] and not s.missing[r]:
            # Not scored yet and not decided by hand: nothing is decided, so no reject mark that would read as
            # "the user rejected it" (it would be rejected only because it has no score yet); a thin neutral frame.
            p.setPen(QPen(PENDING, 1))
            p.setBrush(Qt.BrushStyle.NoBrush)
            p.drawRect(QRectF(rect).adjusted(1, 1, -1, -1))
        else:
            colour = ACCEPT if accepted else REJECT
            pen = QPen(colour, 2 if t < 100 else 3)
            if not accepted:
                pen.setStyle(Qt.PenStyle.DashLine)
            p.setPen(pen)
            p.setBrush(Qt.BrushStyle.NoBrush)
            p.drawRect(QRectF(rect).adjusted(1, 1, -1, -1))
            badge = QRectF(rect.left() + 4, rect.top() + 4, b, b)
            draw_decision_badge(p, badge, accepted)
        if ov:
            draw_pin(p, QRectF(rect.right() - b - 3, rect.top() + 4, b, b))
        if option.state & QStyle.StateFlag.State_HasFocus:
            p.setPen(QPen(option.palette.color(QPalette.ColorRole.Text), 1, Qt.PenStyle.DotLine))
            p.setBrush(Qt.BrushStyle.NoBrush)
            p.drawRect(option.rect.adjusted(0, 0, -1, -1))
        p.setRenderHint(QPainter.RenderHint.Antialiasing, False)


def draw_decision_badge(p: QPainter, r: QRectF, accepted: bool) -> None:
    p.setPen(QPen(QColor(255, 255, 255), 1.2))
    if accepted:
        p.setBrush(ACCEPT)
        p.drawEllipse(r)
        path = QPainterPath()
        path.moveTo(r.left() + r.width() * 0.25, r.top() + r.height() * 0.52)
        path.lineTo(r.left() + r.width() * 0.43, r.top() + r.height() * 0.70)
        path.lineTo(r.left() + r.width() * 0.76, r.top() + r.height() * 0.32)
        p.setPen(QPen(QColor(255, 255, 255), max(1.5, r.width() / 8)))
        p.setBrush(Qt.BrushStyle.NoBrush)
        p.drawPath(path)
    else:
        p.setBrush(REJECT)
        p.drawRect(r)
        p.setPen(QPen(QColor(255, 255, 255), max(1.5, r.width() / 8)))
        k = r.width() * 0.28
        p.drawLine(r.topLeft() + _pt(k, k), r.bottomRight() - _pt(k, k))
        p.drawLine(r.topRight() + _pt(-k, k), r.bottomLeft() + _pt(k, -k))


def _pt(x: float, y: float) -> QPointF:
    return QPointF(x, y)


def draw_pin(p: QPainter, r: QRectF) -> None:
    """A push-pin: the image's decision was set by hand."""
    p.setPen(QPen(QColor(255, 255, 255), 1.0))
    p.setBrush(OVERRIDE)
    head = QRectF(r.left() + r.width() * 0.2, r.top(), r.width() * 0.6, r.height() * 0.55)
    p.drawEllipse(head)
    p.setPen(QPen(QColor(255, 255, 255), max(1.5, r.width() / 7)))
    p.drawLine(_pt(r.center().x(), head.bottom() - 1), _pt(r.center().x(), r.bottom()))
    p.setPen(QPen(OVERRIDE, max(1.0, r.width() / 10)))
    p.drawLine(_pt(r.center().x(), head.bottom()), _pt(r.center().x(), r.bottom() - 1))


class TileGridView(QAbstractItemView):
    """Uniform tiles, laid out by arithmetic; see the module docstring."""

    previewRequested = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self._w, self._h = 134, 152
        self.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectItems)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOn)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setMouseTracking(False)
        self.setAcceptDrops(False)  # drops go to the main window
        self.viewport().setAcceptDrops(False)

    # ---- geometry ----------------------------------------------------------------------------------------------------
    def set_tile_size(self, w: int, h: int) -> None:
        cur = self.currentIndex()
        self._w, self._h = max(16, w), max(16, h)
        self.updateGeometries()
        if cur.isValid():
            self.scrollTo(cur, QAbstractItemView.ScrollHint.PositionAtCenter)
        self.viewport().update()

    def tile_size(self) -> QSize:
        return QSize(self._w, self._h)

    def columns(self) -> int:
        return max(1, self.viewport().width() // self._w)

    def _count(self) -> int:
        m = self.model()
        return m.rowCount() if m is not None else 0

    def _x0(self) -> int:
        # Centre the block of columns so the right edge is not a ragged gap.
        return max(0, (self.viewport().width() - self.columns() * self._w) // 2)

    def visible_range(self) -> tuple[int, int]:
        """[first, last) positions of tiles that are at least partly visible."""
        n = self._count()
        if n == 0:
            return 0, 0
        cols = self.columns()
        top = self.verticalScrollBar().value()
        first_row = top // self._h
        last_row = (top + self.viewport().height() - 1) // self._h
        return min(n, first_row * cols), min(n, (last_row + 1) * cols)

    def rect_for_position(self, pos: int) -> QRect:
        cols = self.columns()
        row, col = divmod(pos, cols)
        return QRect(self._x0() + col * self._w, row * self._h - self.verticalScrollBar().value(), self._w, self._h)

    def visualRect(self, index) -> QRect:
        if not index.isValid():
            return QRect()
        return self.rect_for_position(index.row())

    def indexAt(self, point) -> QModelIndex:
        x = point.x() - self._x0()
        if x < 0:
            return QModelIndex()
        col = x // self._w
        if col >= self.columns():
            return QModelIndex()
        row = (point.y() + self.verticalScrollBar().value()) // self._h
        pos = row * self.columns() + col
        if pos < 0 or pos >= self._count():
            return QModelIndex()
        return self.model().index(pos, 0)

    def scrollTo(self, index, hint=QAbstractItemView.ScrollHint.EnsureVisible) -> None:
        if not index.isValid():
            return
        row = index.row() // self.columns()
        top, h = row * self._h, self.viewport().height()
        sb = self.verticalScrollBar()
        if hint == QAbstractItemView.ScrollHint.PositionAtCenter:
            sb.setValue(top - (h - self._h) // 2)
        elif hint == QAbstractItemView.ScrollHint.PositionAtTop:
            sb.setValue(top)
        elif hint == QAbstractItemView.ScrollHint.PositionAtBottom:
            sb.setValue(top + self._h - h)
        elif top < sb.value():
            sb.setValue(top)
        elif top + self._h > sb.value() + h:
            sb.setValue(top + self._h - h)

    def horizontalOffset(self) -> int:
        return 0

    def verticalOffset(self) -> int:
        return self.verticalScrollBar().value()

    def isIndexHidden(self, index) -> bool:
        return False

    def updateGeometries(self) -> None:
        n = self._count()
        rows = (n + self.columns() - 1) // self.columns()
        sb = self.verticalScrollBar()
        sb.setRange(0, max(0, rows * self._h - self.viewport().height()))
        sb.setSingleStep(max(1, self._h // 3))
        sb.setPageStep(max(1, self.viewport().height()))
        super().updateGeometries()

    def resizeEvent(self, e) -> None:
        super().resizeEvent(e)
        self.updateGeometries()

    def reset(self) -> None:
        super().reset()
        self.updateGeometries()
        self.viewport().update()

    def rowsInserted(self, parent, start, end) -> None:
        super().rowsInserted(parent, start, end)
        self.updateGeometries()

    def dataChanged(self, tl, br, roles=()) -> None:
        # No layout to redo: repaint what is visible of the range.
        first, last = self.visible_range()
        if tl.isValid() and br.isValid() and (br.row() < first or tl.row() >= last):
            return
        self.viewport().update()

    def update_positions(self, positions) -> None:
        first, last = self.visible_range()
        for pos in positions:
            if first <= pos < last:
                self.viewport().update(self.rect_for_position(pos))

    # ---- navigation and selection --------------------------------------------------------------------------------
    def moveCursor(self, action, modifiers) -> QModelIndex:
        n = self._count()
        if n == 0:
            return QModelIndex()
        cur = self.currentIndex()
        pos = cur.row() if cur.isValid() else 0
        cols = self.columns()
        page = max(1, self.viewport().height() // self._h) * cols
        A = QAbstractItemView.CursorAction
        if not cur.isValid():
            pos = 0
        elif action in (A.MoveLeft, A.MovePrevious):
            pos -= 1
        elif action in (A.MoveRight, A.MoveNext):
            pos += 1
        elif action == A.MoveUp:
            pos = pos - cols if pos - cols >= 0 else pos
        elif action == A.MoveDown:
            pos = pos + cols if pos + cols < n else pos
        elif action == A.MovePageUp:
            pos -= page
        elif action == A.MovePageDown:
            pos += page
        elif action == A.MoveHome:
            pos = 0
        elif action == A.MoveEnd:
            pos = n - 1
        return self.model().index(min(max(pos, 0), n - 1), 0)

    def _pos_at(self, point) -> int:
        """Position of the tile under ``point``, clamped into the grid (for range selection)."""
        cols = self.columns()
        col = min(max((point.x() - self._x0()) // self._w, 0), cols - 1)
        row = max((point.y() + self.verticalScrollBar().value()) // self._h, 0)
        return min(row * cols + col, self._count() - 1)

    def setSelection(self, rect, flags) -> None:
        """A rubber-band drag selects the tiles it covers; Shift+click and Shift+arrows select the run of tiles between
        the anchor and the new one in reading order, as file browsers do (Qt passes the rect un-normalised: its
        top-left corner is the anchor, its bottom-right the new point)."""
        n = self._count()
        if n == 0:
            return
        m = self.model()
        sel = QItemSelection()
        if self.state() != QAbstractItemView.State.DragSelectingState:
            a, b = sorted((self._pos_at(rect.topLeft()), self._pos_at(rect.bottomRight())))
            sel.select(m.index(a, 0), m.index(b, 0))
            self.selectionModel().select(sel, flags)
            return
        r = rect.normalized()
        cols = self.columns()
        top = self.verticalScrollBar().value()
        x0 = self._x0()
        c0 = max(0, (r.left() - x0) // self._w)
        c1 = min(cols - 1, (r.right() - x0) // self._w)
        r0 = max(0, (r.top() + top) // self._h)
        r1 = (r.bottom() + top) // self._h
        if c0 <= c1:
            for row in range(r0, r1 + 1):
                a = row * cols + c0
                if a >= n:
                    break
                b = min(n - 1, row * cols + c1)
                sel.select(m.index(a, 0), m.index(b, 0))
        self.selectionModel().select(sel, flags)

    def visualRegionForSelection(self, selection) -> QRegion:
        first, last = self.visible_range()
        region = QRegion()
        for rng in selection:
            a, b = max(rng.top(), first), min(rng.bottom(), last - 1)
            if a > b:
                continue
            if b - a > 64:
                return QRegion(self.viewport().rect())
            for pos in range(a, b + 1):
                region = region.united(self.rect_for_position(pos))
        return region

    def keyboardSearch(self, search: str) -> None:
        pass  # letters are curation keys here (A, R, U...), not a jump-to-name search

    def keyPressEvent(self, e) -> None:
        if e.key() == Qt.Key.Key_Space and not e.modifiers():
            self.previewRequested.emit()
            e.accept()
            return
        super().keyPressEvent(e)

    # ---- painting ----------------------------------------------------------------------------------------------------
    def paintEvent(self, e) -> None:
        p = QPainter(self.viewport())
        first, last = self.visible_range()
        if first >= last:
            p.setPen(self.palette().color(QPalette.ColorRole.PlaceholderText))
            p.drawText(self.viewport().rect(), Qt.AlignmentFlag.AlignCenter, self.placeholder_text())
            return
        option = QStyleOptionViewItem()
        self.initViewItemOption(option)
        sm = self.selectionModel()
        cur = self.currentIndex()
        m = self.model()
        delegate = self.itemDelegate()
        clip = e.rect()
        has_focus = self.hasFocus()
        for pos in range(first, last):
            rect = self.rect_for_position(pos)
            if not rect.intersects(clip):
                continue
            idx = m.index(pos, 0)
            option.rect = rect
            state = QStyle.StateFlag.State_Enabled
            if sm is not None and sm.isSelected(idx):
                state |= QStyle.StateFlag.State_Selected
            if has_focus and idx == cur:
                state |= QStyle.StateFlag.State_HasFocus
            option.state = state
            delegate.paint(p, option, idx)
        p.end()

    def placeholder_text(self) -> str:
        return getattr(self, "_placeholder", "")

    def set_placeholder_text(self, text: str) -> None:
        self._placeholder = text
        self.viewport().update()


def selection_from_positions(model, positions: np.ndarray) -> QItemSelection:
    """A QItemSelection of contiguous runs (select-all of 100k images is one range, not 100k)."""
    sel = QItemSelection()
    if len(positions) == 0:
        return sel
    p = np.unique(np.asarray(positions, np.int64))
    breaks = np.flatnonzero(np.diff(p) != 1)
    starts = np.concatenate(([p[0]], p[breaks + 1]))
    ends = np.concatenate((p[breaks], [p[-1]]))
    for a, b in zip(starts.tolist(), ends.tolist()):
        sel.select(model.index(a, 0), model.index(b, 0))
    return sel


def positions_of_selection(selection) -> np.ndarray:
    parts = [np.arange(rng.top(), rng.bottom() + 1) for rng in selection]
    return np.unique(np.concatenate(parts)) if parts else np.zeros(0, np.int64)

