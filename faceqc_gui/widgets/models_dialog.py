"""Models ▸ Models…: which weight files are there, download the missing ones with progress, or point at a file.

Status checks (hashing a 300 MB file takes a second) and downloads run in a thread; the dialog only shows them. A
located file is linked (or, where links are not possible, copied) into the folder downloads go to, under its
canonical name, so the CLI and the app find it the same way. ``prepare()`` is the pure seam: the rows as shown.
"""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtWidgets import QDialog, QFileDialog, QHBoxLayout, QHeaderView, QLabel, QProgressBar, QPushButton, \
    QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget

from ..engine import registry
from ..engine.errors import FaceQCError

COLUMNS = ["Model", "Provides", "Status", "", ""]
C_MODEL, C_PROVIDES, C_STATUS, C_PROGRESS, C_ACTIONS = range(len(COLUMNS))


def downloads_dir(models_dir=None) -> Path:
    return Path(models_dir).expanduser() if models_dir else registry.user_models_dir()


def install_located_file(key: str, source: str | os.PathLike, models_dir=None) -> Path:
    """Makes ``source`` findable as ``key``'s weight file: a symlink in the downloads folder, or a copy."""
    spec = registry.MODELS[key]
    src = Path(source).expanduser().resolve()
    if not src.is_file():
        raise FaceQCError(f"{src} is not a file.")
    dest_dir = downloads_dir(models_dir)
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise FaceQCError(f"Cannot create {dest_dir}: {e.strerror or e}.") from e
    dest = dest_dir / spec.filename
    if dest.resolve() == src:
        return dest
    if os.path.lexists(dest):
        raise FaceQCError(f"{dest} already exists; remove it first if you want to use {src.name} instead.")
    try:
        os.symlink(src, dest)
    except OSError:
        try:
            shutil.copy2(src, dest)
        except OSError as e:
            raise FaceQCError(f"Cannot copy {src} to {dest}: {e.strerror or e}.") from e
    return dest


class _Jobs(QObject):
    """Runs status checks and downloads in a background thread, one after the other, in the order asked."""

    status = Signal(list)
    progress = Signal(str, int, int)  # key, done, total (0 = unknown)
    downloaded = Signal(str, str)  # key, error ("" on success)
    idle = Signal()

    def __init__(self, models_dir, status_fn, download_fn):
        super().__init__()
        self.models_dir = models_dir
        self.status_fn = status_fn
        self.download_fn = download_fn
        self.cancel = threading.Event()
        self._lock = threading.Lock()
        self._tasks: list = []
        self._running = False

    @property
    def busy(self) -> bool:
        with self._lock:
            return self._running or bool(self._tasks)

    @property
    def downloading(self) -> bool:
        with self._lock:
            return any(t[0] == "download" for t in self._tasks) or getattr(self, "_current", None) == "download"

    def _submit(self, task) -> None:
        with self._lock:
            self._tasks.append(task)
            if self._running:
                return
            self._running = True
        threading.Thread(target=self._loop, name="faceqc-models", daemon=True).start()

    def _loop(self) -> None:
        while True:
            with self._lock:
                if not self._tasks:
                    self._running = False
                    self._current = None
                    break
                task = self._tasks.pop(0)
                self._current = task[0]
            try:
                if task[0] == "status":
                    self._status(task[1])
                else:
                    self._download(task[1])
            except Exception:  # never kill the loop; the status shows what is there
                pass
        self.idle.emit()

    def refresh(self, verify: bool = True) -> None:
        self._submit(("status", verify))

    def _status(self, verify: bool) -> None:
        try:
            self.status.emit(list(self.status_fn(self.models_dir, verify=verify)))
        except Exception:  # a status check must never take the dialog down; show the cheap one instead
            self.status.emit(list(self.status_fn(self.models_dir, verify=False)))

    def download(self, keys: list[str]) -> None:
        self.cancel.clear()
        self._submit(("download", list(keys)))

    def _download(self, keys: list[str]) -> None:
        for key in keys:
            if self.cancel.is_set():
                break
            try:
                self.download_fn(key, dest_dir=downloads_dir(self.models_dir),
                                 progress=lambda d, t, key=key: self.progress.emit(key, int(d), int(t or 0)),
                                 cancel=self.cancel)
                self.downloaded.emit(key, "")
            except FaceQCError as e:
                self.downloaded.emit(key, str(e))
            except Exception as e:
                self.downloaded.emit(key, f"{type(e).__name__}: {e}")
        self._status(True)


