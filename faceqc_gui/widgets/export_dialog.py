"""The export dialog over ``engine.export.export_project``: target, mode, crops; progress, summary, open the folder.

``prepare()`` is the pure seam (widgets -> ExportRequest, or a message saying what is wrong) and ``result()`` the
summary of the last export; both work without showing the dialog. The export itself runs in a thread with its own
connection to the project, so a big copy never freezes the window; Cancel leaves nothing behind (the engine stages
everything and only moves it into place at the end).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

from PySide6.QtCore import QObject, Qt, QUrl, Signal
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import QButtonGroup, QCheckBox, QDialog, QDoubleSpinBox, QFileDialog, QFormLayout, \
    QHBoxLayout, QLabel, QLineEdit, QPlainTextEdit, QProgressBar, QPushButton, QRadioButton, QVBoxLayout

from ..engine.errors import FaceQCError

MODE_TEXT = {"copy": "Copy the files", "hardlink": "Hard links (same disk, no extra space)",
             "symlink": "Symbolic links (point at the originals)"}


@dataclass
class ExportRequest:
    target: str
    mode: str
    crops: bool
    celeba_threshold: float
    allow_nonempty: bool


class _ExportJob(QObject):
    progress = Signal(int, int)
    done = Signal(object, str)  # ExportSummary | None, error message

    def __init__(self, project, request: ExportRequest, export_fn=None):
        super().__init__()
        self.project = project
        self.request = request
        self.stop = threading.Event()
        self._export_fn = export_fn
        self.thread = threading.Thread(target=self._run, name="faceqc-export", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        from ..gui.worker import open_sibling

        if self._export_fn is None:
            from ..engine.export import export_project as export_fn
        else:
            export_fn = self._export_fn
        project = None
        try:
            project = open_sibling(self.project)
            r = self.request
            summary = export_fn(project, r.target, mode=r.mode, crops=r.crops, allow_nonempty=r.allow_nonempty,
                                celeba_threshold=r.celeba_threshold, progress=lambda d, t: self.progress.emit(d, t),
                                stop_event=self.stop)
            self.done.emit(summary, "")
        except FaceQCError as e:
            self.done.emit(None, str(e))
        except Exception as e:  # never let a bug in a thread pass silently
            self.done.emit(None, f"Export failed: {type(e).__name__}: {e}")
        finally:
            if project is not None:
                try:
                    project.close()
                except Exception:
                    pass


class ExportDialog(QDialog):
    """``project``: the UI's Project (commit the threshold before opening: the export uses the stored one)."""

    finished_export = Signal(object)

    def __init__(self, project, accepted: int = 0, missing: int = 0, default_target: str = "", parent=None,
                 export_fn=None):
        super().__init__(parent)
        self.setWindowTitle("Export accepted images")
        self.project = project
        self._export_fn = export_fn
        self._summary = None
        self._job: _ExportJob | None = None
        self.error = ""

        lay = QVBoxLayout(self)
        intro = QLabel(f"<b>{accepted}</b> accepted images will be exported"
                       + (f" ({missing} of them are missing on disk and will be skipped)." if missing else "."))
        intro.setTextFormat(Qt.TextFormat.RichText)
        lay.addWidget(intro)
        form = QFormLayout()
        row = QHBoxLayout()
        self.target = QLineEdit(default_target)
        self.target.setPlaceholderText("an empty folder (created if needed)")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        row.addWidget(self.target, 1)
        row.addWidget(browse)
        form.addRow("Export to", row)
        self.mode_group = QButtonGroup(self)
        modes = QVBoxLayout()
        self.mode_buttons: dict[str, QRadioButton] = {}
        for i, (m, text) in enumerate(MODE_TEXT.items()):
            b = QRadioButton(text)
            self.mode_group.addButton(b, i)
            self.mode_buttons[m] = b
            modes.addWidget(b)
        self.mode_buttons["copy"].setChecked(True)
        form.addRow("Images", modes)
        self.crops = QCheckBox("Also write 112×112 ArcFace-aligned crops of each image's largest face")
        form.addRow("Crops", self.crops)
        self.celeba_t = QDoubleSpinBox()
        self.celeba_t.setRange(0.0, 1.0)
        self.celeba_t.setSingleStep(0.05)
        self.celeba_t.setValue(0.5)
        self.celeba_t.setToolTip("An attribute is written as +1 in list_attr_celeba.txt at this probability or more")
        form.addRow("CelebA +1 at p ≥", self.celeba_t)
        self.nonempty = QCheckBox("Allow a folder that already has other files (nothing is overwritten)")
        form.addRow("", self.nonempty)
        lay.addLayout(form)
        formats = QLabel("Writes <tt>images/</tt>, <tt>manifest.csv</tt>, <tt>manifest.json</tt> (every score, "
                         "attribute and model id), <tt>list_attr_celeba.txt</tt> (CelebA format), "
                         "<tt>fairface_labels.csv</tt>, <tt>summary.txt</tt> and a balance report of the exported "
                         "set (<tt>balance_report.csv</tt> / <tt>.png</tt>: race × gender, top labels).")
        formats.setWordWrap(True)
        formats.setTextFormat(Qt.TextFormat.RichText)
        lay.addWidget(formats)
        self.bar = QProgressBar()
        self.bar.setVisible(False)
        lay.addWidget(self.bar)
        self.summary_box = QPlainTextEdit()
        self.summary_box.setReadOnly(True)
        self.summary_box.setVisible(False)
        self.summary_box.setMinimumHeight(110)
        lay.addWidget(self.summary_box)
        buttons = QHBoxLayout()
        self.open_btn = QPushButton("Open folder")
        self.open_btn.setVisible(False)
        self.open_btn.clicked.connect(self.open_folder)
        self.export_btn = QPushButton("Export")
        self.export_btn.setDefault(True)
        self.export_btn.clicked.connect(self.start)
        self.close_btn = QPushButton("Close")
        self.close_btn.clicked.connect(self._close_or_cancel)
        buttons.addWidget(self.open_btn)
        buttons.addStretch(1)
        buttons.addWidget(self.export_btn)
        buttons.addWidget(self.close_btn)
        lay.addLayout(buttons)
        self.resize(620, 420)

    # ---- seam ----------------------------------------------------------------------------------------------------------
    def prepare(self) -> ExportRequest | str:
        """The request the widgets describe, or a sentence saying what is missing."""
        target = self.target.text().strip()
        if not target:
            return "Choose a folder to export to."
        mode = next(m for m, b in self.mode_buttons.items() if b.isChecked())
        return ExportRequest(target=os.path.abspath(os.path.expanduser(target)), mode=mode,
                             crops=self.crops.isChecked(), celeba_threshold=float(self.celeba_t.value()),
                             allow_nonempty=self.nonempty.isChecked())

    def result(self):
        return self._summary

    @property
    def running(self) -> bool:
        return self._job is not None

    # ---- running -------------------------------------------------------------------------------------------------------
    def start(self) -> bool:
        req = self.prepare()
        if isinstance(req, str):
            self._show_error(req)
            return False
        self.error = ""
        self._summary = None
        self.summary_box.setVisible(False)
        self.open_btn.setVisible(False)
        self.bar.setVisible(True)
        self.bar.setRange(0, 0)
        self.export_btn.setEnabled(False)
        self.close_btn.setText("Cancel")
        self._job = _ExportJob(self.project, req, self._export_fn)
        self._job.progress.connect(self._on_progress)
        self._job.done.connect(self._on_done)
        self._job.start()
        return True

    def cancel(self) -> None:
        if self._job is not None:
            self._job.stop.set()

    def _on_progress(self, done: int, total: int) -> None:
        self.bar.setRange(0, max(1, total))
        self.bar.setValue(done)

    def _on_done(self, summary, error: str) -> None:
        self._job = None
        self.export_btn.setEnabled(True)
        self.close_btn.setText("Close")
        self.bar.setVisible(False)
        if summary is None:
            self._show_error(error)
            return
        self._summary = summary
        text = summary.text()
        if summary.crop_failures:
            text += "\n\nNo crop for:\n" + "\n".join(f"  {s}: {w}" for s, w in summary.crop_failures[:20])
        self.summary_box.setPlainText(text)
        self.summary_box.setVisible(True)
        self.open_btn.setVisible(True)
        self.finished_export.emit(summary)

    def _show_error(self, message: str) -> None:
        self.error = message
        self.summary_box.setPlainText(message)
        self.summary_box.setVisible(True)

    def open_folder(self) -> None:
        if self._summary is not None:
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(self._summary.target)))

    def _browse(self) -> None:
        d = QFileDialog.getExistingDirectory(self, "Export to", self.target.text() or os.path.expanduser("~"))
        if d:
            self.target.setText(d)

    def _close_or_cancel(self) -> None:
        if self._job is not None:
            self.cancel()
        else:
            self.reject()

    def closeEvent(self, e) -> None:
        self.cancel()
        super().closeEvent(e)
