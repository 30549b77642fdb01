"""The Models dialog (status, download with progress, Locate file…) and the first-launch offer to fetch every
weight file in one click; downloads are faked (no network in tests), the status checks are the real ones."""

from __future__ import annotations

import os

import pytest

pytest.importorskip("pytestqt")
pytestmark = pytest.mark.gui

from faceqc_gui.engine import download as dl  # noqa: E402
from faceqc_gui.engine import registry  # noqa: E402
from faceqc_gui.engine.errors import DownloadError  # noqa: E402
from faceqc_gui.gui.settings import AppSettings  # noqa: E402
from faceqc_gui.widgets.main_window import MainWindow  # noqa: E402
from faceqc_gui.widgets.models_dialog import ModelsDialog, install_located_file  # noqa: E402


def fake_download(calls, fail=()):
    def run(key, dest_dir=None, progress=None, cancel=None, **kw):
        calls.append(key)
        if key in fail:
            raise DownloadError(f"Download of {key} failed: the server said no.")
        for done in (0, 50, 100):
            progress(done, 100)
        os.makedirs(dest_dir, exist_ok=True)  # as download_model does
        p = os.path.join(dest_dir, registry.MODELS[key].filename)
        with open(p, "wb") as f:
            f.write(b"weights of " + key.encode())
        return p
    return run


@pytest.fixture
def models_dir(tmp_path, monkeypatch):
    d = tmp_path / "models"
    d.mkdir()
    monkeypatch.chdir(tmp_path)
    return d


def test_status_download_all_and_failures(qtbot, models_dir):
    calls = []
    dlg = ModelsDialog(models_dir, download_fn=fake_download(calls, fail=("celeba",)))
    qtbot.addWidget(dlg)
    qtbot.waitUntil(lambda: len(dlg.rows) == len(registry.MODELS))
    assert all(state == "missing" for _, state, _ in dlg.prepare())
    changed = []
    dlg.modelsChanged.connect(lambda: changed.append(1))
    assert dlg.download_all_missing()
    assert not dlg.all_btn.isEnabled()  # one run at a time
    qtbot.waitUntil(lambda: dlg.all_btn.isEnabled(), timeout=10000)
    assert calls == list(registry.MODELS)
    assert len(changed) == len(registry.MODELS) - 1
    states = {k: state for k, state, _ in dlg.prepare()}
    assert states["celeba"] == "missing" and states["magface"] != "missing"
    text = {k: t for k, _, t in dlg.prepare()}
    assert "Last download failed" in text["celeba"] and "server said no" in dlg.message.text()
    assert registry.find_model_file("magface", models_dir) == models_dir / registry.MODELS["magface"].filename


def test_locate_file_links_it_where_the_cli_looks(qtbot, models_dir, tmp_path):
    elsewhere = tmp_path / "downloads" / "my_magface.pth"
    elsewhere.parent.mkdir()
    elsewhere.write_bytes(b"x" * 10)
    dlg = ModelsDialog(models_dir, download_fn=fake_download([]))
    qtbot.addWidget(dlg)
    assert dlg.locate("magface", str(elsewhere))
    found = registry.find_model_file("magface", models_dir)
    assert found is not None and found.resolve() == elsewhere.resolve()
    assert not dlg.locate("celeba", str(tmp_path / "nope.pt"))
    assert "not a file" in dlg.message.text()
    other = elsewhere.with_name("other.pth")
    other.write_bytes(b"y")
    with pytest.raises(Exception, match="already exists"):  # never replaces a file that is there
        install_located_file("magface", str(other), models_dir)


def test_first_launch_offers_all_models_in_one_click(qtbot, tmp_path, monkeypatch):
    empty = tmp_path / "none"
    empty.mkdir()
    monkeypatch.setenv("FACEQC_MODELS", str(empty))
    monkeypatch.chdir(tmp_path)
    calls = []
    monkeypatch.setattr(dl, "download_model", fake_download(calls))
    win = MainWindow(settings=AppSettings(tmp_path / "gui.json"), thumb_cache_dir=tmp_path / "t", probe_device=False)
    qtbot.addWidget(win)
    win.show()
    banner = win.banners.banners["models"]
    assert "No model weights found" in banner.label.text()
    win.controller.loaded = object()  # pretend models were loaded: new files must invalidate them
    banner.buttons["Download all"].click()
    dlg = win._models_dialog
    assert dlg is not None and dlg.isVisible()
    qtbot.waitUntil(lambda: len(calls) == len(registry.MODELS) and dlg.all_btn.isEnabled(), timeout=10000)
    assert win.controller.loaded is None
    qtbot.waitUntil(lambda: "✗" not in win.status.models.text())
    assert "models" not in win.banners.visible_keys()
