"""Thumbnails (disk cache, EXIF orientation, unreadable files, newest-first loading) and the grid's geometry,
selection and colours."""

from __future__ import annotations

import os

import threading

import numpy as np
import pytest

pytest.importorskip("pytestqt")
pytestmark = pytest.mark.gui

from PIL import Image  # noqa: E402
from PySide6.QtCore import QItemSelectionModel, QRect, Qt  # noqa: E402
from PySide6.QtGui import QColor, QImage  # noqa: E402

from faceqc_gui.gui import thumbs  # noqa: E402
from faceqc_gui.gui.colors import LUT, quality_color  # noqa: E402
from faceqc_gui.gui.session import ProjectSession  # noqa: E402
from faceqc_gui.gui.thumbs import ImageLoader, ThumbnailDiskCache  # noqa: E402
from faceqc_gui.widgets.grid import MARGIN, STRIP, GridModel, TileDelegate, TileGridView  # noqa: E402
from test_gui_fixtures import make_project  # noqa: E402


def test_disk_cache_makes_reuses_and_invalidates(tmp_path, qapp, monkeypatch):
    src = tmp_path / "a.jpg"
    Image.new("RGB", (640, 480), (200, 30, 30)).save(src)
    cache = ThumbnailDiskCache(tmp_path / "cache", side=128)
    q = cache.load(str(src))
    assert q is not None and (q.width(), q.height()) == (128, 96)
    cp = cache.cache_path(str(src))
    assert cp.is_file()
    monkeypatch.setattr(thumbs, "make_thumbnail", lambda *a, **k: (_ for _ in ()).throw(AssertionError("rebuilt")))
    assert cache.load(str(src)) is not None  # served from disk, not decoded again
    monkeypatch.undo()
    Image.new("RGB", (300, 600), (0, 0, 200)).save(src)  # the file changes: a new entry, the new picture
    assert cache.cache_path(str(src)) != cp
    q2 = cache.load(str(src))
    assert (q2.width(), q2.height()) == (64, 128)
    assert QColor(q2.pixel(30, 60)).blue() > 150


def test_disk_cache_prune_keeps_it_under_its_cap_dropping_the_least_recently_used(tmp_path, qapp):
    srcs = []
    for i in range(6):
        p = tmp_path / f"img{i}.png"
        Image.effect_noise((300, 300), 60 + i).convert("RGB").save(p)  # noise: thumbnails of similar, real size
        srcs.append(str(p))
    cache = ThumbnailDiskCache(tmp_path / "cache", side=128)
    for p in srcs:
        assert cache.load(p) is not None
    paths = [cache.cache_path(p) for p in srcs]
    sizes = [cp.stat().st_size for cp in paths]
    for k, cp in enumerate(paths):  # img0 used longest ago ... img5 most recently
        os.utime(cp, (1_000_000 + k, 1_000_000 + k))
    assert cache.load(srcs[0]) is not None  # a hit refreshes img0: now the most recently used
    cap = sum(sizes) - sizes[1] - sizes[2] + 1  # room for all but two
    removed, left = cache.prune(cap)
    assert removed == 2 and left <= cap
    assert [cp.is_file() for cp in paths] == [True, False, False, True, True, True]
    assert cache.prune(cap) == (0, left)  # under the cap: nothing more goes
    assert cache.load(srcs[1]) is not None and paths[1].is_file()  # a pruned thumbnail is simply made again


def test_exif_orientation_is_applied(tmp_path):
    src = tmp_path / "rot.jpg"
    im = Image.new("RGB", (80, 40), (255, 255, 255))
    im.paste((0, 0, 0), (0, 0, 20, 40))  # black on the stored left edge
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    im.save(src, exif=exif)
    img, full = thumbs._open_oriented(str(src), 256)
    assert img.size == (40, 80) and full == (40, 80)
    assert img.getpixel((20, 5))[0] < 60  # the stored left edge is now the top