class ModelsDialog(QDialog):
    modelsChanged = Signal()  # files appeared or changed: reload models before the next scoring run

    def __init__(self, models_dir=None, parent=None, status_fn=None, download_fn=None):
        super().__init__(parent)
        self.setWindowTitle("Models")
        self.setModal(False)
        if status_fn is None or download_fn is None:
            from ..engine import download as dl

            status_fn = status_fn or dl.model_status
            download_fn = download_fn or dl.download_model
        self.models_dir = models_dir
        self.rows: dict[str, object] = {}  # key -> ModelStatus
        self.errors: dict[str, str] = {}
        self.jobs = _Jobs(models_dir, status_fn, download_fn)
        self.jobs.status.connect(self._on_status)
        self.jobs.progress.connect(self._on_progress)
        self.jobs.downloaded.connect(self._on_downloaded)
        self.jobs.idle.connect(self._on_idle)

        lay = QVBoxLayout(self)
        where = "\n".join(f"  {d}" for d in registry.search_dirs(models_dir))
        intro = QLabel("FaceQC looks for weight files in, in order:\n" + where +
                       f"\nDownloads go to {downloads_dir(models_dir)}.")
        intro.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        lay.addWidget(intro)
        self.table = QTableWidget(len(registry.MODELS), len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.setSelectionMode(QTableWidget.SelectionMode.NoSelection)
        h = self.table.horizontalHeader()
        h.setSectionResizeMode(C_PROVIDES, QHeaderView.ResizeMode.Stretch)
        for c in (C_MODEL, C_STATUS, C_ACTIONS):
            h.setSectionResizeMode(c, QHeaderView.ResizeMode.ResizeToContents)
        h.setSectionResizeMode(C_PROGRESS, QHeaderView.ResizeMode.Fixed)
        self.table.setColumnWidth(C_PROGRESS, 130)  # a bar while downloading, empty otherwise
        self.bars: dict[str, QProgressBar] = {}
        self.download_buttons: dict[str, QPushButton] = {}
        self.locate_buttons: dict[str, QPushButton] = {}
        for i, (key, spec) in enumerate(registry.MODELS.items()):
            self.table.setItem(i, C_MODEL, QTableWidgetItem(f"{spec.title}\n{spec.filename} (~{spec.approx_mb:g} MB)"))
            self.table.setItem(i, C_PROVIDES, QTableWidgetItem(spec.provides))
            self.table.setItem(i, C_STATUS, QTableWidgetItem("checking…"))
            # The bar sits in a holder: the view re-shows its cell widgets on every layout, and an empty bar on every
            # row read as a broken control. The holder is what the view shows; the bar appears while downloading.
            holder = QWidget()
            hl = QHBoxLayout(holder)
            hl.setContentsMargins(2, 2, 2, 2)
            bar = QProgressBar()
            bar.setVisible(False)
            hl.addWidget(bar)
            self.bars[key] = bar
            self.table.setCellWidget(i, C_PROGRESS, holder)
            cell = QWidget()
            cl = QHBoxLayout(cell)
            cl.setContentsMargins(2, 0, 2, 0)
            dl_btn = QPushButton("Download")
            dl_btn.clicked.connect(lambda _=False, k=key: self.download([k]))
            loc = QPushButton("Locate file…")
            loc.clicked.connect(lambda _=False, k=key: self.locate(k))
            cl.addWidget(dl_btn)
            cl.addWidget(loc)
            self.download_buttons[key] = dl_btn
            self.locate_buttons[key] = loc
            self.table.setCellWidget(i, C_ACTIONS, cell)
        self.table.resizeRowsToContents()
        lay.addWidget(self.table, 1)
        self.message = QLabel()
        self.message.setWordWrap(True)
        self.message.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        lay.addWidget(self.message)
        buttons = QHBoxLayout()
        self.all_btn = QPushButton("Download all missing")
        self.all_btn.clicked.connect(self.download_all_missing)
        self.cancel_btn = QPushButton("Cancel download")
        self.cancel_btn.clicked.connect(self.jobs.cancel.set)
        self.cancel_btn.setEnabled(False)
        close = QPushButton("Close")
        close.clicked.connect(self.close)
        buttons.addWidget(self.all_btn)
        buttons.addWidget(self.cancel_btn)
        buttons.addStretch(1)
        buttons.addWidget(close)
        lay.addLayout(buttons)
        # Wide and tall enough for all five rows with "Provides" on one or two lines (at 900x420 it wrapped to four
        # and the last row was cut off).
        self.resize(1180, 400)
        self.refresh()

    # ---- seam ----------------------------------------------------------------------------------------------------------
    def prepare(self) -> list[tuple[str, str, str]]:
        """(key, state, text in the Status column) per model, as shown."""
        out = []
        for i, key in enumerate(registry.MODELS):
            st = self.rows.get(key)
            out.append((key, getattr(st, "state", "unknown"), self.table.item(i, C_STATUS).text()))
        return out

    def missing(self) -> list[str]:
        return [k for k, st in self.rows.items() if not st.found]

    # ---- actions -------------------------------------------------------------------------------------------------------
    def refresh(self) -> None:
        self.jobs.refresh(verify=True)

    def download_all_missing(self) -> bool:
        keys = self.missing() if self.rows else list(registry.MODELS)
        if not keys:
            self.message.setText("Every weight file is present.")
            return False
        return self.download(keys)

    def download(self, keys: list[str]) -> bool:
        if self.jobs.downloading:
            self.message.setText("A download is already running.")
            return False
        self.jobs.download(list(keys))
        self.errors.clear()
        for k in keys:
            self.bars[k].setVisible(True)
            self.bars[k].setRange(0, 0)
        self._set_busy(True)
        self.message.setText("Downloading " + ", ".join(registry.MODELS[k].filename for k in keys) + "…")
        return True

    def locate(self, key: str, path: str | None = None) -> bool:
        if path is None:
            path, _ = QFileDialog.getOpenFileName(self, f"Locate {registry.MODELS[key].filename}",
                                                  os.path.expanduser("~"), "Weights (*.pth *.pt *.pkl);;All files (*)")
            if not path:
                return False
        try:
            dest = install_located_file(key, path, self.models_dir)
        except FaceQCError as e:
            self.message.setText(str(e))
            return False
        self.message.setText(f"{registry.MODELS[key].title}: using {path} (linked as {dest}).")
        self.modelsChanged.emit()
        self.refresh()
        return True

    def _set_busy(self, busy: bool) -> None:
        self.all_btn.setEnabled(not busy)
        self.cancel_btn.setEnabled(busy)
        for b in list(self.download_buttons.values()) + list(self.locate_buttons.values()):
            b.setEnabled(not busy)

    # ---- job results ---------------------------------------------------------------------------------------------------
    def _on_status(self, statuses: list) -> None:
        for st in statuses:
            self.rows[st.key] = st
            i = list(registry.MODELS).index(st.key)
            text = st.describe()
            if st.path is not None:
                text += f"\n{st.path}"
            if st.key in self.errors:
                text += f"\nLast download failed: {self.errors[st.key]}"
            self.table.item(i, C_STATUS).setText(text)
            self.download_buttons[st.key].setText("Download" if not st.found else "Download again")
        self.table.resizeRowsToContents()

    def _on_progress(self, key: str, done: int, total: int) -> None:
        bar = self.bars[key]
        if total > 0:
            bar.setRange(0, 1000)
            bar.setValue(int(1000 * done / total))
            bar.setFormat(f"{done / 1e6:.0f} / {total / 1e6:.0f} MB")
        else:
            bar.setRange(0, 0)

    def _on_downloaded(self, key: str, error: str) -> None:
        self.bars[key].setVisible(False)
        if error:
            self.errors[key] = error
            self.message.setText(error)
        else:
            self.modelsChanged.emit()

    def _on_idle(self) -> None:
        if self.jobs.busy:
            return
        self._set_busy(False)
        if not self.errors and self.message.text().startswith("Downloading"):
            self.message.setText("Done.")

    def closeEvent(self, e) -> None:
        # Downloads go on in the background if the dialog is only hidden; closing the app cancels them.
        super().closeEvent(e)
