"""The FaceQC main window: thumbnail grid, threshold bar, face panel, filters, status bar, menus.

The window wires widgets to the session (the open project) and the scoring controller; it holds no data of its own
beyond what is on screen. Long work (scoring, thumbnails, previews, exports, downloads) never runs on this thread.
"""

from __future__ import annotations

import gc
import os
import time
from pathlib import Path

import numpy as np
from PySide6.QtCore import QByteArray, QItemSelectionModel, QObject, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QActionGroup, QKeySequence
from PySide6.QtWidgets import QCheckBox, QComboBox, QDialog, QDockWidget, QFileDialog, QHBoxLayout, QLabel, QMainWindow, \
    QScrollArea, QSlider, QSplitter, QToolButton, QVBoxLayout, QWidget

from ..engine import registry
from ..engine.decisions import REASON_TEXT
from ..engine.errors import FaceQCError
from ..gui.session import ProjectSession
from ..gui.settings import AppSettings, project_for_folder, projects_dir
from ..gui.state import TILE_MAX, TILE_MIN, sort_keys
from ..gui.thumbs import ImageLoader, ThumbnailDiskCache
from ..gui.worker import ScoringController
from .balance_dialog import BalanceDialog
from .banner import BannerArea
from .demographics import DemographicsPanel
from .face_panel import FacePanel
from .filter_panel import FilterPanel
from .grid import MARGIN, STRIP, GridModel, TileDelegate, TileGridView, positions_of_selection, \
    selection_from_positions
from .legend import Legend
from .statusbar import AppStatusBar
from .threshold_bar import ThresholdBar

PROJECT_SUFFIX = ".faceqc"
RESORT_INTERVAL_MS = 2000  # while results stream in, the order is refreshed at most this often
MAX_SAVED_SELECTION = 20000


class _DeviceProbe(QObject):
    """Names the torch device in a thread at start-up, then imports the scoring modules (torch, facer, OpenCV).

    Importing them takes seconds, and a C extension being loaded holds the GIL for up to a few hundred ms at a time
    (bench/gui.py measures it). Paying that once while the window appears is better than in the middle of the
    user's work, when the first scoring run starts."""

    found = Signal(str)

    def start(self, device: str) -> None:
        import threading

        def run():
            try:
                from ..engine.device import describe_device, resolve_device

                self.found.emit(describe_device(resolve_device(device)))
            except Exception as e:
                self.found.emit(f"device: {e}")
            try:
                from ..engine import detect, pipeline  # noqa: F401
                from ..engine.imports import import_preserving_qt_env

                import_preserving_qt_env("facer.face_detection.retinaface")  # what the detector loads first
            except Exception:  # scoring reports its own errors when it runs
                pass
            # The ~200k objects these imports made live as long as the process: keep the collector's full passes
            # (which hold the GIL, whatever thread runs them) from walking them again and again.
            gc.freeze()

        threading.Thread(target=run, name="faceqc-device", daemon=True).start()


def _scrollable(widget: QWidget) -> QScrollArea:
    """A dock's content in a scroll area: without it the dock's minimum height (the filters ~630 px, the
    Demographics panel ~430 px) adds up to a window taller than a laptop screen once both are shown."""
    area = QScrollArea()
    area.setWidget(widget)
    area.setWidgetResizable(True)
    area.setFrameShape(QScrollArea.Shape.NoFrame)
    # Scroll up and down only: the dock keeps the content's own minimum width (plus room for the scroll bar).
    area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    area.setMinimumWidth(widget.minimumSizeHint().width() + area.verticalScrollBar().sizeHint().width())
    return area


