"""The face panel: everything known about the selected image.

The picture with every face's box and landmarks (click a box, or use the selector, to pick a face), the MagFace score
against the threshold, the 40 CelebA attributes as probability bars (most likely first), FairFace race (7 and 4),
gender and age with probabilities, and the file's path, size and error. Accept/Reject/Clear buttons act on the
grid's selection. The panel is fed plain data (``image_detail`` dicts, a QImage); it never reads the project.
"""

from __future__ import annotations

import math
import os

from PySide6.QtCore import QPointF, QRectF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QFont, QFontMetrics, QImage, QPainter, QPalette, QPen
from PySide6.QtWidgets import QComboBox, QFrame, QHBoxLayout, QLabel, QPushButton, QScrollArea, \
    QSizePolicy, QVBoxLayout, QWidget

from ..engine.labels import CELEBA_ATTRIBUTES, FAIRFACE_HEADS
from ..engine.quality import quality_0_100
from ..gui.colors import ACCEPT, OVERRIDE, REJECT, quality_color

SELECTED = QColor(0, 114, 178)  # Okabe-Ito blue
OTHER = QColor(240, 228, 66)  # Okabe-Ito yellow
LANDMARK_COLOURS = [QColor(86, 180, 233), QColor(230, 159, 0), QColor(0, 158, 115), QColor(204, 121, 167),
                    QColor(213, 94, 0)]
HEAD_TITLES = {"race7": "Race (7 groups)", "race4": "Race (4 groups)", "gender": "Gender", "age": "Age"}


def human_size(n: int | None) -> str:
    if n is None:
        return "unknown"
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


class FaceImageView(QWidget):
    """The image scaled to fit, with boxes (the chosen face in blue, the others in yellow) and 5 landmarks each."""

    faceClicked = Signal(int)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.image: QImage | None = None
        self.full_size: tuple[int, int] | None = None
        self.faces: list[dict] = []
        self.selected = 0
        self.message = ""
        self.setMinimumSize(200, 200)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)

    def sizeHint(self) -> QSize:
        return QSize(320, 300)

    def clear(self, message: str = "") -> None:
        self.image, self.full_size, self.faces, self.message = None, None, [], message
        self.update()

    def set_image(self, image: QImage | None, full_size: tuple[int, int] | None, message: str = "") -> None:
        self.image, self.full_size, self.message = image, full_size, message
        self.update()

    def set_faces(self, faces: list[dict], selected: int) -> None:
        self.faces, self.selected = faces, selected
        self.update()

    def _geometry(self) -> tuple[QRectF, float] | None:
        if self.image is None or self.image.isNull():
            return None
        iw, ih = self.image.width(), self.image.height()
        s = min(self.width() / iw, self.height() / ih)
        w, h = iw * s, ih * s
        target = QRectF((self.width() - w) / 2, (self.height() - h) / 2, w, h)
        fw = self.full_size[0] if self.full_size else iw
        return target, w / max(fw, 1)  # file pixels -> widget pixels

    def paintEvent(self, e) -> None:
        p = QPainter(self)
        p.fillRect(self.rect(), QColor(30, 30, 30))
        g = self._geometry()
        if g is None:
            p.setPen(QColor(200, 200, 200))
            p.drawText(self.rect().adjusted(8, 8, -8, -8), Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap,
                       self.message or "")
            return
        target, k = g
        p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, True)
        p.drawImage(target, self.image)
        p.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        font = QFont(self.font())
        font.setBold(True)
        p.setFont(font)
        for i, f in enumerate(self.faces):
            box = f.get("box")
            if not box:
                continue
            sel = i == self.selected
            colour = SELECTED if sel else OTHER
            r = QRectF(target.left() + box[0] * k, target.top() + box[1] * k, (box[2] - box[0]) * k,
                       (box[3] - box[1]) * k)
            p.setPen(QPen(QColor(0, 0, 0, 160), 4 if sel else 3))
            p.setBrush(Qt.BrushStyle.NoBrush)
            p.drawRect(r)
            p.setPen(QPen(colour, 2.5 if sel else 1.5))
            p.drawRect(r)
            label = str(i + 1)
            fm = QFontMetrics(font)
            lr = QRectF(r.left(), r.top() - fm.height() - 2, fm.horizontalAdvance(label) + 8, fm.height() + 2)
            if lr.top() < target.top():
                lr.moveTop(r.top())
            p.fillRect(lr, colour)
            p.setPen(QColor(0, 0, 0) if not sel else QColor(255, 255, 255))
            p.drawText(lr, Qt.AlignmentFlag.AlignCenter, label)
            for j, (x, y) in enumerate(f.get("landmarks") or []):
                c = LANDMARK_COLOURS[j % len(LANDMARK_COLOURS)]
                p.setPen(QPen(QColor(0, 0, 0), 1))
                p.setBrush(c)
                rad = 3.5 if sel else 2.5
                p.drawEllipse(QPointF(target.left() + x * k, target.top() + y * k), rad, rad)

    def mousePressEvent(self, e) -> None:
        g = self._geometry()
        if g is None:
            return
        target, k = g
        x = (e.position().x() - target.left()) / k
        y = (e.position().y() - target.top()) / k
        hits = [i for i, f in enumerate(self.faces) if f.get("box") and
                f["box"][0] <= x <= f["box"][2] and f["box"][1] <= y <= f["box"][3]]
        if hits:
            # Smallest box wins: a small face inside a big one is what a click on it means.
            best = min(hits, key=lambda i: (self.faces[i]["box"][2] - self.faces[i]["box"][0]) *
                       (self.faces[i]["box"][3] - self.faces[i]["box"][1]))
            self.faceClicked.emit(best)


