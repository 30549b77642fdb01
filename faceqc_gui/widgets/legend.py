"""The legend of the grid's colours and marks: the quality colour ramp (both scales) and the decision glyphs."""

from __future__ import annotations

from PySide6.QtCore import QPointF, QRectF, QSize, Qt
from PySide6.QtGui import QPainter, QPalette
from PySide6.QtWidgets import QSizePolicy, QWidget

from ..engine.quality import quality_0_100
from ..gui.colors import quality_color
from .grid import draw_decision_badge, draw_pin


class Legend(QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.scale = "norm"
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Fixed)
        self.setFixedSize(290, 72)
        self.setToolTip("Tile colour = MagFace quality (cividis, readable with colour-blindness). "
                        "Round tick = accepted, square cross = rejected (dashed border), pin = set by hand.")

    def sizeHint(self) -> QSize:
        return QSize(290, 72)

    def set_scale(self, scale: str) -> None:
        self.scale = scale
        self.update()

    def paintEvent(self, e) -> None:
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        text = self.palette().color(QPalette.ColorRole.WindowText)
        ramp_w = self.width() - 12
        x0, y0 = 4, 6
        for i in range(ramp_w):
            p.fillRect(QRectF(x0 + i, y0, 1.2, 12), quality_color(100.0 * i / (ramp_w - 1)))
        p.setPen(text)
        f = p.font()
        f.setPointSizeF(max(7.0, f.pointSizeF() * 0.85))
        p.setFont(f)
        if self.scale == "q100":
            ticks = [(q, f"{q}") for q in (0, 25, 50, 75, 100)]
        else:  # the ramp is linear in quality; label it with the norms at round values
            ticks = [(quality_0_100(n), f"{n}") for n in (16, 20, 23, 26, 30)]
        for q, label in ticks:
            x = x0 + ramp_w * q / 100
            p.drawLine(QPointF(x, y0 + 12), QPointF(x, y0 + 15))
            p.drawText(QRectF(x - 20, y0 + 15, 40, 14), Qt.AlignmentFlag.AlignCenter, label)
        p.drawText(QRectF(x0, y0 + 29, ramp_w, 14), Qt.AlignmentFlag.AlignCenter,
                   "quality (0–100)" if self.scale == "q100" else "MagFace norm")
        x, y0 = x0, y0 + 48
        items = [("accepted", lambda r: draw_decision_badge(p, r, True)),
                 ("rejected", lambda r: draw_decision_badge(p, r, False)),
                 ("set by hand", lambda r: draw_pin(p, r))]
        for label, draw in items:
            draw(QRectF(x, y0, 14, 14))
            p.setPen(text)
            w = p.fontMetrics().horizontalAdvance(label)
            p.drawText(QRectF(x + 18, y0 - 1, w + 4, 16), Qt.AlignmentFlag.AlignVCenter, label)
            x += 18 + w + 14
