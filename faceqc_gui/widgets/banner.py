"""A non-modal message strip at the top of the window (missing models, read-only project, scoring errors).

One banner per topic (``key``): showing a key again replaces its text instead of stacking another message, and a
dismissed key stays dismissed for the session, so a problem is stated plainly once, never as a pile of dialogs.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QToolButton, QVBoxLayout, QWidget

LEVEL_COLOURS = {"info": QColor(220, 236, 250), "warning": QColor(253, 240, 205), "error": QColor(250, 222, 210)}


class Banner(QFrame):
    closed = Signal(str)

    def __init__(self, key: str, text: str, level: str = "info", actions=(), parent=None):
        super().__init__(parent)
        self.key = key
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.setAutoFillBackground(True)
        pal = self.palette()
        pal.setColor(QPalette.ColorRole.Window, LEVEL_COLOURS.get(level, LEVEL_COLOURS["info"]))
        pal.setColor(QPalette.ColorRole.WindowText, QColor(20, 20, 20))
        self.setPalette(pal)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(10, 6, 6, 6)
        self.label = QLabel(text)
        self.label.setWordWrap(True)
        self.label.setTextFormat(Qt.TextFormat.RichText)
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        lay.addWidget(self.label, 1)
        self.buttons: dict[str, QPushButton] = {}
        for label, callback in actions:
            b = QPushButton(label)
            b.clicked.connect(callback)
            self.buttons[label] = b
            lay.addWidget(b)
        close = QToolButton()
        close.setText("✕")
        close.setToolTip("Dismiss")
        close.setAutoRaise(True)
        close.clicked.connect(self.dismiss)
        lay.addWidget(close, 0, Qt.AlignmentFlag.AlignTop)

    def dismiss(self) -> None:
        self.hide()
        self.closed.emit(self.key)


class BannerArea(QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        self._lay = QVBoxLayout(self)
        self._lay.setContentsMargins(0, 0, 0, 0)
        self._lay.setSpacing(2)
        self.banners: dict[str, Banner] = {}
        self.dismissed: set[str] = set()

    def show_banner(self, key: str, text: str, level: str = "info", actions=()) -> Banner | None:
        if key in self.dismissed:
            return None
        old = self.banners.pop(key, None)
        if old is not None:
            old.setParent(None)
            old.deleteLater()
        b = Banner(key, text, level, actions)
        b.closed.connect(self._on_closed)
        self._lay.addWidget(b)
        b.show()  # a child added to a window already on screen stays hidden until shown
        self.banners[key] = b
        return b

    def remove(self, key: str) -> None:
        b = self.banners.pop(key, None)
        if b is not None:
            b.setParent(None)
            b.deleteLater()

    def visible_keys(self) -> list[str]:
        return [k for k, b in self.banners.items() if not b.isHidden()]

    def _on_closed(self, key: str) -> None:
        self.dismissed.add(key)
        self.remove(key)
