"""Space: the selected image large, with its face boxes; Space or Esc closes it, arrows move through the grid, and the
curation keys (A/P accept, R/X reject, U clear) decide without leaving it."""

from __future__ import annotations

import html
import os

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QDialog, QLabel, QVBoxLayout

from .face_panel import FaceImageView


DECISION_KEYS = {Qt.Key.Key_A: "accept", Qt.Key.Key_P: "accept", Qt.Key.Key_R: "reject", Qt.Key.Key_X: "reject",
                 Qt.Key.Key_U: None}


class PreviewWindow(QDialog):
    navigate = Signal(int)  # -1 previous, +1 next
    decide = Signal(object)  # "accept" | "reject" | None (clear the override), for the image shown

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Preview")
        self.setModal(False)
        self.resize(900, 800)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        self.view = FaceImageView()
        lay.addWidget(self.view, 1)
        self.caption = QLabel()
        self.caption.setTextFormat(Qt.TextFormat.RichText)
        self.caption.setContentsMargins(8, 4, 8, 6)
        lay.addWidget(self.caption)
        self.image_id: int | None = None
        self._name = ""

    def show_detail(self, detail: dict | None) -> None:
        self.image_id = None if detail is None else detail.get("id")
        if detail is None:
            self.view.clear("No image selected")
            self.caption.setText("")
            return
        self.view.clear("Loading…")
        self.view.set_faces(detail.get("faces") or [], next((i for i, f in enumerate(detail.get("faces") or [])
                                                               if f.get("primary")), 0))
        self._name = html.escape(os.path.basename(detail.get("path") or ""))
        self.caption.setText(self._name)

    def set_decision(self, decision_html: str) -> None:
        """The face panel's decision line (mark, reason, set by hand) next to the file name."""
        if self.image_id is not None:
            self.caption.setText(f"<b>{self._name}</b> &nbsp; {decision_html}")

    def set_image(self, image, full_size, error=None) -> None:
        self.view.set_image(image, full_size, "" if image is not None else f"Cannot show this file: {error}")

    def keyPressEvent(self, e) -> None:
        if e.key() in (Qt.Key.Key_Space, Qt.Key.Key_Escape):
            self.close()
        elif e.key() in (Qt.Key.Key_Right, Qt.Key.Key_Down):
            self.navigate.emit(1)
        elif e.key() in (Qt.Key.Key_Left, Qt.Key.Key_Up):
            self.navigate.emit(-1)
        elif e.key() in DECISION_KEYS and not e.modifiers() & ~Qt.KeyboardModifier.KeypadModifier:
            self.decide.emit(DECISION_KEYS[e.key()])
        else:
            super().keyPressEvent(e)