class MainWindow(QMainWindow):
    def __init__(self, settings: AppSettings | None = None, models_dir=None, device: str = "auto",
                 thumb_cache_dir=None, probe_device: bool = True):
        super().__init__()
        self.setWindowTitle("FaceQC")
        self.settings = settings or AppSettings()
        self.models_dir = models_dir
        self.device = device
        self.session = ProjectSession(parent=self)
        self.controller = ScoringController(self, models_dir=models_dir, device=device)
        self.loader = ImageLoader(ThumbnailDiskCache(thumb_cache_dir), workers=2, parent=self)
        self.loader.disk.prune_in_background()  # keeps the on-disk cache under its cap (thumbs.DISK_CACHE_MAX_BYTES)
        self._pending_paths: list[str] = []
        self._selected_ids = np.zeros(0, np.int64)
        self._current_id: int | None = None
        self._detail: dict | None = None
        self._models_dialog = None
        self._export_dialog = None
        self._preview = None
        self._closing = False
        self._resort_due = False
        self.models_missing_message = ""

        self._build_widgets()
        self._build_actions()
        self._connect()
        self.setAcceptDrops(True)
        self._restore_window()
        self._update_title()
        self._update_actions()
        self.check_models()
        if probe_device:
            self._probe = _DeviceProbe(self)
            self._probe.found.connect(lambda t: self.status.set_device(t))
            self._probe.start(device)

    # =================================================================================================================
    # construction
    def _build_widgets(self) -> None:
        self.model = GridModel(self.session, self.loader, self)
        self.grid = TileGridView()
        self.grid.setModel(self.model)
        self.delegate = TileDelegate(self.model, self.grid)
        self.grid.setItemDelegate(self.delegate)
        self.model.thumbArrived = self.grid.update_positions
        self.grid.set_placeholder_text("Drop folders or images here, or use File ▸ Add Folder…")

        self.bar = ThresholdBar()
        self.legend = Legend()
        self.panel = FacePanel()
        self.filters = FilterPanel(self.session.view)
        self.banners = BannerArea()
        self.status = AppStatusBar()
        self.setStatusBar(self.status)

        # grid toolbar: sort, direction, tile size, visible count
        self.sort_box = QComboBox()
        for key, label in sort_keys():
            self.sort_box.addItem(label, key)
        self.sort_box.setMaxVisibleItems(20)
        self.desc_btn = QToolButton()
        self.desc_btn.setCheckable(True)
        self.desc_btn.setToolTip("Descending / ascending")
        self.tile_slider = QSlider(Qt.Orientation.Horizontal)
        self.tile_slider.setRange(TILE_MIN, TILE_MAX)
        self.tile_slider.setMaximumWidth(140)
        self.tile_slider.setToolTip("Tile size")
        self.auto_advance = QCheckBox("Auto-advance")
        self.auto_advance.setToolTip("After Accept/Reject/Clear on one image, move to the next")
        self.visible_label = QLabel()
        top = QHBoxLayout()
        top.setContentsMargins(4, 2, 4, 2)
        top.addWidget(QLabel("Sort"))
        top.addWidget(self.sort_box)
        top.addWidget(self.desc_btn)
        top.addSpacing(12)
        top.addWidget(QLabel("Size"))
        top.addWidget(self.tile_slider)
        top.addSpacing(12)
        top.addWidget(self.auto_advance)
        top.addStretch(1)
        top.addWidget(self.visible_label)

        centre = QWidget()
        cl = QVBoxLayout(centre)
        cl.setContentsMargins(0, 0, 0, 0)
        cl.setSpacing(0)
        cl.addWidget(self.banners)
        cl.addLayout(top)
        cl.addWidget(self.grid, 1)
        self.bar.add_side_widget(self.legend)
        self.bar.setMaximumHeight(170)
        cl.addWidget(self.bar)

        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.addWidget(centre)
        self.splitter.addWidget(self.panel)
        self.splitter.setStretchFactor(0, 3)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setSizes([1000, 380])
        self.setCentralWidget(self.splitter)

        self.filter_dock = QDockWidget("Filters", self)
        self.filter_dock.setObjectName("filters")
        self.filter_dock.setWidget(_scrollable(self.filters))
        self.filter_dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetClosable |
                                     QDockWidget.DockWidgetFeature.DockWidgetMovable)
        self.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, self.filter_dock)
        # Who is in the set (issue 6): a dock, hidden at first so the grid keeps its room; View ▸ Demographics.
        self.demographics = DemographicsPanel()
        self.demo_dock = QDockWidget("Demographics", self)
        self.demo_dock.setObjectName("demographics")
        self.demo_dock.setWidget(_scrollable(self.demographics))
        self.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, self.demo_dock)
        self.demo_dock.hide()
        self._demo_fitted = False
        self._load_view_widgets()

    def _action(self, text: str, slot, shortcuts=(), tip: str = "", context=None, checkable=False) -> QAction:
        a = QAction(text, self)
        if shortcuts:
            a.setShortcuts([QKeySequence(s) for s in shortcuts])
        if context is not None:
            a.setShortcutContext(context)
        if tip:
            a.setStatusTip(tip)
            a.setToolTip(tip)
        a.setCheckable(checkable)
        a.triggered.connect(slot)
        return a

    def _build_actions(self) -> None:
        grid_only = Qt.ShortcutContext.WidgetWithChildrenShortcut
        m = self.menuBar()
        f = m.addMenu("&File")
        self.act_new = self._action("New Project…", self.new_project_dialog, ["Ctrl+N"])
        self.act_open = self._action("Open Project…", self.open_project_dialog, ["Ctrl+O"])
        self.act_open_folder = self._action("Open Folder as Project…", self.open_folder_dialog, ["Ctrl+Shift+O"])
        self.act_add_folder = self._action("Add Folder…", self.add_folder_dialog, ["Ctrl+Shift+A"])
        self.act_add_files = self._action("Add Images…", self.add_files_dialog)
        self.act_export = self._action("Export Accepted…", self.open_export_dialog, ["Ctrl+E"])
        self.act_close = self._action("Close Project", self.close_project, ["Ctrl+W"])
        self.act_quit = self._action("Quit", self.close, ["Ctrl+Q"])
        for a in (self.act_new, self.act_open, self.act_open_folder):
            f.addAction(a)
        self.recent_menu = f.addMenu("Recent Projects")
        f.addSeparator()
        f.addAction(self.act_add_folder)
        f.addAction(self.act_add_files)
        f.addSeparator()
        f.addAction(self.act_export)
        f.addSeparator()
        f.addAction(self.act_close)
        f.addAction(self.act_quit)
        self._fill_recent()

        e = m.addMenu("&Edit")
        self.act_undo = self._action("Undo", self.undo, ["Ctrl+Z"])
        self.act_redo = self._action("Redo", self.redo, ["Ctrl+Shift+Z", "Ctrl+Y"])
        self.act_accept = self._action("Accept", lambda: self.set_override("accept"), ["A", "P"],
                                       "Accept the selected images whatever their score", grid_only)
        self.act_reject = self._action("Reject", lambda: self.set_override("reject"), ["R", "X"],
                                       "Reject the selected images whatever their score", grid_only)
        self.act_clear = self._action("Clear Override", lambda: self.set_override(None), ["U"],
                                      "Let the threshold decide the selected images again", grid_only)
        self.act_select_all = self._action("Select All", self.grid.selectAll, ["Ctrl+A"], context=grid_only)
        self.act_auto = self._action("Auto-advance", lambda on: self.auto_advance.setChecked(on), checkable=True)
        for a in (self.act_undo, self.act_redo):
            e.addAction(a)
        e.addSeparator()
        for a in (self.act_accept, self.act_reject, self.act_clear):
            e.addAction(a)
            self.grid.addAction(a)
        e.addSeparator()
        e.addAction(self.act_select_all)
        self.grid.addAction(self.act_select_all)
        e.addAction(self.act_auto)

        v = m.addMenu("&View")
        self.act_preview = self._action("Large Preview", self.toggle_preview, ["Space"], context=grid_only)
        v.addAction(self.act_preview)
        v.addAction(self.filter_dock.toggleViewAction())
        self.act_panel = self._action("Face Panel", lambda on: self.panel.setVisible(on), checkable=True)
        self.act_panel.setChecked(True)
        v.addAction(self.act_panel)
        v.addSeparator()
        self.act_bigger = self._action("Larger Tiles", lambda: self.tile_slider.setValue(self.tile_slider.value() + 16),
                                       ["Ctrl+="])
        self.act_smaller = self._action("Smaller Tiles",
                                        lambda: self.tile_slider.setValue(self.tile_slider.value() - 16), ["Ctrl+-"])
        v.addAction(self.act_bigger)
        v.addAction(self.act_smaller)
        v.addSeparator()
        mode = v.addMenu("Score Each Image By")
        self.mode_group = QActionGroup(self)
        self.act_mode_primary = self._action("Its Largest Face", lambda: self.session.set_score_mode("primary"),
                                             checkable=True)
        self.act_mode_lowest = self._action("Its Lowest-Scoring Face", lambda: self.session.set_score_mode("lowest"),
                                            checkable=True)
        for a in (self.act_mode_primary, self.act_mode_lowest):
            self.mode_group.addAction(a)
            mode.addAction(a)

        s = m.addMenu("&Scoring")
        self.act_score = self._action("Score New and Changed Files", self.start_scoring, ["F5"])
        self.act_pause = self._action("Pause", self.controller.pause)
        self.act_resume = self._action("Resume", self.controller.resume)
        self.act_cancel = self._action("Cancel", self.controller.cancel)
        for a in (self.act_score, self.act_pause, self.act_resume, self.act_cancel):
            s.addAction(a)
        self.act_demographics = self.demo_dock.toggleViewAction()
        self.act_demographics.setText("Demographics")
        self.act_demographics.setShortcut(QKeySequence("Ctrl+D"))
        self.act_demographics.triggered.connect(self._fit_demographics_dock)
        v.addAction(self.act_demographics)
        self.act_balance = self._action("Balanced Selection…", self.open_balance_dialog, ["Ctrl+B"],
                                        tip="Propose the best-quality subset that meets a demographic target")
        s.addSeparator()
        s.addAction(self.act_balance)
        md = m.addMenu("&Models")
        self.act_models = self._action("Models…", self.open_models_dialog)
        md.addAction(self.act_models)

    def _connect(self) -> None:
        s = self.session
        s.layoutReset.connect(self._on_layout_reset)
        s.decisionsChanged.connect(self._on_decisions_changed)
        s.rowsChanged.connect(self._on_rows_changed)
        s.thresholdChanged.connect(self._on_threshold_changed)
        s.historyChanged.connect(self._update_actions)
        s.message.connect(lambda t: self.status.showMessage(t, 8000))
        s.projectChanged.connect(self._on_project_changed)
        for sig in (s.projectChanged, s.layoutReset, s.rowsChanged):
            sig.connect(self._refresh_demographics)
        for sig in (s.decisionsChanged, s.thresholdChanged):
            sig.connect(lambda *_: self.demographics.set_accepted(s.accepted) if s.is_open else None)
        self.demographics.groupFilterRequested.connect(self._on_group_filter)
        self.grid.selectionModel().selectionChanged.connect(self._on_selection_changed)
        self.grid.selectionModel().currentChanged.connect(self._on_current_changed)
        self.grid.previewRequested.connect(self.toggle_preview)
        self.grid.doubleClicked.connect(lambda _i: self.toggle_preview())
        self.grid.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.grid.customContextMenuRequested.connect(self._context_menu)
        self.bar.thresholdChanged.connect(self._on_bar_threshold)
        self.bar.scaleChanged.connect(self._on_scale_changed)
        self.filters.filterChanged.connect(self._on_filter_changed)
        self.panel.overrideRequested.connect(self.set_override)
        self.sort_box.currentIndexChanged.connect(self._on_sort_changed)
        self.desc_btn.toggled.connect(self._on_sort_changed)
        self.tile_slider.valueChanged.connect(self._on_tile_size)
        self.auto_advance.toggled.connect(self._on_auto_advance)
        self.loader.loaded.connect(self._on_images_loaded)
        c = self.controller
        c.phase.connect(self.status.set_phase)
        c.progress.connect(self.status.set_progress)
        c.planned.connect(self._on_planned)
        c.resultsStored.connect(self._on_results)
        c.modelsReady.connect(self._on_models_ready)
        c.deviceFound.connect(self.status.set_device)
        c.modelsMissing.connect(self._on_models_missing)
        c.finished.connect(self._on_scoring_finished)
        c.stateChanged.connect(self._on_scoring_state)
        self.status.pauseClicked.connect(c.pause)
        self.status.resumeClicked.connect(c.resume)
        self.status.cancelClicked.connect(c.cancel)
        self._resort_timer = QTimer(self, singleShot=True, interval=RESORT_INTERVAL_MS)
        self._resort_timer.timeout.connect(self._resort)
        self._hist_timer = QTimer(self, singleShot=True, interval=300)
        self._hist_timer.timeout.connect(self._update_histogram)

    # =================================================================================================================
    # projects
    def open_paths(self, paths: list[str]) -> None:
        """Command-line arguments: a project file opens it; folders/images start (or extend) a project and score."""
        paths = [os.path.abspath(os.path.expanduser(p)) for p in paths]
        projects = [p for p in paths if p.endswith(PROJECT_SUFFIX) and os.path.isfile(p)]
        others = [p for p in paths if p not in projects]
        if projects:
            self.open_project(projects[0])
        if others:
            self.add_paths(others)

    def open_project(self, path, create: bool = False) -> bool:
        if self.controller.busy:
            self.status.showMessage("Wait for scoring to stop (or cancel it) before switching projects.", 8000)
            return False
        self._remember_view()
        try:
            self.session.open(path, create=create)
        except FaceQCError as e:
            self.banners.show_banner("project", f"Could not open {_esc(str(path))}: {_esc(str(e))}", "error")
            return False
        self.banners.remove("project")
        self.settings.add_recent(self.session.project.path)
        self.settings.set("last_project", str(self.session.project.path))
        self._fill_recent()
        if self.session.readonly:
            self.banners.show_banner("readonly", "This project is open for changes in another FaceQC process: you "
                                     "can look, but not curate or score here.", "warning")
        return True

    def open_folder(self, folder: str) -> bool:
        """A bare folder: its own project in the user data dir (the same one each time), then scoring."""
        target = project_for_folder(folder)
        target.parent.mkdir(parents=True, exist_ok=True)
        if not self.open_project(target, create=True):
            return False
        self.add_paths([folder])
        return True

    def add_paths(self, paths: list[str]) -> bool:
        paths = [str(p) for p in paths if p]
        missing = [p for p in paths if not os.path.exists(p)]
        if missing:
            self.banners.show_banner("paths", "Not found: " + ", ".join(_esc(p) for p in missing), "warning")
        paths = [p for p in paths if os.path.exists(p)]
        if not paths:
            return False
        if not self.session.is_open:
            folder = next((p for p in paths if os.path.isdir(p)), None)
            if folder is not None:
                target = project_for_folder(folder)
            else:
                target = projects_dir() / f"images-{time.strftime('%Y%m%d-%H%M%S')}{PROJECT_SUFFIX}"
            target.parent.mkdir(parents=True, exist_ok=True)
            if not self.open_project(target, create=True):
                return False
        if self.session.readonly:
            self.status.showMessage("This project is read-only here.", 8000)
            return False
        if self.controller.busy:
            self._pending_paths.extend(paths)
            self.status.showMessage(f"Queued {len(paths)} path(s); they are added when the current run ends.", 8000)
            return True
        return self.controller.start(self.session.project, paths)

    def start_scoring(self) -> bool:
        if not self.session.is_open or self.session.readonly or self.controller.busy:
            return False
        return self.controller.start(self.session.project, [])

    def close_project(self) -> None:
        if self.controller.busy:
            self.controller.shutdown()
        self._remember_view()
        self.session.close()

    def _remember_view(self) -> None:
        if not self.session.is_open:
            return
        v = self.session.view
        v.selection = [int(i) for i in self._selected_ids[:MAX_SAVED_SELECTION]]
        v.current = self._current_id
        v.demographics = self.demographics.state()
        self.session.save_view()

    # =================================================================================================================
    # session -> widgets
    def _on_project_changed(self) -> None:
        self._load_view_widgets()
        self.filters.load(self.session.view)
        self.bar.set_threshold(self.session.threshold)
        self.model.failed.clear()
        self.model.pixmaps.clear()
        self._update_title()
        self._update_actions()
        self._update_histogram()
        self._update_counts()
        if self.session.is_open:
            self.demographics.restore_state(self.session.view.demographics)
            self._restore_selection(self.session.view.selection, self.session.view.current)
            mode = self.session.snapshot.score_mode
            (self.act_mode_primary if mode == "primary" else self.act_mode_lowest).setChecked(True)
        else:
            self._show_current(None)

    def _load_view_widgets(self) -> None:
        v = self.session.view
        for w in (self.sort_box, self.desc_btn, self.tile_slider, self.auto_advance):
            w.blockSignals(True)
        self.sort_box.setCurrentIndex(max(0, self.sort_box.findData(v.sort)))
        self.desc_btn.setChecked(v.descending)
        self.desc_btn.setText("↓" if v.descending else "↑")
        self.tile_slider.setValue(v.tile_size)
        self.auto_advance.setChecked(v.auto_advance)
        for w in (self.sort_box, self.desc_btn, self.tile_slider, self.auto_advance):
            w.blockSignals(False)
        if hasattr(self, "act_auto"):
            self.act_auto.setChecked(v.auto_advance)
        self._apply_tile_size(v.tile_size)
        self.bar.set_scale(v.scale)
        self.delegate.scale = v.scale
        self.legend.set_scale(v.scale)

    def _on_layout_reset(self) -> None:
        keep_ids, keep_cur = self._selected_ids, self._current_id
        sb = self.grid.verticalScrollBar().value()
        self.model.reset()
        self._restore_selection(keep_ids, keep_cur, scroll=sb)
        self._update_counts()
        self._hist_timer.start()

    def _restore_selection(self, ids, current, scroll: int | None = None) -> None:
        sm = self.grid.selectionModel()
        rows = self.session.rows_of_ids(ids)
        pos = self.session.pos[rows] if len(rows) else np.zeros(0, np.int64)
        pos = pos[pos >= 0]
        sm.blockSignals(True)
        sm.clearSelection()
        if len(pos):
            sm.select(selection_from_positions(self.model, pos), QItemSelectionModel.SelectionFlag.Select)
        cur_pos = None
        if current is not None:
            r = self.session.row_of_id(current)
            if r is not None and self.session.pos[r] >= 0:
                cur_pos = int(self.session.pos[r])
        if cur_pos is not None:
            sm.setCurrentIndex(self.model.index(cur_pos, 0), QItemSelectionModel.SelectionFlag.NoUpdate)
        sm.blockSignals(False)
        self._selection_from_model()
        if scroll is not None:
            self.grid.verticalScrollBar().setValue(scroll)
        if cur_pos is not None and scroll is None:
            self.grid.scrollTo(self.model.index(cur_pos, 0), TileGridView.ScrollHint.PositionAtCenter)
        new_current = None if cur_pos is None else current
        if new_current != (self._detail or {}).get("id"):
            self._show_current(new_current)
        self.grid.viewport().update()

    def _on_decisions_changed(self) -> None:
        self.grid.viewport().update()
        self._update_counts()
        self._update_panel_decision()

    def _on_rows_changed(self, rows) -> None:
        pos = self.session.pos[rows]
        self.grid.update_positions(pos[pos >= 0].tolist())
        self._update_counts()
        self._resort_due = True
        if not self._resort_timer.isActive():
            self._resort_timer.start()
        if not self._hist_timer.isActive():  # throttle, not debounce: results arrive faster than it fires
            self._hist_timer.start()
        if self._current_id is not None:
            r = self.session.row_of_id(self._current_id)
            if r is not None and r in set(rows.tolist()):
                self._show_current(self._current_id)

    def _resort(self) -> None:
        if self._resort_due:
            self._resort_due = False
            self.session.refilter()

    def _on_threshold_changed(self, t: float) -> None:
        self.bar.set_threshold(t)
        self.panel.set_threshold(t, self.session.view.scale)
        self._update_panel_decision()
        self._update_counts()

    def _update_counts(self) -> None:
        c = self.session.counts()
        self.bar.set_summary(c["accepted"], c["total"])
        self.visible_label.setText(f"{c['visible']} of {c['total']} shown")
        parts = [f"{c['accepted']} accepted", f"{c['rejected']} rejected"]
        if c["overridden"]:
            parts.append(f"{c['overridden']} by hand")
        if c["unscored"]:
            parts.append(f"{c['unscored']} not scored")
        self.status.set_counts(" · ".join(parts))

    def _update_histogram(self) -> None:
        self.bar.set_scores(self.session.histogram_scores())

    def _update_title(self) -> None:
        p = self.session.project
        self.setWindowTitle(f"{Path(p.path).stem} — FaceQC" if p is not None else "FaceQC")

    def _update_actions(self) -> None:
        open_ = self.session.is_open
        writable = open_ and not self.session.readonly
        self.act_undo.setEnabled(self.session.can_undo())
        self.act_redo.setEnabled(self.session.can_redo())
        for a in (self.act_export, self.act_close):
            a.setEnabled(open_)
        for a in (self.act_score, self.act_accept, self.act_reject, self.act_clear, self.act_mode_primary,
                  self.act_mode_lowest, self.act_balance):  # Balanced Selection applies overrides: needs writes
            a.setEnabled(writable)

    # =================================================================================================================
    # user -> session
    def _on_bar_threshold(self, norm: float, final: bool) -> None:
        self.session.set_threshold(norm, commit=final)

    def _on_scale_changed(self, scale: str) -> None:
        self.session.view.scale = scale
        self.delegate.scale = scale
        self.legend.set_scale(scale)
        self.panel.set_threshold(self.session.threshold, scale)
        self.grid.viewport().update()

    def _on_filter_changed(self) -> None:
        self.session.refilter()
        self._hist_timer.start()
        self._update_counts()

    def _on_sort_changed(self, *_a) -> None:
        v = self.session.view
        v.sort = self.sort_box.currentData() or "score"
        v.descending = self.desc_btn.isChecked()
        self.desc_btn.setText("↓" if v.descending else "↑")
        self.session.refilter()

    def _on_tile_size(self, value: int) -> None:
        self.session.view.tile_size = int(value)
        self._apply_tile_size(int(value))

    def _apply_tile_size(self, side: int) -> None:
        self.model.set_tile(side)
        self.grid.set_tile_size(side + 2 * MARGIN, side + STRIP + 2 * MARGIN)

    def _on_auto_advance(self, on: bool) -> None:
        self.session.view.auto_advance = bool(on)
        self.act_auto.setChecked(bool(on))

    # ---- selection and the face panel --------------------------------------------------------------------------------
    def _selection_from_model(self) -> None:
        pos = positions_of_selection(self.grid.selectionModel().selection())
        pos = pos[pos < len(self.session.order)]
        rows = self.session.order[pos]
        self._selected_ids = self.session.snapshot.ids[rows]
        cur = self.grid.currentIndex()
        self._current_id = self.model.image_id(cur.row()) if cur.isValid() and cur.row() < len(
            self.session.order) else None

    def _on_selection_changed(self, *_a) -> None:
        self._selection_from_model()
        self.panel.show_detail(self._detail, max(1, len(self._selected_ids)))
        self._update_panel_decision()

    def _on_current_changed(self, current, _previous) -> None:
        self._selection_from_model()
        self._show_current(self._current_id)

    def selected_ids(self) -> list[int]:
        ids = [int(i) for i in self._selected_ids]
        if not ids and self._current_id is not None:
            ids = [self._current_id]
        return ids

    def _show_current(self, image_id: int | None) -> None:
        detail = None
        if image_id is not None and self.session.project is not None:
            try:
                detail = self.session.project.image_detail(image_id)
            except FaceQCError as e:
                self.status.showMessage(str(e), 8000)
        self._detail = detail
        self.panel.set_threshold(self.session.threshold, self.session.view.scale)
        self.panel.show_detail(detail, max(1, len(self._selected_ids)))
        self._update_panel_decision()
        if detail is not None and not detail.get("error") and not detail.get("missing"):
            self.loader.request_preview(("panel", image_id), detail["path"], 1600)
        if self._preview is not None and self._preview.isVisible():
            self._preview.show_detail(detail)
            self._update_panel_decision()  # the caption's decision
            if detail is not None:
                self.loader.request_preview(("big", image_id), detail["path"], 2400)

    def _update_panel_decision(self) -> None:
        if self._detail is None:
            return
        r = self.session.row_of_id(self._detail["id"])
        if r is None:
            return
        self.panel.set_decision(bool(self.session.accepted[r]), REASON_TEXT.get(int(self.session.reason[r]), ""))
        if self._preview is not None and self._preview.isVisible():
            self._preview.set_decision(self.panel.decision.text())

    def _on_images_loaded(self, batch) -> None:
        for res in batch:
            if res.kind != "preview" or not isinstance(res.key, tuple):
                continue
            which, image_id = res.key
            if which == "panel" and self._detail is not None and self._detail.get("id") == image_id:
                self.panel.set_image(res.image, res.full_size, res.error)
            elif which == "big" and self._preview is not None and self._preview.image_id == image_id:
                self._preview.set_image(res.image, res.full_size, res.error)

    # ---- curation ------------------------------------------------------------------------------------------------------
    def set_override(self, value) -> bool:
        ids = self.selected_ids()
        if not ids:
            self.status.showMessage("Select images first.", 4000)
            return False
        cur = self.grid.currentIndex()
        pos_before = cur.row() if cur.isValid() else None
        if not self.session.set_override(ids, value):
            return False
        what = {"accept": "Accepted", "reject": "Rejected", None: "Cleared the override of"}[value]
        self.status.showMessage(f"{what} {len(ids)} image{'s' if len(ids) != 1 else ''}.", 4000)
        if pos_before is not None and not self.grid.currentIndex().isValid() and len(self.session.order):
            # The decision moved the image out of a filtered view ("Rejected", "Overridden"...): the image that
            # took its place is the next one, so the user's place in the list is kept, with or without auto-advance.
            self._advance(0, from_row=pos_before)
        elif self.session.view.auto_advance and len(ids) == 1:
            self._advance()
        elif self._detail is not None:
            self._show_current(self._detail["id"])
        return True

    def _advance(self, step: int = 1, from_row: int | None = None) -> None:
        cur = self.grid.currentIndex()
        n = len(self.session.order)
        if n == 0:
            return
        start = from_row if from_row is not None else (cur.row() if cur.isValid() else -1)
        pos = min(max(start + step, 0), n - 1)
        idx = self.model.index(pos, 0)
        self.grid.selectionModel().setCurrentIndex(idx, QItemSelectionModel.SelectionFlag.ClearAndSelect)
        self.grid.scrollTo(idx)

    def undo(self) -> None:
        self.session.undo()
        self._after_history()

    def redo(self) -> None:
        self.session.redo()
        self._after_history()

    def _after_history(self) -> None:
        self.bar.set_threshold(self.session.threshold)
        if self._detail is not None:
            self._show_current(self._detail["id"])
        self._update_actions()

    def _context_menu(self, point) -> None:
        from PySide6.QtWidgets import QMenu

        idx = self.grid.indexAt(point)
        if idx.isValid() and not self.grid.selectionModel().isSelected(idx):
            self.grid.selectionModel().setCurrentIndex(idx, QItemSelectionModel.SelectionFlag.ClearAndSelect)
        menu = QMenu(self)
        for a in (self.act_accept, self.act_reject, self.act_clear):
            menu.addAction(a)
        menu.addSeparator()
        menu.addAction(self.act_preview)
        menu.exec(self.grid.viewport().mapToGlobal(point))

    def toggle_preview(self) -> None:
        from .preview import PreviewWindow

        if self._preview is not None and self._preview.isVisible():
            self._preview.close()
            return
        if self._preview is None:
            self._preview = PreviewWindow(self)
            self._preview.navigate.connect(self._advance)
            self._preview.decide.connect(self.set_override)
        self._preview.show()
        self._preview.show_detail(self._detail)
        self._update_panel_decision()
        if self._detail is not None and not self._detail.get("error"):
            self.loader.request_preview(("big", self._detail["id"]), self._detail["path"], 2400)

    # =================================================================================================================
    # scoring
    def _on_planned(self, plan, snapshot) -> None:
        self.session.set_snapshot(snapshot)
        self._update_counts()
        missing = getattr(plan, "missing_folders", None)
        if missing:
            self.banners.show_banner("missing-folders", "Not found (marked missing, decisions kept): "
                                     + ", ".join(_esc(p) for p in missing), "warning")

    def _on_results(self, results) -> None:
        self.session.apply_results(results)

    def _on_models_ready(self, loaded) -> None:
        if loaded.skipped:
            names = ", ".join(registry.MODELS[k].title.split(" (")[0] for k in loaded.skipped)
            self.show_models_banner(f"Scoring without {names}: weight file(s) not found. "
                                    "Those columns stay empty; the rest is scored.", level="warning")
        self.check_models(banner=False)

    def _on_models_missing(self, message: str) -> None:
        self.models_missing_message = message
        self.show_models_banner("<b>The face detector weights are missing, so images cannot be scored.</b> "
                                "You can still browse, decide by hand and export. "
                                + _esc(message.splitlines()[0]), level="warning")

    def _on_scoring_finished(self, outcome: str, message: str) -> None:
        self.status.set_phase(message)
        if outcome == "failed":
            self.banners.show_banner("scoring", _esc(message), "error")
        self.session.refilter()
        self._update_histogram()
        self._update_counts()
        if self._pending_paths and not self._closing:
            paths, self._pending_paths = self._pending_paths, []
            self.add_paths(paths)

    def _on_scoring_state(self, state: str) -> None:
        self.status.set_state(state)
        self.act_pause.setEnabled(state == "running")
        self.act_resume.setEnabled(state == "paused")
        self.act_cancel.setEnabled(state in ("running", "paused"))
        self.act_score.setEnabled(state == "idle" and self.session.is_open and not self.session.readonly)

    # =================================================================================================================
    # models
    def model_files(self) -> dict[str, Path | None]:
        return {k: registry.find_model_file(k, self.models_dir) for k in registry.MODELS}

    def check_models(self, banner: bool = True) -> dict[str, Path | None]:
        """Which weight files exist (no hashing: instant). States it once in a banner when some are missing."""
        files = self.model_files()
        short = {"detector": "detector", "magface": "MagFace", "celeba": "CelebA", "fairface": "FairFace",
                 "fairface4": "FairFace-4"}
        shown = [k for k in files if k != "fairface4"]
        self.status.set_models("Models: " + " ".join(f"{short[k]} {'✓' if files[k] else '✗'}" for k in shown),
                               "\n".join(f"{registry.MODELS[k].title}: {files[k] or 'missing'}" for k in files))
        missing = [k for k in shown if files[k] is None]
        if banner and missing:
            if len(missing) == len(shown):
                text = ("<b>No model weights found.</b> FaceQC opens, browses, curates by hand and exports without "
                        "them, but cannot score. Download all of them (about "
                        f"{sum(registry.MODELS[k].approx_mb for k in missing):.0f} MB) in one go?")
            else:
                text = ("Missing weights: " + ", ".join(registry.MODELS[k].title.split(' (')[0] for k in missing)
                        + ". Scoring runs without them (their columns stay empty).")
            self.show_models_banner(text)
        elif not missing:
            self.banners.remove("models")
        return files

    def show_models_banner(self, text: str, level: str = "info") -> None:
        self.banners.show_banner("models", text, level, actions=[
            ("Download all", lambda: self.open_models_dialog(download_missing=True)),
            ("Models…", lambda: self.open_models_dialog())])

    def open_models_dialog(self, download_missing: bool = False):
        from .models_dialog import ModelsDialog

        if self._models_dialog is None:
            self._models_dialog = ModelsDialog(self.models_dir, self)
            self._models_dialog.modelsChanged.connect(self._on_models_changed)
        self._models_dialog.show()
        self._models_dialog.raise_()
        if download_missing:
            keys = [k for k, p in self.model_files().items() if p is None]
            if keys:
                self._models_dialog.download(keys)
        return self._models_dialog

    def _on_models_changed(self) -> None:
        self.controller.invalidate_models()
        files = self.check_models(banner=False)
        if files.get("detector") is not None and self.models_missing_message:
            self.models_missing_message = ""
            self.banners.remove("models")
            self.status.showMessage("Weights found: use Scoring ▸ Score New and Changed Files (F5).", 10000)

    # =================================================================================================================
    # export
    def open_export_dialog(self):
        from .export_dialog import ExportDialog

        if not self.session.is_open:
            return None
        self.session.commit_threshold()  # the export decides with the stored threshold
        c = self.session.counts()
        acc = self.session.accepted
        missing = int((acc & self.session.snapshot.missing).sum())
        last = self.session.project.get_setting("gui.export_target", "") or ""
        self._export_dialog = ExportDialog(self.session.project, c["accepted"], missing, last, self)
        self._export_dialog.finished_export.connect(self._on_exported)
        self._export_dialog.show()
        return self._export_dialog

    def _on_exported(self, summary) -> None:
        if self.session.project is not None and not self.session.readonly:
            try:
                self.session.project.set_setting("gui.export_target", str(summary.target))
            except FaceQCError:
                pass
        self.status.showMessage(f"Exported {summary.exported} images to {summary.target}", 10000)

    # =================================================================================================================
    # file dialogs (thin; the logic is in the methods they call)
    def new_project_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "New project", str(projects_dir()), "FaceQC project (*.faceqc)")
        if path:
            if not path.endswith(PROJECT_SUFFIX):
                path += PROJECT_SUFFIX
            self.open_project(path, create=True)

    def open_project_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open project", str(projects_dir()), "FaceQC project (*.faceqc)")
        if path:
            self.open_project(path)

    def open_folder_dialog(self) -> None:
        d = QFileDialog.getExistingDirectory(self, "Open a folder of images as a project")
        if d:
            self.open_folder(d)

    def add_folder_dialog(self) -> None:
        d = QFileDialog.getExistingDirectory(self, "Add a folder of images")
        if d:
            self.add_paths([d])

    def add_files_dialog(self) -> None:
        files, _ = QFileDialog.getOpenFileNames(self, "Add images", "", "Images (*.jpg *.jpeg *.png *.webp *.bmp "
                                                "*.tif *.tiff *.gif);;All files (*)")
        if files:
            self.add_paths(files)

    def _fill_recent(self) -> None:
        self.recent_menu.clear()
        recent = self.settings.recent()
        for p in recent:
            a = self.recent_menu.addAction(p)
            a.triggered.connect(lambda _=False, p=p: self._open_recent(p))
        self.recent_menu.setEnabled(bool(recent))

    def _open_recent(self, path: str) -> None:
        if not os.path.exists(path):
            self.settings.remove_recent(path)
            self._fill_recent()
            self.status.showMessage(f"{path} no longer exists; removed from the list.", 8000)
            return
        self.open_project(path)

    # =================================================================================================================
    # drag and drop
    def dragEnterEvent(self, e) -> None:
        if _local_paths(e.mimeData()):
            e.acceptProposedAction()
        else:
            e.ignore()

    def dragMoveEvent(self, e) -> None:
        if _local_paths(e.mimeData()):
            e.acceptProposedAction()

    def dropEvent(self, e) -> None:
        paths = _local_paths(e.mimeData())
        if not paths:
            e.ignore()
            return
        e.acceptProposedAction()
        projects = [p for p in paths if p.endswith(PROJECT_SUFFIX) and os.path.isfile(p)]
        if projects and len(paths) == 1:
            self.open_project(projects[0])
        else:
            self.add_paths([p for p in paths if p not in projects])

    # =================================================================================================================
    # window state
    def _restore_window(self) -> None:
        geo = self.settings.get("geometry")
        state = self.settings.get("window_state")
        split = self.settings.get("splitter")
        try:
            if isinstance(geo, str):
                self.restoreGeometry(QByteArray.fromBase64(geo.encode()))
            else:
                self.resize(1500, 950)
            if isinstance(state, str):
                self.restoreState(QByteArray.fromBase64(state.encode()))
            if isinstance(split, str):
                self.splitter.restoreState(QByteArray.fromBase64(split.encode()))
        except Exception:
            self.resize(1500, 950)

    def _save_window(self) -> None:
        self.settings.data["geometry"] = bytes(self.saveGeometry().toBase64()).decode()
        self.settings.data["window_state"] = bytes(self.saveState().toBase64()).decode()
        self.settings.data["splitter"] = bytes(self.splitter.saveState().toBase64()).decode()
        self.settings.save()

    # ---- demographics and balance (issue 6) -----------------------------------------------------------------------
    def _refresh_demographics(self, *_a) -> None:
        s = self.session
        self.demographics.set_data(s.snapshot if s.is_open else None, s.accepted if s.is_open else None)

    def _fit_demographics_dock(self, visible: bool) -> None:
        # The first time the user opens it: at its content's natural height the dock took most of the window (1.5
        # rows of tiles left at 1400x900); a quarter of the window keeps two rows of tiles. The dock scrolls, can be
        # dragged taller, and later openings (and restored layouts) keep whatever size the user gave it.
        if visible and not self._demo_fitted:
            self._demo_fitted = True
            QTimer.singleShot(0, lambda: self.resizeDocks([self.demo_dock], [max(220, self.height() // 4)],
                                                          Qt.Orientation.Vertical))

    def _on_group_filter(self, group: dict) -> None:
        """A bar or cell was clicked: show exactly the images the panel counted there (top FairFace labels under the
        panel's minimum confidence, its 'uncertain' and 'unknown' buckets included). In expected-value mode the bars
        are sums of probabilities; the grid then shows the images whose top label is that group."""
        view = self.session.view
        view.fairface = dict(group)
        view.fairface_min_conf = self.demographics.min_conf if group else 0.0
        self.filters.load(view)  # the Filters dock shows the group that is now applied
        self.session.refilter(force=True)
        if group:
            conf = f" (confidence ≥ {view.fairface_min_conf:.0%})" if view.fairface_min_conf > 0 else ""
            text = ", ".join(f"{h} = {v.replace('_', ' ')}" for h, v in group.items()) + conf
        else:
            text = "all groups"
        self.status.showMessage(f"Showing {text}: {self.session.visible_count():,} images", 5000)

    def open_balance_dialog(self) -> None:
        s = self.session
        if not s.is_open:
            return
        dlg = BalanceDialog(s.snapshot, s.threshold, self, min_conf=self.demographics.min_conf,
                            not_manual=s.project.balance_made_overrides())
        if dlg.exec() == QDialog.DialogCode.Accepted and dlg.changes():
            s.apply_overrides(dlg.changes(), dlg.description(), source="balance")

    def closeEvent(self, e) -> None:
        self._closing = True
        self.controller.shutdown()
        self._remember_view()
        self._save_window()
        if self._models_dialog is not None:
            self._models_dialog.jobs.cancel.set()
        if self._export_dialog is not None:
            self._export_dialog.cancel()
        self.session.close()
        self.loader.shutdown()
        super().closeEvent(e)


def _local_paths(mime) -> list[str]:
    if mime is None or not mime.hasUrls():
        return []
    return [u.toLocalFile() for u in mime.urls() if u.isLocalFile() and u.toLocalFile()]


def _esc(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
