"""The status bar: scoring progress with rate and ETA, Pause/Resume/Cancel, the device, the models' state."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QLabel, QProgressBar, QStatusBar, QToolButton


class AppStatusBar(QStatusBar):
    pauseClicked = Signal()
    resumeClicked = Signal()
    cancelClicked = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.phase = QLabel()
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(220)
        self.progress.setTextVisible(True)
        self.rate = QLabel()
        self.pause_btn = QToolButton()
        self.pause_btn.setText("Pause")
        self.pause_btn.clicked.connect(self._pause_or_resume)
        self.cancel_btn = QToolButton()
        self.cancel_btn.setText("Cancel")
        self.cancel_btn.clicked.connect(self.cancelClicked)
        self.device = QLabel()
        self.models = QLabel()
        self.models.setToolTip("Model weights (Models ▸ Models… for details)")
        self.counts = QLabel()
        self.addWidget(self.phase, 1)
        for w in (self.progress, self.rate, self.pause_btn, self.cancel_btn):
            self.addPermanentWidget(w)
        self.addPermanentWidget(self.counts)
        self.addPermanentWidget(self.device)
        self.addPermanentWidget(self.models)
        self.set_state("idle")

    def _pause_or_resume(self) -> None:
        (self.resumeClicked if self.pause_btn.text() == "Resume" else self.pauseClicked).emit()

    def set_state(self, state: str) -> None:
        busy = state in ("running", "paused", "stopping")
        for w in (self.progress, self.rate, self.pause_btn, self.cancel_btn):
            w.setVisible(busy)
        self.pause_btn.setText("Resume" if state == "paused" else "Pause")
        self.pause_btn.setEnabled(state in ("running", "paused"))
        self.cancel_btn.setEnabled(state in ("running", "paused"))

    def set_progress(self, p) -> None:
        self.progress.setRange(0, max(1, p.total))
        self.progress.setValue(p.done)
        self.progress.setFormat(f"{p.done}/{p.total}")
        eta = ""
        if p.eta_s is not None:
            from ..gui.worker import format_duration

            eta = f" · ETA {format_duration(p.eta_s)}"
        self.rate.setText(f"{p.rate:.1f} img/s{eta}")

    def set_phase(self, text: str) -> None:
        self.phase.setText(text)

    def set_device(self, text: str) -> None:
        self.device.setText(text)

    def set_models(self, text: str, tooltip: str = "") -> None:
        self.models.setText(text)
        if tooltip:
            self.models.setToolTip(tooltip)

    def set_counts(self, text: str) -> None:
        self.counts.setText(text)
