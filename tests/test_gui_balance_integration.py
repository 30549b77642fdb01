"""Issue 6 in the main window: the Demographics dock follows the project and filters the grid; the Balanced
Selection dialog applies its proposal as one undoable step."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("PySide6")

from PySide6.QtWidgets import QDialog  # noqa: E402
from test_gui_fixtures import make_project  # noqa: E402
from test_gui_window import new_window  # noqa: E402

from faceqc_gui.widgets import balance_dialog, main_window  # noqa: E402


def make_window(qtbot, tmp_path):
    ppath, _, _ = make_project(tmp_path, n=60)
    win = new_window(qtbot, tmp_path)
    win.open_project(ppath)
    qtbot.waitUntil(lambda: win.session.is_open and len(win.session.snapshot.ids) == 60)
    return win


def test_demographics_dock_counts_the_open_project_and_filters_the_grid(qtbot, tmp_path):
    win = make_window(qtbot, tmp_path)
    s = win.session
    win.act_demographics.trigger()
    assert win.demo_dock.isVisible()
    stats = win.demographics.stats
    assert stats is not None
    has_ff = ~np.isnan(s.snapshot.race7).any(axis=1)
    label = s.snapshot.race7[has_ff].argmax(axis=1)
    from faceqc_gui.engine.labels import RACE7

    group = RACE7[int(np.bincount(label).argmax())]
    win.demographics.groupFilterRequested.emit({"race7": group})
    assert s.view.fairface == {"race7": group}
    assert 0 < s.visible_count() <= int((label == RACE7.index(group)).sum())
    assert win.filters.ff_boxes["race7"].currentData() == group


def test_balance_dialog_applies_one_undoable_step(qtbot, tmp_path, monkeypatch):
    win = make_window(qtbot, tmp_path)
    s = win.session
    before = s.snapshot.override.copy()
    chosen = {}

    class FakeDialog:
        def __init__(self, snapshot, threshold, parent=None, **kw):
            ids = [int(i) for i in snapshot.ids[:3]]
            chosen.update({ids[0]: "accept", ids[1]: "reject", ids[2]: "reject"})

        def exec(self):
            return QDialog.DialogCode.Accepted

        def changes(self):
            return dict(chosen)

        def description(self):
            return "balanced selection (test)"

    monkeypatch.setattr(main_window, "BalanceDialog", FakeDialog)
    win.act_balance.trigger()
    rows = s.rows_of_ids(list(chosen))
    assert list(s.snapshot.override[rows]) == [1, -1, -1]
    assert s.can_undo()
    s.undo()
    np.testing.assert_array_equal(s.snapshot.override, before)
    assert balance_dialog.BalanceDialog is not FakeDialog  # the real dialog class stays importable