class ProbBars(QWidget):
    """Rows of label, bar and percentage; sorted by probability unless the labels have an order (age)."""

    ROW = 16

    def __init__(self, parent=None, label_width: int = 150):
        super().__init__(parent)
        self.items: list[tuple[str, float | None]] = []
        self.label_width = label_width
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def set_items(self, items, sort: bool = True) -> None:
        items = [(lab, None if p is None or not math.isfinite(p) else float(p)) for lab, p in items]
        if sort:
            items.sort(key=lambda t: -1.0 if t[1] is None else t[1], reverse=True)
        self.items = items
        self.setFixedHeight(max(1, len(items)) * self.ROW + 2)
        self.update()

    def top(self) -> str | None:
        valid = [t for t in self.items if t[1] is not None]
        return max(valid, key=lambda t: t[1])[0] if valid else None

    def sizeHint(self) -> QSize:
        return QSize(300, max(1, len(self.items)) * self.ROW + 2)

    def paintEvent(self, e) -> None:
        p = QPainter(self)
        pal = self.palette()
        text = pal.color(QPalette.ColorRole.Text)
        bar_bg = pal.color(QPalette.ColorRole.AlternateBase)
        lw = min(self.label_width, self.width() // 2)
        vw = 44
        bw = max(10, self.width() - lw - vw - 8)
        top = max((t[1] or 0.0) for t in self.items) if self.items else 0.0
        for i, (label, prob) in enumerate(self.items):
            y = i * self.ROW + 1
            p.setPen(text)
            p.drawText(QRectF(0, y, lw - 4, self.ROW), Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft,
                       label.replace("_", " "))
            p.fillRect(QRectF(lw, y + 3, bw, self.ROW - 6), bar_bg)
            if prob is not None:
                colour = QColor(0, 114, 178) if prob == top else QColor(86, 180, 233)
                p.fillRect(QRectF(lw, y + 3, bw * max(0.0, min(prob, 1.0)), self.ROW - 6), colour)
                val = f"{prob * 100:.0f}%"
            else:
                val = "–"
            p.setPen(text)
            p.drawText(QRectF(lw + bw + 4, y, vw, self.ROW), Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignRight,
                       val)


class ScoreGauge(QWidget):
    """The face's norm on the bar's range, with the threshold as a tick: how far above or below it is."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.norm: float | None = None
        self.threshold = 20.0
        self.setFixedHeight(14)

    def set_values(self, norm: float | None, threshold: float) -> None:
        self.norm, self.threshold = norm, threshold
        self.update()

    def paintEvent(self, e) -> None:
        p = QPainter(self)
        lo, hi = 0.0, 45.0
        w = self.width()
        p.fillRect(QRectF(0, 3, w, 8), self.palette().color(QPalette.ColorRole.AlternateBase))
        if self.norm is not None and math.isfinite(self.norm):
            q = quality_0_100(self.norm) or 0
            p.fillRect(QRectF(0, 3, w * min(max((self.norm - lo) / (hi - lo), 0), 1), 8), quality_color(q))
        x = w * min(max((self.threshold - lo) / (hi - lo), 0), 1)
        p.setPen(QPen(self.palette().color(QPalette.ColorRole.Text), 2))
        p.drawLine(QPointF(x, 0), QPointF(x, 14))


def _section(title: str) -> QLabel:
    lab = QLabel(f"<b>{title}</b>")
    lab.setContentsMargins(0, 8, 0, 0)
    return lab


class FacePanel(QScrollArea):
    overrideRequested = Signal(object)  # "accept" | "reject" | None, for the grid's selection
    faceSelected = Signal(int)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setMinimumWidth(300)
        self.detail: dict | None = None
        self.face_index = 0
        self.threshold = 20.0
        self.scale = "norm"
        self._decision: tuple[bool, str] | None = None

        body = QWidget()
        lay = QVBoxLayout(body)
        lay.setContentsMargins(8, 6, 8, 8)
        lay.setSpacing(4)
        self.title = QLabel("No image selected")
        self.title.setWordWrap(True)
        f = self.title.font()
        f.setPointSizeF(f.pointSizeF() * 1.15)
        f.setBold(True)
        self.title.setFont(f)
        lay.addWidget(self.title)
        self.decision = QLabel()
        self.decision.setTextFormat(Qt.TextFormat.RichText)
        lay.addWidget(self.decision)
        buttons = QHBoxLayout()
        self.accept_btn = QPushButton("Accept (A)")
        self.reject_btn = QPushButton("Reject (R)")
        self.clear_btn = QPushButton("Clear (U)")
        self.accept_btn.setToolTip("Accept the selected images whatever their score (A or P)")
        self.reject_btn.setToolTip("Reject the selected images whatever their score (R or X)")
        self.clear_btn.setToolTip("Let the threshold decide again (U)")
        for b, v in ((self.accept_btn, "accept"), (self.reject_btn, "reject"), (self.clear_btn, None)):
            b.clicked.connect(lambda _=False, v=v: self.overrideRequested.emit(v))
            b.setFocusPolicy(Qt.FocusPolicy.NoFocus)
            buttons.addWidget(b)
        lay.addLayout(buttons)
        self.view = FaceImageView()
        self.view.faceClicked.connect(self.select_face)
        lay.addWidget(self.view, 1)
        row = QHBoxLayout()
        row.addWidget(QLabel("Face"))
        self.face_box = QComboBox()
        self.face_box.currentIndexChanged.connect(lambda i: self.select_face(i) if i >= 0 else None)
        row.addWidget(self.face_box, 1)
        lay.addLayout(row)
        lay.addWidget(_section("MagFace quality"))
        self.score = QLabel()
        self.score.setTextFormat(Qt.TextFormat.RichText)
        self.score.setWordWrap(True)
        lay.addWidget(self.score)
        self.gauge = ScoreGauge()
        lay.addWidget(self.gauge)
        self.ff_title = _section("FairFace")
        lay.addWidget(self.ff_title)
        self.ff_note = QLabel()
        self.ff_note.setWordWrap(True)
        lay.addWidget(self.ff_note)
        self.ff: dict[str, tuple[QLabel, ProbBars]] = {}
        for head in FAIRFACE_HEADS:
            t = QLabel(HEAD_TITLES[head])
            bars = ProbBars(label_width=120)
            lay.addWidget(t)
            lay.addWidget(bars)
            self.ff[head] = (t, bars)
        lay.addWidget(_section("CelebA attributes"))
        self.celeba_note = QLabel()
        self.celeba_note.setWordWrap(True)
        lay.addWidget(self.celeba_note)
        self.celeba = ProbBars(label_width=150)
        lay.addWidget(self.celeba)
        lay.addWidget(_section("File"))
        self.file_info = QLabel()
        self.file_info.setWordWrap(True)
        self.file_info.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.file_info.setTextFormat(Qt.TextFormat.RichText)
        lay.addWidget(self.file_info)
        lay.addStretch(0)
        self.setWidget(body)
        self.show_detail(None)

    # ---- feeding -----------------------------------------------------------------------------------------------------
    def show_detail(self, detail: dict | None, selection_size: int = 1) -> None:
        self.detail = detail
        enabled = detail is not None
        for b in (self.accept_btn, self.reject_btn, self.clear_btn):
            b.setEnabled(enabled)
        n = selection_size
        self.accept_btn.setText("Accept (A)" if n <= 1 else f"Accept {n} (A)")
        self.reject_btn.setText("Reject (R)" if n <= 1 else f"Reject {n} (R)")
        self.clear_btn.setText("Clear (U)" if n <= 1 else f"Clear {n} (U)")
        if detail is None:
            self.title.setText("No image selected")
            self.decision.setText("")
            self.view.clear("Select an image in the grid")
            self.face_box.blockSignals(True)
            self.face_box.clear()
            self.face_box.blockSignals(False)
            self.face_box.setEnabled(False)
            self._show_face(None)
            self.file_info.setText("")
            return
        self.title.setText(os.path.basename(detail.get("path") or ""))
        faces = detail.get("faces") or []
        primary = next((i for i, f in enumerate(faces) if f.get("primary")), 0)
        self.face_index = primary if faces else 0
        self.face_box.blockSignals(True)
        self.face_box.clear()
        for i, f in enumerate(faces):
            norm = f.get("magface_norm")
            sc = f" · norm {norm:.2f}" if isinstance(norm, (int, float)) else ""
            self.face_box.addItem(f"Face {i + 1}{' (largest)' if f.get('primary') else ''}{sc}")
        if faces:
            self.face_box.setCurrentIndex(self.face_index)
        self.face_box.blockSignals(False)
        self.face_box.setEnabled(len(faces) > 1)
        self.view.set_faces(faces, self.face_index)
        if detail.get("error"):
            self.view.clear(f"Cannot show this file:\n{detail['error']}")
        elif detail.get("missing"):
            self.view.clear("The file is missing (moved or deleted since it was scored).")
        else:
            self.view.clear("Loading…")
            self.view.set_faces(faces, self.face_index)
        self._show_face(faces[self.face_index] if faces else None)
        self._show_file(detail)
        self._show_decision()

    def set_image(self, image: QImage | None, full_size, error: str | None = None) -> None:
        if self.detail is None:
            return
        if image is None:
            self.view.set_image(None, None, f"Cannot show this file:\n{error or self.detail.get('error') or ''}")
        else:
            self.view.set_image(image, full_size)

    def set_decision(self, accepted: bool, reason: str) -> None:
        self._decision = (accepted, reason)
        self._show_decision()

    def set_threshold(self, threshold: float, scale: str) -> None:
        self.threshold, self.scale = threshold, scale
        if self.detail is not None:
            faces = self.detail.get("faces") or []
            self._show_face(faces[self.face_index] if faces else None)

    def select_face(self, i: int) -> None:
        faces = (self.detail or {}).get("faces") or []
        if not 0 <= i < len(faces):
            return
        self.face_index = i
        if self.face_box.currentIndex() != i:
            self.face_box.blockSignals(True)
            self.face_box.setCurrentIndex(i)
            self.face_box.blockSignals(False)
        self.view.set_faces(faces, i)
        self._show_face(faces[i])
        self.faceSelected.emit(i)

    # ---- sections ----------------------------------------------------------------------------------------------------
    def _show_decision(self) -> None:
        if self.detail is None or self._decision is None:
            self.decision.setText("")
            return
        accepted, reason = self._decision
        colour = ACCEPT if accepted else REJECT
        mark = "✔ Accepted" if accepted else "✘ Rejected"
        pin = f" <span style='color:{OVERRIDE.name()}'>(set by hand)</span>" if reason.startswith("override") else ""
        self.decision.setText(f"<span style='color:{colour.name()}; font-weight:bold'>{mark}</span> — {reason}{pin}")

    def _show_face(self, face: dict | None) -> None:
        d = self.detail
        if face is None:
            if d is None:
                self.score.setText("")
            elif d.get("error"):
                self.score.setText("Not scored: the file could not be read.")
            elif not d.get("scored", True) or d.get("n_faces", 0) < 0:
                self.score.setText("Not scored yet.")
            else:
                self.score.setText("No face found in this image.")
            self.gauge.set_values(None, self.threshold)
            self.celeba_note.setText("")
            self.celeba.set_items([])
            self.ff_note.setText("")
            for t, bars in self.ff.values():
                t.setVisible(False)
                bars.set_items([])
                bars.setVisible(False)
            return
        norm = face.get("magface_norm")
        det = face.get("det_score")
        det_txt = f" · detector confidence {det:.2f}" if isinstance(det, (int, float)) else ""
        if isinstance(norm, (int, float)) and math.isfinite(norm):
            q = quality_0_100(norm)
            tq = quality_0_100(self.threshold)
            rel = "≥" if norm >= self.threshold else "<"
            colour = ACCEPT if norm >= self.threshold else REJECT
            main = (f"norm <b>{norm:.2f}</b> (quality <b>{q}</b>/100) "
                    f"<span style='color:{colour.name()}'><b>{rel}</b></span> threshold {self.threshold:.2f} "
                    f"({tq}/100)") if self.scale == "norm" else (
                    f"quality <b>{q}</b>/100 (norm {norm:.2f}) <span style='color:{colour.name()}'><b>{rel}</b></span> "
                    f"threshold {tq}/100 ({self.threshold:.2f})")
            self.score.setText(main + det_txt)
        else:
            self.score.setText("No MagFace score (the MagFace model was not run)." + det_txt)
        self.gauge.set_values(norm if isinstance(norm, (int, float)) else None, self.threshold)
        celeba = face.get("celeba")
        if celeba:
            self.celeba_note.setText("")
            self.celeba.set_items([(a, celeba.get(a)) for a in CELEBA_ATTRIBUTES], sort=True)
            self.celeba.setVisible(True)
        else:
            self.celeba_note.setText("Not available (the FaRL CelebA model was not run).")
            self.celeba.set_items([])
            self.celeba.setVisible(False)
        ff = face.get("fairface")
        self.ff_note.setText("" if ff else "Not available (the FairFace model was not run).")
        for head, (t, bars) in self.ff.items():
            probs = (ff or {}).get(head)
            visible = bool(probs)
            t.setVisible(visible)
            bars.setVisible(visible)
            if visible:
                labels = FAIRFACE_HEADS[head]
                bars.set_items([(lab, probs.get(lab)) for lab in labels], sort=head != "age")
                t.setText(f"{HEAD_TITLES[head]}: <b>{(ff.get(head + '_top') or '').replace('_', ' ')}</b>")
            else:
                bars.set_items([])

    def _show_file(self, d: dict) -> None:
        rows = [f"<b>Path</b>: {_esc(d.get('path') or '')}",
                f"<b>Size</b>: {human_size(d.get('size'))}"]
        if d.get("width") and d.get("height"):
            rows.append(f"<b>Pixels</b>: {d['width']} × {d['height']}")
        n = d.get("n_faces")
        if isinstance(n, int) and n >= 0:
            rows.append(f"<b>Faces</b>: {n}")
        if d.get("missing"):
            rows.append("<b style='color:#D55E00'>The file is missing.</b>")
        if d.get("error"):
            rows.append(f"<b style='color:#D55E00'>Error</b>: {_esc(d['error'])}")
        models = d.get("models") or {}
        if models:
            rows.append("<b>Scored with</b>: " + ", ".join(_esc(str((v or {}).get("file") or k))
                                                           for k, v in models.items()))
        self.file_info.setText("<br>".join(rows))


def _esc(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

