"""`faceqc-gui` / `python main.py`: arguments open a project, start one on a folder (weights looked up like the CLI),
or reopen the last project; OpenCV's Qt plugin path never leaks into PySide6; the None-refcount guard is active."""

from __future__ import annotations

import sys

import pytest

pytest.importorskip("pytestqt")
pytestmark = pytest.mark.gui

from PySide6.QtWidgets import QApplication  # noqa: E402

from faceqc_gui import app as app_module  # noqa: E402
from faceqc_gui.widgets.main_window import MainWindow  # noqa: E402
from test_gui_fixtures import make_images, make_project  # noqa: E402


@pytest.fixture
def run_main(qapp, qtbot, monkeypatch, tmp_path):
    """main() with exec() replaced by 'process events until scoring is idle', returning the window it made."""
    made = []
    monkeypatch.setattr(MainWindow, "show", lambda self: made.append(self) or QApplication.processEvents())

    def fake_exec(_app=None):
        win = made[-1]
        qtbot.waitUntil(lambda: not win.controller.busy, timeout=60000)
        return 0
    monkeypatch.setattr(QApplication, "exec", fake_exec)
    monkeypatch.chdir(tmp_path)

    def run(argv):
        assert app_module.main(argv) == 0
        win = made[-1]
        qtbot.addWidget(win)
        return win
    return run


def test_folder_argument_starts_a_project_and_scores_without_weights(run_main, tmp_path, monkeypatch):
    empty = tmp_path / "models-empty"
    empty.mkdir()
    monkeypatch.setenv("FACEQC_MODELS", str(empty))
    folder = tmp_path / "faces"
    make_images(folder, 5)
    win = run_main([str(folder), "--no-reopen"])
    assert win.session.is_open and win.model.rowCount() == 5
    assert win.banners.visible_keys() == ["models"]
    assert str(empty) in win.models_missing_message  # the CLI's lookup, $FACEQC_MODELS included
    win.close()


def test_project_argument_and_reopening_the_last_one(run_main, tmp_path):
    ppath, _, _ = make_project(tmp_path, n=8)
    win = run_main([str(ppath)])
    assert str(win.session.project.path) == str(ppath)
    win.close()
    win2 = run_main([])  # no argument: the last project comes back
    assert win2.session.is_open and str(win2.session.project.path) == str(ppath)
    win2.close()
    win3 = run_main(["--no-reopen"])
    assert not win3.session.is_open
    win3.close()


def test_opencv_plugin_path_is_dropped(monkeypatch):
    monkeypatch.setenv("QT_QPA_PLATFORM_PLUGIN_PATH", "/venv/lib/python3.11/site-packages/cv2/qt/plugins")
    monkeypatch.setenv("QT_PLUGIN_PATH", "/usr/lib/qt6/plugins")
    app_module._clean_qt_env()
    import os

    assert "QT_QPA_PLATFORM_PLUGIN_PATH" not in os.environ
    assert os.environ["QT_PLUGIN_PATH"] == "/usr/lib/qt6/plugins"  # someone else's setting is left alone


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="None is immortal from CPython 3.12")
def test_void_qt_calls_cannot_exhaust_none(qapp):
    from PySide6.QtWidgets import QWidget

    import faceqc_gui.gui  # noqa: F401  (applies the guard)

    w = QWidget()
    before = sys.getrefcount(None)
    assert before > 1 << 39  # the guard's headroom is in place
    for _ in range(2000):
        w.update()
    assert sys.getrefcount(None) > 1 << 39