def test_unreadable_and_bomb_files_give_none(tmp_path):
    cache = ThumbnailDiskCache(tmp_path / "cache")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 truncated")
    assert cache.load(str(bad)) is None
    assert cache.load(str(tmp_path / "gone.jpg")) is None


def test_loader_serves_newest_request_first_and_bounds_its_queue(qtbot, tmp_path):
    gate = threading.Event()
    order: list[str] = []

    class SlowDisk(ThumbnailDiskCache):
        def load(self, path):
            order.append(path)
            gate.wait(5)
            return QImage(8, 8, QImage.Format.Format_RGB888)

    loader = ImageLoader(SlowDisk(tmp_path), workers=1)
    try:
        got = []
        loader.loaded.connect(lambda batch: got.extend(r.key for r in batch))
        loader.request(0, "p0")
        qtbot.waitUntil(lambda: order == ["p0"])  # the worker is busy with the first one
        n = thumbs.MAX_PENDING + 50
        for i in range(1, n + 1):
            loader.request(i, f"p{i}")
        assert loader.is_pending(n) and not loader.is_pending(1)  # the oldest requests were dropped
        gate.set()
        qtbot.waitUntil(lambda: len(got) >= 3)
        assert order[1] == f"p{n}"  # then the newest: what is on screen now
    finally:
        gate.set()
        loader.shutdown()


def test_preview_reports_the_oriented_full_size(qtbot, tmp_path):
    src = tmp_path / "big.png"
    Image.new("RGB", (3000, 1000), (10, 200, 10)).save(src)
    loader = ImageLoader(ThumbnailDiskCache(tmp_path / "c"), workers=1)
    try:
        with qtbot.waitSignal(loader.loaded, timeout=10000) as sig:
            loader.request_preview("k", str(src), 600)
        res = sig.args[0][0]
        assert res.kind == "preview" and res.full_size == (3000, 1000) and res.image.width() == 600
    finally:
        loader.shutdown()


def test_cividis_lightness_rises_monotonically():
    # The property that makes a sequential map readable without colour vision: lightness orders the scores.
    lum = 0.2126 * LUT[:, 0] + 0.7152 * LUT[:, 1] + 0.0722 * LUT[:, 2]
    assert (np.diff(lum.astype(float)) >= -1.0).all() and lum[-1] - lum[0] > 150


def make_grid(qtbot, tmp_path, n: int = 100, scored: bool = True):
    """A session on a generated project and a shown grid view of it: (session, model, view)."""
    ppath, _, _ = make_project(tmp_path, n=n, scored=scored)
    s = ProjectSession()
    s.open(ppath)
    m = GridModel(s, None)
    v = TileGridView()
    v.setModel(m)
    v.setItemDelegate(TileDelegate(m, v))
    v.set_tile_size(128 + 2 * MARGIN, 128 + STRIP + 2 * MARGIN)
    s.layoutReset.connect(m.reset)
    qtbot.addWidget(v)
    v.resize(900, 600)
    v.show()
    qtbot.waitExposed(v)
    return s, m, v


@pytest.fixture
def grid(qtbot, tmp_path):
    s, m, v = make_grid(qtbot, tmp_path)
    yield s, m, v
    s.close()


