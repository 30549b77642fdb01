"""The main window, driven the way a user drives it (pytest-qt, offscreen): drag and drop, streaming results, pause,
resume and cancel, curation keys and undo, the threshold controls, filters, the face panel, export, persistence,
and a start without any model weights."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pytestqt")
pytestmark = pytest.mark.gui

from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QUrl  # noqa: E402
from PySide6.QtGui import QDragEnterEvent, QDropEvent  # noqa: E402
from PySide6.QtWidgets import QApplication, QDialog, QMessageBox  # noqa: E402

from faceqc_gui.engine.store import Project  # noqa: E402
from faceqc_gui.gui.settings import AppSettings  # noqa: E402
from faceqc_gui.widgets.main_window import MainWindow  # noqa: E402
from test_gui_fixtures import FakePipeline, fake_load_models, make_images, make_project  # noqa: E402


def new_window(qtbot, tmp_path: Path, delay: float = 0.0, fake: bool = True) -> MainWindow:
    win = MainWindow(settings=AppSettings(tmp_path / "gui.json"), thumb_cache_dir=tmp_path / "thumbs",
                     probe_device=False)
    if fake:
        win.controller.load_models = fake_load_models
        win.controller.pipeline_factory = lambda loaded, bs: FakePipeline(loaded, bs, delay=delay)
    qtbot.addWidget(win)
    win.resize(1400, 900)
    win.show()
    qtbot.waitExposed(win)
    win.activateWindow()
    qtbot.waitUntil(lambda: QApplication.activeWindow() is win)  # shortcuts only reach the active window
    return win


@pytest.fixture
def no_models(tmp_path, monkeypatch):
    empty = tmp_path / "no-models"
    empty.mkdir()
    monkeypatch.setenv("FACEQC_MODELS", str(empty))
    monkeypatch.chdir(tmp_path)  # ./models must not be the repo's
    return empty


def drop(win, paths) -> tuple[bool, bool]:
    """A real drag-enter then drop of file URLs on the window; returns (enter accepted, drop accepted)."""
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    enter = QDragEnterEvent(QPoint(300, 300), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                            Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(win, enter)
    ev = QDropEvent(QPointF(300, 300), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                    Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(win, ev)
    return enter.isAccepted(), ev.isAccepted()


def wait_idle(qtbot, win, timeout=20000):
    qtbot.waitUntil(lambda: win.controller.state == "idle" and not win.controller.busy, timeout=timeout)


def open_scored(qtbot, tmp_path, n=40) -> MainWindow:
    ppath, _, _ = make_project(tmp_path, n=n)
    win = new_window(qtbot, tmp_path)
    assert win.open_project(ppath)
    return win


def click_tile(qtbot, win, pos: int, modifier=Qt.KeyboardModifier.NoModifier):
    rect = win.grid.rect_for_position(pos)
    qtbot.mouseClick(win.grid.viewport(), Qt.MouseButton.LeftButton, modifier, rect.center())


def key(qtbot, win, k, modifier=Qt.KeyboardModifier.NoModifier):
    win.grid.setFocus()
    qtbot.keyClick(win.grid, k, modifier)


def no_dialogs_open() -> bool:
    return not [w for w in QApplication.topLevelWidgets() if isinstance(w, (QDialog, QMessageBox)) and w.isVisible()]


# ---------------------------------------------------------------------------------------------------------------------
def test_drop_folder_starts_project_and_results_stream_in(qtbot, tmp_path, no_models):
    folder = tmp_path / "dataset"
    make_images(folder, 50)
    win = new_window(qtbot, tmp_path, delay=0.004)
    groups = []
    win.session.rowsChanged.connect(lambda rows: groups.append(len(rows)))
    text_only = QMimeData()
    text_only.setText("not a file")
    enter = QDragEnterEvent(QPoint(10, 10), Qt.DropAction.CopyAction, text_only, Qt.MouseButton.LeftButton,
                            Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(win, enter)
    assert not enter.isAccepted()  # only files and folders are welcome

    accepted_enter, accepted_drop = drop(win, [folder])
    assert accepted_enter and accepted_drop
    assert win.session.is_open
    assert Path(win.session.project.path).parent.name == "projects"  # in the user data dir, not in the dataset
    wait_idle(qtbot, win)
    assert win.model.rowCount() == 50
    assert len(groups) >= 2 and sum(groups) == 50  # streamed in several groups, not one final reload
    assert (win.session.snapshot.n_faces >= 0).all()
    with Project.open(win.session.project.path, readonly=True) as p:
        assert p.counts()["unscored"] == 0


def test_drop_while_scoring_queues_then_adds(qtbot, tmp_path, no_models):
    a, b = tmp_path / "a", tmp_path / "b"
    make_images(a, 30)
    make_images(b, 7, prefix="b")
    win = new_window(qtbot, tmp_path, delay=0.01)
    drop(win, [a])
    qtbot.waitUntil(lambda: win.controller.busy)
    drop(win, [b])
    qtbot.waitUntil(lambda: win.model.rowCount() == 37 and not win.controller.busy
                    and (win.session.snapshot.n_faces >= 0).all(), timeout=30000)


def test_pause_resume_cancel(qtbot, tmp_path, no_models):
    folder = tmp_path / "dataset"
    make_images(folder, 150)
    win = new_window(qtbot, tmp_path, delay=0.02)
    drop(win, [folder])
    scored = lambda: int((win.session.snapshot.n_faces >= 0).sum())  # noqa: E731
    qtbot.waitUntil(lambda: scored() >= 16, timeout=20000)
    win.status.pause_btn.click()
    qtbot.waitUntil(lambda: win.controller.state == "paused")
    qtbot.wait(300)  # the group in flight lands
    frozen = scored()
    qtbot.wait(500)
    assert scored() == frozen, "no result may arrive while paused"
    assert win.status.pause_btn.text() == "Resume"
    win.status.pause_btn.click()
    qtbot.waitUntil(lambda: scored() > frozen, timeout=10000)
    outcomes = []
    win.controller.finished.connect(lambda o, m: outcomes.append(o))
    win.status.cancel_btn.click()
    wait_idle(qtbot, win)
    assert outcomes == ["cancelled"]
    done = scored()
    assert frozen < done < 150
    with Project.open(win.session.project.path, readonly=True) as p:  # what was stored stays stored
        assert int((p.snapshot().n_faces >= 0).sum()) == done
    assert win.act_score.isEnabled()  # and it can be resumed later by scoring again
    win.start_scoring()
    wait_idle(qtbot, win)
    assert scored() == 150


def test_keys_overrides_undo_redo_and_auto_advance(qtbot, tmp_path):
    win = open_scored(qtbot, tmp_path)
    s = win.session
    click_tile(qtbot, win, 0)
    first = win._current_id
    assert first is not None and win.panel.detail["id"] == first
    row = s.row_of_id(first)
    key(qtbot, win, Qt.Key.Key_R)
    assert s.snapshot.override[row] == -1 and not s.accepted[row]
    key(qtbot, win, Qt.Key.Key_A)
    assert s.snapshot.override[row] == 1 and s.accepted[row]
    key(qtbot, win, Qt.Key.Key_U)
    assert s.snapshot.override[row] == 0
    key(qtbot, win, Qt.Key.Key_X)
    assert s.snapshot.override[row] == -1
    key(qtbot, win, Qt.Key.Key_P)
    assert s.snapshot.override[row] == 1
    key(qtbot, win, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert s.snapshot.override[row] == -1
    key(qtbot, win, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    assert s.snapshot.override[row] == 1
    # arrows move the current image
    key(qtbot, win, Qt.Key.Key_Right)
    assert win._current_id == win.model.image_id(1)
    key(qtbot, win, Qt.Key.Key_Down)
    assert win._current_id == win.model.image_id(1 + win.grid.columns())
    # a selection of several: one key, one undo step
    click_tile(qtbot, win, 2)
    click_tile(qtbot, win, 6, Qt.KeyboardModifier.ShiftModifier)
    ids = win.selected_ids()
    assert len(ids) == 5
    key(qtbot, win, Qt.Key.Key_R)
    assert (s.snapshot.override[s.rows_of_ids(ids)] == -1).all()
    key(qtbot, win, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert (s.snapshot.override[s.rows_of_ids(ids)] == 0).all()
    # auto-advance: after a decision on one image, the next one is current
    win.auto_advance.setChecked(True)
    click_tile(qtbot, win, 3)
    key(qtbot, win, Qt.Key.Key_A)
    assert win._current_id == win.model.image_id(4)
    assert s.snapshot.override[s.row_of_id(win.model.image_id(3))] == 1


@pytest.mark.parametrize("auto_advance", [False, True])
def test_deciding_in_a_filtered_view_keeps_the_place_in_the_list(qtbot, tmp_path, auto_advance):
    # "Show Rejected, accept the good ones": each accepted image leaves the view; the one that took its place (the
    # next one) becomes current, so A, A, A walks down the list instead of jumping back to the top or to nothing.
    win = open_scored(qtbot, tmp_path)
    s = win.session
    win.auto_advance.setChecked(auto_advance)
    win.filters.status_boxes["rejected"].setChecked(True)
    qtbot.waitUntil(lambda: s.view.status == {"rejected"})
    assert s.visible_count() >= 5
    click_tile(qtbot, win, 2)
    expected_next = [win.model.image_id(3), win.model.image_id(4)]
    for nxt in expected_next:
        decided = win._current_id
        key(qtbot, win, Qt.Key.Key_A)
        assert s.snapshot.override[s.row_of_id(decided)] == 1
        assert s.pos[s.row_of_id(decided)] == -1  # it left the "rejected" view
        assert win._current_id == nxt and win.grid.currentIndex().row() == 2
        assert win.panel.detail is not None and win.panel.detail["id"] == nxt
    key(qtbot, win, Qt.Key.Key_Right)
    assert win.grid.currentIndex().row() == 3


def test_context_menu_and_panel_buttons_override_the_selection(qtbot, tmp_path):
    win = open_scored(qtbot, tmp_path)
    click_tile(qtbot, win, 5)
    image = win._current_id
    win.panel.reject_btn.click()
    assert win.session.snapshot.override[win.session.row_of_id(image)] == -1
    assert "Rejected" in win.panel.decision.text() and "by hand" in win.panel.decision.text()
    win.act_clear.trigger()  # the context menu shows these same actions
    assert win.session.snapshot.override[win.session.row_of_id(image)] == 0


def test_threshold_slider_field_line_and_scale(qtbot, tmp_path):
    win = open_scored(qtbot, tmp_path, n=60)
    s, bar = win.session, win.bar
    scored = (s.snapshot.n_faces > 0) & np.isfinite(s.snapshot.score)
    bar.slider.setValue(bar.slider.maximum())  # keyboard-style move: live and final
    assert s.threshold == pytest.approx(bar._display_range()[1])
    assert not s.accepted.any()
    bar.spin.setValue(21.5)
    assert s.threshold == pytest.approx(21.5)
    np.testing.assert_array_equal(s.accepted, scored & (s.snapshot.score >= 21.5))
    assert s.project.threshold == pytest.approx(21.5)  # the field commits
    assert f"<b>{int(s.accepted.sum())}</b> accepted" in bar.summary.text()
    bar.line.setValue(18.0)  # dragging the histogram line: live, not yet committed
    assert s.threshold == pytest.approx(18.0) and s.project.threshold == pytest.approx(21.5)
    bar.line.sigPositionChangeFinished.emit(bar.line)
    assert s.project.threshold == pytest.approx(18.0)
    bar.scale_box.setCurrentIndex(bar.scale_box.findData("q100"))
    assert bar.spin.maximum() == 100.0 and win.session.view.scale == "q100"
    bar.spin.setValue(50.0)  # OFIQ 50/100 is the sigmoid centre, norm 23
    assert s.threshold == pytest.approx(23.0, abs=1e-3)
    win.undo()
    assert s.threshold == pytest.approx(18.0) and bar.threshold == pytest.approx(18.0)


def test_filters_narrow_the_grid(qtbot, tmp_path):
    win = open_scored(qtbot, tmp_path, n=80)
    s, f = win.session, win.filters
    f.status_boxes["rejected"].setChecked(True)
    assert win.model.rowCount() == int((~s.accepted).sum()) > 0
    f.status_boxes["rejected"].setChecked(False)
    f.status_boxes["no_face"].setChecked(True)
    assert win.model.rowCount() == int((s.snapshot.n_faces == 0).sum())
    f.clear()
    assert win.model.rowCount() == 80
    f.score_min.setValue(20.0)
    assert (s.snapshot.score[s.order] >= 20.0).all() and win.model.rowCount() < 80
    f.clear()
    f.ff_boxes["race4"].setCurrentIndex(f.ff_boxes["race4"].findData("Asian"))
    race4 = s.snapshot.race4
    assert win.model.rowCount() == int((np.nan_to_num(race4, nan=-1).argmax(axis=1) == 2).sum()
                                       - np.isnan(race4).any(axis=1).sum() * 0)
    f.clear()
    f.add_celeba_condition("Eyeglasses", 0.9, 1.0)
    from faceqc_gui.engine.labels import CELEBA_ATTRIBUTES

    p = s.snapshot.celeba[:, CELEBA_ATTRIBUTES.index("Eyeglasses")]
    assert win.model.rowCount() == int((p >= 0.9).sum())
    f.clear()
    f.path.setText("img_00001")
    qtbot.waitUntil(lambda: win.model.rowCount() == 10)  # img_000010..img_000019
    f.clear()
    assert win.model.rowCount() == 80 and "80 of 80" in win.visible_label.text()


def test_selection_survives_refilter_and_sort(qtbot, tmp_path):
    win = open_scored(qtbot, tmp_path)
    click_tile(qtbot, win, 1)
    click_tile(qtbot, win, 3, Qt.KeyboardModifier.ControlModifier)
    ids = sorted(win.selected_ids())
    win.sort_box.setCurrentIndex(win.sort_box.findData("name"))
    assert sorted(win.selected_ids()) == ids
    assert win._current_id in ids


def test_face_panel_shows_faces_attributes_and_file(qtbot, tmp_path):
    win = open_scored(qtbot, tmp_path, n=60)
    s = win.session
    two = np.flatnonzero(s.snapshot.n_faces == 2)
    assert len(two)
    pos = int(s.pos[two[0]])
    win.grid.scrollTo(win.model.index(pos, 0))
    click_tile(qtbot, win, pos)
    panel = win.panel
    assert panel.face_box.count() == 2 and panel.face_box.isEnabled()
    assert len(panel.view.faces) == 2 and all(f["box"] and len(f["landmarks"]) == 5 for f in panel.view.faces)
    probs = [p for _, p in panel.celeba.items]
    assert len(probs) == 40 and probs == sorted(probs, reverse=True)
    assert len(panel.ff["race7"][1].items) == 7 and len(panel.ff["race4"][1].items) == 4
    assert [lab for lab, _ in panel.ff["age"][1].items][0] == "0-2"  # age keeps its order
    panel.face_box.setCurrentIndex(1)
    assert panel.view.selected == 1
    assert s.snapshot.paths[two[0]] in panel.file_info.text()
    qtbot.waitUntil(lambda: panel.view.image is not None)  # the picture arrives from the loader thread
    assert panel.view.full_size == (48, 48)


def test_export_dialog_exports_the_accepted_set(qtbot, tmp_path):
    win = open_scored(qtbot, tmp_path, n=30)
    win.bar.spin.setValue(21.0)
    expected = int(win.session.accepted.sum())
    dlg = win.open_export_dialog()
    assert dlg.prepare() == "Choose a folder to export to."
    target = tmp_path / "export"
    dlg.target.setText(str(target))
    dlg.crops.setChecked(True)
    req = dlg.prepare()
    assert req.mode == "copy" and req.crops and req.target == str(target)
    assert dlg.start()
    qtbot.waitUntil(lambda: dlg.result() is not None or bool(dlg.error), timeout=30000)
    assert not dlg.error, dlg.error
    assert dlg.result().exported == expected
    assert len(list((target / "images").iterdir())) == expected
    assert (target / "manifest.csv").is_file() and (target / "list_attr_celeba.txt").is_file()
    assert dlg.open_btn.isVisible() and str(expected) in dlg.summary_box.toPlainText()
    dlg2 = win.open_export_dialog()
    dlg2.target.setText(str(tmp_path / "images" / "inside"))  # inside a source folder: refused, said plainly
    dlg2.start()
    qtbot.waitUntil(lambda: bool(dlg2.error), timeout=10000)
    assert dlg2.result() is None and not (tmp_path / "images" / "inside").exists()


def test_no_models_start_states_it_once_and_still_curates(qtbot, tmp_path, no_models):
    win = new_window(qtbot, tmp_path, fake=False)
    assert win.banners.visible_keys() == ["models"]
    assert "No model weights found" in win.banners.banners["models"].label.text()
    assert no_dialogs_open()
    folder = tmp_path / "dataset"
    make_images(folder, 6)
    drop(win, [folder])
    wait_idle(qtbot, win, timeout=120000)
    assert win.banners.visible_keys() == ["models"]  # replaced, not stacked
    assert "detector weights are missing" in win.banners.banners["models"].label.text()
    assert no_dialogs_open()
    assert win.model.rowCount() == 6 and (win.session.snapshot.n_faces == -1).all()
    assert "not scored" in win.status.phase.text()
    click_tile(qtbot, win, 0)
    key(qtbot, win, Qt.Key.Key_A)
    assert win.session.accepted.sum() == 1
    dlg = win.open_export_dialog()
    dlg.target.setText(str(tmp_path / "out"))
    dlg.start()
    qtbot.waitUntil(lambda: dlg.result() is not None or bool(dlg.error), timeout=30000)
    assert dlg.result() is not None and dlg.result().exported == 1
    win.banners.banners["models"].dismiss()
    win.check_models()
    assert win.banners.visible_keys() == []  # dismissed stays dismissed this session


def test_closing_and_reopening_restores_project_view_and_selection(qtbot, tmp_path):
    ppath, _, _ = make_project(tmp_path, n=50)
    win = new_window(qtbot, tmp_path)
    win.open_project(ppath)
    win.bar.spin.setValue(22.0)
    win.filters.status_boxes["accepted"].setChecked(True)
    win.sort_box.setCurrentIndex(win.sort_box.findData("name"))
    win.tile_slider.setValue(96)
    win.bar.scale_box.setCurrentIndex(win.bar.scale_box.findData("q100"))
    win.demographics.set_head("age")
    win.demographics.set_mode("expected")
    win.demographics.set_min_conf(0.35)
    win.demographics.set_cross(("race4", "age"))
    click_tile(qtbot, win, 1)
    click_tile(qtbot, win, 2, Qt.KeyboardModifier.ControlModifier)
    ids, current = sorted(win.selected_ids()), win._current_id
    win.close()
    win2 = new_window(qtbot, tmp_path)
    last = win2.settings.get("last_project")
    assert last == str(ppath) and win2.settings.recent()[0] == str(ppath)
    win2.open_project(last)
    v = win2.session.view
    assert win2.session.threshold == pytest.approx(22.0)
    assert v.status == {"accepted"} and win2.filters.status_boxes["accepted"].isChecked()
    assert v.sort == "name" and win2.sort_box.currentData() == "name"
    assert v.tile_size == 96 and win2.tile_slider.value() == 96 and win2.model.tile == 96
    assert v.scale == "q100" and win2.bar.scale == "q100"
    assert sorted(win2.selected_ids()) == ids and win2._current_id == current
    assert win2.panel.detail["id"] == current
    assert win2.demographics.state() == {"head": "age", "mode": "expected", "min_conf": 0.35,
                                         "cross": ["race4", "age"]}


def test_ui_thread_keeps_ticking_while_scoring(qtbot, tmp_path, no_models):
    """Coarse guard (the benchmark measures it properly): no multi-hundred-ms freezes while results stream."""
    folder = tmp_path / "dataset"
    make_images(folder, 400)
    win = new_window(qtbot, tmp_path, delay=0.0)
    from PySide6.QtCore import QTimer

    gaps, last = [], [time.perf_counter()]

    def tick():
        now = time.perf_counter()
        gaps.append(now - last[0])
        last[0] = now
    timer = QTimer()
    timer.timeout.connect(tick)
    drop(win, [folder])
    qtbot.waitUntil(lambda: win.controller.state == "running" and win.session.visible_count() == 400,
                    timeout=20000)
    last[0] = time.perf_counter()
    timer.start(5)
    wait_idle(qtbot, win, timeout=60000)
    timer.stop()
    assert gaps and max(gaps) < 0.35, f"longest UI-thread gap {max(gaps) * 1000:.0f} ms"


def test_real_detector_scores_dropped_images(qtbot, tmp_path, monkeypatch, testdata, retinaface_weights):
    models = tmp_path / "models"
    models.mkdir()
    os.symlink(retinaface_weights, models / "mobilenet0.25_Final.pth")
    monkeypatch.setenv("FACEQC_MODELS", str(models))
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "mixed"
    folder.mkdir()
    face = sorted((testdata / "faces" / "real").glob("*.jpg"))[0]
    nonface = testdata / "nonfaces" / "skimage_coffee.png"
    os.symlink(face, folder / face.name)
    os.symlink(nonface, folder / nonface.name)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    win = new_window(qtbot, tmp_path, fake=False)
    assert "detector ✓" in win.status.models.text()
    drop(win, [folder])
    wait_idle(qtbot, win, timeout=240000)
    snap = win.session.snapshot
    by_name = {os.path.basename(p): i for i, p in enumerate(snap.paths)}
    assert snap.n_faces[by_name[face.name]] >= 1
    assert snap.n_faces[by_name[nonface.name]] == 0
    assert snap.error[by_name["broken.jpg"]]
    assert win.banners.banners["models"].isVisible()  # MagFace etc. missing: said once, scoring went on
    assert "without" in win.banners.banners["models"].label.text()
    assert win.status.device.text()


def test_space_opens_and_closes_the_large_preview(qtbot, tmp_path):
    win = open_scored(qtbot, tmp_path)
    click_tile(qtbot, win, 2)
    key(qtbot, win, Qt.Key.Key_Space)
    prev = win._preview
    assert prev is not None and prev.isVisible() and prev.image_id == win._current_id
    qtbot.waitUntil(lambda: prev.view.image is not None)
    assert len(prev.view.faces) == win.session.snapshot.n_faces[win.session.row_of_id(win._current_id)]
    qtbot.keyClick(prev, Qt.Key.Key_Right)  # arrows move on while it is open
    assert win._current_id == win.model.image_id(3) and prev.image_id == win._current_id
    # the curation keys decide without leaving the preview, and its caption says the decision
    row = win.session.row_of_id(win._current_id)
    qtbot.keyClick(prev, Qt.Key.Key_R)
    assert win.session.snapshot.override[row] == -1 and "Rejected" in prev.caption.text()
    assert "by hand" in prev.caption.text()
    qtbot.keyClick(prev, Qt.Key.Key_A)
    assert win.session.snapshot.override[row] == 1 and "Accepted" in prev.caption.text()
    qtbot.keyClick(prev, Qt.Key.Key_U)
    assert win.session.snapshot.override[row] == 0
    qtbot.keyClick(prev, Qt.Key.Key_Space)
    assert not prev.isVisible()


def test_read_only_when_another_process_holds_the_project(qtbot, tmp_path):
    import subprocess
    import sys

    ppath, _, _ = make_project(tmp_path, n=10)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from faceqc_gui.engine.store import Project; "
         f"p = Project.open({str(ppath)!r}); p.acquire_write_lock(); print('locked', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        win = new_window(qtbot, tmp_path)
        assert win.open_project(ppath)
        assert win.session.readonly and "readonly" in win.banners.visible_keys()
        click_tile(qtbot, win, 0)
        key(qtbot, win, Qt.Key.Key_A)
        assert (win.session.snapshot.override == 0).all()  # refused, said in the status bar, nothing written
        assert not win.act_score.isEnabled() and win.model.rowCount() == 10
    finally:
        holder.kill()
        holder.wait()


def test_window_with_every_dock_open_fits_a_laptop_screen(qtbot, tmp_path):
    # Docks scroll instead of forcing their full height on the window: the filters and the Demographics panel
    # together once needed 1109 px, taller than most laptop screens, so the window could not be fitted on screen.
    win = new_window(qtbot, tmp_path)
    win.act_demographics.trigger()
    assert win.demo_dock.isVisible() and win.filter_dock.isVisible()
    hint = win.minimumSizeHint()
    assert hint.height() <= 700 and hint.width() <= 1366, hint
    win.resize(1366, 700)
    qtbot.waitUntil(lambda: win.height() <= 700)


def test_opening_demographics_leaves_the_grid_most_of_the_window(qtbot, tmp_path):
    win = open_scored(qtbot, tmp_path)
    win.resize(1400, 900)
    win.act_demographics.trigger()
    # at least two rows of tiles stay in view (at its natural height the dock left 1.5)
    qtbot.waitUntil(lambda: win.demo_dock.isVisible() and win.grid.viewport().height() >= 2 * win.grid._h)
    assert win.demo_dock.height() >= 200