def test_geometry_round_trips_and_follows_resize(grid):
    s, m, v = grid
    cols = v.columns()
    assert cols == 900 // 134 or cols == (900 - v.verticalScrollBar().width()) // 134
    for pos in (0, 1, cols - 1, cols, 37):
        assert v.indexAt(v.visualRect(m.index(pos, 0)).center()).row() == pos
    v.scrollTo(m.index(99, 0))
    first, last = v.visible_range()
    assert first <= 99 < last
    v.resize(450, 600)
    assert v.columns() < cols
    assert v.verticalScrollBar().maximum() >= ((100 + v.columns() - 1) // v.columns()) * v._h - v.viewport().height()


def test_shift_selection_is_a_reading_order_run(grid, qtbot):
    s, m, v = grid
    v.selectionModel().setCurrentIndex(m.index(2, 0), QItemSelectionModel.SelectionFlag.ClearAndSelect)
    target = v.visualRect(m.index(2 + v.columns() + 1, 0)).center()
    qtbot.mouseClick(v.viewport(), Qt.MouseButton.LeftButton, Qt.KeyboardModifier.ShiftModifier, target)
    rows = sorted(i.row() for i in v.selectionModel().selectedIndexes())
    assert rows == list(range(2, 2 + v.columns() + 2))


def test_tile_strip_shows_the_quality_colour(grid):
    s, m, v = grid
    pos = int(np.flatnonzero(np.isfinite(s.snapshot.score[s.order]))[0])
    r = int(s.order[pos])
    img = v.viewport().grab().toImage()
    rect = v.visualRect(m.index(pos, 0))
    strip_y = rect.bottom() - MARGIN - STRIP // 2
    want = quality_color(float(s.quality[r]))
    got = QColor(img.pixel(rect.left() + MARGIN + 8, strip_y))
    assert abs(got.red() - want.red()) + abs(got.green() - want.green()) + abs(got.blue() - want.blue()) < 12
    assert QRect(rect).contains(rect.center())


def _mouse(v, kind, point, buttons):
    from PySide6.QtCore import QEvent, QPointF
    from PySide6.QtGui import QMouseEvent
    from PySide6.QtWidgets import QApplication

    types = {"press": QEvent.Type.MouseButtonPress, "move": QEvent.Type.MouseMove,
             "release": QEvent.Type.MouseButtonRelease}
    local = QPointF(point)
    ev = QMouseEvent(types[kind], local, v.viewport().mapToGlobal(local), Qt.MouseButton.LeftButton if kind != "move"
                     else Qt.MouseButton.NoButton, buttons, Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(v.viewport(), ev)


def test_rubber_band_drag_selects_the_block_of_tiles_it_covers(grid, qtbot):
    # A drag with the mouse (real press / move / release events) from tile (row 0, col 1) to tile (row 2, col 3)
    # selects that 3 x 3 block, and nothing else: what a user drawing a rectangle over the grid expects.
    s, m, v = grid
    cols = v.columns()
    assert cols >= 4
    start = v.visualRect(m.index(1, 0)).center()
    end = v.visualRect(m.index(2 * cols + 3, 0)).center()
    _mouse(v, "press", start, Qt.MouseButton.LeftButton)
    mid = (start + end) / 2
    _mouse(v, "move", mid, Qt.MouseButton.LeftButton)
    _mouse(v, "move", end, Qt.MouseButton.LeftButton)
    _mouse(v, "release", end, Qt.MouseButton.NoButton)
    rows = sorted(i.row() for i in v.selectionModel().selectedIndexes())
    assert rows == sorted(r * cols + c for r in range(3) for c in range(1, 4))


def test_a_tile_not_scored_yet_shows_no_reject_mark(qtbot, tmp_path):
    # Before scoring (or without models) nothing is decided: no orange dashed border and cross that would read as
    # "rejected"; a decision set by hand still shows.
    from faceqc_gui.gui.colors import REJECT

    s, m, v = make_grid(qtbot, tmp_path, n=12, scored=False)

    def reject_pixels(pos):
        img = v.viewport().grab().toImage()
        rect = v.visualRect(m.index(pos, 0))
        n = 0
        for x in range(rect.left(), rect.right()):
            for y in range(rect.top(), rect.top() + MARGIN + 5):  # the tile's top border
                c = QColor(img.pixel(x, y))
                n += abs(c.red() - REJECT.red()) + abs(c.green() - REJECT.green()) + abs(c.blue() - REJECT.blue()) < 40
        return n

    assert not s.accepted[s.order[0]]
    assert reject_pixels(0) == 0
    s.set_override([int(s.snapshot.ids[s.order[0]])], "reject")
    v.viewport().repaint()
    assert reject_pixels(0) > 10
    s.close()
